"""The history of state changes (``MpgTransition``): record, follow, timeline.

The repositories write one row per step inside the transaction that changes
``State``, so the history and the tables never disagree. ``mpg tail`` follows the
history by ``Id``; ``mpg show`` reads one message's timeline.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Final, Literal

import sqlalchemy as sa
import structlog

from mpg import metrics, timefmt
from mpg.db import bulk, transactions
from mpg.storage import tables

Box = Literal["out", "in"]

#: Width of ``MpgTransition.Reason``.
REASON_WIDTH: Final = 200
DEFAULT_FOLLOW_LIMIT: Final = 500
_STAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"  # what timefmt.utc_stamp writes


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One state change to record."""

    message_key: str  # TxMessageId (box "out") or RxMessageId (box "in")
    from_state: int | None  # None when the row was created
    to_state: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """One recorded row of ``MpgTransition``."""

    id: int
    box: str
    message_key: str
    from_state: int | None
    to_state: int
    at: str  # ISO-8601 UTC with microseconds
    reason: str
    gateway: str


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in '…' when it was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def record(conn: sa.Connection, box: Box, gateway: str, steps: Sequence[Step]) -> None:
    """Insert one history row per step, in the caller's transaction (one executemany)."""
    if not steps:
        return
    at = timefmt.utc_stamp()
    bulk.insert_rows(
        conn,
        tables.transition,
        [
            {
                "Box": box,
                "MessageKey": step.message_key,
                "FromState": step.from_state,
                "ToState": step.to_state,
                "At": at,
                "Reason": truncate(step.reason, REASON_WIDTH),
                "Gateway": gateway,
            }
            for step in steps
        ],
    )


def log_steps(box: Box, steps: Sequence[Step]) -> None:
    """One ``state_changed`` event per step on ``mpg.state``, and the transition counter."""
    if not steps:
        return
    # Looked up per call so a logging setup made after import (or a test's capture) applies;
    # bound once per batch, not once per event (an unbound logger is made anew per call).
    log = structlog.get_logger("mpg.state").bind()
    key = "tx_message_id" if box == "out" else "rx_message_id"
    # The counter once per kind of step in the batch, not once per row.
    for (from_state, to_state), n in collections.Counter(
        (step.from_state, step.to_state) for step in steps
    ).items():
        from_label = "none" if from_state is None else str(from_state)
        metrics.TRANSITIONS.labels(box, from_label, str(to_state)).inc(n)
    for step in steps:
        log.info(
            "state_changed",
            **{key: step.message_key},
            from_state=step.from_state,
            to_state=step.to_state,
            reason=step.reason,
            box=box,
        )


def _from_row(row: sa.Row[tuple[object, ...]]) -> Transition:
    m = row._mapping
    t = tables.transition.c
    return Transition(
        id=int(m[t.Id]),
        box=str(m[t.Box]),
        message_key=str(m[t.MessageKey]),
        from_state=None if m[t.FromState] is None else int(m[t.FromState]),
        to_state=int(m[t.ToState]),
        at=str(m[t.At]),
        reason=str(m[t.Reason]),
        gateway=str(m[t.Gateway]),
    )


def follow(
    engine: sa.Engine,
    since_id: int,
    *,
    tx: str | None = None,
    state: int | None = None,
    app_code: str | None = None,
    since: str | None = None,
    limit: int = DEFAULT_FOLLOW_LIMIT,
) -> list[Transition]:
    """The rows recorded after ``since_id``, oldest first (``mpg tail``).

    ``tx`` keeps one message's rows, ``state`` the steps that reached that state,
    ``app_code`` those of Outbox or Inbox rows with that AppCode, ``since`` (an
    ``At`` stamp, see :func:`stamp`) those recorded at or after it.
    """
    t = tables.transition.c
    query = sa.select(tables.transition).where(t.Id > since_id)
    if tx is not None:
        query = query.where(t.MessageKey == tx)
    if state is not None:
        query = query.where(t.ToState == state)
    if since is not None:
        query = query.where(t.At >= since)
    if app_code is not None:
        out_ids = sa.select(tables.outbox.c.TxMessageId).where(tables.outbox.c.AppCode == app_code)
        in_ids = sa.select(tables.inbox.c.RxMessageId).where(tables.inbox.c.AppCode == app_code)
        query = query.where(
            sa.or_(
                sa.and_(t.Box == "out", t.MessageKey.in_(out_ids)),
                sa.and_(t.Box == "in", t.MessageKey.in_(in_ids)),
            )
        )
    query = query.order_by(t.Id).limit(limit)
    with transactions.connect(engine, "reading the transition history") as conn:
        return [_from_row(row) for row in conn.execute(query)]


def latest_id(engine: sa.Engine) -> int:
    """The newest history row's id (0 when empty): where ``mpg tail`` starts."""
    query = sa.select(sa.func.max(tables.transition.c.Id))
    with transactions.connect(engine, "reading the transition history") as conn:
        value = conn.execute(query).scalar()
    return int(value) if value is not None else 0


def timeline(engine: sa.Engine, key: str) -> list[Transition]:
    """Every recorded step of one message (TxMessageId or RxMessageId), in order."""
    t = tables.transition.c
    query = sa.select(tables.transition).where(t.MessageKey == key).order_by(t.Id)
    with transactions.connect(engine, "reading the transition history") as conn:
        return [_from_row(row) for row in conn.execute(query)]


def stamp(moment: dt.datetime) -> str:
    """``moment`` (aware, or naive UTC) in the form of ``MpgTransition.At``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime(_STAMP_FORMAT)


#: Most history rows one purge transaction deletes (keeps lock times short).
PURGE_BATCH: Final = 5000


def purge(engine: sa.Engine, keep_days: float) -> int:
    """Delete history rows older than ``keep_days`` days; returns how many went.

    Housekeeping of MPG's own table only: the ERP's tables are never touched here.
    Deletes in batches of :data:`PURGE_BATCH`, each its own transaction.
    """
    t = tables.transition.c
    cutoff = stamp(dt.datetime.now(dt.UTC) - dt.timedelta(days=keep_days))
    deleted = 0
    while True:
        with transactions.begin(engine, "purging the transition history") as conn:
            ids = [
                int(i)
                for i in conn.execute(
                    sa.select(t.Id).where(t.At < cutoff).order_by(t.Id).limit(PURGE_BATCH)
                ).scalars()
            ]
            if ids:
                conn.execute(sa.delete(tables.transition).where(t.Id.in_(ids)))
        deleted += len(ids)
        if len(ids) < PURGE_BATCH:
            return deleted
