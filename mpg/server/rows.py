"""Row mapping of the server's tables: wire objects to row dicts and rows back.

Every row the store inserts is built here and every row it hands out is read
here, so a column added to :mod:`mpg.server.tables` that the store writes or
returns is mapped in this one module. So is personal data at rest: names become
account pseudonyms and personal text is sealed on the way in and opened on the way
out (:mod:`mpg.server.vault`), and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

from mpg.db import timeids
from mpg.server import fanout, identity, tables
from mpg.server.states import EntryState, MessageState
from mpg.server.vault import Vault
from mpg.wire import model, recipients


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
    READ = "read"  # a device reported that its user read it (device API)
    NOTIFIED = "notified"  # a push provider accepted a push to this recipient device
    PUSH_FAILED = "push_failed"  # a push attempt failed (Detail: the reason; retried or not)
    PUBLISHED = "published"  # an Outbox row's mpg:publish put it in a message file (Detail: which)
    PUBLISH_FAILED = "publish_failed"  # ... could not (Detail: the file and why)
    UNPUBLISHED = "unpublished"  # its recall took it out of that file again (Detail: which)


def event(
    message_id: str, at: float, kind: EventKind, account: str, detail: str = ""
) -> dict[str, Any]:
    """A ``MessageEvent`` row (Detail cut to its 200 characters)."""
    return {
        "MessageId": message_id,
        "At": at,
        "Kind": str(kind),
        "Account": account,
        "Detail": detail[:200],
    }


#: ``TransmitQueue`` columns stored sealed in ``<name>Enc`` (row key MessageId), with
#: what the clear column then holds.
TRANSMIT_SEALED: Final[Mapping[str, str | None]] = {
    "AgentSender": None,
    "Sender": None,
    "ReceiverList": None,
    "BccList": None,
    "Subject": None,
    "Content": None,
    "Keywords": None,
    "SubmitResult": "",  # NOT NULL
}

#: Each sealed ``TransmitQueue`` column with the column its sealed value goes in.
_TRANSMIT_SEALED_AS: Final = tuple((name, name + "Enc") for name in TRANSMIT_SEALED)


def message(
    vault: Vault,
    msg: model.OutgoingMessage,
    sender: str,
    message_id: str,
    now: float,
    recipient_count: int,
    state: MessageState,
    result: model.SubmitResult,
    digest: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``TransmitQueue`` row of ``sender`` (its name), and the row as
    :func:`opened_message` reads it back (its :data:`DELIVERED_COLUMNS`, opened).

    ``result`` is kept to answer a resubmission, ``digest``
    (:func:`mpg.server.identity.digest` of ``msg``) to tell a resubmission from another
    message. The row's personal columns are sealed."""
    to, bcc = fanout.qualified(msg)
    personal = {
        # Recipients see who authenticated, never a name the client wrote.
        "AgentSender": sender,
        "Sender": identity.sender_shown(sender, msg),
        "ReceiverList": ";".join(to),
        "BccList": ";".join(bcc),
        "Subject": msg.subject,
        "Content": msg.content,
        "Keywords": msg.keywords,
        "SubmitResult": _kept_answer(result, message_id, recipient_count),
    }
    row: dict[str, Any] = {
        "MessageId": message_id,
        "SenderAccount": vault.account_id(sender),
        "TxMessageId": msg.tx_message_id,
        "AppCode": msg.app_code,
        "SourceDomain": msg.source_domain,
        "ReceiverType": msg.receiver_type,
        "ContentType": msg.content_type,
        "AlertFlag": msg.alert_flag,
        "Priority": msg.priority,
        "TransmitTime": msg.transmit_time,
        "ReceivedAt": now,
        "RecipientCount": recipient_count,
        "ServedCount": 0,
        "RecalledCount": 0,
        "State": state,
        "ContentDigest": digest,
    }
    row.update(TRANSMIT_SEALED)
    # An empty field (no Bcc, no keywords) stays NULL: it reads back as empty (None).
    clear = {name: personal[name] or None for name in TRANSMIT_SEALED}
    row.update(
        vault.seal_row(
            "TransmitQueue",
            message_id,
            {sealed: clear[name] for name, sealed in _TRANSMIT_SEALED_AS},
        )
    )
    opened = {name: row[name] for name in _DELIVERED_CLEAR}
    opened.update({name: clear[name] for name in DELIVERED_SEALED})
    return row, opened


#: The sealed ``TransmitQueue`` columns a delivery carries (not the kept SubmitResult).
DELIVERED_SEALED: Final = tuple(name for name in TRANSMIT_SEALED if name != "SubmitResult")
_DELIVERED_SEALED_AS: Final = tuple((name, name + "Enc") for name in DELIVERED_SEALED)
#: The ``TransmitQueue`` columns a delivery carries that are stored as they are.
_DELIVERED_CLEAR: Final = (
    "MessageId",
    "AppCode",
    "SourceDomain",
    "ReceiverType",
    "ContentType",
    "AlertFlag",
    "Priority",
    "TransmitTime",
)
#: The ``TransmitQueue`` columns a delivery is made of (:func:`delivery`).
DELIVERED_COLUMNS: Final = (
    *_DELIVERED_CLEAR,
    *DELIVERED_SEALED,
    *(name + "Enc" for name in DELIVERED_SEALED),
)


def opened_message(
    vault: Vault, row: tables.Row, fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """A ``TransmitQueue`` row by column name, its sealed columns among
    :data:`DELIVERED_SEALED` opened (a row of an older version: its clear columns as
    they are); the row needs at least :data:`DELIVERED_COLUMNS`. ``fields``: the
    result's column names, when the caller opens many rows of one result (a row
    builds the list anew each time it is asked)."""
    # zip over the names is thrice as fast as row._mapping.
    values = dict(zip(row._fields if fields is None else fields, row, strict=True))
    opened = vault.unseal_row(
        "TransmitQueue",
        row.MessageId,
        {sealed: values[sealed] for _, sealed in _DELIVERED_SEALED_AS},
        {sealed: values[name] for name, sealed in _DELIVERED_SEALED_AS},
    )
    for name, sealed in _DELIVERED_SEALED_AS:
        values[name] = opened[sealed]
    return values


def _kept_answer(result: model.SubmitResult, message_id: str, recipient_count: int) -> str:
    """What ``SubmitResult`` keeps of ``result``: nothing when the row itself says it
    (accepted as ``MessageId`` for ``RecipientCount`` recipients, none unknown, as most
    are), else its JSON. Most messages are spared a JSON text and a sealed field."""
    plain = (
        result.accepted
        and result.message_id == message_id
        and result.recipients == recipient_count
        and not (result.unknown or result.reason or result.served_at_once or result.recall)
    )
    return "" if plain else result_to_json(result)


def submit_result(vault: Vault, row: tables.Row) -> model.SubmitResult:
    """The answer a ``TransmitQueue`` row keeps (needs MessageId, SubmitResult and
    SubmitResultEnc, and for an answer the row itself says, TxMessageId and
    RecipientCount)."""
    text = vault.unseal(
        row.SubmitResultEnc, "TransmitQueue", "SubmitResultEnc", row.MessageId, row.SubmitResult
    )
    if text:
        return result_from_json(text)
    return model.SubmitResult(
        row.TxMessageId, True, message_id=row.MessageId, recipients=row.RecipientCount
    )


def entry(message_id: str, recipient: str, rank: int, seq: int) -> dict[str, Any]:
    """A new ``ReceiveQueue`` row (queued) of ``message_id`` for ``recipient`` (an
    AccountId)."""
    return {
        "EntryId": timeids.time_ordered_uuid(),
        "MessageId": message_id,
        "Recipient": recipient,
        "Kind": model.DeliveryKind.MESSAGE,
        "VisibleBcc": None,
        "VisibleBccEnc": None,
        "PriorityRank": rank,
        "State": EntryState.QUEUED,
        "LeaseUntil": None,
        "CreatedSeq": seq,
        "TxMessageId": None,
        "Served": None,
        "Recalled": None,
    }


def fanned_out(
    vault: Vault,
    message_id: str,
    known: tuple[recipients.Recipient, ...],
    rank: int,
    first_seq: int,
) -> list[dict[str, Any]]:
    """The entries of a message for its known recipients (names), in arrival order."""
    made = []
    for n, rcpt in enumerate(known):
        row = entry(message_id, vault.account_id(rcpt.account), rank, first_seq + n)
        if rcpt.visible_bcc:
            row["VisibleBccEnc"] = vault.seal(
                rcpt.visible_bcc, "ReceiveQueue", "VisibleBccEnc", row["EntryId"]
            )
        made.append(row)
    return made


def visible_bcc(vault: Vault, entry_row: tables.Row) -> str:
    """What of the Bcc list a ``ReceiveQueue`` entry's recipient sees."""
    opened = vault.unseal(
        entry_row.VisibleBccEnc,
        "ReceiveQueue",
        "VisibleBccEnc",
        entry_row.EntryId,
        entry_row.VisibleBcc,
    )
    return opened or ""


def attachment(
    vault: Vault, message_id: str, info: model.AttachmentInfo, stage: fanout.Staged
) -> dict[str, Any]:
    """A ``TransmitAttachment`` row: the announced info (its file name sealed) and the
    staged file."""
    return {
        "MessageId": message_id,
        "SeqNo": info.seq_no,
        "FileName": None,
        "FileNameEnc": vault.seal(
            info.file_name, "TransmitAttachment", "FileNameEnc", f"{message_id}/{info.seq_no}"
        ),
        "FileType": info.file_type,
        "FileSize": info.file_size,
        "DownloadFlag": info.download_flag,
        "Sha256": info.sha256,
        "BlobPath": stage.path,
        "BlobKeyId": stage.key_id,
    }


def attachment_info(vault: Vault, row: tables.Row) -> model.AttachmentInfo:
    """A ``TransmitAttachment`` row as the wire's AttachmentInfo."""
    name = vault.unseal(
        row.FileNameEnc,
        "TransmitAttachment",
        "FileNameEnc",
        f"{row.MessageId}/{row.SeqNo}",
        row.FileName,
    )
    return model.AttachmentInfo(
        row.SeqNo,
        name or "",
        row.FileType or "",
        row.FileSize,
        row.DownloadFlag,
        row.Sha256,
    )


def staged(row: tables.Row) -> fanout.Staged:
    """An ``UploadStage`` row as the fan-out rules see it."""
    return fanout.Staged(bool(row.Complete), int(row.Size), row.Sha256, str(row.Path), row.KeyId)


def delivery(
    entry_row: tables.Row,
    owner: str,
    msg: Mapping[str, Any],
    files: tuple[model.AttachmentInfo, ...],
    bcc: str,
) -> model.Delivery:
    """A recipient's message entry and its opened ``TransmitQueue`` row
    (:func:`opened_message`) as a Delivery; ``bcc`` is :func:`visible_bcc`."""
    return model.Delivery(
        rx_message_id=entry_row.EntryId,
        message_id=msg["MessageId"],
        app_code=msg["AppCode"] or "",
        source_domain=msg["SourceDomain"] or "",
        agent_sender=msg["AgentSender"] or "",
        sender=msg["Sender"] or "",
        owner=owner,
        receiver_type=msg["ReceiverType"],
        receiver_list=msg["ReceiverList"] or "",
        bcc_list=bcc,
        subject=msg["Subject"] or "",
        content=msg["Content"] or "",
        content_type=msg["ContentType"],
        alert_flag=bool(msg["AlertFlag"]),
        priority=msg["Priority"] or model.DEFAULT_PRIORITY,
        keywords=msg["Keywords"] or "",
        transmit_time=msg["TransmitTime"],
        attachments=files,
    )


#: Bytes a delivery's XML takes besides its text fields (element names, attributes,
#: ids, times), and a receipt's whole size: generous upper bounds.
DELIVERY_OVERHEAD: Final = 2048
RECEIPT_BYTES: Final = 1024
#: Text fields of a ``TransmitQueue`` row that travel in each delivery.
_DELIVERED_TEXT: Final = (
    "AppCode",
    "SourceDomain",
    "AgentSender",
    "Sender",
    "ReceiverList",
    "Subject",
    "Content",
    "Keywords",
)
_T = TypeVar("_T")


def delivery_bytes(msg: Mapping[str, Any], visible_bcc: str | None) -> int:
    """The most bytes ``msg`` (opened) can take in a fetch answer: UTF-8 text plus, for
    each character XML must escape, the longest escape (``&quot;``), plus the overhead."""
    # One string of all the fields: a few passes over it instead of a few per field.
    raw = "".join([*(str(msg[name] or "") for name in _DELIVERED_TEXT), visible_bcc or ""])
    data = raw.encode("utf-8")
    escaped = data.count(b"&") + data.count(b"<") + data.count(b">") + data.count(b'"')
    return DELIVERY_OVERHEAD + len(data) + 5 * escaped


def within_budget(items: Sequence[_T], sizes: Sequence[int], budget: int) -> list[_T]:
    """The longest prefix of ``items`` whose ``sizes`` add up to at most ``budget``,
    and never less than the first item, so a large message still goes out alone."""
    total = 0
    for n, size in enumerate(sizes):
        total += size
        if total > budget and n > 0:
            return list(items[:n])
    return list(items)


def receipt(entry_row: tables.Row) -> model.Receipt:
    """A receipt, read shaped as a queue entry (:mod:`mpg.server.receipts`), as the
    wire's Receipt."""
    return model.Receipt(
        entry_row.EntryId,
        entry_row.TxMessageId,
        entry_row.MessageId,
        entry_row.Served,
        entry_row.Recalled,
    )


def server_event(row: tables.Row, names: Mapping[str, str]) -> model.ServerEvent:
    """A ``MessageEvent`` row as the wire's ServerEvent; ``names``: AccountId -> name."""
    account = str(row.Account)
    return model.ServerEvent(
        _iso(row.At), str(row.Kind), names.get(account, account), str(row.Detail)
    )


def _iso(at: float) -> str:
    """Unix time as ISO-8601 UTC with microseconds (the gateway history's form)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: SubmitResult's fields in their order: the keys of its JSON.
_RESULT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(model.SubmitResult))


def result_to_json(result: model.SubmitResult) -> str:
    """``TransmitQueue.SubmitResult``: the answer, as JSON (``dataclasses.asdict``'s
    shape, built without its deep copies: one per submitted message)."""
    data = {name: getattr(result, name) for name in _RESULT_FIELDS}
    data["unknown"] = list(result.unknown)
    if result.recall is not None:
        data["recall"] = dataclasses.asdict(result.recall)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def result_from_json(text: str) -> model.SubmitResult:
    """The answer stored by :func:`result_to_json`."""
    data = json.loads(text)
    recall = data.pop("recall")
    return model.SubmitResult(
        **{**data, "unknown": tuple(data["unknown"])},
        recall=model.RecallOutcome(**recall) if recall else None,
    )
