"""PostgreSQL LISTEN/NOTIFY: wake the outbound worker the moment a row becomes ready.

``mpg init-db --notify`` installs an optional trigger on ``Outbox`` that sends a
notification on :data:`CHANNEL` whenever a row is inserted in, or moved to, State 10
(PostgreSQL folds identical notifications of one transaction into one, so a bulk
insert wakes the gateway once). The trigger is the only object MPG ever adds to a
table the ERP may own, and only on request; it changes no column and no row.

:class:`OutboxListener` holds one dedicated connection in ``LISTEN`` and sets the
wake event on each notification. The push server uses the same
:class:`ChannelListener` to hear, from every process sharing its database, which
accounts got new queue entries (see :mod:`mpg.server.tables`). Polling stays the
safety net: a lost connection is logged and re-established with backoff, and rows
are still picked up by the poll meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import sqlalchemy as sa
import structlog

from mpg.storage import database

log = structlog.get_logger("mpg.notify")

#: The notification channel the trigger sends on and the gateway listens to.
CHANNEL: Final = "mpg_outbox_ready"

#: How often the listener looks at its stop event while no notification arrives (s).
_STOP_CHECK: Final = 0.5
#: Longest pause between attempts to re-establish a lost LISTEN connection (s).
_MAX_BACKOFF: Final = 30.0

#: The trigger function and trigger ``mpg init-db --notify`` installs (idempotent).
TRIGGER_SQL: Final = (
    f"""
CREATE OR REPLACE FUNCTION mpg_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
""",
    'DROP TRIGGER IF EXISTS mpg_outbox_ready ON "Outbox"',
    """
CREATE TRIGGER mpg_outbox_ready
    AFTER INSERT OR UPDATE OF "State" ON "Outbox"
    FOR EACH ROW WHEN (NEW."State" = 10)
    EXECUTE FUNCTION mpg_outbox_notify()
""",
)


def supported(engine: sa.Engine) -> bool:
    """True when the database can notify (PostgreSQL)."""
    return engine.dialect.name == "postgresql"


def install_trigger(engine: sa.Engine) -> None:
    """Install (or replace) the notification trigger on Outbox; PostgreSQL only."""
    if not supported(engine):
        raise ValueError("LISTEN/NOTIFY needs PostgreSQL")
    with database.begin(engine, "installing the Outbox notification trigger") as conn:
        for statement in TRIGGER_SQL:
            conn.exec_driver_sql(statement)


def trigger_installed(engine: sa.Engine) -> bool:
    """Whether the notification trigger is on Outbox."""
    query = sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'mpg_outbox_ready'")
    with database.connect(engine, "looking for the Outbox notification trigger") as conn:
        return bool(conn.execute(query).scalar_one())


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


class OutboxListener(ChannelListener):
    """LISTENs on :data:`CHANNEL` and sets ``wake`` on each notification (and on loss)."""

    def __init__(self, engine: sa.Engine, wake: threading.Event) -> None:
        super().__init__(engine, CHANNEL, lambda _payload: wake.set(), wake.set)
