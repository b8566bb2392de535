"""The XSDs MPG ships (``mpg/wire/xsd/``, copied to ``schema/``) and validation by them.

The schema documents themselves are read through :mod:`mpg.wire.xmlsafe` like any
other XML, and compiled once per process. Validation never fetches anything: the
schemas import nothing and documents are parsed without DTDs.
"""

from __future__ import annotations

import functools
import importlib.resources
import threading
from typing import Any, Final

from lxml import etree

from mpg import errors
from mpg.wire import xmlsafe

#: The Content formats of reference §3 (approval, reply, recall).
CONTENT: Final = "mpg-content.xsd"
#: Drop files, inbound message files and receipt files (docs/dropfolders.md).
DROP: Final = "mpg-drop.xsd"
#: A message group's published message file (docs/push.md).
MESSAGE_FILE: Final = "mpg-messagefile.xsd"
NAMES: Final = (CONTENT, DROP, MESSAGE_FILE)

# One compiled schema is shared by every thread; libxml2 validation contexts are
# created per call, but lxml's error log on the schema object is not thread-safe.
_lock: Final = threading.Lock()


def text(name: str) -> bytes:
    """The bytes of one shipped XSD."""
    if name not in NAMES:
        raise ValueError(f"unknown schema {name!r}")
    return importlib.resources.files("mpg.wire").joinpath("xsd", name).read_bytes()


@functools.cache
def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(xmlsafe.parse(text(name)))


def check(root: etree._Element, name: str) -> None:
    """Raise :class:`errors.WireError` naming the line and reason if ``root`` breaks ``name``."""
    schema = _schema(name)
    with _lock:
        if schema.validate(root):
            return
        # lxml-stubs leave the error log untyped; its entries have .line and .message.
        log: Any = schema.error_log
        first = log[0]
    raise errors.WireError(f"line {first.line}: {first.message}")


def check_content(content: str | bytes) -> None:
    """Parse a Content document safely and validate it against ``mpg-content.xsd``."""
    check(xmlsafe.parse(content), CONTENT)
