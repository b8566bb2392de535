"""Retention of the gateway's own history (MpgTransition) on a real SQLite file."""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg.storage import database, history, tables


@pytest.fixture
def engine(tmp_path: pathlib.Path) -> Iterator[sa.Engine]:
    """A gateway database with the contract tables and MpgTransition."""
    eng = database.create_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    database.init_db(eng)
    yield eng
    eng.dispose()


def add_history(engine: sa.Engine, days_ago: float, count: int, prefix: str) -> None:
    at = history.stamp(dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago))
    with engine.begin() as conn:
        conn.execute(
            tables.transition.insert(),
            [
                {
                    "Box": "out",
                    "MessageKey": f"{prefix}-{n}",
                    "FromState": 10,
                    "ToState": 12,
                    "At": at,
                    "Reason": "claimed",
                    "Gateway": "erp@example.com",
                }
                for n in range(count)
            ],
        )


def keys(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(k) for k in conn.execute(sa.select(tables.transition.c.MessageKey)).scalars()}


def test_purge_deletes_only_history_older_than_the_retention(engine: sa.Engine) -> None:
    """Rows older than keep_days go (in several batches); newer rows stay."""
    add_history(engine, 40, history.PURGE_BATCH + 7, "old")
    add_history(engine, 1, 3, "new")
    assert history.purge(engine, 30) == history.PURGE_BATCH + 7
    assert keys(engine) == {"new-0", "new-1", "new-2"}
    assert history.purge(engine, 30) == 0


def test_repeated_purges_keep_the_history_bounded(engine: sa.Engine) -> None:
    """However many days of traffic pass, only the retention window is kept."""
    for day in range(60, 0, -1):
        add_history(engine, day - 0.5, 10, f"day{day}")
        history.purge(engine, 7)
        assert len(keys(engine)) <= 8 * 10
    assert len(keys(engine)) == 7 * 10


def test_purge_never_touches_the_erp_tables(engine: sa.Engine) -> None:
    """Outbox rows stay whatever their age; only MpgTransition is purged."""
    with engine.begin() as conn:
        conn.execute(
            tables.outbox.insert(),
            {"TxMessageId": "erp-1", "State": 29, "StatusTime": "2000-01-01 00:00:00"},
        )
    add_history(engine, 400, 2, "old")
    history.purge(engine, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.select(tables.outbox.c.TxMessageId)).scalars().all() == ["erp-1"]
