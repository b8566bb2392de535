"""Named failpoints, so crash tests can kill a process at an exact step.

A failpoint is armed by listing its name in the ``MPG_FAILPOINTS`` environment variable
(comma-separated). When an armed failpoint is reached the process kills itself with
SIGKILL: no cleanup, no flush, exactly like a power cut. Unarmed failpoints cost one
dictionary lookup. Production configurations never set the variable.

``NAME:stop`` arms a failpoint that instead stops the process (SIGSTOP) the first time
it is reached, so a test can change the world at exactly that step and then let the
process go on (SIGCONT).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

ENV_VAR: Final = "MPG_FAILPOINTS"
_NAMES: Final = [name.strip() for name in os.environ.get(ENV_VAR, "").split(",") if name.strip()]
_ARMED: Final = frozenset(name for name in _NAMES if not name.endswith(":stop"))
_STOP_ONCE: Final = {name.removesuffix(":stop") for name in _NAMES if name.endswith(":stop")}


def reach(name: str) -> None:
    """Die here, at once, if the failpoint ``name`` is armed (stop, if armed ``:stop``)."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
    if name in _STOP_ONCE:
        _STOP_ONCE.discard(name)
        # Sent to this very thread, so it stops before it goes on: a signal to the
        # process may be taken by another thread while this one runs a little further.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
