"""The only XML parser MPG uses: no DTD, no entities, no network, a size limit.

Every XML document that crosses a boundary (wire payloads, the Content column) is
parsed here. A document with any DOCTYPE is refused outright rather than parsed with
its DTD ignored: MPG's formats never need one, so its presence is itself suspicious.
XInclude is never processed (lxml only does that on an explicit ``xinclude()`` call).
"""

from __future__ import annotations

import re
import threading
from typing import Final

from lxml import etree

from mpg import errors

#: Largest document accepted by default (the server's request limit is set separately).
MAX_BYTES: Final = 16 * 1024 * 1024

# Characters XML 1.0 allows (§2.2 Char); anything else cannot be written or read back.
_NOT_XML_CHAR: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPACE: Final = re.compile(rb"\s+")
_BOMS: Final = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _new_parser(*, override_encoding: str | None) -> etree.XMLParser:
    return etree.XMLParser(
        encoding=override_encoding,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        # Comments and processing instructions would split element text in two; they
        # carry nothing MPG reads, so they are dropped and the text stays whole.
        remove_comments=True,
        remove_pis=True,
        strip_cdata=True,
        collect_ids=False,
    )


class _Parsers(threading.local):
    """One parser pair per thread: lxml serialises concurrent use of one parser."""

    def __init__(self) -> None:
        self.from_bytes = _new_parser(override_encoding=None)
        # Text is already decoded, so the document's own encoding declaration (often
        # utf-16 for an nvarchar column) must not be applied to our UTF-8 bytes.
        self.from_text = _new_parser(override_encoding="utf-8")


_parsers: Final = _Parsers()


def parse(data: bytes | str, *, max_bytes: int = MAX_BYTES) -> etree._Element:
    """Parse one XML document safely and return its root element.

    Raises :class:`errors.UnsafeXml` for a document over ``max_bytes`` (checked before
    parsing), any DOCTYPE or entity declaration, and :class:`errors.WireError` for a
    malformed document (the message names the line when lxml knows it).
    """
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise errors.WireError(f"malformed XML: {exc.reason} at position {exc.start}") from None
        parser = _parsers.from_text
    else:
        raw = data
        parser = _parsers.from_bytes
    if len(raw) > max_bytes:
        raise errors.UnsafeXml(f"XML document of {len(raw)} bytes exceeds the {max_bytes} limit")
    if _prolog_has_doctype(raw):
        raise errors.UnsafeXml("XML document has a DOCTYPE (DTDs and entities are refused)")
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise errors.WireError(_syntax_message(exc)) from None
    except ValueError as exc:
        raise errors.WireError(f"malformed XML: {exc}") from None
    if root is None:
        raise errors.WireError("malformed XML: empty document")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.public_id:
        raise errors.UnsafeXml("XML document has a DOCTYPE (DTDs and entities are refused)")
    return root


def _prolog_has_doctype(raw: bytes) -> bool:
    """Whether a DOCTYPE appears before the root element (checked before parsing).

    Only the prolog is scanned, so ``<!DOCTYPE html>`` quoted inside element text or
    CDATA (HTML pages in a Content document) is not mistaken for one. The scan is
    linear: whitespace, processing instructions and comments are skipped in C.
    """
    head = raw[:4]
    if b"\x00" in head:
        # UTF-16/32: the markup characters are ASCII, so without the NULs it reads alike.
        raw = raw.replace(b"\x00", b"")
    for bom in _BOMS:
        if raw.startswith(bom):
            raw = raw[len(bom) :]
            break
    pos, size = 0, len(raw)
    while pos < size:
        space = _SPACE.match(raw, pos)
        if space is not None:
            pos = space.end()
        elif raw.startswith(b"<?", pos):
            end = raw.find(b"?>", pos + 2)
            if end < 0:
                return False
            pos = end + 2
        elif raw.startswith(b"<!--", pos):
            end = raw.find(b"-->", pos + 4)
            if end < 0:
                return False
            pos = end + 3
        else:
            return raw[pos : pos + 9].upper() == b"<!DOCTYPE"
    return False


def _syntax_message(exc: etree.XMLSyntaxError) -> str:
    reason = (exc.msg or str(exc)).strip()
    if exc.lineno:
        return f"malformed XML at line {exc.lineno}: {reason}"
    return f"malformed XML: {reason}"


def is_xml_text(value: str) -> bool:
    """Whether every character of ``value`` is allowed in XML 1.0."""
    return _NOT_XML_CHAR.search(value) is None


def check_text(value: str, where: str) -> str:
    """Return ``value`` if XML 1.0 can carry it, else raise :class:`errors.WireError`.

    ``where`` names the field (``submit/message[2]/subject``) so that the caller can
    fail just the row that holds it.
    """
    bad = _NOT_XML_CHAR.search(value)
    if bad is not None:
        raise errors.WireError(
            f"{where}: character U+{ord(bad.group()):04X} at position {bad.start()} "
            "is not allowed in XML 1.0"
        )
    return value
