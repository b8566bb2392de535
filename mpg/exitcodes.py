"""Exit codes of ``mpg`` and the mapping from MPG's exceptions to them.

==== =====================================================
code meaning
==== =====================================================
0    success
1    failure (anything not listed below)
2    usage error (bad option or argument; click's own code)
3    configuration error (the message names the key)
4    database error
5    push server unreachable or refused the request
6    ``server explain``: a link of the delivery is broken
7    ``server explain``: no such message or recipient
130  interrupted (Ctrl-C)
==== =====================================================

``docs/cli.md`` repeats this table for users; keep both in step.
"""

from __future__ import annotations

import sys
from typing import Final

from mpg import errors

OK: Final = 0
FAILURE: Final = 1
USAGE: Final = 2
CONFIG: Final = 3
DATABASE: Final = 4
SERVER: Final = 5
NOT_DELIVERED: Final = 6
NOT_FOUND: Final = 7
INTERRUPTED: Final = 130


def for_exception(exc: BaseException) -> int:
    """The exit code for an exception that ended a command."""
    if isinstance(exc, errors.CommandError):
        return exc.code
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, errors.ConfigError):
        return CONFIG
    # SQLAlchemy errors should arrive wrapped as StorageError; the raw ones are
    # mapped too so that a missed wrapper still gives the documented code.
    if isinstance(exc, errors.StorageError):
        return DATABASE
    # Looked up, not imported: a command that never loaded SQLAlchemy cannot raise its errors.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
        return DATABASE
    if isinstance(exc, errors.ServerError):
        return SERVER
    return FAILURE
