"""When to try again after a failure (pure: no sleeping, no I/O).

Whether a failure is transient is the one decision of :func:`is_transient`, and it
asks the layer that raised the error: the database core for a
:class:`~mpg.errors.StorageError` (locked, busy, connection lost: yes; a missing
table or a constraint: no), the push client for a server error (it raises
:class:`~mpg.errors.TransientServerError` for outages, timeouts, 5xx and 429).
Anything else is a bug or bad input, not worth retrying as such.

Transient failures are retried with the backoff of :func:`mpg.backoff.delay`, for
as long as it takes: they never fail a row. Whether a row has
waited too long is the send timeout's business (State 97), not the retry policy's.
"""

from __future__ import annotations

from mpg import errors
from mpg.db import transactions


def is_transient(error: BaseException) -> bool:
    """True when the failure is worth retrying later (see the module docstring)."""
    if isinstance(error, errors.StorageError):
        return transactions.is_transient(error)
    return isinstance(error, errors.TransientServerError)
