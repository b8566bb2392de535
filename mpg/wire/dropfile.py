"""The XML document interface: message files and receipt files (pure, no I/O).

One ``<message>`` document is one message: its Outbox columns (a drop file the ERP
writes) or its Inbox columns (a file the gateway writes into the inbound folder) as
child elements named like the columns, plus ``<attachments>``. One ``<receipt>``
document tells what became of an Outbox row. ``mpg-drop.xsd`` describes both;
``docs/dropfolders.md`` is the user's guide.

Every document is parsed by :mod:`mpg.wire.xmlsafe` and then validated against the
XSD; every problem raises :class:`mpg.errors.DropFileError`, which names the line (when known),
the element and the reason.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Final

from lxml import etree

from mpg import errors
from mpg.wire import xmlsafe, xsd

VERSION: Final = "1"
MESSAGE: Final = "message"
RECEIPT: Final = "receipt"

#: Every column a message document may carry, in the Inbox's column order.
FIELDS: Final = (
    "TxMessageId",
    "RxMessageId",
    "AppCode",
    "SourceDomain",
    "AgentSender",
    "Sender",
    "Owner",
    "ReceiverType",
    "ReceiverList",
    "BccList",
    "Subject",
    "Content",
    "ContentType",
    "AttachmentFlag",
    "AlertFlag",
    "MessageId",
    "State",
    "TransmitTime",
    "ReceiveTime",
    "StatusTime",
    "StatusLog",
    "Priority",
    "Keywords",
)
#: The columns an ERP writes into Outbox: all a drop file may set.
DROP_FIELDS: Final = frozenset(
    {
        "TxMessageId",
        "AppCode",
        "SourceDomain",
        "AgentSender",
        "Sender",
        "ReceiverType",
        "ReceiverList",
        "BccList",
        "Subject",
        "Content",
        "ContentType",
        "AlertFlag",
        "Priority",
        "Keywords",
    }
)
_TRUE: Final = frozenset({"1", "true"})
# Separators, characters Windows refuses in names, controls and ';'/'|' (which
# AttachmentList uses); everything else, Chinese included, stays as it is.
_UNSAFE_NAME: Final = re.compile(r'[\\/:*?"<>|;\x00-\x1f\x7f]+')
_MAX_NAME: Final = 120


@dataclasses.dataclass(frozen=True, slots=True)
class Attachment:
    """One ``<attachment>``; exactly one of ``path``, ``data`` and ``file`` is set,
    or none of them for an inbound attachment whose bytes were not downloaded."""

    name: str = ""
    path: str = ""  # a full path the gateway reads (drop files)
    data: bytes | None = None  # embedded bytes (base64 in the document)
    file: str = ""  # a file beside the document (inbound files)
    download_flag: int | None = None
    seq_no: int | None = None
    size: int | None = None
    sha256: str = ""
    attachment_id: str = ""
    source_uri: str = ""
    line: int = 0  # where it was in the parsed document


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A parsed message document: column texts, where each was, the attachments."""

    fields: dict[str, str]
    lines: dict[str, int]
    attachments: tuple[Attachment, ...] = ()

    def line_of(self, field: str) -> int:
        """The line of ``field``'s element (0 when absent)."""
        return self.lines.get(field, 0)


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one Outbox row: one recorded state change."""

    tx_message_id: str
    state: int
    from_state: int | None = None
    message_id: str = ""
    status_time: str = ""
    status_log: str = ""
    at: str = ""  # ISO-8601 UTC of the change


# --------------------------------------------------------------------------- building


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def build_message(fields: Mapping[str, object], attachments: Sequence[Attachment] = ()) -> bytes:
    """A ``<message>`` document (UTF-8 bytes); None values are left out.

    Raises :class:`errors.WireError` for an unknown column or a character XML cannot
    carry (naming the column).
    """
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise errors.WireError(f"message: unknown column(s) {', '.join(unknown)}")
    root = etree.Element(MESSAGE, {"version": VERSION})
    for name in FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        el = etree.SubElement(root, name)
        el.text = xmlsafe.check_text(_text(value), f"message/{name}")
    if attachments:
        holder = etree.SubElement(root, "attachments")
        for n, att in enumerate(attachments, 1):
            holder.append(_attachment_element(att, f"message/attachments/attachment[{n}]"))
    return _serialize(root)


def _attachment_element(att: Attachment, where: str) -> etree._Element:
    el = etree.Element("attachment")
    attrs: list[tuple[str, str]] = [
        ("seqno", "" if att.seq_no is None else str(att.seq_no)),
        ("name", att.name),
        ("path", att.path),
        ("file", att.file),
        ("downloadflag", "" if att.download_flag is None else str(att.download_flag)),
        ("size", "" if att.size is None else str(att.size)),
        ("sha256", att.sha256),
        ("attachmentid", att.attachment_id),
        ("sourceuri", att.source_uri),
    ]
    for key, value in attrs:
        if value:
            el.set(key, xmlsafe.check_text(value, f"{where}/@{key}"))
    if att.data is not None:
        el.set("encoding", "base64")
        el.text = base64.b64encode(att.data).decode("ascii")
    return el


def build_receipt(receipt: Receipt) -> bytes:
    """A ``<receipt>`` document (UTF-8 bytes)."""
    root = etree.Element(RECEIPT, {"version": VERSION})
    values: list[tuple[str, str]] = [
        ("TxMessageId", receipt.tx_message_id),
        ("MessageId", receipt.message_id),
        ("FromState", "" if receipt.from_state is None else str(receipt.from_state)),
        ("State", str(receipt.state)),
        ("StatusTime", receipt.status_time),
        ("StatusLog", receipt.status_log),
        ("At", receipt.at),
    ]
    for name, value in values:
        if value or name in ("TxMessageId", "State"):
            etree.SubElement(root, name).text = xmlsafe.check_text(value, f"receipt/{name}")
    return _serialize(root)


def _serialize(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="utf-8", xml_declaration=True, pretty_print=True)
    return body


# ---------------------------------------------------------------------------- parsing


def _load(data: bytes, root_name: str, max_bytes: int) -> etree._Element:
    try:
        root = xmlsafe.parse(data, max_bytes=max_bytes)
    except errors.WireError as exc:
        raise errors.DropFileError("document", str(exc), line=_line_in(str(exc))) from None
    if root.tag != root_name:
        raise errors.DropFileError(
            "document",
            f"expected a <{root_name}> document, got <{root.tag}>",
            line=_source_line(root),
        )
    try:
        xsd.check(root, xsd.DROP)
    except errors.WireError as exc:
        line = _line_in(str(exc))
        reason = re.sub(r"^line \d+: ", "", str(exc))
        raise errors.DropFileError(_element_in(reason), reason, line=line) from None
    return root


def _source_line(el: etree._Element) -> int:
    line = el.sourceline
    return line if isinstance(line, int) else 0


def _line_in(message: str) -> int:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else 0


def _element_in(reason: str) -> str:
    found = re.match(r"Element '([^']+)'", reason)
    return found.group(1) if found else "document"


def _content_text(el: etree._Element) -> str:
    """Text as it is; inline XML (one child element) serialized, surrounding blanks cut."""
    if len(el) == 0:
        return el.text or ""
    parts = [el.text or ""]
    parts.extend(etree.tostring(child, encoding="unicode", with_tail=True) for child in el)
    return "".join(parts).strip()


def parse_message(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> Message:
    """Parse and validate a ``<message>`` document; raises :class:`mpg.errors.DropFileError`."""
    root = _load(data, MESSAGE, max_bytes)
    fields: dict[str, str] = {}
    lines: dict[str, int] = {}
    attachments: list[Attachment] = []
    for el in root:
        tag = str(el.tag)
        lines[tag] = _source_line(el)
        if tag == "attachments":
            attachments = [_parse_attachment(a) for a in el.iterchildren("attachment")]
        elif tag == "Content":
            fields[tag] = _content_text(el)
        else:
            fields[tag] = el.text or ""
    return Message(fields=fields, lines=lines, attachments=tuple(attachments))


def _parse_attachment(el: etree._Element) -> Attachment:
    line = _source_line(el)
    encoded = el.get("encoding") == "base64"
    sources = [bool(el.get("path")), encoded, bool(el.get("file"))]
    if sum(sources) > 1:
        raise errors.DropFileError(
            "attachment", 'give only one of path, file and encoding="base64"', line=line
        )
    data = None
    if encoded:
        if not el.get("name"):
            raise errors.DropFileError("attachment", "an embedded file needs a name", line=line)
        try:
            data = base64.b64decode("".join((el.text or "").split()), validate=True)
        except (binascii.Error, ValueError):
            raise errors.DropFileError(
                "attachment", "embedded bytes are not valid base64", line=line
            ) from None
    elif (el.text or "").strip():
        raise errors.DropFileError(
            "attachment", 'text inside <attachment> needs encoding="base64"', line=line
        )
    flag = el.get("downloadflag")
    seq = el.get("seqno")
    size = el.get("size")
    return Attachment(
        name=el.get("name", ""),
        path=el.get("path", ""),
        data=data,
        file=el.get("file", ""),
        download_flag=None if flag is None else int(flag),
        seq_no=None if seq is None else int(seq),
        size=None if size is None else int(size),
        sha256=el.get("sha256", ""),
        attachment_id=el.get("attachmentid", ""),
        source_uri=el.get("sourceuri", ""),
        line=line,
    )


def parse_receipt(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> Receipt:
    """Parse and validate a ``<receipt>`` document; raises :class:`mpg.errors.DropFileError`."""
    root = _load(data, RECEIPT, max_bytes)
    values = {str(el.tag): el.text or "" for el in root}
    from_state = values.get("FromState")
    return Receipt(
        tx_message_id=values["TxMessageId"],
        state=int(values["State"]),
        from_state=int(from_state) if from_state else None,
        message_id=values.get("MessageId", ""),
        status_time=values.get("StatusTime", ""),
        status_log=values.get("StatusLog", ""),
        at=values.get("At", ""),
    )


# ----------------------------------------------------------------- drop file -> Outbox


def flag(value: str, field: str, line: int) -> bool:
    """A bit column's text (1/0/true/false, as the XSD allows) as a bool."""
    text = value.strip().lower()
    if text not in (*_TRUE, "0", "false"):
        raise errors.DropFileError(field, f"must be 1, 0, true or false, not {value!r}", line=line)
    return text in _TRUE


def outbox_values(message: Message) -> dict[str, object]:
    """The Outbox column values a drop file sets (AttachmentList aside).

    Raises :class:`mpg.errors.DropFileError` for a column an ERP does not write (RxMessageId,
    State, …): the gateway sets those itself.
    """
    values: dict[str, object] = {}
    for name, text in message.fields.items():
        if name not in DROP_FIELDS:
            raise errors.DropFileError(
                name,
                "is not accepted in a drop file (the gateway sets it)",
                line=message.line_of(name),
            )
        if name == "AlertFlag":
            values[name] = flag(text, name, message.line_of(name))
        elif name == "Content":
            values[name] = text
        else:
            values[name] = text.strip()
    return values


# ------------------------------------------------------------------------- file names


def file_stamp(at: str) -> str:
    """``2026-11-23T06:30:00.123456Z`` -> ``20261123063000123456``: sorts like time."""
    digits = re.sub(r"\D", "", at)
    return digits.ljust(20, "0")[:20]


def safe_name(text: str) -> str:
    """``text`` usable as (part of) a file name on every system: no separators or
    reserved characters, no dot or blank at either end, at most 120 characters."""
    cleaned = _UNSAFE_NAME.sub("_", text).strip(". ")
    return cleaned[:_MAX_NAME] or "_"
