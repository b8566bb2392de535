"""The Outbox trigger (PostgreSQL NOTIFY): wake the outbound worker the moment a row becomes ready.

``mpg init-db --notify`` installs an optional trigger on ``Outbox`` that sends a
notification on :data:`CHANNEL` whenever a row is inserted in, or moved to, State 10
(PostgreSQL folds identical notifications of one transaction into one, so a bulk
insert wakes the gateway once). The trigger is the only object MPG ever adds to a
table the ERP may own, and only on request; it changes no column and no row.

:class:`OutboxListener` holds one dedicated connection in ``LISTEN`` (the database
core's :class:`mpg.db.notify.ChannelListener`) and sets the wake event on each
notification. Polling stays the safety net: rows are still picked up by the poll
while a lost connection is re-established.
"""

from __future__ import annotations

import threading
from typing import Final

import sqlalchemy as sa

from mpg.db import notify, transactions

#: The notification channel the trigger sends on and the gateway listens to.
CHANNEL: Final = "mpg_outbox_ready"

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


def install_trigger(engine: sa.Engine) -> None:
    """Install (or replace) the notification trigger on Outbox; PostgreSQL only."""
    if not notify.supported(engine):
        raise ValueError("LISTEN/NOTIFY needs PostgreSQL")
    with transactions.begin(engine, "installing the Outbox notification trigger") as conn:
        for statement in TRIGGER_SQL:
            conn.exec_driver_sql(statement)


def trigger_installed(engine: sa.Engine) -> bool:
    """Whether the notification trigger is on Outbox."""
    query = sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'mpg_outbox_ready'")
    with transactions.connect(engine, "looking for the Outbox notification trigger") as conn:
        return bool(conn.execute(query).scalar_one())


class OutboxListener(notify.ChannelListener):
    """LISTENs on :data:`CHANNEL` and sets ``wake`` on each notification (and on loss)."""

    def __init__(self, engine: sa.Engine, wake: threading.Event) -> None:
        super().__init__(engine, CHANNEL, lambda _payload: wake.set(), wake.set)
