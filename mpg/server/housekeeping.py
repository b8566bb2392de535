"""Server housekeeping: forget messages that are done and older than the retention.

A message goes when it was received more than ``server.retention_days`` ago and is
finished: served (every recipient acknowledged or withdrawn) or refused, with no
queue entry of it still waiting and no receipt its sender has not stored yet. Its
queue entries, receipt, events, push jobs, keyword rows, attachment rows and
attachment files go with it; push jobs of no message (publications) and the records
of device removals (``DeviceRemoval``, for ``mpg server explain``) go once they are
that old.
Rows are deleted in batches, each its own transaction; files are removed after the
commit, so a crash leaves at worst an orphan file, never a row without its file.

:func:`purge_stages` forgets staged uploads that no submit took over: a stage whose
file was last written more than ``server.upload_stage_ttl`` seconds ago is deleted
with its file (or folder of segments), so an abandoned upload no longer counts
against its account's quota.

:func:`expire_push_tokens` removes push tokens their devices did not refresh for
``server.push_token_max_age_days`` (docs/push.md, "Token expiry").
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
import structlog

from mpg.db import transactions
from mpg.server import blobs, receipts, states, tables
from mpg.server.push import jobs

log = structlog.get_logger(__name__)

#: Messages deleted per transaction.
BATCH: Final = 500
_DAY: Final = 86400.0


@dataclasses.dataclass(slots=True)
class Purged:
    """What one run deleted."""

    messages: int = 0
    files: int = 0


def purge(engine: sa.Engine, keep_days: float, *, clock: Callable[[], float] = time.time) -> Purged:
    """Delete finished messages received more than ``keep_days`` ago; see the module."""
    cutoff = clock() - keep_days * _DAY
    t = tables.transmit_queue.c
    r = tables.receive_queue.c
    a = tables.transmit_attachment.c
    e = tables.message_event.c
    waiting = sa.exists().where(
        r.MessageId == t.MessageId,
        r.State.in_(states.WAITING),
    )
    done = Purged()
    while True:
        with transactions.begin(engine, "purging finished messages") as conn:
            ids = list(
                conn.execute(
                    sa.select(t.MessageId)
                    .where(
                        t.ReceivedAt < cutoff,
                        t.State.in_(states.FINISHED),
                        ~waiting,
                        ~receipts.waiting(t.MessageId),
                    )
                    .order_by(t.ReceivedAt)
                    .limit(BATCH)
                ).scalars()
            )
            paths = [
                str(p)
                for p in conn.execute(sa.select(a.BlobPath).where(a.MessageId.in_(ids))).scalars()
            ]
            for table, column in (
                (tables.receive_queue, r.MessageId),
                (tables.receipt_queue, tables.receipt_queue.c.MessageId),
                (tables.message_event, e.MessageId),
                (tables.push_job, tables.push_job.c.MessageId),
                (tables.message_keyword, tables.message_keyword.c.MessageId),
                (tables.transmit_attachment, a.MessageId),
                (tables.transmit_queue, t.MessageId),
            ):
                conn.execute(sa.delete(table).where(column.in_(ids)))
        for path in paths:
            try:
                pathlib.Path(path).unlink()
                done.files += 1
            except FileNotFoundError:
                pass  # already gone (a run that crashed after its commit)
        done.messages += len(ids)
        if len(ids) < BATCH:
            break
    pushes = jobs.purge_finished(engine, cutoff)
    with transactions.begin(engine, "purging old device removals") as conn:
        removals = conn.execute(
            tables.device_removal.delete().where(tables.device_removal.c.RemovedAt < cutoff)
        ).rowcount
    if done.messages or pushes or removals:
        log.info(
            "server_purged",
            messages=done.messages,
            files=done.files,
            push_jobs=pushes,
            device_removals=removals,
            keep_days=keep_days,
        )
    return done


def expire_push_tokens(
    engine: sa.Engine, max_age_days: float, *, clock: Callable[[], float] = time.time
) -> int:
    """Remove the push tokens devices did not refresh for ``max_age_days`` (with the reason)."""
    expired = jobs.expire_tokens(engine, max_age_days, clock())
    if expired:
        log.info("push_tokens_expired", devices=expired, max_age_days=max_age_days)
    return expired


def purge_stages(
    engine: sa.Engine,
    ttl_seconds: float,
    *,
    spool: pathlib.Path | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Delete staged uploads whose file was last written over ``ttl_seconds`` ago.

    The file's modification time is the stage's last activity (each chunk writes it);
    a stage whose file is gone is deleted too. A row is deleted only as it was read
    (same path), and its file is removed only if no message took it over meanwhile.
    Files in ``spool`` (upload bodies while they arrive) that old were left by a
    process that died. Returns the number of stages deleted.
    """
    cutoff = clock() - ttl_seconds
    if spool is not None and spool.is_dir():
        for orphan in spool.iterdir():
            if _last_written(str(orphan)) < cutoff:
                orphan.unlink(missing_ok=True)
    s = tables.upload_stage.c
    a = tables.transmit_attachment.c
    with transactions.begin(engine, "listing upload stages") as conn:
        stages = conn.execute(sa.select(s.SenderAccount, s.TxMessageId, s.SeqNo, s.Path)).all()
    stale = [row for row in stages if _last_written(row.Path) < cutoff]
    deleted = 0
    for part in range(0, len(stale), BATCH):
        gone: list[str] = []
        with transactions.begin(engine, "deleting abandoned upload stages") as conn:
            for row in stale[part : part + BATCH]:
                count = conn.execute(
                    tables.upload_stage.delete().where(
                        s.SenderAccount == row.SenderAccount,
                        s.TxMessageId == row.TxMessageId,
                        s.SeqNo == row.SeqNo,
                        s.Path == row.Path,
                    )
                ).rowcount
                taken = conn.execute(sa.select(a.MessageId).where(a.BlobPath == row.Path)).first()
                if count == 1 and taken is None:
                    gone.append(row.Path)
                deleted += count
        for path in gone:
            blobs.remove(path)  # a folder of segments, or a completed upload's file
    if deleted:
        log.info("stages_purged", stages=deleted, ttl_seconds=ttl_seconds)
    return deleted


def _last_written(path: str) -> float:
    """The file's modification time; 0 (long ago) when it is gone."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
