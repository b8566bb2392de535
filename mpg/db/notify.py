"""PostgreSQL LISTEN/NOTIFY: hear at once what another process committed.

:func:`send` queues a notification inside the caller's transaction: PostgreSQL
delivers it only when that transaction commits, and never if it rolls back, so a
listener is never woken before the rows are visible. :class:`ChannelListener` holds
one dedicated connection in ``LISTEN`` and passes each payload on. Polling stays the
safety net everywhere: a lost connection is logged and re-established with backoff,
and the callers' polls find the work meanwhile. On other databases :func:`send` does
nothing and nobody listens.

The gateway listens for its Outbox trigger (:mod:`mpg.storage.outbox_trigger`); the server's
processes tell each other which accounts got new queue entries
(:mod:`mpg.server.store`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

import sqlalchemy as sa
import structlog

log = structlog.get_logger("mpg.notify")

#: How often the listener looks at its stop event while no notification arrives (s).
_STOP_CHECK: Final = 0.5
#: Longest pause between attempts to re-establish a lost LISTEN connection (s).
_MAX_BACKOFF: Final = 30.0


def supported(engine: sa.Engine) -> bool:
    """True when the database can notify (PostgreSQL)."""
    return engine.dialect.name == "postgresql"


def send(conn: sa.Connection, channel: str, payloads: Iterable[str]) -> None:
    """Notify ``channel`` once per distinct payload when ``conn``'s transaction commits.

    A no-op except on PostgreSQL.
    """
    values = sorted(set(payloads))
    if values and conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_notify(:channel, :payload)"),
            [{"channel": channel, "payload": value} for value in values],
        )


class ChannelListener:
    """A thread that LISTENs on one channel and passes each notification's payload on.

    ``deliver(payload)`` runs on the listening thread for every notification;
    ``lost()`` runs when the connection failed, before it is re-established, so the
    caller can look for what it may have missed.
    """

    def __init__(
        self,
        engine: sa.Engine,
        channel: str,
        deliver: Callable[[str], None],
        lost: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._deliver = deliver
        self._lost = lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpg-listen", daemon=True)
        self.listening = threading.Event()  # set while a LISTEN connection is open

    def start(self) -> None:
        """Start listening in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection (within about half a second)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._listen()
                attempt = 0
            except Exception as exc:  # any driver failure: log, back off, listen again
                self.listening.clear()
                attempt += 1
                pause = min(_MAX_BACKOFF, 0.5 * 2**attempt)
                log.warning("listen_lost", channel=self._channel, error=str(exc), retry_in=pause)
                # Notifications sent meanwhile are lost; the caller's poll finds the work.
                self._lost()
                self._stop.wait(pause)

    def _listen(self) -> None:
        raw = self._engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            driver.execute(f"LISTEN {self._channel}")
            self.listening.set()
            log.info("listening", channel=self._channel)
            while not self._stop.is_set():
                for note in driver.notifies(timeout=_STOP_CHECK, stop_after=1):
                    self._deliver(str(note.payload))
        finally:
            self.listening.clear()
            # A connection left in LISTEN must not go back to the pool.
            raw.invalidate()
