"""Outbox rows whose State is not a state code, found on every database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg.storage import database, outbox, tables


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(db_url)
    database.init_db(eng)
    yield eng
    eng.dispose()


def test_unknown_codes_are_listed_not_counted(engine: sa.Engine) -> None:
    """A State no code has (13 anywhere; SQLite also keeps 'ten' and 10.5) is listed by
    odd_states() with the value as stored and left out of counts(); NULL is neither."""
    repo = outbox.OutboxRepository(engine, "erp-a@example.com", "utc")
    for tx, state in (("good", 10), ("thirteen", 13), ("unset", None)):
        repo.insert({"TxMessageId": tx, "ReceiverList": "b", "State": state})
    with engine.begin() as conn:
        conn.execute(
            sa.update(tables.outbox)
            .values(State=None)
            .where(tables.outbox.c.TxMessageId == "unset")
        )
    expected: list[tuple[str, object]] = [("thirteen", 13)]
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for tx, state in (("text", "ten"), ("real", 10.5)):
                conn.exec_driver_sql(
                    'INSERT INTO "Outbox" ("TxMessageId", "State") VALUES (?, ?)', (tx, state)
                )
        expected = [("real", 10.5), ("text", "ten"), ("thirteen", 13)]
    assert repo.odd_states() == expected
    assert repo.counts() == {10: 1}
