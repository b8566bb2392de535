"""PURE: the rules for what admins name and type (docs/devices.md, "Message groups").

Every check returns the normalised value or raises :class:`mpg.errors.ValidationError`
naming the field and the reason, so the API, the CLI and the stores refuse the same
input with the same words.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from typing import Final

from mpg import errors

#: Ids people choose (groups, categories): short lower-case slugs a ReceiverList can name.
SLUG_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,49}$"
_SLUG: Final = re.compile(SLUG_PATTERN)
#: A domain name as stored: lower-case ASCII (IDNA) labels, at least two.
# No look-ahead (the API's validator has none): the length is checked on its own.
DOMAIN_PATTERN: Final = (
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)
_DOMAIN: Final = re.compile(DOMAIN_PATTERN)

#: Unicode categories refused in names: controls, format, surrogates, private, unassigned.
_BAD: Final = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))

NAME_MAX: Final = 200
REGION_MAX: Final = 100
NOTE_MAX: Final = 1000
FILE_URL_MAX: Final = 1024


def slug(field: str, value: str) -> str:
    """``value`` when it is a slug: 1-50 of ``a-z 0-9 _ -``, starting with a letter or digit."""
    if not _SLUG.fullmatch(value):
        raise errors.ValidationError(
            field, "1-50 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        )
    return value


def text(field: str, value: str, *, max_chars: int, required: bool = True, allow: str = "") -> str:
    """``value`` stripped, when it fits ``max_chars`` and has no control characters
    (but those in ``allow``)."""
    stripped = value.strip()
    if required and not stripped:
        raise errors.ValidationError(field, "must not be empty")
    if len(stripped) > max_chars:
        raise errors.ValidationError(
            field, f"at most {max_chars} characters, this has {len(stripped)}"
        )
    if any(ch not in allow and unicodedata.category(ch) in _BAD for ch in stripped):
        raise errors.ValidationError(
            field, "must not contain control, format or unassigned characters"
        )
    return stripped


def name(value: str) -> str:
    """A display name: 1-200 characters."""
    return text("name", value, max_chars=NAME_MAX)


def region(value: str) -> str:
    """A region: up to 100 characters, may be empty."""
    return text("region", value, max_chars=REGION_MAX, required=False)


def note(value: str) -> str:
    """A registration code's note: up to 1000 characters, may be empty.

    Line breaks are allowed in a note (it is free text); other control characters not.
    """
    return text("note", value, max_chars=NOTE_MAX, required=False, allow="\r\n\t")


def file_url(value: str) -> str:
    """The public address of a group's message file: empty, or an http(s) URL with a host."""
    value = value.strip()
    if not value:
        return ""
    if len(value) > FILE_URL_MAX:
        raise errors.ValidationError("file_url", f"at most {FILE_URL_MAX} characters")
    if any(ch.isspace() or not ch.isprintable() or not ch.isascii() for ch in value):
        raise errors.ValidationError(
            "file_url", "must be printable ASCII without spaces (percent-encode the rest)"
        )
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise errors.ValidationError("file_url", "must be an https:// (or http://) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise errors.ValidationError("file_url", "must not carry a user name or password")
    return value


def domain(value: str) -> str:
    """A mail domain as stored and matched: lower-case, without a trailing dot, in its
    ASCII (IDNA) form, at least two labels, the last not all digits."""
    plain = value.strip().rstrip(".").lower()
    if len(plain) > 253:
        raise errors.ValidationError("domain", "at most 253 characters")
    if not plain.isascii():
        try:
            plain = plain.encode("idna").decode("ascii")
        except UnicodeError:
            raise errors.ValidationError(
                "domain", "not a valid internationalised domain name"
            ) from None
    if not _DOMAIN.fullmatch(plain) or plain.rpartition(".")[2].isdigit():
        raise errors.ValidationError(
            "domain", "a domain name like firma.example: labels of a-z, 0-9 and -, dot-separated"
        )
    return plain
