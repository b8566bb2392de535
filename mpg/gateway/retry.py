"""When to try again after a failure (pure: no sleeping, no I/O).

Transient failures (server down, timeouts, 5xx, a locked database) are retried with
exponential backoff and "equal jitter" (half fixed, half random), capped at
``max_delay``, for as long as it takes: they never fail a row. Whether a row has
waited too long is the send timeout's business (State 97), not the retry policy's.
"""

from __future__ import annotations

import random
from typing import Final

from mpg import errors

BASE_DELAY: Final = 0.2

#: Errors that retrying the same request cannot fix.
PERMANENT: Final = (errors.RefusedByServer, errors.ValidationError, errors.WireError)
#: Errors that go away by themselves.
TRANSIENT: Final = (errors.TransientServerError, errors.StorageError)


def is_transient(error: BaseException) -> bool:
    """True when the failure is worth retrying later."""
    return isinstance(error, TRANSIENT) and not isinstance(error, PERMANENT)


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
