"""PURE: adaptive batch sizes: bigger under a backlog, the configured size otherwise.

A batch that came back full (as many rows or queue entries as were asked for) means
more is waiting: the next one asks for twice as many, up to :data:`GROWTH` times
``batch_size`` and never more than :data:`CEILING`. The first batch that is not full
means the backlog is gone, and the size drops back to ``batch_size`` at once. Nothing
waits to fill a batch: an idle gateway takes a single new row the moment it is seen,
so the size never costs latency (docs/config.md, "Batches").
"""

from __future__ import annotations

from typing import Final

#: How many times ``batch_size`` a batch may grow to under a backlog.
GROWTH: Final = 8
#: The largest batch ever asked for: the largest ``batch_size`` the configuration
#: allows, and the most a server's fetch hands out at once.
CEILING: Final = 5000


def next_size(current: int, taken: int, base: int) -> int:
    """The size of the next batch after one of ``current`` that took ``taken``."""
    if taken >= current:
        return max(base, min(current * 2, base * GROWTH, CEILING))
    return base
