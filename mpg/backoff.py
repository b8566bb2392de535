"""How long to wait before trying again (pure: no sleeping, no I/O).

Exponential backoff with "equal jitter" (half fixed, half random), capped at
``max_delay``. The gateway's workers use it for transient database and server
failures (:mod:`mpg.gateway.retry` says which failures those are), the server's
mailer for a mail server's "try later".
"""

from __future__ import annotations

import random
from typing import Final

BASE_DELAY: Final = 0.2


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
