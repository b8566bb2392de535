"""The garbage collector's settings for a long-running process (``mpg server``,
``mpg run``).

Start-up (imports, the routes, SQLAlchemy's tables, the settings) leaves about
135,000 objects that live as long as the process. CPython's collector walks all of
them again at every full collection, and a full collection comes after every ten
middle ones: in the server's burst that was a tenth of its CPU. Frozen once start-up
is done (:func:`gc.freeze`), they are left out of every later collection. Young
collections then come every :data:`YOUNG_THRESHOLD` allocations instead of 700, so
that fewer short-lived objects (a request's rows and XML) are promoted and walked
again. Measured in ``docs/benchmarks.md`` ("2026-12-01 — issue 15: a request's fixed
cost").

The settings are the process's, so only what owns the process applies them: the
``mpg server`` and ``mpg run`` commands and the Windows service, not the functions they
call (a test serving in its own process keeps its collector as it was).
"""

from __future__ import annotations

import gc
from typing import Final

#: Allocations (less deallocations) between young collections; CPython's default is 700.
YOUNG_THRESHOLD: Final = 10_000


def settle() -> None:
    """Collect what start-up left behind, freeze the rest and space out young
    collections. Call once, when start-up is done and before the work begins."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
