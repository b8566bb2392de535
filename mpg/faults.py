"""Named failpoints, so crash tests can kill a process at an exact step.

A failpoint is armed by listing its name in the ``MPG_FAILPOINTS`` environment variable
(comma-separated). When an armed failpoint is reached the process kills itself with
SIGKILL: no cleanup, no flush, exactly like a power cut. Unarmed failpoints cost one
dictionary lookup. Production configurations never set the variable.
"""

from __future__ import annotations

import os
import signal
from typing import Final

ENV_VAR: Final = "MPG_FAILPOINTS"
_ARMED: Final = frozenset(
    name.strip() for name in os.environ.get(ENV_VAR, "").split(",") if name.strip()
)


def reach(name: str) -> None:
    """Die here, at once, if the failpoint ``name`` is armed."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
