"""The figures of the console's dashboard, read from the server's tables.

Messages per state and per hour, the stuck ones, queue depth per recipient, push
failures by reason and devices per group: each is one aggregate query (no row is read
into memory to be counted), so the page stays fast on a million messages.

A message is **stuck** by the rule ``mpg status`` applies to the gateway's Outbox: it
is still on its way (the server's ``queued``, the gateway's 20) and has not moved on for
longer than ``stuck_after`` seconds (``[server] stuck_after``, the same default as the
gateway's); the oldest come first, at most :data:`STUCK_SHOWN` of them.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import sqlalchemy as sa

from mpg.db import transactions
from mpg.server import queues, tables, vault
from mpg.server.push import jobs
from mpg.server.states import MessageState

#: Hours the per-hour chart covers (the newest last).
HOURS: Final = 24
#: Stuck messages listed (``mpg status`` lists as many of the gateway's).
STUCK_SHOWN: Final = 20
#: Rows of each "by reason" and "per recipient" table.
TOP: Final = 20
#: Push job states that ended without the push going out, or wait for the operator.
FAILED_JOBS: Final = (jobs.JobState.FAILED, jobs.JobState.PARKED)


@dataclasses.dataclass(frozen=True, slots=True)
class Hour:
    """Messages the server accepted in the hour starting at ``start`` (Unix time)."""

    start: float
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class StuckMessage:
    """A message waiting for its recipients for longer than ``stuck_after``."""

    message_id: str
    tx_message_id: str
    sender: str
    received_at: float
    recipients: int
    served: int


@dataclasses.dataclass(frozen=True, slots=True)
class Count:
    """How many things have ``label`` (a recipient, a reason, a group)."""

    label: str
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the dashboard shows, as of ``at`` (Unix time)."""

    at: float
    #: Every message state (zero included), in the order of :class:`MessageState`.
    messages: tuple[Count, ...]
    #: The last :data:`HOURS` hours, oldest first; the last one is the current hour.
    per_hour: tuple[Hour, ...]
    stuck_after: float
    stuck_count: int
    stuck: tuple[StuckMessage, ...]
    #: Entries waiting per recipient, deepest first (at most :data:`TOP`).
    depths: tuple[Count, ...]
    #: Push jobs failed or parked, by their recorded reason (at most :data:`TOP`).
    push_failures: tuple[Count, ...]
    #: Devices whose push token was removed or flagged, by state and reason.
    token_problems: tuple[Count, ...]
    #: Devices per group, every group (zero included), by group id.
    devices: tuple[Count, ...]


def hour_start(at: float) -> float:
    """The start of the hour ``at`` lies in (Unix time; hours are whole in UTC)."""
    return at - at % 3600


def collect(
    engine: sa.Engine,
    store: queues.QueueStore,
    names: vault.Vault,
    *,
    stuck_after: float,
    now: float,
) -> Dashboard:
    """The dashboard as of ``now``; ``store`` counts the queue depths, ``names`` names senders."""
    with transactions.connect(engine, "reading the dashboard") as conn:
        messages = message_counts(conn)
        per_hour = hourly(conn, now)
        stuck_count, stuck_rows = stuck(conn, names, stuck_after=stuck_after, now=now)
        failures = push_failures(conn)
        tokens = token_problems(conn)
        groups = devices_per_group(conn)
    depths = sorted(store.depths().items(), key=lambda item: (-item[1], item[0]))[:TOP]
    return Dashboard(
        at=now,
        messages=messages,
        per_hour=per_hour,
        stuck_after=stuck_after,
        stuck_count=stuck_count,
        stuck=stuck_rows,
        depths=tuple(Count(name, n) for name, n in depths),
        push_failures=failures,
        token_problems=tokens,
        devices=groups,
    )


def message_counts(conn: sa.Connection) -> tuple[Count, ...]:
    """Messages per ``TransmitQueue.State``, every state listed."""
    t = tables.transmit_queue.c
    found = {
        str(state): int(n)
        for state, n in conn.execute(sa.select(t.State, sa.func.count()).group_by(t.State))
    }
    return tuple(Count(str(state), found.get(str(state), 0)) for state in MessageState)


def hourly(conn: sa.Connection, now: float) -> tuple[Hour, ...]:
    """Messages accepted in each of the last :data:`HOURS` hours (the current one last)."""
    t = tables.transmit_queue.c
    starts = [hour_start(now) - 3600 * back for back in range(HOURS - 1, -1, -1)]
    # One CASE per hour in one scan: portable (no date function every database shares).
    buckets = [
        sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(t.ReceivedAt >= s, t.ReceivedAt < s + 3600), 1), else_=0)),
            0,
        )
        for s in starts
    ]
    row = conn.execute(sa.select(*buckets).where(t.ReceivedAt >= starts[0])).one()
    return tuple(Hour(s, int(n)) for s, n in zip(starts, row, strict=True))


def stuck(
    conn: sa.Connection, names: vault.Vault, *, stuck_after: float, now: float
) -> tuple[int, tuple[StuckMessage, ...]]:
    """How many messages are stuck, and the oldest :data:`STUCK_SHOWN` of them."""
    t = tables.transmit_queue.c
    rule = sa.and_(t.State == MessageState.QUEUED, t.ReceivedAt < now - stuck_after)
    count = int(conn.execute(sa.select(sa.func.count()).where(rule)).scalar_one())
    rows = conn.execute(
        sa.select(
            t.MessageId,
            t.TxMessageId,
            t.SenderAccount,
            t.ReceivedAt,
            t.RecipientCount,
            t.ServedCount,
        )
        .where(rule)
        .order_by(t.ReceivedAt, t.MessageId)
        .limit(STUCK_SHOWN)
    ).all()
    senders = names.names(conn, [str(r.SenderAccount) for r in rows])
    return count, tuple(
        StuckMessage(
            message_id=str(r.MessageId),
            tx_message_id=str(r.TxMessageId),
            sender=senders[str(r.SenderAccount)],
            received_at=float(r.ReceivedAt),
            recipients=int(r.RecipientCount),
            served=int(r.ServedCount),
        )
        for r in rows
    )


def push_failures(conn: sa.Connection) -> tuple[Count, ...]:
    """Failed and parked push jobs by ``LastError`` (provider, outcome, provider's word)."""
    j = tables.push_job.c
    reason = sa.func.coalesce(j.LastError, "")
    rows = conn.execute(
        sa.select(j.State, reason.label("reason"), sa.func.count().label("n"))
        .where(j.State.in_(FAILED_JOBS))
        .group_by(j.State, reason)
        .order_by(sa.desc("n"), j.State, reason)
        .limit(TOP)
    )
    return tuple(Count(f"{r.State}: {r.reason or '(no reason recorded)'}", int(r.n)) for r in rows)


def token_problems(conn: sa.Connection) -> tuple[Count, ...]:
    """Devices whose token was removed or flagged, by state and recorded reason."""
    d = tables.device.c
    reason = sa.func.coalesce(d.PushTokenStateReason, "")
    rows = conn.execute(
        sa.select(d.PushTokenState, reason.label("reason"), sa.func.count().label("n"))
        .where(d.PushTokenState.in_((jobs.TOKEN_REMOVED, jobs.TOKEN_FLAGGED)))
        .group_by(d.PushTokenState, reason)
        .order_by(sa.desc("n"), d.PushTokenState, reason)
        .limit(TOP)
    )
    return tuple(
        Count(f"token {r.PushTokenState}: {r.reason or '(no reason recorded)'}", int(r.n))
        for r in rows
    )


def devices_per_group(conn: sa.Connection) -> tuple[Count, ...]:
    """Registered devices of every group, by group id (groups without devices show 0)."""
    g = tables.message_group.c
    d = tables.device.c
    per_group = (
        sa.select(d.GroupId, sa.func.count().label("n")).group_by(d.GroupId).subquery("per_group")
    )
    rows = conn.execute(
        sa.select(g.GroupId, sa.func.coalesce(per_group.c.n, 0))
        .select_from(tables.message_group.outerjoin(per_group, per_group.c.GroupId == g.GroupId))
        .order_by(g.GroupId)
    )
    return tuple(Count(str(group), int(n)) for group, n in rows)
