"""Validate an Outbox row and turn it into the message the gateway submits (pure).

Every problem raises :class:`mpg.errors.ValidationError` naming the row, the column
and the reason; the outbound worker writes that text into ``StatusLog`` and moves the
row to 99 while the other rows keep flowing. Only the file checker looks at the file
system (:meth:`mpg.gateway.attachroots.AttachmentRoots.check` in the gateway), and it is
passed in so the rules stay testable without files.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Final, Protocol

from mpg import config, errors
from mpg.wire import model, recipients, xsd

#: Largest file ``OutboxAttachment.FileSize`` (int) can describe.
MAX_FILE_SIZE: Final = 2**31 - 1
#: Largest Content in UTF-8 bytes unless the caller says (``gateway.max_content_bytes``).
MAX_CONTENT_BYTES: Final = int(config.GatewaySettings.model_fields["max_content_bytes"].default)

#: Widths of the Outbox columns (reference §4) that SQLite would not enforce.
WIDTHS: Final = {
    "TxMessageId": 50,
    "AppCode": 20,
    "SourceDomain": 50,
    "AgentSender": 100,
    "Sender": 100,
    "Subject": 200,
    "ContentType": 20,
    "Keywords": 200,
}
ACCOUNT_WIDTH: Final = 100
FILE_NAME_WIDTH: Final = 250
FILE_TYPE_WIDTH: Final = 10

# XML 1.0 cannot carry these code points, so a row holding one could never be sent.
_XML_ILLEGAL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class OutboxRowLike(Protocol):
    """The Outbox columns validation reads (``mpg.storage.outbox.OutboxRow`` has them)."""

    @property
    def tx_message_id(self) -> str: ...
    @property
    def app_code(self) -> str | None: ...
    @property
    def source_domain(self) -> str | None: ...
    @property
    def agent_sender(self) -> str | None: ...
    @property
    def sender(self) -> str | None: ...
    @property
    def receiver_type(self) -> str | None: ...
    @property
    def receiver_list(self) -> str | None: ...
    @property
    def bcc_list(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def content(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def attachment_list(self) -> str | None: ...
    @property
    def alert_flag(self) -> bool | None: ...
    @property
    def priority(self) -> str | None: ...
    @property
    def keywords(self) -> str | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedAttachment:
    """An attachment file as validation found it; the digest comes with the upload."""

    seq_no: int
    path: str
    file_name: str
    file_type: str
    file_size: int
    download_flag: int


@dataclasses.dataclass(frozen=True, slots=True)
class ValidRow:
    """A row that passed validation: the message (without digests) and its files."""

    message: model.OutgoingMessage
    attachments: tuple[PlannedAttachment, ...]


#: Returns the size of a file that may be sent, or raises ValueError saying why not.
FileChecker = Callable[[str], int]

#: The text columns validation reads; a database without strict types (SQLite) may
#: hold anything in them.
_TEXT_COLUMNS: Final = {
    "TxMessageId": "tx_message_id",
    "AppCode": "app_code",
    "SourceDomain": "source_domain",
    "AgentSender": "agent_sender",
    "Sender": "sender",
    "ReceiverType": "receiver_type",
    "ReceiverList": "receiver_list",
    "BccList": "bcc_list",
    "Subject": "subject",
    "Content": "content",
    "ContentType": "content_type",
    "AttachmentList": "attachment_list",
    "Priority": "priority",
    "Keywords": "keywords",
}


def _text(value: str | None) -> str:
    return (value or "").strip()


def validate(
    row: OutboxRowLike,
    *,
    gateway_account: str,
    transmit_time: str,
    file_size: FileChecker,
    download_flag: int = 0,
    validate_content_for: Collection[str] = (),
    max_content_bytes: int = MAX_CONTENT_BYTES,
) -> ValidRow:
    """Check one row and build its message; raises ValidationError(field, reason, row).

    Content is free text of at most ``max_content_bytes`` (UTF-8), except on the
    channels (AppCodes, any case) named in ``validate_content_for``: there it must
    match ``mpg-content.xsd``. ``file_size`` decides which attachment paths may be sent.
    """
    tx = row.tx_message_id

    def fail(field: str, reason: str) -> errors.ValidationError:
        return errors.ValidationError(field, reason, row=tx)

    for column, attribute in _TEXT_COLUMNS.items():
        value = getattr(row, attribute)
        if isinstance(value, bytes | bytearray | memoryview):
            raise fail(column, f"holds binary data ({len(value)} bytes), not text")
        if value is not None and not isinstance(value, str):
            raise fail(column, f"holds a {type(value).__name__}, not text")

    values = {
        "TxMessageId": _text(tx),
        "AppCode": _text(row.app_code),
        "SourceDomain": _text(row.source_domain),
        "AgentSender": _text(row.agent_sender) or gateway_account,
        "Sender": _text(row.sender),
        "Subject": row.subject or "",
        "ContentType": _text(row.content_type).upper(),
        "Keywords": row.keywords or "",
    }
    if not values["TxMessageId"]:
        raise fail("TxMessageId", "is empty")
    if not values["SourceDomain"]:
        raise fail("SourceDomain", "is required")
    for column, width in WIDTHS.items():
        if len(values[column]) > width:
            raise fail(column, f"is {len(values[column])} characters, more than {width}")

    receiver_type, priority = _codes(row, values["ContentType"], fail)

    domain = values["SourceDomain"]
    receivers = _accounts(row.receiver_list, receiver_type, domain, "ReceiverList", fail)
    if not receivers:
        raise fail("ReceiverList", "names no recipient")
    bcc = _accounts(row.bcc_list, receiver_type, domain, "BccList", fail)
    sender = recipients.qualify(values["Sender"], domain) if values["Sender"] else ""
    agent = recipients.qualify(values["AgentSender"], domain)
    if len(sender) > ACCOUNT_WIDTH:
        raise fail("Sender", f"qualified account is longer than {ACCOUNT_WIDTH} characters")

    content = row.content or ""
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > max_content_bytes:
        raise fail(
            "Content", f"is {size} bytes, over gateway.max_content_bytes ({max_content_bytes})"
        )
    _check_text(values, content, validate_content_for, fail)

    attachments = _attachments(row.attachment_list, download_flag, file_size, fail)
    message = model.OutgoingMessage(
        tx_message_id=values["TxMessageId"],
        app_code=values["AppCode"],
        source_domain=domain,
        agent_sender=agent,
        sender=sender or agent,
        receiver_type=receiver_type,
        receivers=receivers,
        bcc=bcc,
        subject=values["Subject"],
        content=content,
        content_type=values["ContentType"],
        alert_flag=bool(row.alert_flag),
        priority=priority,
        keywords=values["Keywords"],
        transmit_time=transmit_time,
    )
    return ValidRow(message=message, attachments=attachments)


def _codes(
    row: OutboxRowLike, content_type: str, fail: Callable[[str, str], errors.ValidationError]
) -> tuple[str, str]:
    """The row's ReceiverType and Priority (upper-cased); ContentType checked too."""
    receiver_type = _text(row.receiver_type).upper()
    if receiver_type not in model.RECEIVER_TYPES:
        raise fail("ReceiverType", f"must be U or D, not {receiver_type or 'empty'!r}")
    if content_type not in model.CONTENT_TYPES:
        known = ", ".join(sorted(model.CONTENT_TYPES))
        raise fail("ContentType", f"{content_type or 'empty'!r} is not one of {known}")
    priority = _text(row.priority).upper() or model.DEFAULT_PRIORITY
    if priority not in model.PRIORITIES:
        raise fail("Priority", f"must be E, H, N or L, not {priority!r}")
    return receiver_type, priority


def _check_text(
    values: Mapping[str, str],
    content: str,
    validate_content_for: Collection[str],
    fail: Callable[[str, str], errors.ValidationError],
) -> None:
    """No XML-illegal characters in the free text; Content by the XSD where asked."""
    for column, text in (
        ("Subject", values["Subject"]),
        ("Content", content),
        ("Keywords", values["Keywords"]),
    ):
        bad = _XML_ILLEGAL.search(text)
        if bad:
            raise fail(column, f"holds control character U+{ord(bad.group()):04X} at {bad.start()}")
    if values["AppCode"].upper() in {code.strip().upper() for code in validate_content_for}:
        try:
            xsd.check_content(content)
        except errors.WireError as exc:
            raise fail("Content", f"does not match mpg-content.xsd: {exc}") from None


def _accounts(
    text: str | None,
    receiver_type: str,
    domain: str,
    column: str,
    fail: Callable[[str, str], errors.ValidationError],
) -> tuple[str, ...]:
    names = recipients.split_list(text)
    if receiver_type == "U":
        names = tuple(recipients.qualify(name, domain) for name in names)
    for name in names:
        if len(name) > ACCOUNT_WIDTH:
            raise fail(column, f"{name[:40]!r}… is longer than {ACCOUNT_WIDTH} characters")
    return names


def _attachments(
    text: str | None,
    download_flag: int,
    file_size: FileChecker,
    fail: Callable[[str, str], errors.ValidationError],
) -> tuple[PlannedAttachment, ...]:
    planned = []
    entries = [part.strip() for part in (text or "").split(";") if part.strip()]
    for seq_no, entry in enumerate(entries, start=1):
        path, flag = _split_flag(entry, download_flag)
        if flag is None:
            raise fail(
                "AttachmentList", f"file {seq_no} {entry!r}: the flag after '|' must be 0 or 1"
            )
        try:
            size = file_size(path)
        except ValueError as exc:
            raise fail("AttachmentList", f"file {seq_no} {path!r} {exc}") from None
        if size > MAX_FILE_SIZE:
            raise fail("AttachmentList", f"file {seq_no} {path!r} is over 2 GiB")
        name = os.path.basename(path.replace("\\", "/"))
        if len(name) > FILE_NAME_WIDTH:
            raise fail("AttachmentList", f"file name {seq_no} is over {FILE_NAME_WIDTH} characters")
        file_type = os.path.splitext(name)[1].lstrip(".").lower()[:FILE_TYPE_WIDTH]
        planned.append(
            PlannedAttachment(
                seq_no=seq_no,
                path=path,
                file_name=name,
                file_type=file_type,
                file_size=size,
                download_flag=flag,
            )
        )
    return tuple(planned)


def _split_flag(entry: str, default: int) -> tuple[str, int | None]:
    """``path|1`` asks for DownloadFlag 1 on that file; ``|`` cannot occur in a path."""
    path, sep, flag = entry.rpartition("|")
    if not sep:
        return entry, default
    return path.strip(), {"0": 0, "1": 1}.get(flag.strip())
