"""CSRF tokens: one random token per session, compared in constant time.

Every unsafe request (:data:`UNSAFE`) must carry the token in the form field
:data:`FIELD` or the header :data:`HEADER` (htmx); the frame (:mod:`.app`) refuses
it otherwise. Before sign-in the token lives in its own cookie (the login form is a
change too: it would otherwise let another site sign a browser in as its attacker).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FIELD: Final = "csrf"
HEADER: Final = "X-CSRF-Token"
#: The cookie holding the token of a browser not signed in.
PRE_COOKIE: Final = "mpg_console_csrf"
_TOKEN_BYTES: Final = 32
#: Longest token looked at (a generated one is 43 characters).
MAX_CHARS: Final = 100


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def matches(expected: str | None, given: str | None) -> bool:
    """True when ``given`` is ``expected``; constant time, never for an empty token."""
    if not expected or not given or len(given) > MAX_CHARS:
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
    return hmac.compare_digest(expected.encode(), given.encode())
