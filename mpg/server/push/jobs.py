"""Durable push jobs: written with what causes them, claimed with a lease, finished once.

A ``PushJob`` row is one push to one device (docs/push.md, "Push jobs"). It is
inserted in the caller's transaction — the submit that queued an AlertFlag message,
the recall, the publication of a message-file version — so a push exists exactly
when its cause was committed. Workers (:mod:`mpg.server.push.worker`) in any number
of server processes claim due jobs: the rows are read ``FOR UPDATE SKIP LOCKED``
(on SQLite every transaction holds the write lock, :func:`mpg.db.transactions.begin`)
and moved to ``leased`` with a compare-and-set on their state and lease, so no job
is handed to two workers while its lease runs. A worker that dies after the claim
leaves a lease that runs out; another worker then claims and sends it (at most one
duplicate when the provider had accepted it; the collapse id shows it once).
:func:`finish` records the outcome under the same compare-and-set, so a worker
whose lease ran out cannot overwrite what the next one did.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg.db import timeids, transactions
from mpg.server import rows, tables
from mpg.server.push.outcome import OutcomeKind, PushOutcome
from mpg.server.rows import EventKind
from mpg.server.states import MessageState
from mpg.wire import model
from mpg.wire.push import Notice, NoticeKind

#: ``Device.PushTokenState`` values.
TOKEN_REMOVED: Final = "removed"  # noqa: S105 (a state, no secret)
TOKEN_FLAGGED: Final = "flagged"  # noqa: S105


class JobState(enum.StrEnum):
    """``PushJob.State``."""

    PENDING = "pending"  # due at NotBefore
    LEASED = "leased"  # a worker is sending it until LeaseUntil
    SENT = "sent"  # the provider accepted it
    FAILED = "failed"  # permanent: token gone or flagged, message error, gave up
    PARKED = "parked"  # the provider's configuration is wrong; waits for a restart
    CANCELLED = "cancelled"  # its message was recalled before it was sent


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """A job a worker holds until ``lease_until``."""

    job_id: str
    account: str
    group: str
    kind: NoticeKind
    message_id: str
    version: str
    category: str
    priority: str
    attempts: int
    lease_until: float

    def notice(self) -> Notice:
        """What the push says: never more than the group, ids, priority and version."""
        return Notice(
            self.kind,
            self.group,
            priority=self.priority,
            message_id=self.message_id,
            version=self.version,
            category=self.category,
        )


def job_row(
    account: str,
    group: str,
    kind: NoticeKind,
    priority: str,
    now: float,
    *,
    message_id: str | None = None,
    version: str | None = None,
    category: str | None = None,
    not_before: float | None = None,
) -> dict[str, Any]:
    """A new pending ``PushJob`` row."""
    return {
        "JobId": timeids.time_ordered_uuid(),
        "AccountId": account,
        "GroupId": group,
        "Kind": str(kind),
        "MessageId": message_id,
        "Version": version,
        "CategoryId": category,
        "Priority": priority or "N",
        "State": JobState.PENDING,
        "NotBefore": now if not_before is None else not_before,
        "LeaseUntil": None,
        "Attempts": 0,
        "LastError": None,
        "ProviderId": None,
        "CreatedAt": now,
        "DoneAt": None,
    }


def pushable(device: sa.Table) -> sa.ColumnElement[bool]:
    """Devices with a token that was not flagged since it was set."""
    d = device.c
    return sa.and_(
        d.PushTokenEnc.is_not(None),
        sa.or_(
            d.PushTokenState.is_(None),
            d.PushTokenState != TOKEN_FLAGGED,
            d.PushTokenAt > d.PushTokenStateAt,
        ),
    )


#: Built once: every submit asks it of its recipients.
_PUSHABLE: Final = sa.select(tables.device.c.AccountId, tables.device.c.GroupId).where(
    tables.device.c.AccountId.in_(sa.bindparam("b_ids", expanding=True)),
    pushable(tables.device),
)


def pushable_devices(conn: sa.Connection, accounts: Iterable[str]) -> dict[str, str]:
    """Of ``accounts``, the devices a push can reach now, with their group."""
    found: dict[str, str] = {}
    for part in transactions.chunks(sorted(set(accounts))):
        result = conn.execute(_PUSHABLE, {"b_ids": part})
        found.update({str(r.AccountId): str(r.GroupId) for r in result})
    return found


def enqueue(conn: sa.Connection, jobs: Sequence[Mapping[str, Any]]) -> int:
    """Insert ``jobs`` (from :func:`job_row`) in the caller's transaction."""
    if jobs:
        conn.execute(tables.push_job.insert(), list(jobs))
    return len(jobs)


def enqueue_for_entries(
    conn: sa.Connection,
    messages: Sequence[Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
) -> int:
    """One push per device recipient of each queued AlertFlag message among ``messages``.

    ``messages`` and ``entries`` are the TransmitQueue and ReceiveQueue rows a submit
    is inserting (:mod:`mpg.server.queues`); entries of other messages (a RECALL,
    served at once, announces itself by :func:`enqueue_recall`) and recipients that
    are no device with a live token get none.
    """
    alerting = {
        m["MessageId"]: m
        for m in messages
        if m.get("AlertFlag") and m.get("State") == MessageState.QUEUED
    }
    wanted = [
        (e["MessageId"], e["Recipient"])
        for e in entries
        if e.get("Kind", model.DeliveryKind.MESSAGE) == model.DeliveryKind.MESSAGE
        and e["MessageId"] in alerting
    ]
    if not wanted:
        return 0
    devices = pushable_devices(conn, {account for _, account in wanted})
    return enqueue(
        conn,
        [
            job_row(
                account,
                devices[account],
                NoticeKind.MESSAGE,
                str(alerting[message_id].get("Priority") or "N"),
                float(alerting[message_id]["ReceivedAt"]),
                message_id=message_id,
            )
            for message_id, account in wanted
            if account in devices
        ],
    )


def drop_message_pushes(conn: sa.Connection, message_id: str, accounts: Sequence[str]) -> int:
    """Delete the ``message`` pushes of ``message_id`` to ``accounts``, in the transaction
    that queued them: those devices get a publication's ``file`` push for it instead."""
    j = tables.push_job.c
    dropped = 0
    for part in transactions.chunks(sorted(set(accounts))):
        dropped += conn.execute(
            tables.push_job.delete().where(
                j.MessageId == message_id,
                j.Kind == str(NoticeKind.MESSAGE),
                j.AccountId.in_(part),
            )
        ).rowcount
    return dropped


def enqueue_recall(conn: sa.Connection, recalled_id: str, now: float) -> int:
    """A recall push (same collapse id) to each device told of ``recalled_id``.

    Pushes not yet sent are cancelled instead: the phone never showed them. Returns
    the recall pushes enqueued.
    """
    j = tables.push_job.c
    told = conn.execute(
        sa.select(j.JobId, j.AccountId, j.GroupId, j.Priority, j.State, j.LeaseUntil)
        .where(j.MessageId == recalled_id, j.Kind == str(NoticeKind.MESSAGE))
        .with_for_update()
    ).all()
    pending = [r.JobId for r in told if r.State == JobState.PENDING]
    for part in transactions.chunks(pending):
        conn.execute(
            tables.push_job.update()
            .where(j.JobId.in_(part), j.State == JobState.PENDING)
            .values(State=JobState.CANCELLED, DoneAt=now, LastError="recalled before it was sent")
        )
    shown = {r.AccountId: r for r in told if r.State in (JobState.LEASED, JobState.SENT)}
    return enqueue(
        conn,
        [
            job_row(
                r.AccountId,
                r.GroupId,
                NoticeKind.RECALL,
                r.Priority,
                now,
                message_id=recalled_id,
                # A push being sent now goes out first: the recall must come after it.
                not_before=max(now, r.LeaseUntil or now),
            )
            for r in shown.values()
        ],
    )


def claim(engine: sa.Engine, limit: int, lease_seconds: float, now: float) -> list[Claimed]:
    """Lease up to ``limit`` due jobs (pending and due, or leased with a lapsed lease)."""
    return transactions.retrying(lambda: _claim_once(engine, limit, lease_seconds, now))


def _claim_once(engine: sa.Engine, limit: int, lease_seconds: float, now: float) -> list[Claimed]:
    j = tables.push_job.c
    due = sa.or_(
        sa.and_(j.State == JobState.PENDING, j.NotBefore <= now),
        sa.and_(j.State == JobState.LEASED, j.LeaseUntil < now),
    )
    until = now + lease_seconds
    # The workers' polls nearly all find nothing.
    if not transactions.worth_locking(
        engine, sa.select(j.JobId).where(due), {}, "looking for due push jobs"
    ):
        return []
    with transactions.begin(engine, "claiming push jobs") as conn:
        found = conn.execute(
            sa.select(tables.push_job)
            .where(due)
            .order_by(j.NotBefore)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        guarded = (
            tables.push_job.update()
            .where(
                j.JobId == sa.bindparam("b_id"),
                j.State == sa.bindparam("b_state"),
                sa.or_(j.LeaseUntil.is_(None), j.LeaseUntil == sa.bindparam("b_lease")),
            )
            .values(State=JobState.LEASED, LeaseUntil=until, Attempts=j.Attempts + 1)
        )
        moved = transactions.compare_and_set(
            conn,
            guarded,
            [{"b_id": r.JobId, "b_state": r.State, "b_lease": r.LeaseUntil} for r in found],
        )
    return [
        Claimed(
            job_id=r.JobId,
            account=r.AccountId,
            group=r.GroupId,
            kind=NoticeKind(r.Kind),
            message_id=r.MessageId or "",
            version=r.Version or "",
            category=r.CategoryId or "",
            priority=r.Priority,
            attempts=int(r.Attempts) + 1,
            lease_until=until,
        )
        for r in (found[i] for i in moved)
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`finish` writes for one outcome (pure: see :func:`decide`)."""

    state: JobState
    not_before: float | None = None
    #: Device.PushTokenState to set (and its reason), or None.
    token: str | None = None


def decide(
    result: PushOutcome, attempts: int, now: float, *, max_attempts: int, backoff: float
) -> Decision:
    """The job's next state for ``result`` (``backoff``: this try's own wait, seconds)."""
    kind = result.kind
    if kind is OutcomeKind.DELIVERED:
        return Decision(JobState.SENT)
    if kind is OutcomeKind.RETRY:
        if attempts >= max_attempts:
            return Decision(JobState.FAILED)
        wait = max(backoff, result.retry_after or 0.0)
        return Decision(JobState.PENDING, not_before=now + wait)
    if kind is OutcomeKind.TOKEN_GONE:
        return Decision(JobState.FAILED, token=TOKEN_REMOVED)
    if kind is OutcomeKind.TOKEN_FLAGGED:
        return Decision(JobState.FAILED, token=TOKEN_FLAGGED)
    if kind is OutcomeKind.CONFIG_ALARM:
        return Decision(JobState.PARKED)
    return Decision(JobState.FAILED)


def finish(
    engine: sa.Engine,
    job: Claimed,
    result: PushOutcome,
    decision: Decision,
    now: float,
    *,
    token_at: float | None,
    provider: str,
) -> bool:
    """Record ``result`` of ``job`` as ``decision``; False when its lease was lost.

    The device's token is removed or flagged only if it is still the one sent to
    (``token_at``, its PushTokenAt then): a token the device set since stays.
    """

    def once() -> bool:
        j = tables.push_job.c
        reason = _reason(result, decision, provider)
        with transactions.begin(engine, "recording a push outcome") as conn:
            moved = conn.execute(
                tables.push_job.update()
                .where(
                    j.JobId == job.job_id,
                    j.State == JobState.LEASED,
                    j.LeaseUntil == job.lease_until,
                )
                .values(
                    State=decision.state,
                    NotBefore=decision.not_before if decision.not_before is not None else now,
                    LeaseUntil=None,
                    LastError=None if decision.state is JobState.SENT else reason[:200],
                    ProviderId=result.provider_id[:200] or None,
                    DoneAt=None if decision.state is JobState.PENDING else now,
                )
            ).rowcount
            if moved != 1:
                return False
            if decision.token is not None:
                mark_token(conn, job.account, decision.token, reason, now, token_at=token_at)
            if job.message_id:
                kind = (
                    EventKind.NOTIFIED if decision.state is JobState.SENT else EventKind.PUSH_FAILED
                )
                detail = reason if job.kind is NoticeKind.MESSAGE else f"{job.kind}: {reason}"
                conn.execute(
                    tables.message_event.insert(),
                    rows.event(job.message_id, now, kind, job.account, detail),
                )
        return True

    return transactions.retrying(once)


def fail_unsendable(engine: sa.Engine, job: Claimed, reason: str, now: float) -> bool:
    """End a job that cannot be sent at all (no device, no token) with ``reason``."""
    return finish(
        engine,
        job,
        PushOutcome(OutcomeKind.MESSAGE_ERROR, reason),
        Decision(JobState.FAILED),
        now,
        token_at=None,
        provider="-",
    )


def _reason(result: PushOutcome, decision: Decision, provider: str) -> str:
    """The event and LastError text: provider, outcome, the provider's own word."""
    words = f"{provider}: {result.kind}" + (f" {result.reason}" if result.reason else "")
    if decision.state is JobState.PENDING and decision.not_before is not None:
        return words + " (tried again later)"
    if result.kind is OutcomeKind.RETRY:
        return words + " (gave up)"
    return words


def mark_token(
    conn: sa.Connection,
    account: str,
    state: str,
    reason: str,
    now: float,
    *,
    token_at: float | None,
) -> None:
    """Remove (``TOKEN_REMOVED``) or flag a device's token set at ``token_at``, saying why."""
    d = tables.device.c
    values: dict[str, Any] = {
        "PushTokenState": state,
        "PushTokenStateAt": now,
        "PushTokenStateReason": reason[:200],
    }
    if state == TOKEN_REMOVED:
        values["PushTokenEnc"] = None
    conn.execute(
        tables.device.update()
        .where(
            d.AccountId == account,
            d.PushTokenAt.is_(None) if token_at is None else d.PushTokenAt == token_at,
        )
        .values(**values)
    )


def unpark(engine: sa.Engine, now: float) -> int:
    """Make parked jobs due again (at start: the operator may have fixed the configuration)."""
    j = tables.push_job.c
    with transactions.begin(engine, "unparking push jobs") as conn:
        return int(
            conn.execute(
                tables.push_job.update()
                .where(j.State == JobState.PARKED)
                .values(State=JobState.PENDING, NotBefore=now)
            ).rowcount
        )


def expire_tokens(engine: sa.Engine, max_age_days: float, now: float) -> int:
    """Remove tokens their devices did not refresh for ``max_age_days``; how many."""
    d = tables.device.c
    cutoff = now - max_age_days * 86400
    reason = f"expired: not refreshed for {max_age_days:g} days"
    with transactions.begin(engine, "expiring push tokens") as conn:
        return int(
            conn.execute(
                tables.device.update()
                .where(d.PushTokenEnc.is_not(None), d.PushTokenAt < cutoff)
                .values(
                    PushTokenEnc=None,
                    PushTokenState=TOKEN_REMOVED,
                    PushTokenStateAt=now,
                    PushTokenStateReason=reason,
                )
            ).rowcount
        )


def purge_finished(engine: sa.Engine, before: float) -> int:
    """Delete jobs that ended (sent, failed, cancelled) before ``before``; how many.

    Jobs of a message go with the message (retention); this takes the rest, such as
    a publication's, which belong to no message.
    """
    j = tables.push_job.c
    ended = (JobState.SENT, JobState.FAILED, JobState.CANCELLED)
    with transactions.begin(engine, "purging finished push jobs") as conn:
        return int(
            conn.execute(
                tables.push_job.delete().where(j.State.in_(ended), j.DoneAt < before)
            ).rowcount
        )
