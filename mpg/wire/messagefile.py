"""The message file of a group (reference §6): ``.ibi``, ``text/xml``, under 100 KB.

PURE. :func:`render` turns the group's published messages into the file's bytes under
the size policy (docs/push.md, "The message file"); :func:`parse` reads a file back,
validated against ``mpg-messagefile.xsd``. The same messages always give the same
bytes (nothing in the file depends on when it was rendered), so a version's strong
ETag is a hash of its content and publishing the same set again changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Final

from lxml import etree

from mpg import errors
from mpg.wire import xmlsafe, xsd

#: Reference §6: "expected size < 100 KB".
MAX_BYTES: Final = 100 * 1024
FORMAT_VERSION: Final = "1"
MEDIA_TYPE: Final = "text/xml; charset=utf-8"
SUFFIX: Final = ".ibi"
_DECLARATION: Final = b'<?xml version="1.0" encoding="utf-8"?>\n'
_PRIORITIES: Final = frozenset({"E", "H", "N", "L"})


@dataclasses.dataclass(frozen=True, slots=True)
class PublishedMessage:
    """One message published to a group's file. Times are timezone-aware."""

    message_id: str
    published: dt.datetime
    title: str
    text: str = ""
    priority: str = "N"
    #: After this the message leaves the file at the next publication.
    expires: dt.datetime | None = None
    #: The group's category it was published to ("" for the whole group).
    category: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered file and what the size policy did."""

    data: bytes
    #: Message ids in the file, newest first.
    kept: tuple[str, ...]
    #: Left out because they had expired.
    expired: tuple[str, ...]
    #: Left out to stay under the size limit (the oldest).
    dropped: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MessageFile:
    """A parsed message file."""

    group: str
    messages: tuple[PublishedMessage, ...]


def _stamp(when: dt.datetime, where: str) -> str:
    if when.tzinfo is None:
        raise errors.ValidationError(where, "a time without a time zone")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _element(msg: PublishedMessage) -> bytes:
    """One ``<message>``; ValidationError names the message and field that cannot be written."""
    row = msg.message_id
    if not msg.message_id or len(msg.message_id) > 50:
        raise errors.ValidationError("message_id", "1 to 50 characters", row=row)
    if msg.priority not in _PRIORITIES:
        raise errors.ValidationError("priority", "one of E, H, N, L", row=row)
    attrs = {"id": msg.message_id, "published": _stamp(msg.published, "published")}
    attrs["priority"] = msg.priority
    if msg.expires is not None:
        attrs["expires"] = _stamp(msg.expires, "expires")
    if msg.category:
        attrs["category"] = msg.category
    for field, value in (("message_id", msg.message_id), ("category", msg.category)):
        if not xmlsafe.is_xml_text(value):
            raise errors.ValidationError(field, "holds a character XML 1.0 cannot carry", row=row)
    element = etree.Element("message", attrs)
    for name, value in (("title", msg.title), ("text", msg.text)):
        if not xmlsafe.is_xml_text(value):
            raise errors.ValidationError(name, "holds a character XML 1.0 cannot carry", row=row)
        etree.SubElement(element, name).text = value
    return b"  " + etree.tostring(element, encoding="utf-8") + b"\n"


def _newest_first(msg: PublishedMessage) -> tuple[float, str]:
    return (-msg.published.timestamp(), msg.message_id)


def render(
    group: str,
    messages: Iterable[PublishedMessage],
    *,
    now: dt.datetime,
    max_bytes: int = MAX_BYTES,
) -> Rendered:
    """The file of ``group``: unexpired messages, newest first, as many as fit in ``max_bytes``.

    The newest messages are kept without a gap: the first one that does not fit ends
    the file, it and every older one are ``dropped``. A newest message that does not
    fit on its own is refused (ValidationError): publishing it would show nothing.
    """
    if not group or not xmlsafe.is_xml_text(group):
        raise errors.ValidationError("group", "an id XML can carry")
    opening = etree.tostring(
        etree.Element("messagefile", {"version": FORMAT_VERSION, "group": group})
    )
    head = _DECLARATION + opening[:-2] + b">\n"
    tail = b"</messagefile>\n"
    size = len(head) + len(tail)
    kept: list[str] = []
    expired: list[str] = []
    dropped: list[str] = []
    parts: list[bytes] = []
    for msg in sorted(messages, key=_newest_first):
        if msg.expires is not None and msg.expires <= now:
            expired.append(msg.message_id)
            continue
        part = _element(msg)
        if dropped or size + len(part) > max_bytes:
            if not kept and not dropped:
                raise errors.ValidationError(
                    "size",
                    f"{len(part)} bytes alone exceed the message file's {max_bytes}",
                    row=msg.message_id,
                )
            dropped.append(msg.message_id)
            continue
        size += len(part)
        parts.append(part)
        kept.append(msg.message_id)
    return Rendered(head + b"".join(parts) + tail, tuple(kept), tuple(expired), tuple(dropped))


def _time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def parse(data: bytes) -> MessageFile:
    """Read a message file; :class:`errors.WireError` if it breaks ``mpg-messagefile.xsd``."""
    root = xmlsafe.parse(data, max_bytes=4 * MAX_BYTES)
    xsd.check(root, xsd.MESSAGE_FILE)
    messages = []
    for element in root.iterfind("message"):
        published = _time(element.get("published"))
        if published is None:  # the XSD requires it; this is for the type checker
            raise errors.WireError("message without published")
        messages.append(
            PublishedMessage(
                message_id=element.get("id", ""),
                published=published,
                title=element.findtext("title") or "",
                text=element.findtext("text") or "",
                priority=element.get("priority", "N"),
                expires=_time(element.get("expires")),
                category=element.get("category", ""),
            )
        )
    return MessageFile(root.get("group", ""), tuple(messages))
