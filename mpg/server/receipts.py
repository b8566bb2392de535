"""The receipt a served message owes its sender: ``ReceiptQueue``.

When every recipient has served a message (or had it withdrawn), its sender gets a
receipt: the message's id, TxMessageId and final counts. The receipt is queued in
the same transaction (:func:`queue`), leased by the sender's fetch beside its
deliveries and stored by the sender's acknowledgement
(:class:`mpg.server.states.ReceiptState`).

Earlier versions queued it as an entry of the sender's ``ReceiveQueue``, a table of
wider rows and four indexes that every one of its three writes kept up; on
PostgreSQL a write that changes an indexed column adds an entry to every index of
its table. ``ReceiptQueue`` holds only what a receipt says and one index beside its
key, the one a sender's fetch reads. (Kept on the message's ``TransmitQueue`` row
instead, with the eight indexes that table then had, the receipt's writes cost
PostgreSQL twice as much: docs/benchmarks.md.)

On the wire a receipt's id is :data:`ID_PREFIX` + MessageId: the ids of an
acknowledgement tell receipts from queue entries without a look
(:func:`split_ids`). A fetch reads receipts shaped as queue entries (``EntryId``,
``Kind`` ``receipt``, ``PriorityRank``, ``CreatedSeq``), so it orders, budgets and
leases both alike.

This module is the SQL of those steps; :class:`mpg.server.queues.QueueStore` runs
them inside its transactions and asks :func:`mpg.server.states.check` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg.db import bulk, plans, transactions
from mpg.server import fanout, tables
from mpg.server.states import RECEIPT_WAITING, ReceiptState
from mpg.wire import model

#: Before the MessageId in a receipt's id on the wire (a queue entry's id never has it).
ID_PREFIX: Final = "receipt:"

_q = tables.receipt_queue.c
_r = tables.receive_queue.c


def split_ids(ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """``ids`` of an acknowledgement as (queue entry ids, MessageIds of receipts)."""
    entries: list[str] = []
    receipts: list[str] = []
    for one in ids:
        if one.startswith(ID_PREFIX):
            receipts.append(one[len(ID_PREFIX) :])
        else:
            entries.append(one)
    return entries, receipts


def queue(conn: sa.Connection, served: Sequence[tables.Row], first_seq: int) -> None:
    """Queue a receipt for each message just ``served`` (rows with MessageId,
    SenderAccount, TxMessageId, Priority, ServedCount, RecalledCount), numbered from
    ``first_seq`` in the order given."""
    bulk.insert_rows(
        conn,
        tables.receipt_queue,
        [
            {
                "MessageId": row.MessageId,
                "SenderAccount": row.SenderAccount,
                "TxMessageId": row.TxMessageId,
                "Served": row.ServedCount,
                "Recalled": row.RecalledCount,
                "PriorityRank": fanout.rank(row.Priority),
                "State": ReceiptState.QUEUED,
                "LeaseUntil": None,
                "CreatedSeq": first_seq + n,
            }
            for n, row in enumerate(served)
        ],
    )


def _text(value: str) -> sa.ColumnElement[str]:
    """``value`` written into the statement, not bound: a bound value in a SELECT list
    has no type PostgreSQL can infer."""
    return sa.literal_column(f"'{value}'", sa.Unicode)


#: A receipt as a fetch candidate: a queue entry's columns in their order (the fetch
#: reads, orders and leases both alike), with what the wire's Receipt says.
_AS_ENTRY: Final = (
    (_text(ID_PREFIX) + _q.MessageId).label("EntryId"),
    _q.MessageId,
    _text(model.DeliveryKind.RECEIPT).label("Kind"),
    # Typed: in one statement with the entries' columns, PostgreSQL takes an untyped
    # NULL for text, which a bytea column cannot join.
    sa.cast(sa.null(), _r.VisibleBcc.type).label("VisibleBcc"),
    sa.cast(sa.null(), _r.VisibleBccEnc.type).label("VisibleBccEnc"),
    _q.PriorityRank,
    _q.CreatedSeq,
    _q.TxMessageId,
    _q.Served,
    _q.Recalled,
)


def candidate_queries(max_items: int) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The selects of a sender's queued receipts and of those whose lease ran out,
    shaped as queue entries and locked (``b_account``, and ``b_now`` for the second)."""
    return plans.due(
        _AS_ENTRY,
        _q.SenderAccount,
        _q.State,
        _q.LeaseUntil,
        (_q.PriorityRank, _q.CreatedSeq),
        max_items,
    )


_LEASE: Final = (
    tables.receipt_queue.update()
    .where(plans.key_in(_q.MessageId, "b_ids"))
    .values(State=ReceiptState.LEASED, LeaseUntil=sa.bindparam("b_until"))
)
_ACK_GUARD: Final = (
    plans.key_in(_q.MessageId, "b_ids"),
    plans.row_check(_q.SenderAccount == sa.bindparam("b_account"), _q.State == ReceiptState.LEASED),
)
_ACK: Final = (
    tables.receipt_queue.update()
    .where(*_ACK_GUARD)
    .values(State=ReceiptState.ACKED, LeaseUntil=None)
)
_ACK_RETURNING: Final = _ACK.returning(_q.MessageId)
_ACK_LOCK: Final = (
    sa.select(_q.MessageId).where(*_ACK_GUARD).order_by(_q.MessageId).with_for_update()
)
_DONE: Final = sa.select(sa.func.count()).where(
    plans.key_in(_q.MessageId, "b_ids"),
    plans.row_check(_q.SenderAccount == sa.bindparam("b_account"), _q.State != ReceiptState.QUEUED),
)
_STORED: Final = sa.select(_q.MessageId).where(
    plans.key_in(_q.MessageId, "b_ids"), plans.row_check(_q.State == ReceiptState.ACKED)
)


def lease(conn: sa.Connection, message_ids: Sequence[str], until: float) -> None:
    """Lease the receipts of ``message_ids`` until ``until`` (the caller checked the
    steps and holds their rows)."""
    for part in transactions.chunks(list(message_ids)):
        conn.execute(_LEASE, {"b_ids": part, "b_until": until})


def acknowledge(conn: sa.Connection, sender: str, message_ids: list[str]) -> list[str]:
    """Store ``sender``'s leased receipts among ``message_ids`` (sorted); return the
    MessageIds of those moved."""
    moved = transactions.update_returning(
        conn,
        message_ids,
        {"b_account": sender},
        returning=_ACK_RETURNING,
        lock=_ACK_LOCK,
        update=_ACK,
    )
    return [row.MessageId for row in moved]


def done(conn: sa.Connection, sender: str, message_ids: Sequence[str]) -> int:
    """How many of ``sender``'s receipts among ``message_ids`` are no longer queued."""
    count = 0
    for part in transactions.chunks(sorted(set(message_ids))):
        count += conn.execute(_DONE, {"b_ids": list(part), "b_account": sender}).scalar_one()
    return count


def stored(conn: sa.Connection, message_ids: list[str]) -> set[str]:
    """The messages among ``message_ids`` whose sender stored their receipt."""
    found: set[str] = set()
    for part in transactions.chunks(message_ids):
        found.update(conn.execute(_STORED, {"b_ids": part}).scalars())
    return found


def waiting_by_sender(conn: sa.Connection) -> dict[str, int]:
    """Receipts not yet stored, per sender AccountId."""
    query = (
        sa.select(_q.SenderAccount, sa.func.count())
        .where(_q.State.in_(RECEIPT_WAITING))
        .group_by(_q.SenderAccount)
    )
    return {str(sender): int(n) for sender, n in conn.execute(query)}


def waiting(message_id: sa.ColumnElement[str]) -> sa.Exists:
    """Whether the receipt of ``message_id`` (a column of an outer query) is queued
    or leased."""
    return sa.exists().where(_q.MessageId == message_id, _q.State.in_(RECEIPT_WAITING))
