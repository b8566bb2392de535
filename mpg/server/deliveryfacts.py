"""What the server's tables know of one message and one recipient (the I/O of explain).

:func:`gather` reads, in one read transaction, the rows the chain of
:mod:`mpg.server.explain` needs: the message (``TransmitQueue``, its lists opened),
the recipient's account (found by the name written in the list, a device id the
phone reported, or its AccountId), its ``Device`` and ``Subscription`` rows or its
``DeviceRemoval`` row, its ``ReceiveQueue`` entry, its newest ``PushJob`` for the
message and its ``MessageEvent`` rows. Names are pseudonyms at rest
(:mod:`mpg.server.vault`), so a name is looked up by its pseudonym and a device id
by its blind index, never in clear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.server import accounts, addressing, explain, rows, tables
from mpg.server.directory import devices
from mpg.server.rows import EventKind
from mpg.server.states import MessageState
from mpg.server.vault import OPAQUE_ID, Vault
from mpg.wire import model, recipients
from mpg.wire.push import NoticeKind

if TYPE_CHECKING:
    from mpg.server.app import PushServer


def explain_delivery(push: PushServer, message_id: str, recipient: str) -> explain.Explanation:
    """Where the delivery of ``message_id`` to ``recipient`` (as written in the
    ReceiverList: a device id, ``dev-…``, or a gateway or user name) stopped."""
    return explain_with(push.engine, push.vault, message_id, recipient)


def explain_with(
    engine: sa.Engine, vault: Vault, message_id: str, recipient: str
) -> explain.Explanation:
    """:func:`explain_delivery` with the engine and vault given (the CLI has no server)."""
    with transactions.connect(engine, "explaining a delivery") as conn:
        facts = gather(conn, vault, message_id.strip(), recipient.strip())
    return explain.walk(facts)


def gather(conn: sa.Connection, vault: Vault, message_id: str, recipient: str) -> explain.Facts:
    """The :class:`~mpg.server.explain.Facts` of ``message_id`` and ``recipient``."""
    row = conn.execute(
        sa.select(tables.transmit_queue).where(tables.transmit_queue.c.MessageId == message_id)
    ).first()
    if row is None:
        return explain.Facts(message_id, recipient)
    opened = rows.opened_message(vault, row)
    account = _account(conn, vault, recipient, row.SourceDomain or "")
    device_row = None if account is None else _device_row(conn, account)
    lists = _entries(opened)
    msg = explain.Message(
        received_at=float(row.ReceivedAt),
        refusal=_refusal(vault, row),
        alert=bool(row.AlertFlag),
        direct=_named(vault, lists, recipient, account, _device_id(vault, device_row)),
        addresses=tuple(a for a in map(addressing.parse, lists) if a is not None)
        if row.ReceiverType == "D"
        else (),
        recalled_at=_first_event(conn, message_id, EventKind.RECALLED, None),
    )
    if account is None:
        return explain.Facts(message_id, recipient, msg)
    a = tables.account.c
    found = conn.execute(sa.select(a.Disabled).where(a.AccountId == account)).first()
    return explain.Facts(
        message_id,
        recipient,
        msg,
        account=account,
        disabled=bool(found is not None and found.Disabled),
        device=None if device_row is None else _device(conn, device_row),
        removal=None if device_row is not None else _removal(conn, account),
        entry=_entry_state(conn, message_id, account),
        push=_push(conn, message_id, account),
        fetched_at=_first_event(conn, message_id, EventKind.FETCHED, account),
        acked_at=_first_event(conn, message_id, EventKind.ACKNOWLEDGED, account),
        read_at=_first_event(conn, message_id, EventKind.READ, account),
        withdrawn_at=_first_event(conn, message_id, EventKind.WITHDRAWN, account),
    )


def _account(conn: sa.Connection, vault: Vault, recipient: str, domain: str) -> str | None:
    """The AccountId ``recipient`` names: a registered (or removed) device's id, an
    opaque ``dev-`` id, an account's name (qualified with the message's SourceDomain
    as the gateway qualifies it), or an AccountId; None when none exists."""
    indexes = [i.hex() for i in vault.keyring.blind_indexes("device", recipient)]
    d, r = tables.device.c, tables.device_removal.c
    by_device = conn.execute(sa.select(d.AccountId).where(d.DeviceIndex.in_(indexes))).scalar()
    if by_device is not None:
        return str(by_device)
    removed = conn.execute(
        sa.select(r.AccountId)
        .where(r.DeviceIndex.in_(indexes))
        .order_by(r.RemovedAt.desc())
        .limit(1)
    ).scalar()
    if removed is not None:
        return str(removed)
    candidates = {
        recipient,
        vault.account_id(accounts.normalize(recipient)),
        vault.account_id(accounts.normalize(recipients.qualify(recipient, domain))),
    }
    if OPAQUE_ID.fullmatch(recipient.lower()):
        candidates.add(recipient.lower())
    a = tables.account.c
    known = conn.execute(sa.select(a.AccountId).where(a.AccountId.in_(sorted(candidates)))).scalar()
    if known is not None:
        return str(known)
    # A removed device named by its account: the Account row stays, so this is rare.
    gone = conn.execute(sa.select(r.AccountId).where(r.AccountId.in_(sorted(candidates)))).scalar()
    return None if gone is None else str(gone)


def _device_row(conn: sa.Connection, account: str) -> tables.Row | None:
    return conn.execute(
        sa.select(tables.device).where(tables.device.c.AccountId == account)
    ).first()


def _device_id(vault: Vault, device_row: tables.Row | None) -> str | None:
    """The device id the phone reported (None when no configured data key opens it)."""
    if device_row is None:
        return None
    place = devices.place("DeviceIdEnc", str(device_row.AccountId))
    try:
        return vault.keyring.decrypt_text(bytes(device_row.DeviceIdEnc), place)
    except errors.AtRestError:
        return None


def _device(conn: sa.Connection, row: tables.Row) -> explain.Device:
    s = tables.subscription.c
    subscribed = conn.execute(
        sa.select(s.CategoryId, s.SubscribedAt).where(
            s.AccountId == row.AccountId, s.GroupId == row.GroupId
        )
    ).all()
    return explain.Device(
        group=str(row.GroupId),
        registered_at=float(row.RegisteredAt),
        token=explain.Token(
            present=row.PushTokenEnc is not None,
            set_at=row.PushTokenAt,
            state=row.PushTokenState,
            state_at=row.PushTokenStateAt,
            reason=row.PushTokenStateReason or "",
        ),
        subscriptions={str(c.CategoryId): float(c.SubscribedAt) for c in subscribed},
    )


def _removal(conn: sa.Connection, account: str) -> explain.Removal | None:
    r = tables.device_removal.c
    found = conn.execute(
        sa.select(r.RemovedAt, r.Reason, r.GroupId).where(r.AccountId == account)
    ).first()
    if found is None:
        return None
    return explain.Removal(float(found.RemovedAt), str(found.Reason), str(found.GroupId))


def _refusal(vault: Vault, row: tables.Row) -> str:
    if row.State != MessageState.REFUSED:
        return ""
    return rows.submit_result(vault, row).reason or "refused"


def _entries(opened: dict[str, object]) -> list[str]:
    """The To and Bcc lists' entries, as stored (qualified names, ids, addresses)."""
    return [
        entry
        for name in ("ReceiverList", "BccList")
        for entry in recipients.split_list(str(opened.get(name) or ""))
    ]


def _named(
    vault: Vault,
    entries: list[str],
    recipient: str,
    account: str | None,
    device_id: str | None,
) -> bool:
    """Whether the lists name the recipient itself (not through a group address)."""
    spelled = {recipient.lower()} | ({device_id.lower()} if device_id else set())
    for entry in entries:
        if addressing.parse(entry) is not None:
            continue
        if entry.lower() in spelled or vault.account_id(accounts.normalize(entry)) == account:
            return True
    return False


def _entry_state(conn: sa.Connection, message_id: str, account: str) -> str | None:
    q = tables.receive_queue.c
    found = conn.execute(
        sa.select(q.State).where(
            q.MessageId == message_id,
            q.Recipient == account,
            q.Kind == model.DeliveryKind.MESSAGE,
        )
    ).scalar()
    return None if found is None else str(found)


def _push(conn: sa.Connection, message_id: str, account: str) -> explain.Push | None:
    j = tables.push_job.c
    found = conn.execute(
        sa.select(j.State, j.Attempts, j.LastError, j.NotBefore, j.DoneAt)
        .where(j.MessageId == message_id, j.AccountId == account, j.Kind == str(NoticeKind.MESSAGE))
        .order_by(j.CreatedAt.desc())
        .limit(1)
    ).first()
    if found is None:
        return None
    return explain.Push(
        state=str(found.State),
        attempts=int(found.Attempts),
        last_error=found.LastError or "",
        not_before=found.NotBefore,
        done_at=found.DoneAt,
    )


def _first_event(
    conn: sa.Connection, message_id: str, kind: EventKind, account: str | None
) -> float | None:
    e = tables.message_event.c
    query = sa.select(sa.func.min(e.At)).where(e.MessageId == message_id, e.Kind == str(kind))
    if account is not None:
        query = query.where(e.Account == account)
    found = conn.execute(query).scalar()
    return None if found is None else float(found)
