"""The receipt a served message owes its sender, kept on the message's own row.

When every recipient has served a message (or had it withdrawn), its sender gets a
receipt: the message's id, TxMessageId and final counts, all of which the
``TransmitQueue`` row holds already. So the row carries the receipt's state too
(``ReceiptState``, :class:`mpg.server.states.ReceiptState`): the update that marks
the message served queues it (:data:`SERVED_VALUES`), the sender's fetch leases it
and the sender's acknowledgement stores it, each an update of that one row. A
receipt kept as an entry of the sender's queue cost a row inserted with four index
entries, then two updates of that row and its indexes.

On the wire a receipt's id is :data:`ID_PREFIX` + MessageId: the ids of an
acknowledgement tell receipts from queue entries without a look
(:func:`split_ids`). A fetch reads receipts shaped as queue entries (``EntryId``, ``Kind``
``receipt``, ``PriorityRank``, ``CreatedSeq``), so it orders, budgets and leases
both alike; among themselves receipts go out in the order their
messages were served (``ReceiptSeq``), ranked with the deliveries by their message's
priority.

This module is the SQL of those steps; :class:`mpg.server.queues.QueueStore` runs
them inside its transactions and asks :func:`mpg.server.states.check` first.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg.db import plans, transactions
from mpg.server import fanout, tables
from mpg.server.states import ReceiptState
from mpg.wire import model

#: Before the MessageId in a receipt's id on the wire (a queue entry's id never has it).
ID_PREFIX: Final = "receipt:"

_t = tables.transmit_queue.c


def receipt_id(message_id: str) -> str:
    """The id a sender acknowledges the receipt of ``message_id`` by."""
    return ID_PREFIX + message_id


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


def served_values(completes: sa.ColumnElement[bool] | None = None) -> dict[str, Any]:
    """The SET of an update that marks messages served: their receipts queued, each
    given ``b_receipt_seq``. ``completes``: the condition that the update serves the
    row, for an update that changes other rows too (the rest keep their receipt)."""
    seq: sa.ColumnElement[Any] = sa.bindparam("b_receipt_seq", type_=sa.BigInteger)
    if completes is None:
        return {"ReceiptState": ReceiptState.QUEUED, "ReceiptSeq": seq}
    return {
        "ReceiptState": sa.case((completes, ReceiptState.QUEUED), else_=_t.ReceiptState),
        "ReceiptSeq": sa.case((completes, seq), else_=_t.ReceiptSeq),
    }


def _text(value: str) -> sa.ColumnElement[str]:
    """``value`` written into the statement, not bound: a bound value in a SELECT list
    has no type PostgreSQL can infer."""
    return sa.literal_column(f"'{value}'", sa.Unicode)


#: A receipt as a fetch candidate: named as a queue entry's columns (the fetch orders
#: and leases both by these), with what the wire's Receipt says.
_RANK: Final = sa.case(fanout.PRIORITY_RANK, value=_t.Priority, else_=fanout.DEFAULT_RANK)
_AS_ENTRY: Final = (
    (_text(ID_PREFIX) + _t.MessageId).label("EntryId"),
    _t.MessageId,
    _text(model.DeliveryKind.RECEIPT).label("Kind"),
    _RANK.label("PriorityRank"),
    _t.ReceiptSeq.label("CreatedSeq"),
    _t.TxMessageId,
    _t.ServedCount.label("Served"),
    _t.RecalledCount.label("Recalled"),
)


@functools.lru_cache(maxsize=64)
def candidate_queries(max_items: int) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The selects of a sender's queued receipts and of those whose lease ran out,
    shaped as queue entries and locked (``b_account``, and ``b_now`` for the second)."""
    return plans.due(
        _AS_ENTRY,
        _t.SenderAccount,
        _t.ReceiptState,
        _t.ReceiptLeaseUntil,
        (_t.ReceiptSeq,),
        max_items,
    )


_LEASE: Final = (
    tables.transmit_queue.update()
    .where(plans.key_in(_t.MessageId, "b_ids"))
    .values(ReceiptState=ReceiptState.LEASED, ReceiptLeaseUntil=sa.bindparam("b_until"))
)
_ACK_GUARD: Final = (
    plans.key_in(_t.MessageId, "b_ids"),
    plans.row_check(
        _t.SenderAccount == sa.bindparam("b_account"), _t.ReceiptState == ReceiptState.LEASED
    ),
)
_ACK: Final = (
    tables.transmit_queue.update()
    .where(*_ACK_GUARD)
    .values(ReceiptState=ReceiptState.ACKED, ReceiptLeaseUntil=None)
)
_ACK_RETURNING: Final = _ACK.returning(_t.MessageId)
_ACK_LOCK: Final = (
    sa.select(_t.MessageId).where(*_ACK_GUARD).order_by(_t.MessageId).with_for_update()
)
_DONE: Final = sa.select(sa.func.count()).where(
    plans.key_in(_t.MessageId, "b_ids"),
    plans.row_check(
        _t.SenderAccount == sa.bindparam("b_account"), _t.ReceiptState != ReceiptState.QUEUED
    ),
)


def lease(conn: sa.Connection, message_ids: Sequence[str], until: float) -> None:
    """Lease the receipts of ``message_ids`` until ``until`` (the caller checked the
    steps and holds their rows)."""
    for part in transactions.chunks(list(message_ids)):
        conn.execute(_LEASE, {"b_ids": part, "b_until": until})


def acknowledge(conn: sa.Connection, sender: str, message_ids: list[str]) -> list[str]:
    """Store ``sender``'s leased receipts among ``message_ids`` (sorted); return the
    MessageIds of those moved.

    Where the database returns what an UPDATE changed that is one statement;
    elsewhere the rows are first locked in MessageId order, then moved.
    """
    moved: list[str] = []
    for part in transactions.chunks(message_ids):
        params = {"b_ids": part, "b_account": sender}
        if conn.dialect.update_returning:
            moved.extend(conn.execute(_ACK_RETURNING, params).scalars())
            continue
        locked = conn.execute(_ACK_LOCK, params).scalars().all()
        conn.execute(_ACK, params)
        moved.extend(locked)
    return moved


def done(conn: sa.Connection, sender: str, message_ids: Sequence[str]) -> int:
    """How many of ``sender``'s receipts among ``message_ids`` are no longer queued."""
    count = 0
    for part in transactions.chunks(sorted(set(message_ids))):
        count += conn.execute(_DONE, {"b_ids": list(part), "b_account": sender}).scalar_one()
    return count


def waiting_by_sender(conn: sa.Connection) -> dict[str, int]:
    """Receipts not yet stored, per sender AccountId."""
    query = (
        sa.select(_t.SenderAccount, sa.func.count())
        .where(_t.ReceiptState.in_([ReceiptState.QUEUED, ReceiptState.LEASED]))
        .group_by(_t.SenderAccount)
    )
    return {str(sender): int(n) for sender, n in conn.execute(query)}
