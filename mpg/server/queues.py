"""The server's queue store: submit with fan-out, fetch with leases, ack, receipts, recall.

This module is the SQL: what to read, lock and write in each transaction. What the
rules decide (who gets a message, what a recall withdraws) is
:mod:`mpg.server.fanout`; how rows are built and read is :mod:`mpg.server.rows`;
which state changes are allowed is :mod:`mpg.server.states`, asked before every
statement that creates or moves a row (``docs/server.md`` draws them).

A message is ``queued`` until every one of its entries is acked (served) or
withdrawn (recalled); it then becomes ``served`` and its sender's receipt is queued
(``ReceiptQueue``, :mod:`mpg.server.receipts`), fetched beside the sender's entries.
A refused message is kept as ``refused`` so that a resubmission gets the same answer.
A RECALL is ``served`` at once.

Every operation is one transaction and writes its rows with executemany. Several
server processes may share the database, so the read-then-update steps lock what
they read: on SQLite every transaction starts with ``BEGIN IMMEDIATE``
(:func:`mpg.db.transactions.begin`); elsewhere fetch reads ``FOR UPDATE SKIP
LOCKED`` and ack, recall and receipts ``FOR UPDATE``. An operation that loses a race
to another process (a unique violation, a deadlock) runs again
(:func:`mpg.db.transactions.retrying`).

Callers name accounts by their stored names; the rows hold their pseudonyms and
sealed personal text, which :mod:`mpg.server.rows` maps both ways
(:mod:`mpg.server.vault`).

After a commit that queued entries, the ``listener`` is called with the AccountIds
that got them, so that a long-polling fetch in this process can answer at once; on
PostgreSQL the same transaction also sends them to every process
(:func:`mpg.server.tables.announce`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
import structlog

from mpg import errors, faults, logs
from mpg.db import bulk, plans, timeids, transactions
from mpg.server import (
    accounts,
    fanout,
    identity,
    openedcache,
    receipts,
    rows,
    states,
    tables,
    tracking,
)
from mpg.server.publishing import OutboxPublisher
from mpg.server.push import jobs as push_jobs
from mpg.server.rows import EventKind
from mpg.server.states import EntryState, MessageState, ReceiptState
from mpg.server.vault import Vault
from mpg.wire import model

log = structlog.get_logger(__name__)

Listener = Callable[[frozenset[str]], None]
#: Turns the recipient lists of a batch into account names, inside the submit's
#: transaction (the directory's group and device-id lookup, mpg.server.addressing);
#: returns one message per message given, keyed by TxMessageId.
Addresser = Callable[
    [sa.Connection, Sequence[model.OutgoingMessage]], dict[str, model.OutgoingMessage]
]

#: Most bytes of messages one fetch answer carries (by :func:`rows.delivery_bytes`'
#: upper bound): half the 16 MiB document the receiving side's XML parser accepts
#: (:data:`mpg.wire.xmlsafe.MAX_BYTES`), so an answer always parses. A message larger
#: than this on its own still goes out alone: it was accepted in a submit of the same
#: limit.
MAX_FETCH_BYTES: Final = 8 * 1024 * 1024
#: Most acknowledgements a fetch that leases applies in its own transaction. A few cost
#: less there than a transaction of their own; more (a batch of a backlog, tens of ms
#: of work) would hold up the answer, so they are left to the caller to apply once the
#: answer is out (:func:`acks_left`).
ACKS_WITH_LEASE: Final = 50


def acks_left(batch: model.FetchBatch, acked: Sequence[str]) -> bool:
    """Whether :meth:`QueueStore.fetch` left ``acked`` for the caller to acknowledge:
    it leased ``batch`` and they were more than :data:`ACKS_WITH_LEASE`."""
    return len(acked) > ACKS_WITH_LEASE and bool(batch.deliveries or batch.receipts)


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


def _insert_new(conn: sa.Connection, table: sa.Table, new: list[dict[str, Any]]) -> None:
    """Insert rows created in a state, each state checked against the table once."""
    for state in {row["State"] for row in new}:
        states.check(None, state)
    bulk.insert_rows(conn, table, new)


_r = tables.receive_queue.c

#: The hot statements, built once: building and keying a statement anew cost about
#: as much as SQLite's own work for a request of one message.
_CANDIDATE_COLUMNS: Final = (
    _r.EntryId,
    _r.MessageId,
    _r.Kind,
    _r.VisibleBcc,
    _r.VisibleBccEnc,
    _r.PriorityRank,
    _r.CreatedSeq,
    # NULL in a message's entry; named so that receipts (mpg.server.receipts) come in
    # the same shape, in one statement where the database can (plans.at_once).
    _r.TxMessageId,
    _r.Served,
    _r.Recalled,
)
_LEASE: Final = (
    tables.receive_queue.update()
    .where(plans.key_in(_r.EntryId, "b_ids"))
    .values(State=EntryState.LEASED, LeaseUntil=sa.bindparam("b_until"))
)

_ACK_GUARD: Final = (
    plans.key_in(_r.EntryId, "b_ids"),
    plans.row_check(_r.Recipient == sa.bindparam("b_account"), _r.State == EntryState.LEASED),
)
_ACK: Final = (
    tables.receive_queue.update().where(*_ACK_GUARD).values(State=EntryState.ACKED, LeaseUntil=None)
)
_ACK_RETURNING: Final = _ACK.returning(_r.EntryId, _r.MessageId)
_ACK_LOCK: Final = (
    sa.select(_r.EntryId, _r.MessageId).where(*_ACK_GUARD).order_by(_r.EntryId).with_for_update()
)
_t = tables.transmit_queue.c
_SERVE_GUARD: Final = (
    plans.key_in(_t.MessageId, "b_ids"),
    _t.State == MessageState.QUEUED,
    _t.ServedCount + _t.RecalledCount >= _t.RecipientCount,
)
_SERVE_COLUMNS: Final = (
    _t.MessageId,
    _t.SenderAccount,
    _t.TxMessageId,
    _t.Priority,
    _t.ServedCount,
    _t.RecalledCount,
)
_SERVE: Final = (
    tables.transmit_queue.update().where(*_SERVE_GUARD).values(State=MessageState.SERVED)
)
_SERVE_RETURNING: Final = _SERVE.returning(*_SERVE_COLUMNS)
_SERVE_LOCK: Final = sa.select(*_SERVE_COLUMNS).where(*_SERVE_GUARD).with_for_update()
_DONE: Final = sa.select(sa.func.count()).where(
    plans.key_in(_r.EntryId, "b_ids"),
    plans.row_check(_r.Recipient == sa.bindparam("b_account"), _r.State != EntryState.QUEUED),
)
_SERVED_ONCE: Final = (
    tables.transmit_queue.update()
    .where(plans.key_in(_t.MessageId, "b_ids"))
    .values(ServedCount=_t.ServedCount + 1)
)
#: _SERVED_ONCE and _SERVE in one statement, where UPDATE returns rows: each message
#: row is rewritten once instead of twice. The SET side reads the row as it was, so
#: the guard counts this acknowledgement (+ 1); what it returns is the row after.
_SERVE_ONCE_RETURNING: Final = (
    tables.transmit_queue.update()
    .where(plans.key_in(_t.MessageId, "b_ids"))
    .values(
        ServedCount=_t.ServedCount + 1,
        State=sa.case(
            (
                sa.and_(
                    _t.State == MessageState.QUEUED,
                    _t.ServedCount + 1 + _t.RecalledCount >= _t.RecipientCount,
                ),
                MessageState.SERVED,
            ),
            else_=_t.State,
        ),
    )
    .returning(*_SERVE_COLUMNS, _t.State, _t.RecipientCount)
)
_DELIVERED: Final = sa.select(*(_t[name] for name in rows.DELIVERED_COLUMNS)).where(
    plans.key_in(_t.MessageId, "b_ids")
)
_ATTACHMENTS: Final = (
    sa.select(tables.transmit_attachment)
    .where(plans.key_in(tables.transmit_attachment.c.MessageId, "b_ids"))
    .order_by(tables.transmit_attachment.c.MessageId, tables.transmit_attachment.c.SeqNo)
)
_PREVIOUS: Final = sa.select(
    _t.TxMessageId,
    _t.MessageId,
    _t.State,
    _t.ContentDigest,
    _t.SubmitResult,
    _t.SubmitResultEnc,
    _t.RecipientCount,
).where(
    plans.key_in(_t.TxMessageId, "b_txs"),
    plans.row_check(_t.SenderAccount == sa.bindparam("b_sender")),
)
_STAGES: Final = sa.select(tables.upload_stage).where(
    tables.upload_stage.c.SenderAccount == sa.bindparam("b_sender"),
    plans.key_in(tables.upload_stage.c.TxMessageId, "b_txs"),
)


def _candidate_queries(max_items: int) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The selects of an account's queued entries and of those whose lease ran out,
    in delivery order, locked (``b_account``, and ``b_now`` for the second)."""
    return plans.due(
        _CANDIDATE_COLUMNS,
        _r.Recipient,
        _r.State,
        _r.LeaseUntil,
        (_r.PriorityRank, _r.CreatedSeq),
        max_items,
    )


@functools.lru_cache(maxsize=128)
def _due(max_items: int, dialect: str) -> tuple[sa.Executable, ...]:
    """The statements that find what a fetch may lease (``b_account``, ``b_now``):
    the account's entries and receipts, queued and with their lease run out; one
    statement where the database can run them as one (:func:`mpg.db.plans.at_once`)."""
    selects = (*_candidate_queries(max_items), *receipts.candidate_queries(max_items))
    combined = plans.at_once(selects, dialect)
    return selects if combined is None else (combined,)


@dataclasses.dataclass
class _Writes:
    """Rows one transaction inserts, collected first and written with executemany."""

    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attachments: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    used_stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    woken: set[str] = dataclasses.field(default_factory=set)
    #: TxMessageId -> content digest of the message decided in this transaction.
    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    #: MessageId -> the accepted message as a fetch reads it back (rows.opened_message).
    opened: dict[str, openedcache.Kept] = dataclasses.field(default_factory=dict)

    def flush(self, conn: sa.Connection) -> None:
        """Insert what was collected and empty the lists."""
        if self.messages:
            _insert_new(conn, tables.transmit_queue, self.messages)
        if self.attachments:
            bulk.insert_rows(conn, tables.transmit_attachment, self.attachments)
        if self.entries:
            _insert_new(conn, tables.receive_queue, self.entries)
            push_jobs.enqueue_for_entries(conn, self.messages, self.entries)
        bulk.insert_rows(conn, tables.message_event, self.events)
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

    #: Publishes accepted rows whose Keywords hold ``mpg:publish``, in the submit's
    #: transaction (:class:`mpg.server.publishing.OutboxPublisher`, set by the server).
    publisher: OutboxPublisher | None = None

    def __init__(
        self,
        engine: sa.Engine,
        vault: Vault,
        *,
        clock: Callable[[], float] = time.time,
        listener: Listener | None = None,
        addresser: Addresser | None = None,
    ) -> None:
        self._engine = engine
        self._vault = vault
        self._clock = clock
        self._listener = listener
        self._receipts_listener: Listener | None = None
        self._opened = openedcache.OpenedMessages()
        self._addresser = addresser
        self._sequence = _Sequence()

    def set_listener(self, listener: Listener | None, receipts: Listener | None = None) -> None:
        """Call ``listener(account_ids)`` after each commit that queued entries for them;
        ``receipts`` instead, when given, after an acknowledgement that queued receipts
        (for the senders of the messages it served: :mod:`mpg.server.receiptwakes`)."""
        self._listener = listener
        self._receipts_listener = receipts

    # ------------------------------------------------------------------ submit

    def submit(
        self,
        sender_account: str,
        messages: Sequence[model.OutgoingMessage],
        rider: transactions.Rider | None = None,
    ) -> list[model.SubmitResult]:
        """Accept (or refuse) a batch of messages in one transaction; one answer each.

        Idempotent per ``(sender_account, tx_message_id)``: the same message
        submitted again (same digest, :func:`mpg.server.identity.digest`) gets the
        first answer again (``served_at_once`` once its receipt was stored). A different
        message with the TxMessageId of an accepted one is refused; one that replaces
        a refused message is decided afresh.
        Names the sender may not use are refused (:func:`mpg.server.identity.refusal`).
        Every refusal is that message's alone: the others of the batch go on.
        ``rider``: a write that commits with the batch (the request's nonce).
        """
        results, woken = transactions.retrying(
            lambda: self._submit_once(sender_account, messages, rider)
        )
        faults.reach(faults.SERVER_SUBMIT_COMMITTED)
        self._wake(woken)
        return results

    def _submit_once(
        self,
        sender_account: str,
        messages: Sequence[model.OutgoingMessage],
        rider: transactions.Rider | None,
    ) -> tuple[list[model.SubmitResult], set[str]]:
        """One attempt at :meth:`submit`: the results in order and who to wake.

        Another process submitting the same TxMessageId at the same moment makes the
        insert fail on the unique (SenderAccount, TxMessageId); the next attempt then
        finds that process's row and answers with its result.
        """
        now = self._clock()
        writes = _Writes()
        digests = [identity.digest(m) for m in messages]
        with transactions.begin(self._engine, "submitting messages", rider) as conn:
            results, fresh, first = self._answered_before(conn, sender_account, messages, digests)
            writes.digests = first
            # Who each message reaches, as account names; the row keeps what was written.
            targets = {m.tx_message_id: m for m in fresh}
            if self._addresser is not None:
                targets = self._addresser(conn, fresh)
            kinds = accounts.kinds(
                conn,
                self._vault,
                [sender_account]
                + [
                    n
                    for m in targets.values()
                    if not fanout.is_server_agent(m)
                    for n in fanout.lookup_names(m)
                ],
            )
            own_kind = kinds.get(sender_account, "")
            checked: list[model.OutgoingMessage] = []
            for msg in fresh:
                reason = identity.refusal(sender_account, own_kind, msg)
                if not reason:
                    checked.append(msg)
                    continue
                results[msg.tx_message_id] = self._refuse(msg, sender_account, reason, writes, now)
            plain = [m for m in checked if not fanout.is_server_agent(m)]
            # Only a message with attachments has staged uploads to look at.
            stages = self._stages(
                conn,
                self._vault.account_id(sender_account),
                [m.tx_message_id for m in plain if m.attachments],
            )
            for msg in plain:
                results[msg.tx_message_id] = self._plan_message(
                    msg, targets[msg.tx_message_id], sender_account, kinds, stages, writes, now
                )
            tracking.index_keywords(conn, self._vault, plain, writes.messages)
            writes.flush(conn)
            if self.publisher is not None:
                self.publisher(conn, self._vault.account_id(sender_account), plain, results, now)
            # Recalls go after the plain messages: they read and change committed rows.
            for msg in checked:
                if fanout.is_server_agent(msg):
                    results[msg.tx_message_id] = self._recall(
                        conn, msg, sender_account, writes, now
                    )
                    writes.flush(conn)
            tables.announce(conn, writes.woken)
        self._opened.put(writes.opened.items())
        answers = [
            results[m.tx_message_id]
            if first[m.tx_message_id] == digest
            else _reused(m.tx_message_id, results[m.tx_message_id].message_id)
            for m, digest in zip(messages, digests, strict=True)
        ]
        return answers, writes.woken

    def _answered_before(
        self,
        conn: sa.Connection,
        sender: str,
        messages: Sequence[model.OutgoingMessage],
        digests: Sequence[str],
    ) -> tuple[dict[str, model.SubmitResult], list[model.OutgoingMessage], dict[str, str]]:
        """The answers already given, the messages to decide now, each tx's first digest.

        A message submitted before with the same digest gets its first answer
        (``served_at_once`` once its receipt was stored); one replacing a refused
        message is decided afresh; another under an accepted TxMessageId is refused.
        """
        sender_id = self._vault.account_id(sender)
        previous = self._previous(conn, sender_id, [m.tx_message_id for m in messages])
        results: dict[str, model.SubmitResult] = {}
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
                results[tx] = rows.submit_result(self._vault, earlier)
                if earlier.State == MessageState.SERVED:
                    served[earlier.MessageId] = tx
            elif earlier.State == MessageState.REFUSED:
                replaced.append(tx)  # a corrected message after a refusal
                fresh.append(msg)
            else:
                results[tx] = _reused(tx, earlier.MessageId)
        self._forget_refused(conn, sender_id, replaced)
        # Its receipt was stored already: an Outbox row inserted again under the
        # same id would wait at 20 for a receipt that never comes again.
        for message_id in receipts.stored(conn, list(served)):
            tx = served[message_id]
            results[tx] = dataclasses.replace(results[tx], served_at_once=True)
        return results, fresh, first

    @staticmethod
    def _previous(conn: sa.Connection, sender: str, tx_ids: list[str]) -> dict[str, tables.Row]:
        """The earlier messages of ``sender`` with these TxMessageIds, by TxMessageId."""
        found: dict[str, tables.Row] = {}
        for part in transactions.chunks(sorted(set(tx_ids))):
            result = conn.execute(_PREVIOUS, {"b_sender": sender, "b_txs": part})
            found.update({row.TxMessageId: row for row in result})
        return found

    @staticmethod
    def _forget_refused(conn: sa.Connection, sender: str, tx_ids: list[str]) -> None:
        """Delete refused messages a corrected message replaces (they hold nothing else)."""
        t = tables.transmit_queue.c
        for part in transactions.chunks(tx_ids):
            conn.execute(
                tables.transmit_queue.delete().where(
                    t.SenderAccount == sender,
                    t.TxMessageId.in_(part),
                    t.State == MessageState.REFUSED,
                )
            )

    @staticmethod
    def _stages(
        conn: sa.Connection, sender: str, tx_ids: list[str]
    ) -> dict[tuple[str, int], fanout.Staged]:
        found: dict[tuple[str, int], fanout.Staged] = {}
        for part in transactions.chunks(sorted(set(tx_ids))):
            result = conn.execute(_STAGES, {"b_sender": sender, "b_txs": part})
            found.update({(r.TxMessageId, r.SeqNo): rows.staged(r) for r in result})
        return found

    def _plan_message(
        self,
        msg: model.OutgoingMessage,
        target: model.OutgoingMessage,
        sender: str,
        kinds: Mapping[str, str],
        stages: Mapping[tuple[str, int], fanout.Staged],
        writes: _Writes,
        now: float,
    ) -> model.SubmitResult:
        """Decide one plain message (:func:`mpg.server.fanout.plan`) by ``target``, the
        message with its recipient lists resolved to accounts; add its rows."""
        tx = msg.tx_message_id
        plan = fanout.plan(target, kinds, stages)
        listed = plan.unknown[: fanout.MAX_LISTED]
        if not plan.accepted:
            return self._refuse(msg, sender, plan.reason, writes, now, unknown=listed)
        message_id = timeids.time_ordered_uuid()
        result = model.SubmitResult(
            tx, True, message_id=message_id, recipients=len(plan.known), unknown=listed
        )
        vault = self._vault
        row, opened = rows.message(
            vault,
            msg,
            sender,
            message_id,
            now,
            len(plan.known),
            MessageState.QUEUED,
            result,
            writes.digests[tx],
        )
        writes.messages.append(row)
        writes.opened[message_id] = openedcache.Kept(opened, len(msg.attachments))
        detail = f"queued for {len(plan.known)} recipient(s)"
        if plan.unknown:
            detail += f"; {len(plan.unknown)} unknown"
        sender_id = vault.account_id(sender)
        writes.events.append(rows.event(message_id, now, EventKind.RECEIVED, sender_id, detail))
        first = self._sequence.take(len(plan.known))
        entries = rows.fanned_out(vault, message_id, plan.known, fanout.rank(msg.priority), first)
        writes.entries += entries
        writes.woken.update(e["Recipient"] for e in entries)
        for info in msg.attachments:
            writes.attachments.append(
                rows.attachment(vault, message_id, info, stages[(tx, info.seq_no)])
            )
            writes.used_stages.append({"b_account": sender_id, "b_tx": tx, "b_seq": info.seq_no})
        if logs.wants(logging.INFO):
            log.info(
                "message_accepted",
                account=sender,
                tx=tx,
                message_id=message_id,
                recipients=len(plan.known),
                unknown=len(plan.unknown),
                attachments=len(msg.attachments),
            )
        return result

    def _refuse(
        self,
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
        row, _ = rows.message(
            self._vault,
            msg,
            sender,
            timeids.time_ordered_uuid(),
            now,
            0,
            MessageState.REFUSED,
            result,
            writes.digests[msg.tx_message_id],
        )
        writes.messages.append(row)
        log.info("message_refused", account=sender, tx=msg.tx_message_id, reason=reason)
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
        sender_id = self._vault.account_id(sender)
        recalled_id, reason = fanout.recall_request(msg)
        if not reason:
            t = tables.transmit_queue.c
            target = conn.execute(
                sa.select(t.SenderAccount, t.State).where(t.MessageId == recalled_id)
            ).first()
            owner = None if target is None else target.SenderAccount
            reason = fanout.recall_refusal(
                recalled_id,
                sender,
                sender if owner == sender_id else owner,
                None if target is None else target.State,
            )
        if reason:
            return self._refuse(msg, sender, reason, writes, now)
        message_id = timeids.time_ordered_uuid()

        r = tables.receive_queue.c
        # Locked, so that an ack of a leased entry racing this recall in another
        # process waits and then finds it withdrawn (never counted both ways).
        entries = conn.execute(
            sa.select(r.EntryId, r.Recipient, r.State)
            .where(r.MessageId == recalled_id, r.Kind == model.DeliveryKind.MESSAGE)
            .order_by(r.EntryId)
            .with_for_update()
        ).all()
        split = fanout.recall((e.EntryId, e.Recipient, e.State) for e in entries)
        self._withdraw(conn, recalled_id, split)
        push_jobs.enqueue_recall(conn, recalled_id, now)
        if self.publisher is not None:
            self.publisher.withdraw(conn, recalled_id, sender_id, now)
        writes.events += [
            rows.event(recalled_id, now, EventKind.WITHDRAWN, e.Recipient)
            for e in entries
            if e.EntryId in split.taken
        ]
        writes.events.append(
            rows.event(
                recalled_id,
                now,
                EventKind.RECALLED,
                sender_id,
                f"withdrawn from {len(split.taken)}, RECALL sent to {len(split.notified)}",
            )
        )
        outcome = model.RecallOutcome(
            recalled_id, withdrawn=len(split.withdrawn), notified=len(split.notified)
        )
        result = model.SubmitResult(
            tx,
            True,
            message_id=message_id,
            recipients=len(split.notified),
            served_at_once=True,
            recall=outcome,
        )
        row, _ = rows.message(
            self._vault,
            msg,
            sender,
            message_id,
            now,
            len(split.notified),
            MessageState.SERVED,
            result,
            writes.digests[tx],
        )
        writes.messages.append(row)
        rank = fanout.rank(msg.priority)
        first = self._sequence.take(len(split.notified))
        for n, recipient in enumerate(split.notified):
            writes.entries.append(rows.entry(message_id, recipient, rank, first + n))
            writes.woken.add(recipient)
        writes.flush(conn)
        writes.woken.update(self._complete(conn, [recalled_id]))
        log.info(
            "recall_done",
            account=sender,
            tx=tx,
            message_id=message_id,
            recalled=recalled_id,
            withdrawn=len(split.withdrawn),
            notified=len(split.notified),
        )
        return result

    @staticmethod
    def _withdraw(conn: sa.Connection, recalled_id: str, split: fanout.Recall) -> None:
        """Withdraw the recalled message's queued and leased entries; count them."""
        r = tables.receive_queue.c
        if split.withdrawn:
            states.check(EntryState.QUEUED, EntryState.WITHDRAWN)
        if split.leased:
            states.check(EntryState.LEASED, EntryState.WITHDRAWN)
        for part in transactions.chunks([*split.withdrawn, *split.leased]):
            conn.execute(
                tables.receive_queue.update()
                .where(
                    r.EntryId.in_(part),
                    r.State.in_([EntryState.QUEUED, EntryState.LEASED]),
                )
                .values(State=EntryState.WITHDRAWN, LeaseUntil=None)
            )
        faults.reach(faults.SERVER_RECALL_WITHDRAWN)
        if split.taken:
            t = tables.transmit_queue.c
            conn.execute(
                tables.transmit_queue.update()
                .where(t.MessageId == recalled_id)
                .values(RecalledCount=t.RecalledCount + len(split.taken))
            )

    # ------------------------------------------------------------------ receipts

    def _complete(self, conn: sa.Connection, message_ids: Iterable[str]) -> set[str]:
        """Mark fully served messages ``served`` and queue their receipts.

        Returns the sender accounts that got a receipt.
        """
        return self._queue_receipts(conn, self._mark_served(conn, sorted(set(message_ids))))

    def _queue_receipts(self, conn: sa.Connection, done: list[tables.Row]) -> set[str]:
        """Record that the messages ``done`` (just moved to served; _SERVE_COLUMNS) were
        served and queue a receipt for each; return the sender accounts that got one."""
        if not done:
            return set()
        faults.reach(faults.SERVER_BEFORE_RECEIPTS)
        now = self._clock()
        bulk.insert_rows(
            conn,
            tables.message_event,
            [
                rows.event(
                    row.MessageId,
                    now,
                    EventKind.SERVED,
                    row.SenderAccount,
                    f"served {row.ServedCount}, recalled {row.RecalledCount}",
                )
                for row in done
            ],
        )
        states.check(None, ReceiptState.QUEUED)
        receipts.queue(conn, done, self._sequence.take(len(done)))
        return {row.SenderAccount for row in done}

    @staticmethod
    def _mark_served(conn: sa.Connection, message_ids: list[str]) -> list[tables.Row]:
        """Move the messages among ``message_ids`` (sorted) that every recipient has
        served or had withdrawn from queued to served; return those moved.

        One UPDATE … RETURNING where the database has it; elsewhere the rows are read
        ``FOR UPDATE`` first (the caller's count update already locks them; asking
        again keeps the receipt single even if a caller ever did not).
        """
        if not message_ids:
            return []
        states.check(MessageState.QUEUED, MessageState.SERVED)
        return transactions.update_returning(
            conn, message_ids, {}, returning=_SERVE_RETURNING, lock=_SERVE_LOCK, update=_SERVE
        )

    # ------------------------------------------------------------------ fetch

    def fetch(
        self,
        account: str,
        max_items: int,
        lease_seconds: float,
        acked: Sequence[str] = (),
        rider: transactions.Rider | None = None,
    ) -> model.FetchBatch:
        """Lease up to ``max_items`` of ``account``'s entries and receipts, most urgent
        and oldest first.

        Entries and receipts whose earlier lease ran out are delivered again.
        ``acked``: entries and receipts of the caller's previous batch, acknowledged in
        this same transaction (as :meth:`ack` does), so that a receiving gateway needs
        one request per batch; except when it leases and ``acked`` is large: then
        ``acked`` is left to the caller, to :meth:`ack` once its answer is out, so that
        the acknowledgement does not hold up the next batch (:func:`acks_left` tells;
        :mod:`mpg.server.app`). When nothing waits they are always applied here: the
        caller is about to wait, and the sender's receipt must not wait with it.
        ``rider``: a write that commits with the lease (the request's nonce).
        """
        if max_items <= 0:
            return model.FetchBatch()
        account_id = self._vault.account_id(account)
        batch, moved, woken = transactions.retrying(
            lambda: self._fetch_once(account_id, account, max_items, lease_seconds, acked, rider)
        )
        if moved is not None:
            faults.reach(faults.SERVER_ACK_COMMITTED)
            self._wake(woken, receipts=True)
            log.info("entries_acked", account=account, acked=moved)
        return batch

    def _fetch_once(
        self,
        account_id: str,
        account: str,
        max_items: int,
        lease_seconds: float,
        acked: Sequence[str],
        rider: transactions.Rider | None,
    ) -> tuple[model.FetchBatch, int | None, set[str]]:
        """One attempt at :meth:`fetch`: the batch, how many entries ``acked`` moved
        (None: none given, or left to the caller) and who to wake for the receipts
        that queued.

        Rows are read ``FOR UPDATE SKIP LOCKED``: another process leasing for the
        same account at the same moment takes other entries, never these.
        """
        now = self._clock()
        vault = self._vault
        with transactions.begin(self._engine, "fetching entries", rider) as conn:
            candidates, expired = self._candidates(conn, account_id, max_items, now)
            moved: int | None = None
            woken: set[str] = set()
            if acked and (not candidates or len(acked) <= ACKS_WITH_LEASE):
                moved, woken = self._acknowledge(conn, account_id, acked)
            if not candidates:
                return model.FetchBatch(), moved, woken
            wanted = [e.MessageId for e in candidates if e.Kind == model.DeliveryKind.MESSAGE]
            kept = self._opened.get(wanted)
            messages = self._messages(conn, wanted, kept)
            bcc = {
                e.EntryId: rows.visible_bcc(vault, e)
                for e in candidates
                if e.Kind == model.DeliveryKind.MESSAGE
            }
            entries = rows.within_budget(
                candidates,
                [_answer_bytes(e, messages, bcc) for e in candidates],
                MAX_FETCH_BYTES,
            )
            expired_ids = expired & {e.EntryId for e in entries}
            self._lease(conn, entries, expired_ids, now, lease_seconds)
            bulk.insert_rows(
                conn,
                tables.message_event,
                [
                    rows.event(
                        e.MessageId,
                        now,
                        EventKind.FETCHED
                        if e.Kind == model.DeliveryKind.MESSAGE
                        else EventKind.RECEIPT_FETCHED,
                        account_id,
                        "again: the earlier lease ran out" if e.EntryId in expired_ids else "",
                    )
                    for e in entries
                ],
            )
            with_files = [
                e.MessageId
                for e in entries
                if e.Kind == model.DeliveryKind.MESSAGE
                and (e.MessageId not in kept or kept[e.MessageId].attachments)
            ]
            files = self._attachment_infos(conn, with_files)
        deliveries: list[model.Delivery] = []
        receipts: list[model.Receipt] = []
        for e in entries:
            if e.Kind == model.DeliveryKind.RECEIPT:
                receipts.append(rows.receipt(e))
            else:
                deliveries.append(
                    rows.delivery(
                        e,
                        account,
                        messages[e.MessageId],
                        files.get(e.MessageId, ()),
                        bcc[e.EntryId],
                    )
                )
        log.info(
            "entries_fetched",
            account=account,
            deliveries=len(deliveries),
            receipts=len(receipts),
            redelivered=len(expired_ids),
        )
        return model.FetchBatch(tuple(deliveries), tuple(receipts)), moved, woken

    @staticmethod
    def _candidates(
        conn: sa.Connection, account: str, max_items: int, now: float
    ) -> tuple[list[tables.Row], set[str]]:
        """Lock the entries and receipts (shaped as entries, :mod:`mpg.server.receipts`)
        that may be delivered, in delivery order; return them and the ids of those
        whose earlier lease ran out."""
        found: list[tables.Row] = []
        params = {"b_account": account, "b_now": now}
        for statement in _due(max_items, conn.dialect.name):
            found += conn.execute(statement, params).all()
        found.sort(key=lambda e: (e.PriorityRank, e.CreatedSeq))
        return found[:max_items], {e.EntryId for e in found if e.Again}

    @staticmethod
    def _lease(
        conn: sa.Connection,
        entries: list[tables.Row],
        leased_again: set[str],
        now: float,
        lease_seconds: float,
    ) -> None:
        """Lease ``entries``, receipts among them (``leased_again``: those whose
        earlier lease ran out)."""
        until = now + lease_seconds
        owed = [e for e in entries if e.Kind == model.DeliveryKind.RECEIPT]
        for again in {e.EntryId in leased_again for e in owed}:
            states.check(ReceiptState.LEASED if again else ReceiptState.QUEUED, ReceiptState.LEASED)
        if owed:
            receipts.lease(conn, [e.MessageId for e in owed], until)
        mine = [e.EntryId for e in entries if e.Kind == model.DeliveryKind.MESSAGE]
        for again in {one in leased_again for one in mine}:
            states.check(EntryState.LEASED if again else EntryState.QUEUED, EntryState.LEASED)
        for part in transactions.chunks(mine):
            conn.execute(_LEASE, {"b_ids": part, "b_until": until})

    def _messages(
        self,
        conn: sa.Connection,
        message_ids: list[str],
        kept: Mapping[str, openedcache.Kept],
    ) -> dict[str, Mapping[str, Any]]:
        """The ``TransmitQueue`` rows, opened (:func:`mpg.server.rows.opened_message`):
        those ``kept`` in memory from there, the others read."""
        found = {mid: one.opened for mid, one in kept.items()}
        unread = sorted(set(message_ids) - found.keys())
        for part in transactions.chunks(unread):
            result = conn.execute(_DELIVERED, {"b_ids": part})
            fields = tuple(result.keys())
            found.update(
                {row.MessageId: rows.opened_message(self._vault, row, fields) for row in result}
            )
        return found

    def _attachment_infos(
        self, conn: sa.Connection, message_ids: list[str]
    ) -> dict[str, tuple[model.AttachmentInfo, ...]]:
        found: dict[str, list[model.AttachmentInfo]] = collections.defaultdict(list)
        for part in transactions.chunks(sorted(set(message_ids))):
            result = conn.execute(_ATTACHMENTS, {"b_ids": part})
            for row in result:
                found[row.MessageId].append(rows.attachment_info(self._vault, row))
        return {message_id: tuple(infos) for message_id, infos in found.items()}

    # ------------------------------------------------------------------ history

    def history(self, sender: str, tx_message_id: str) -> tuple[str, list[model.ServerEvent]]:
        """``(MessageId, events)`` of a message ``sender`` submitted, oldest first.

        Raises :class:`mpg.errors.NotFound` when ``sender`` has no accepted message
        with that TxMessageId (someone else's message is not found either).
        """
        t = tables.transmit_queue.c
        e = tables.message_event.c
        with transactions.begin(self._engine, "reading a message's history") as conn:
            message_id = conn.execute(
                sa.select(t.MessageId).where(
                    t.SenderAccount == self._vault.account_id(sender),
                    t.TxMessageId == tx_message_id,
                    t.State != MessageState.REFUSED,
                )
            ).scalar()
            if message_id is None:
                raise errors.NotFound(f"no accepted message {tx_message_id} from {sender}")
            found = conn.execute(
                sa.select(e.At, e.Kind, e.Account, e.Detail)
                .where(e.MessageId == message_id)
                .order_by(e.Id)
            ).all()
            names = self._vault.names(conn, [str(row.Account) for row in found])
        return str(message_id), [rows.server_event(row, names) for row in found]

    # ------------------------------------------------------------------ depths

    def depths(self) -> dict[str, int]:
        """Entries and receipts waiting per account name (queued or leased, not yet
        acknowledged)."""
        r = tables.receive_queue.c
        query = (
            sa.select(r.Recipient, sa.func.count())
            .where(r.State.in_(states.WAITING))
            .group_by(r.Recipient)
        )
        with transactions.begin(self._engine, "counting queued entries") as conn:
            counts = collections.Counter(receipts.waiting_by_sender(conn))
            counts.update({str(recipient): int(n) for recipient, n in conn.execute(query)})
            names = self._vault.names(conn, counts)
        return {names[account_id]: n for account_id, n in counts.items()}

    # ------------------------------------------------------------------ ack

    def ack(
        self, account: str, entry_ids: Sequence[str], rider: transactions.Rider | None = None
    ) -> int:
        """Acknowledge ``account``'s entries; return how many of them are now done.

        Entries of other accounts are ignored; acknowledging twice is harmless.
        When the last entry of a message is acked, its sender gets a receipt.
        ``rider``: a write that commits with the acknowledgement (the request's nonce).
        """
        done = self._ack(account, entry_ids, rider, count=True)
        assert done is not None  # counted
        return done

    def acknowledge(self, account: str, entry_ids: Sequence[str]) -> None:
        """:meth:`ack` without the count of entries done that the ``ack`` operation
        answers with (a query per 500 entries): for the acknowledgement a fetch left
        (:func:`acks_left`), which answers nothing."""
        self._ack(account, entry_ids, None, count=False)

    def _ack(
        self,
        account: str,
        entry_ids: Sequence[str],
        rider: transactions.Rider | None,
        *,
        count: bool,
    ) -> int | None:
        account_id = self._vault.account_id(account)
        done, moved, woken = transactions.retrying(
            lambda: self._ack_once(account_id, entry_ids, rider, count)
        )
        faults.reach(faults.SERVER_ACK_COMMITTED)
        self._wake(woken, receipts=True)
        log.info("entries_acked", account=account, acked=moved, done=done)
        return done

    def _ack_once(
        self,
        account: str,
        entry_ids: Sequence[str],
        rider: transactions.Rider | None,
        count: bool,
    ) -> tuple[int | None, int, set[str]]:
        """One attempt at :meth:`_ack`: entries done (None: not counted), entries moved
        now, who to wake."""
        with transactions.begin(self._engine, "acknowledging entries", rider) as conn:
            moved, woken = self._acknowledge(conn, account, entry_ids)
            done = self._done(conn, account, entry_ids) if count else None
            return done, moved, woken

    def _acknowledge(
        self, conn: sa.Connection, account: str, ids: Sequence[str]
    ) -> tuple[int, set[str]]:
        """Acknowledge entries and receipts in ``conn``'s transaction: how many moved
        to acked and who to wake (after the commit) for the receipts queued.

        Only ``account``'s leased entries and receipts move: an ack or recall of the
        same entry in another process waits for this one's row lock, then finds it
        acked and moves nothing (never counted both ways). The sender's counters grow
        in SQL (``ServedCount + n``), never from a value read earlier.
        """
        t = tables.transmit_queue.c
        entry_ids, receipt_ids = receipts.split_ids(ids)
        moving = self._move_to_acked(conn, account, sorted(set(entry_ids)))
        stored: list[str] = []
        if receipt_ids:
            states.check(ReceiptState.LEASED, ReceiptState.ACKED)
            stored = receipts.acknowledge(conn, account, sorted(set(receipt_ids)))
        if moving or stored:
            now = self._clock()
            bulk.insert_rows(
                conn,
                tables.message_event,
                [rows.event(row.MessageId, now, EventKind.ACKNOWLEDGED, account) for row in moving]
                + [rows.event(mid, now, EventKind.RECEIPT_ACKNOWLEDGED, account) for mid in stored],
            )
        served = collections.Counter(row.MessageId for row in moving)
        # Mostly one entry per message: those counted with one statement, not one each.
        once = sorted(mid for mid, n in served.items() if n == 1)
        done: list[tables.Row] = []
        if conn.dialect.update_returning:
            done = self._serve_once(conn, once)
            to_check = sorted(mid for mid, n in served.items() if n > 1)
        else:
            for part in transactions.chunks(once):
                conn.execute(_SERVED_ONCE, {"b_ids": part})
            to_check = sorted(served)
        more = [{"b_message": mid, "b_count": n} for mid, n in served.items() if n > 1]
        if more:
            conn.execute(
                tables.transmit_queue.update()
                .where(t.MessageId == sa.bindparam("b_message"))
                .values(ServedCount=t.ServedCount + sa.bindparam("b_count")),
                more,
            )
        done += self._mark_served(conn, to_check)
        woken = self._queue_receipts(conn, done)
        tables.announce(conn, woken, receipts=True)
        return len(moving) + len(stored), woken

    @staticmethod
    def _serve_once(conn: sa.Connection, message_ids: list[str]) -> list[tables.Row]:
        """Count one more served entry of each of ``message_ids`` (sorted) and move
        those it completes from queued to served, in one UPDATE; return those moved.

        A row comes back served either because this update completed it or because it
        was served before; only the first had fewer than RecipientCount served or
        recalled before this acknowledgement (counts only grow, and a served message
        has no leased entry left to acknowledge).
        """
        if not message_ids:
            return []
        states.check(MessageState.QUEUED, MessageState.SERVED)
        done: list[tables.Row] = []
        for part in transactions.chunks(message_ids):
            done += [
                row
                for row in conn.execute(_SERVE_ONCE_RETURNING, {"b_ids": part}).all()
                if row.State == MessageState.SERVED
                and row.ServedCount - 1 + row.RecalledCount < row.RecipientCount
            ]
        return done

    @staticmethod
    def _move_to_acked(conn: sa.Connection, account: str, entry_ids: list[str]) -> list[tables.Row]:
        """Move ``account``'s leased entries among ``entry_ids`` (sorted) to acked;
        return those moved (EntryId, MessageId).

        Where the database returns what an UPDATE changed (SQLite, PostgreSQL, SQL
        Server) that is one statement; elsewhere the entries are first read and locked
        (``FOR UPDATE``, in EntryId order, so two acks cannot deadlock), then moved.
        """
        if entry_ids:
            states.check(EntryState.LEASED, EntryState.ACKED)
        return transactions.update_returning(
            conn,
            entry_ids,
            {"b_account": account},
            returning=_ACK_RETURNING,
            lock=_ACK_LOCK,
            update=_ACK,
        )

    @staticmethod
    def _done(conn: sa.Connection, account: str, ids: Sequence[str]) -> int:
        """How many of ``account``'s entries and receipts among ``ids`` are no longer
        queued."""
        entry_ids, receipt_ids = receipts.split_ids(ids)
        done = receipts.done(conn, account, receipt_ids) if receipt_ids else 0
        for part in transactions.chunks(sorted(set(entry_ids))):
            done += conn.execute(_DONE, {"b_ids": list(part), "b_account": account}).scalar_one()
        return done

    def _wake(self, accounts_: set[str], *, receipts: bool = False) -> None:
        listener = (receipts and self._receipts_listener) or self._listener
        if accounts_ and listener is not None:
            listener(frozenset(accounts_))


def _reused(tx_message_id: str, message_id: str) -> model.SubmitResult:
    """The refusal of a different message under an earlier message's TxMessageId."""
    return model.SubmitResult(
        tx_message_id, False, reason=identity.reused_reason(tx_message_id, message_id)
    )


def _answer_bytes(
    entry: tables.Row, messages: Mapping[str, Mapping[str, Any]], bcc: Mapping[str, str]
) -> int:
    """The most bytes ``entry`` takes in a fetch answer."""
    if entry.Kind == model.DeliveryKind.MESSAGE:
        return rows.delivery_bytes(messages[entry.MessageId], bcc[entry.EntryId])
    return rows.RECEIPT_BYTES
