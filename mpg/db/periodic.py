"""A look run every few seconds in a thread of its own, until the program stops it.

What a long-running MPG process does beside its requests for the database
(:mod:`mpg.db.checkpoints`, :mod:`mpg.db.statistics`) shares this loop.
"""

from __future__ import annotations

import threading


class Periodic:
    """Calls :meth:`look` every ``interval`` seconds in thread ``name`` until :meth:`stop`;
    subclasses define :meth:`look` and may define :meth:`finish`."""

    def __init__(self, name: str, interval: float) -> None:
        self._name = name
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Look every ``interval`` seconds until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after its current look (and :meth:`finish`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self.look()
        finally:
            self.finish()

    def look(self) -> object:
        """One round of the work."""
        raise NotImplementedError

    def finish(self) -> None:
        """What the thread does last, once asked to stop; nothing by default."""
