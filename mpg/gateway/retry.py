"""When to try again after a failure (pure: no sleeping, no I/O).

Whether a failure is transient is the one decision of :func:`is_transient`, and it
asks the layer that raised the error: the database core for a
:class:`~mpg.errors.StorageError` (locked, busy, connection lost: yes; a missing
table or a constraint: no), the push client for a server error (it raises
:class:`~mpg.errors.TransientServerError` for outages, timeouts, 5xx and 429).
Anything else is a bug or bad input, not worth retrying as such.

Transient failures are retried with
exponential backoff and "equal jitter" (half fixed, half random), capped at
``max_delay``, for as long as it takes: they never fail a row. Whether a row has
waited too long is the send timeout's business (State 97), not the retry policy's.
"""

from __future__ import annotations

import random
from typing import Final

from mpg import errors
from mpg.db import transactions

BASE_DELAY: Final = 0.2


def is_transient(error: BaseException) -> bool:
    """True when the failure is worth retrying later (see the module docstring)."""
    if isinstance(error, errors.StorageError):
        return transactions.is_transient(error)
    return isinstance(error, errors.TransientServerError)


def delay(
    attempt: int,
    *,
    max_delay: float,
    base: float = BASE_DELAY,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry): at most
    ``base`` doubled per retry, capped at ``max_delay``."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(max_delay, base * 2 ** min(attempt - 1, 30))
    return (rng or random).uniform(ceiling / 2, ceiling)
