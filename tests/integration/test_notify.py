"""PostgreSQL LISTEN/NOTIFY: a ready row wakes the gateway without waiting for a poll."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg.db import notify
from mpg.storage import database, outbox, outbox_trigger, tables

#: Generous bound on waiting for an event that should come in milliseconds.
PATIENCE = 30.0


@pytest.fixture
def engine(postgresql_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(postgresql_url)
    database.init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def listener(engine: sa.Engine) -> Iterator[tuple[outbox_trigger.OutboxListener, threading.Event]]:
    outbox_trigger.install_trigger(engine)
    wake = threading.Event()
    listening = outbox_trigger.OutboxListener(engine, wake)
    listening.start()
    try:
        assert listening.listening.wait(PATIENCE)
        yield listening, wake
    finally:
        listening.stop()


def test_install_trigger_is_idempotent(engine: sa.Engine) -> None:
    """Installing twice leaves one trigger on Outbox."""
    assert not outbox_trigger.trigger_installed(engine)
    outbox_trigger.install_trigger(engine)
    outbox_trigger.install_trigger(engine)
    assert outbox_trigger.trigger_installed(engine)


def test_insert_of_a_ready_row_wakes_the_listener(
    engine: sa.Engine, listener: tuple[outbox_trigger.OutboxListener, threading.Event]
) -> None:
    """An ERP's INSERT of a State-10 row sets the wake event."""
    _, wake = listener
    with engine.begin() as conn:
        conn.execute(tables.outbox.insert(), {"TxMessageId": "tx-1", "State": 10})
    assert wake.wait(PATIENCE)


def test_release_of_a_draft_row_wakes_the_listener(
    engine: sa.Engine, listener: tuple[outbox_trigger.OutboxListener, threading.Event]
) -> None:
    """Moving a row from 0 to 10 (the ERP releases it) sets the wake event."""
    _, wake = listener
    repo = outbox.OutboxRepository(engine, "a@example.com", "utc")
    repo.insert({"TxMessageId": "draft", "State": 0})
    wake.clear()
    with engine.begin() as conn:
        conn.execute(
            sa.update(tables.outbox).where(tables.outbox.c.TxMessageId == "draft").values(State=10)
        )
    assert wake.wait(PATIENCE)


def test_trigger_needs_postgresql() -> None:
    """Asking for the trigger on another database is refused."""
    eng = database.create_engine("sqlite://")
    try:
        assert not notify.supported(eng)
        with pytest.raises(ValueError, match="PostgreSQL"):
            outbox_trigger.install_trigger(eng)
    finally:
        eng.dispose()
