"""The server's queues: submit with fan-out, fetch with leases, ack, receipts, recall.

Entry states (``ReceiveQueue.State``) and the only moves between them::

    queued ──fetch──▶ leased ──ack──▶ acked
      │                 │ ▲
      │                 └─┘ lease expired: fetched again
      └──recall──▶ withdrawn ◀──recall── leased

A message (``TransmitQueue.State``) is ``queued`` until every one of its entries is
acked (served) or withdrawn (recalled); it then becomes ``served`` and a ``receipt``
entry goes to the sender's queue. A refused message is kept as ``refused`` so that
a resubmission gets the same answer. A RECALL is ``served`` at once.

Every operation is one transaction and writes its rows with executemany. Several
server processes may share the database, so the read-then-update steps lock what
they read: on SQLite every transaction starts with ``BEGIN IMMEDIATE`` (see
:mod:`mpg.server.tables`); elsewhere fetch reads ``FOR UPDATE SKIP LOCKED`` and ack,
recall and receipts ``FOR UPDATE``. An operation that loses a race to another
process (a unique violation, a deadlock) runs again (:func:`mpg.server.tables.retrying`).

After a commit that queued entries, the ``listener`` is called with the accounts
that got them, so that a long-polling fetch in this process can answer at once; on
PostgreSQL the same transaction also sends them to every process
(:func:`mpg.server.tables.announce`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
import structlog

from mpg import errors, faults, server
from mpg.server import accounts, identity, tables
from mpg.wire import content, model, recipients

log = structlog.get_logger(__name__)

#: Queue order of the priority codes: E, H, N, L.
#: Unknown recipients a submit result names at most (a reason names ten and the count).
MAX_LISTED: Final = 100
PRIORITY_RANK: Final = {code: rank for rank, code in enumerate(model.PRIORITIES)}
DEFAULT_RANK: Final = PRIORITY_RANK[model.DEFAULT_PRIORITY]

Listener = Callable[[frozenset[str]], None]


class EntryState(enum.StrEnum):
    """``ReceiveQueue.State``."""

    QUEUED = "queued"  # waiting for its recipient to fetch it
    LEASED = "leased"  # fetched; delivered again when LeaseUntil passes without an ack
    ACKED = "acked"  # the recipient stored it: served
    WITHDRAWN = "withdrawn"  # recalled (before it was fetched, or while leased)


class MessageState(enum.StrEnum):
    """``TransmitQueue.State``."""

    QUEUED = "queued"  # some entries are not yet acked or withdrawn
    SERVED = "served"  # every entry is acked or withdrawn; the receipt is queued
    REFUSED = "refused"  # not accepted; kept only to answer a resubmission the same


class EventKind(enum.StrEnum):
    """``MessageEvent.Kind``: what happened to a message, for its sender's history."""

    RECEIVED = "received"  # accepted from the sender and queued for its recipients
    FETCHED = "fetched"  # leased to a recipient (again after a lease ran out)
    ACKNOWLEDGED = "acknowledged"  # the recipient stored it
    WITHDRAWN = "withdrawn"  # a recall took it from this recipient's queue
    RECALLED = "recalled"  # the sender recalled it
    SERVED = "served"  # every recipient served; the receipt is queued for the sender
    RECEIPT_FETCHED = "receipt_fetched"  # the sender's gateway fetched the receipt
    RECEIPT_ACKNOWLEDGED = "receipt_acknowledged"  # ... and stored it


def _event(
    message_id: str, at: float, kind: EventKind, account: str, detail: str = ""
) -> dict[str, Any]:
    return {
        "MessageId": message_id,
        "At": at,
        "Kind": str(kind),
        "Account": account,
        "Detail": detail[:200],
    }


class _Sequence:
    """Strictly increasing numbers near the clock in microseconds: arrival order."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> int:
        """Reserve ``count`` numbers and return the first."""
        with self._lock:
            first = max(self._last + 1, time.time_ns() // 1000)
            self._last = first + count - 1
            return first


@dataclasses.dataclass
class _Writes:
    """Rows one transaction inserts, collected first and written with executemany."""

    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attachments: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    used_stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    woken: set[str] = dataclasses.field(default_factory=set)

    def flush(self, conn: sa.Connection) -> None:
        """Insert what was collected and empty the lists."""
        if self.messages:
            conn.execute(tables.transmit_queue.insert(), self.messages)
        if self.attachments:
            conn.execute(tables.transmit_attachment.insert(), self.attachments)
        if self.entries:
            conn.execute(tables.receive_queue.insert(), self.entries)
        if self.events:
            conn.execute(tables.message_event.insert(), self.events)
        if self.used_stages:
            s = tables.upload_stage.c
            conn.execute(
                tables.upload_stage.delete().where(
                    s.SenderAccount == sa.bindparam("b_account"),
                    s.TxMessageId == sa.bindparam("b_tx"),
                    s.SeqNo == sa.bindparam("b_seq"),
                ),
                self.used_stages,
            )
        self.messages, self.attachments, self.entries, self.used_stages = [], [], [], []
        self.events = []


class QueueStore:
    """Submit, fetch, ack and recall on the server database (all synchronous)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Callable[[], float] = time.time,
        listener: Listener | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._listener = listener
        self._sequence = _Sequence()

    def set_listener(self, listener: Listener | None) -> None:
        """Call ``listener(accounts)`` after each commit that queued entries for them."""
        self._listener = listener

    # ------------------------------------------------------------------ submit

    def submit(
        self, sender_account: str, messages: Sequence[model.OutgoingMessage]
    ) -> list[model.SubmitResult]:
        """Accept (or refuse) a batch of messages in one transaction; one answer each.

        Idempotent per ``(sender_account, tx_message_id)``: the same message
        submitted again (same digest, :func:`mpg.server.identity.digest`) gets the
        first answer again (``served_at_once`` once its receipt was stored). A different
        message with the TxMessageId of an accepted one is refused; one that replaces
        a refused message is decided afresh.
        Names the sender may not use are refused (:func:`mpg.server.identity.refusal`).
        Every refusal is that message's alone: the others of the batch go on.
        """
        results, woken = tables.retrying(lambda: self._submit_once(sender_account, messages))
        faults.reach(faults.SERVER_SUBMIT_COMMITTED)
        self._wake(woken)
        return results

    def _submit_once(
        self, sender_account: str, messages: Sequence[model.OutgoingMessage]
    ) -> tuple[list[model.SubmitResult], set[str]]:
        """One attempt at :meth:`submit`: the results in order and who to wake.

        Another process submitting the same TxMessageId at the same moment makes the
        insert fail on the unique (SenderAccount, TxMessageId); the next attempt then
        finds that process's row and answers with its result.
        """
        now = self._clock()
        results: dict[str, model.SubmitResult] = {}
        writes = _Writes()
        with tables.transaction(self._engine) as conn:
            previous = self._previous(conn, sender_account, [m.tx_message_id for m in messages])
            digests = [identity.digest(m) for m in messages]
            fresh: list[model.OutgoingMessage] = []
            first: dict[str, str] = {}  # TxMessageId -> digest of its first occurrence
            replaced: list[str] = []
            served: dict[str, str] = {}  # MessageId -> TxMessageId, resubmitted when served
            for msg, digest in zip(messages, digests, strict=True):
                tx = msg.tx_message_id
                if tx in first:
                    continue
                first[tx] = digest
                earlier = previous.get(tx)
                if earlier is None:
                    fresh.append(msg)
                elif earlier.ContentDigest in (None, digest):
                    results[tx] = _result_from_json(earlier.SubmitResult)
                    if earlier.State == MessageState.SERVED:
                        served[earlier.MessageId] = tx
                elif earlier.State == MessageState.REFUSED:
                    replaced.append(tx)  # a corrected message after a refusal
                    fresh.append(msg)
                else:
                    results[tx] = _reused(tx, earlier.MessageId)
            self._forget_refused(conn, sender_account, replaced)
            # Its receipt was stored already: an Outbox row inserted again under the
            # same id would wait at 20 for a receipt that never comes again.
            for message_id in self._receipts_stored(conn, list(served)):
                tx = served[message_id]
                results[tx] = dataclasses.replace(results[tx], served_at_once=True)
            kinds = self._kinds(
                conn,
                [sender_account]
                + [name for m in fresh if not _is_server_agent(m) for name in _lookup_names(m)],
            )
            own_kind = kinds.get(sender_account, "")
            checked: list[model.OutgoingMessage] = []
            for msg in fresh:
                reason = identity.refusal(sender_account, own_kind, msg)
                if not reason:
                    checked.append(msg)
                    continue
                results[msg.tx_message_id] = self._refuse(msg, sender_account, reason, writes, now)
            plain = [m for m in checked if not _is_server_agent(m)]
            stages = self._stages(conn, sender_account, [m.tx_message_id for m in plain])
            for msg in plain:
                results[msg.tx_message_id] = self._plan_message(
                    msg, sender_account, kinds, stages, writes, now
                )
            writes.flush(conn)
            # Recalls go after the plain messages: they read and change committed rows.
            for msg in checked:
                if _is_server_agent(msg):
                    results[msg.tx_message_id] = self._recall(
                        conn, msg, sender_account, writes, now
                    )
                    writes.flush(conn)
            tables.announce(conn, writes.woken)
        answers = [
            results[m.tx_message_id]
            if first[m.tx_message_id] == digest
            else _reused(m.tx_message_id, results[m.tx_message_id].message_id)
            for m, digest in zip(messages, digests, strict=True)
        ]
        return answers, writes.woken

    @staticmethod
    def _previous(conn: sa.Connection, sender: str, tx_ids: list[str]) -> dict[str, tables.Row]:
        """The earlier messages of ``sender`` with these TxMessageIds, by TxMessageId."""
        t = tables.transmit_queue.c
        found: dict[str, tables.Row] = {}
        for part in tables.chunks(sorted(set(tx_ids))):
            rows = conn.execute(
                sa.select(
                    t.TxMessageId, t.MessageId, t.State, t.ContentDigest, t.SubmitResult
                ).where(t.SenderAccount == sender, t.TxMessageId.in_(part))
            )
            found.update({row.TxMessageId: row for row in rows})
        return found

    @staticmethod
    def _receipts_stored(conn: sa.Connection, message_ids: list[str]) -> set[str]:
        """The messages among ``message_ids`` whose sender acknowledged their receipt."""
        r = tables.receive_queue.c
        found: set[str] = set()
        for part in tables.chunks(message_ids):
            found.update(
                conn.execute(
                    sa.select(r.MessageId).where(
                        r.MessageId.in_(part),
                        r.Kind == model.DeliveryKind.RECEIPT,
                        r.State == EntryState.ACKED,
                    )
                ).scalars()
            )
        return found

    @staticmethod
    def _forget_refused(conn: sa.Connection, sender: str, tx_ids: list[str]) -> None:
        """Delete refused messages a corrected message replaces (they hold nothing else)."""
        t = tables.transmit_queue.c
        for part in tables.chunks(tx_ids):
            conn.execute(
                tables.transmit_queue.delete().where(
                    t.SenderAccount == sender,
                    t.TxMessageId.in_(part),
                    t.State == MessageState.REFUSED,
                )
            )

    @staticmethod
    def _refuse(
        msg: model.OutgoingMessage,
        sender: str,
        reason: str,
        writes: _Writes,
        now: float,
        *,
        unknown: tuple[str, ...] = (),
    ) -> model.SubmitResult:
        """Refuse ``msg`` for ``reason``, kept so that a resubmission gets the same answer."""
        result = model.SubmitResult(msg.tx_message_id, False, unknown=unknown, reason=reason)
        writes.messages.append(
            _message_row(msg, sender, str(uuid.uuid4()), now, 0, MessageState.REFUSED, result)
        )
        log.info("message_refused", account=sender, tx=msg.tx_message_id, reason=reason)
        return result

    @staticmethod
    def _kinds(conn: sa.Connection, names: list[str]) -> dict[str, str]:
        a = tables.account.c
        found: dict[str, str] = {}
        for part in tables.chunks(sorted(set(names))):
            rows = conn.execute(
                sa.select(a.AccountId, a.Kind).where(
                    a.AccountId.in_(part), a.Disabled == sa.false()
                )
            )
            found.update({row.AccountId: row.Kind for row in rows})
        return found

    @staticmethod
    def _stages(
        conn: sa.Connection, sender: str, tx_ids: list[str]
    ) -> dict[tuple[str, int], tables.Row]:
        s = tables.upload_stage.c
        found: dict[tuple[str, int], tables.Row] = {}
        for part in tables.chunks(sorted(set(tx_ids))):
            rows = conn.execute(
                sa.select(tables.upload_stage).where(
                    s.SenderAccount == sender, s.TxMessageId.in_(part)
                )
            )
            found.update({(row.TxMessageId, row.SeqNo): row for row in rows})
        return found

    def _plan_message(
        self,
        msg: model.OutgoingMessage,
        sender: str,
        kinds: Mapping[str, str],
        stages: Mapping[tuple[str, int], tables.Row],
        writes: _Writes,
        now: float,
    ) -> model.SubmitResult:
        """Decide one plain message and add its rows to ``writes``."""
        tx = msg.tx_message_id
        allowed = accounts.DEVICE_KINDS if msg.receiver_type == "D" else accounts.USER_KINDS
        to, bcc = _qualified(msg)
        known: list[recipients.Recipient] = []
        unknown: list[str] = []
        for rcpt in recipients.expand(to, bcc):
            name = _stored_name(rcpt.account, msg.receiver_type)
            if kinds.get(name) in allowed:
                known.append(dataclasses.replace(rcpt, account=name))
            else:
                unknown.append(rcpt.account)
        reason = ""
        if not known:
            reason = "no known recipient: " + _listed(unknown) if unknown else "no recipient"
        for info in msg.attachments:
            stage = stages.get((tx, info.seq_no))
            if stage is None or not stage.Complete:
                reason = reason or f"attachment {info.seq_no} is not uploaded completely"
            elif stage.Size != info.file_size or stage.Sha256 != info.sha256:
                reason = reason or f"attachment {info.seq_no} does not match the upload"
        if reason:
            return self._refuse(
                msg, sender, reason, writes, now, unknown=tuple(unknown[:MAX_LISTED])
            )
        message_id = str(uuid.uuid4())
        result = model.SubmitResult(
            tx,
            True,
            message_id=message_id,
            recipients=len(known),
            unknown=tuple(unknown[:MAX_LISTED]),
        )
        writes.messages.append(
            _message_row(msg, sender, message_id, now, len(known), MessageState.QUEUED, result)
        )
        detail = f"queued for {len(known)} recipient(s)"
        if unknown:
            detail += f"; {len(unknown)} unknown"
        writes.events.append(_event(message_id, now, EventKind.RECEIVED, sender, detail))
        rank = PRIORITY_RANK.get(msg.priority, DEFAULT_RANK)
        first = self._sequence.take(len(known))
        for n, rcpt in enumerate(known):
            writes.entries.append(
                _entry_row(message_id, rcpt.account, rank, first + n, visible_bcc=rcpt.visible_bcc)
            )
            writes.woken.add(rcpt.account)
        for info in msg.attachments:
            stage = stages[(tx, info.seq_no)]
            writes.attachments.append(
                {
                    "MessageId": message_id,
                    "SeqNo": info.seq_no,
                    "FileName": info.file_name,
                    "FileType": info.file_type,
                    "FileSize": info.file_size,
                    "DownloadFlag": info.download_flag,
                    "Sha256": info.sha256,
                    "BlobPath": stage.Path,
                }
            )
            writes.used_stages.append({"b_account": sender, "b_tx": tx, "b_seq": info.seq_no})
        log.info(
            "message_accepted",
            account=sender,
            tx=tx,
            message_id=message_id,
            recipients=len(known),
            unknown=len(unknown),
            attachments=len(msg.attachments),
        )
        return result

    # ------------------------------------------------------------------ recall

    def _recall(
        self,
        conn: sa.Connection,
        msg: model.OutgoingMessage,
        sender: str,
        writes: _Writes,
        now: float,
    ) -> model.SubmitResult:
        """Handle a message to ``psereceiver``: only a RECALL of the sender's own message."""
        tx = msg.tx_message_id
        reason = ""
        recalled_id = ""
        if msg.content_type != "RECALL" or len(msg.receivers) + len(msg.bcc) != 1:
            reason = f"{model.SERVER_AGENT} accepts only a RECALL addressed to it alone"
        else:
            try:
                recalled_id = content.parse_recall(msg.content)
            except (errors.WireError, errors.ValidationError) as exc:
                reason = f"RECALL content: {exc}"
        target = None
        if not reason:
            t = tables.transmit_queue.c
            target = conn.execute(
                sa.select(t.MessageId, t.SenderAccount, t.State).where(t.MessageId == recalled_id)
            ).first()
            if target is None or target.State == MessageState.REFUSED:
                reason = f"no message {recalled_id} to recall"
            elif target.SenderAccount != sender:
                reason = f"message {recalled_id} was not sent by {sender}"
        if reason or target is None:
            return self._refuse(msg, sender, reason, writes, now)
        message_id = str(uuid.uuid4())

        r = tables.receive_queue.c
        # Locked, so that an ack of a leased entry racing this recall in another
        # process waits and then finds it withdrawn (never counted both ways).
        entries = conn.execute(
            sa.select(r.EntryId, r.Recipient, r.State)
            .where(r.MessageId == recalled_id, r.Kind == model.DeliveryKind.MESSAGE)
            .order_by(r.EntryId)
            .with_for_update()
        ).all()
        withdrawn = [e.EntryId for e in entries if e.State == EntryState.QUEUED]
        leased = [e.EntryId for e in entries if e.State == EntryState.LEASED]
        # Whoever fetched it (leased or acked) may hold it: they get the RECALL.
        notified = list(
            dict.fromkeys(
                e.Recipient for e in entries if e.State in (EntryState.LEASED, EntryState.ACKED)
            )
        )
        for part in tables.chunks(withdrawn + leased):
            conn.execute(
                tables.receive_queue.update()
                .where(
                    r.EntryId.in_(part),
                    r.State.in_([EntryState.QUEUED, EntryState.LEASED]),
                )
                .values(State=EntryState.WITHDRAWN, LeaseUntil=None)
            )
        faults.reach(faults.SERVER_RECALL_WITHDRAWN)
        if withdrawn or leased:
            t = tables.transmit_queue.c
            conn.execute(
                tables.transmit_queue.update()
                .where(t.MessageId == recalled_id)
                .values(RecalledCount=t.RecalledCount + len(withdrawn) + len(leased))
            )
        taken = set(withdrawn) | set(leased)
        writes.events += [
            _event(recalled_id, now, EventKind.WITHDRAWN, e.Recipient)
            for e in entries
            if e.EntryId in taken
        ]
        writes.events.append(
            _event(
                recalled_id,
                now,
                EventKind.RECALLED,
                sender,
                f"withdrawn from {len(taken)}, RECALL sent to {len(notified)}",
            )
        )
        outcome = model.RecallOutcome(recalled_id, withdrawn=len(withdrawn), notified=len(notified))
        result = model.SubmitResult(
            tx,
            True,
            message_id=message_id,
            recipients=len(notified),
            served_at_once=True,
            recall=outcome,
        )
        writes.messages.append(
            _message_row(msg, sender, message_id, now, len(notified), MessageState.SERVED, result)
        )
        rank = PRIORITY_RANK.get(msg.priority, DEFAULT_RANK)
        first = self._sequence.take(len(notified))
        for n, recipient in enumerate(notified):
            writes.entries.append(_entry_row(message_id, recipient, rank, first + n))
            writes.woken.add(recipient)
        writes.flush(conn)
        writes.woken.update(self._complete(conn, [recalled_id]))
        log.info(
            "recall_done",
            account=sender,
            tx=tx,
            message_id=message_id,
            recalled=recalled_id,
            withdrawn=len(withdrawn),
            notified=len(notified),
        )
        return result

    # ------------------------------------------------------------------ receipts

    def _complete(self, conn: sa.Connection, message_ids: Iterable[str]) -> set[str]:
        """Mark fully served messages ``served`` and queue their receipts.

        Returns the sender accounts that got a receipt.
        """
        t = tables.transmit_queue.c
        done: list[tables.Row] = []
        for part in tables.chunks(sorted(set(message_ids))):
            done.extend(
                conn.execute(
                    sa.select(
                        t.MessageId,
                        t.SenderAccount,
                        t.TxMessageId,
                        t.Priority,
                        t.ServedCount,
                        t.RecalledCount,
                    )
                    .where(
                        t.MessageId.in_(part),
                        t.State == MessageState.QUEUED,
                        t.ServedCount + t.RecalledCount >= t.RecipientCount,
                    )
                    # The caller's count update already locks these rows; asking again
                    # keeps the receipt single even if a caller ever did not.
                    .with_for_update()
                )
            )
        if not done:
            return set()
        faults.reach(faults.SERVER_BEFORE_RECEIPTS)
        for part in tables.chunks([row.MessageId for row in done]):
            conn.execute(
                tables.transmit_queue.update()
                .where(t.MessageId.in_(part), t.State == MessageState.QUEUED)
                .values(State=MessageState.SERVED)
            )
        now = self._clock()
        conn.execute(
            tables.message_event.insert(),
            [
                _event(
                    row.MessageId,
                    now,
                    EventKind.SERVED,
                    row.SenderAccount,
                    f"served {row.ServedCount}, recalled {row.RecalledCount}",
                )
                for row in done
            ],
        )
        first = self._sequence.take(len(done))
        conn.execute(
            tables.receive_queue.insert(),
            [
                _entry_row(
                    row.MessageId,
                    row.SenderAccount,
                    PRIORITY_RANK.get(row.Priority or "", DEFAULT_RANK),
                    first + n,
                    kind=model.DeliveryKind.RECEIPT,
                    tx_message_id=row.TxMessageId,
                    served=row.ServedCount,
                    recalled=row.RecalledCount,
                )
                for n, row in enumerate(done)
            ],
        )
        return {row.SenderAccount for row in done}

    # ------------------------------------------------------------------ fetch

    def fetch(self, account: str, max_items: int, lease_seconds: float) -> model.FetchBatch:
        """Lease up to ``max_items`` of ``account``'s entries, most urgent and oldest first.

        Entries whose earlier lease ran out without an ack are delivered again.
        """
        if max_items <= 0:
            return model.FetchBatch()
        return tables.retrying(lambda: self._fetch_once(account, max_items, lease_seconds))

    def _fetch_once(self, account: str, max_items: int, lease_seconds: float) -> model.FetchBatch:
        """One attempt at :meth:`fetch`.

        Rows are read ``FOR UPDATE SKIP LOCKED``: another process leasing for the
        same account at the same moment takes other entries, never these.
        """
        now = self._clock()
        r = tables.receive_queue.c
        columns = (
            r.EntryId,
            r.MessageId,
            r.Kind,
            r.VisibleBcc,
            r.PriorityRank,
            r.CreatedSeq,
            r.TxMessageId,
            r.Served,
            r.Recalled,
        )
        order = (r.PriorityRank, r.CreatedSeq)
        with tables.transaction(self._engine) as conn:
            queued = conn.execute(
                sa.select(*columns)
                .where(r.Recipient == account, r.State == EntryState.QUEUED)
                .order_by(*order)
                .limit(max_items)
                .with_for_update(skip_locked=True)
            ).all()
            expired = conn.execute(
                sa.select(*columns)
                .where(
                    r.Recipient == account,
                    r.State == EntryState.LEASED,
                    r.LeaseUntil < now,
                )
                .order_by(*order)
                .limit(max_items)
                .with_for_update(skip_locked=True)
            ).all()
            entries = sorted([*queued, *expired], key=lambda e: (e.PriorityRank, e.CreatedSeq))
            entries = entries[:max_items]
            redelivered = len({e.EntryId for e in expired} & {e.EntryId for e in entries})
            if not entries:
                return model.FetchBatch()
            for part in tables.chunks([e.EntryId for e in entries]):
                conn.execute(
                    tables.receive_queue.update()
                    .where(r.EntryId.in_(part))
                    .values(State=EntryState.LEASED, LeaseUntil=now + lease_seconds)
                )
            expired_ids = {e.EntryId for e in expired}
            conn.execute(
                tables.message_event.insert(),
                [
                    _event(
                        e.MessageId,
                        now,
                        EventKind.FETCHED
                        if e.Kind == model.DeliveryKind.MESSAGE
                        else EventKind.RECEIPT_FETCHED,
                        account,
                        "again: the earlier lease ran out" if e.EntryId in expired_ids else "",
                    )
                    for e in entries
                ],
            )
            message_ids = [e.MessageId for e in entries if e.Kind == model.DeliveryKind.MESSAGE]
            messages = self._messages(conn, message_ids)
            files = self._attachment_infos(conn, message_ids)
        deliveries: list[model.Delivery] = []
        receipts: list[model.Receipt] = []
        for e in entries:
            if e.Kind == model.DeliveryKind.RECEIPT:
                receipts.append(
                    model.Receipt(e.EntryId, e.TxMessageId, e.MessageId, e.Served, e.Recalled)
                )
            else:
                deliveries.append(
                    _delivery(e, account, messages[e.MessageId], files.get(e.MessageId, ()))
                )
        log.info(
            "entries_fetched",
            account=account,
            deliveries=len(deliveries),
            receipts=len(receipts),
            redelivered=redelivered,
        )
        return model.FetchBatch(tuple(deliveries), tuple(receipts))

    @staticmethod
    def _messages(conn: sa.Connection, message_ids: list[str]) -> dict[str, tables.Row]:
        t = tables.transmit_queue.c
        found: dict[str, tables.Row] = {}
        for part in tables.chunks(sorted(set(message_ids))):
            rows = conn.execute(sa.select(tables.transmit_queue).where(t.MessageId.in_(part)))
            found.update({row.MessageId: row for row in rows})
        return found

    @staticmethod
    def _attachment_infos(
        conn: sa.Connection, message_ids: list[str]
    ) -> dict[str, tuple[model.AttachmentInfo, ...]]:
        a = tables.transmit_attachment.c
        found: dict[str, list[model.AttachmentInfo]] = collections.defaultdict(list)
        for part in tables.chunks(sorted(set(message_ids))):
            rows = conn.execute(
                sa.select(tables.transmit_attachment)
                .where(a.MessageId.in_(part))
                .order_by(a.MessageId, a.SeqNo)
            )
            for row in rows:
                found[row.MessageId].append(
                    model.AttachmentInfo(
                        row.SeqNo,
                        row.FileName or "",
                        row.FileType or "",
                        row.FileSize,
                        row.DownloadFlag,
                        row.Sha256,
                    )
                )
        return {message_id: tuple(infos) for message_id, infos in found.items()}

    # ------------------------------------------------------------------ history

    def history(self, sender: str, tx_message_id: str) -> tuple[str, list[model.ServerEvent]]:
        """``(MessageId, events)`` of a message ``sender`` submitted, oldest first.

        Raises :class:`mpg.server.NotFound` when ``sender`` has no accepted message
        with that TxMessageId (someone else's message is not found either).
        """
        t = tables.transmit_queue.c
        e = tables.message_event.c
        with tables.transaction(self._engine) as conn:
            message_id = conn.execute(
                sa.select(t.MessageId).where(
                    t.SenderAccount == sender,
                    t.TxMessageId == tx_message_id,
                    t.State != MessageState.REFUSED,
                )
            ).scalar()
            if message_id is None:
                raise server.NotFound(f"no accepted message {tx_message_id} from {sender}")
            rows = conn.execute(
                sa.select(e.At, e.Kind, e.Account, e.Detail)
                .where(e.MessageId == message_id)
                .order_by(e.Id)
            ).all()
        return str(message_id), [
            model.ServerEvent(_iso(row.At), str(row.Kind), str(row.Account), str(row.Detail))
            for row in rows
        ]

    # ------------------------------------------------------------------ depths

    def depths(self) -> dict[str, int]:
        """Entries waiting per recipient (queued or leased, not yet acknowledged)."""
        r = tables.receive_queue.c
        query = (
            sa.select(r.Recipient, sa.func.count())
            .where(r.State.in_([EntryState.QUEUED, EntryState.LEASED]))
            .group_by(r.Recipient)
        )
        with tables.transaction(self._engine) as conn:
            return {str(recipient): int(n) for recipient, n in conn.execute(query)}

    # ------------------------------------------------------------------ ack

    def ack(self, account: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge ``account``'s entries; return how many of them are now done.

        Entries of other accounts are ignored; acknowledging twice is harmless.
        When the last entry of a message is acked, its sender gets a receipt.
        """
        rows, moving, woken = tables.retrying(lambda: self._ack_once(account, entry_ids))
        faults.reach(faults.SERVER_ACK_COMMITTED)
        self._wake(woken)
        done = sum(1 for row in rows if row.State != EntryState.QUEUED)
        log.info("entries_acked", account=account, acked=len(moving), done=done)
        return done

    def _ack_once(
        self, account: str, entry_ids: Sequence[str]
    ) -> tuple[list[tables.Row], list[tables.Row], set[str]]:
        """One attempt at :meth:`ack`: the entries found, those moved to acked, who to wake.

        The entries are locked (in EntryId order, so two acks cannot deadlock) before
        their state is read: an ack or recall of the same entry in another process
        waits, then sees it acked and counts nothing. The sender's counters grow in
        SQL (``ServedCount + n``), never from a value read earlier.
        """
        r = tables.receive_queue.c
        t = tables.transmit_queue.c
        woken: set[str] = set()
        with tables.transaction(self._engine) as conn:
            rows: list[tables.Row] = []
            for part in tables.chunks(sorted(set(entry_ids))):
                rows.extend(
                    conn.execute(
                        sa.select(r.EntryId, r.MessageId, r.Kind, r.State)
                        .where(r.EntryId.in_(part), r.Recipient == account)
                        .order_by(r.EntryId)
                        .with_for_update()
                    )
                )
            moving = [row for row in rows if row.State == EntryState.LEASED]
            for part in tables.chunks([row.EntryId for row in moving]):
                conn.execute(
                    tables.receive_queue.update()
                    .where(r.EntryId.in_(part), r.State == EntryState.LEASED)
                    .values(State=EntryState.ACKED, LeaseUntil=None)
                )
            if moving:
                now = self._clock()
                conn.execute(
                    tables.message_event.insert(),
                    [
                        _event(
                            row.MessageId,
                            now,
                            EventKind.ACKNOWLEDGED
                            if row.Kind == model.DeliveryKind.MESSAGE
                            else EventKind.RECEIPT_ACKNOWLEDGED,
                            account,
                        )
                        for row in moving
                    ],
                )
            served = collections.Counter(
                row.MessageId for row in moving if row.Kind == model.DeliveryKind.MESSAGE
            )
            if served:
                conn.execute(
                    tables.transmit_queue.update()
                    .where(t.MessageId == sa.bindparam("b_message"))
                    .values(ServedCount=t.ServedCount + sa.bindparam("b_count")),
                    [{"b_message": mid, "b_count": n} for mid, n in served.items()],
                )
                woken = self._complete(conn, served)
            tables.announce(conn, woken)
        return rows, moving, woken

    def _wake(self, accounts_: set[str]) -> None:
        if accounts_ and self._listener is not None:
            self._listener(frozenset(accounts_))


# ---------------------------------------------------------------------- helpers


def _iso(at: float) -> str:
    """Unix time as ISO-8601 UTC with microseconds (the gateway history's form)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_server_agent(msg: model.OutgoingMessage) -> bool:
    """True for a message addressed to the server's own receiving agent."""
    return any(name.strip().lower() == model.SERVER_AGENT for name in (*msg.receivers, *msg.bcc))


def _qualified(msg: model.OutgoingMessage) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """To and Bcc lists with user accounts qualified by the message's SourceDomain."""
    if msg.receiver_type == "D":
        return msg.receivers, msg.bcc
    return (
        tuple(recipients.qualify(name, msg.source_domain) for name in msg.receivers),
        tuple(recipients.qualify(name, msg.source_domain) for name in msg.bcc),
    )


def _stored_name(name: str, receiver_type: str) -> str:
    return accounts.normalize(name, "device" if receiver_type == "D" else "user")


def _lookup_names(msg: model.OutgoingMessage) -> list[str]:
    to, bcc = _qualified(msg)
    return [_stored_name(name, msg.receiver_type) for name in (*to, *bcc)]


def _message_row(
    msg: model.OutgoingMessage,
    sender: str,
    message_id: str,
    now: float,
    recipient_count: int,
    state: MessageState,
    result: model.SubmitResult,
) -> dict[str, Any]:
    to, bcc = _qualified(msg)
    return {
        "MessageId": message_id,
        "SenderAccount": sender,
        "TxMessageId": msg.tx_message_id,
        "AppCode": msg.app_code,
        "SourceDomain": msg.source_domain,
        # Recipients see who authenticated, never a name the client wrote.
        "AgentSender": sender,
        "Sender": identity.sender_shown(sender, msg),
        "ReceiverType": msg.receiver_type,
        "ReceiverList": ";".join(to),
        "BccList": ";".join(bcc),
        "Subject": msg.subject,
        "Content": msg.content,
        "ContentType": msg.content_type,
        "AlertFlag": msg.alert_flag,
        "Priority": msg.priority,
        "Keywords": msg.keywords,
        "TransmitTime": msg.transmit_time,
        "ReceivedAt": now,
        "RecipientCount": recipient_count,
        "ServedCount": 0,
        "RecalledCount": 0,
        "State": state,
        "SubmitResult": _result_to_json(result),
        "ContentDigest": identity.digest(msg),
    }


def _entry_row(
    message_id: str,
    recipient: str,
    rank: int,
    seq: int,
    *,
    kind: model.DeliveryKind = model.DeliveryKind.MESSAGE,
    visible_bcc: str = "",
    tx_message_id: str | None = None,
    served: int | None = None,
    recalled: int | None = None,
) -> dict[str, Any]:
    return {
        "EntryId": str(uuid.uuid4()),
        "MessageId": message_id,
        "Recipient": recipient,
        "Kind": kind,
        "VisibleBcc": visible_bcc,
        "PriorityRank": rank,
        "State": EntryState.QUEUED,
        "LeaseUntil": None,
        "CreatedSeq": seq,
        "TxMessageId": tx_message_id,
        "Served": served,
        "Recalled": recalled,
    }


def _delivery(
    entry: tables.Row,
    owner: str,
    msg: tables.Row,
    files: tuple[model.AttachmentInfo, ...],
) -> model.Delivery:
    return model.Delivery(
        rx_message_id=entry.EntryId,
        message_id=msg.MessageId,
        app_code=msg.AppCode or "",
        source_domain=msg.SourceDomain or "",
        agent_sender=msg.AgentSender or "",
        sender=msg.Sender or "",
        owner=owner,
        receiver_type=msg.ReceiverType,
        receiver_list=msg.ReceiverList or "",
        bcc_list=entry.VisibleBcc or "",
        subject=msg.Subject or "",
        content=msg.Content or "",
        content_type=msg.ContentType,
        alert_flag=bool(msg.AlertFlag),
        priority=msg.Priority or model.DEFAULT_PRIORITY,
        keywords=msg.Keywords or "",
        transmit_time=msg.TransmitTime,
        attachments=files,
    )


def _reused(tx_message_id: str, message_id: str) -> model.SubmitResult:
    """The refusal of a different message under an earlier message's TxMessageId."""
    return model.SubmitResult(
        tx_message_id, False, reason=identity.reused_reason(tx_message_id, message_id)
    )


def _result_to_json(result: model.SubmitResult) -> str:
    return json.dumps(dataclasses.asdict(result), separators=(",", ":"), ensure_ascii=False)


def _result_from_json(text: str) -> model.SubmitResult:
    data = json.loads(text)
    recall = data.pop("recall")
    return model.SubmitResult(
        **{**data, "unknown": tuple(data["unknown"])},
        recall=model.RecallOutcome(**recall) if recall else None,
    )


def _listed(names: Sequence[str], shown: int = 10) -> str:
    """The first ``shown`` names joined with ';', and how many more there are."""
    text = ";".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
