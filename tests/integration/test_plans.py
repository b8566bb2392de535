"""The server's key-list statements find their rows by key on every database (mpg.db.plans)."""

from __future__ import annotations

import itertools
import pathlib
from typing import Any

import pytest
import sqlalchemy as sa

from mpg.db import plans
from mpg.server import queues, tables
from mpg.server.states import EntryState

_sample = sa.Table(
    "PlanSample",
    sa.MetaData(),
    sa.Column("Id", sa.Integer(), primary_key=True),
    sa.Column("Who", sa.Unicode(10)),
    sa.Column("State", sa.Unicode(10)),
)


def test_a_row_check_keeps_the_same_rows_as_its_conditions_joined_with_and(db_url: str) -> None:
    engine = tables.create_engine(db_url)
    _sample.create(engine)
    values = ["a", "b", None]
    rows = [
        {"Id": n, "Who": who, "State": state}
        for n, (who, state) in enumerate(itertools.product(values, values), start=1)
    ]
    c = _sample.c
    with engine.begin() as conn:
        conn.execute(_sample.insert(), rows)
        plain = conn.execute(
            sa.select(c.Id).where(c.Id < 8, c.Who == "a", c.State != "b").order_by(c.Id)
        ).all()
        checked = conn.execute(
            sa.select(c.Id)
            .where(c.Id < 8, plans.row_check(c.Who == "a", c.State != "b"))
            .order_by(c.Id)
        ).all()
    engine.dispose()
    assert checked == plain
    assert [row.Id for row in checked] == [1]  # NULLs drop out as with AND


def _plan(conn: sa.Connection, statement: sa.Select[Any] | sa.CompoundSelect[Any]) -> str:
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    if conn.dialect.name in ("mysql", "mariadb"):
        return " ".join(str(row._mapping["key"]) for row in conn.exec_driver_sql("EXPLAIN " + sql))
    return " ".join(str(row[0]) for row in conn.exec_driver_sql("EXPLAIN " + sql))


def test_an_acknowledgement_finds_its_entries_by_key_not_by_the_recipients_index(
    db_url: str,
) -> None:
    # Many leased entries of one recipient, analysed: the recipient's index then looks
    # as good as the key to a planner. The acknowledgement's rows (the guard its
    # UPDATE and its locking read share) must still be found by key.
    engine = tables.create_engine(db_url)
    tables.create_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            tables.receive_queue.insert(),
            [
                {
                    "EntryId": f"e{n:05}",
                    "MessageId": f"m{n:05}",
                    "Recipient": "erp-b@example.com",
                    "Kind": "message",
                    "PriorityRank": 2,
                    "State": EntryState.LEASED,
                    "LeaseUntil": 1.0,
                    "CreatedSeq": n,
                }
                for n in range(2000)
            ],
        )
        if conn.dialect.name in ("sqlite", "postgresql"):
            conn.exec_driver_sql("ANALYZE")
    with engine.connect() as conn:
        found = queues._ACK_LOCK.params(b_ids=["e00001", "e00002"], b_account="erp-b@example.com")
        plan = _plan(conn, found)
        assert [row.EntryId for row in conn.execute(found)] == ["e00001", "e00002"]
    engine.dispose()
    assert "IX_ReceiveQueue_Fetch" not in plan, plan
    assert "ReceiveQueue_1" in plan or "pkey" in plan or "PRIMARY" in plan, plan


def test_a_key_list_finds_the_listed_rows_on_every_database(db_url: str) -> None:
    engine = tables.create_engine(db_url)
    _sample.create(engine)
    c = _sample.c
    listed = sa.select(c.Id).where(plans.key_in(c.Who, "p_who")).order_by(c.Id)
    with engine.begin() as conn:
        conn.execute(_sample.insert(), [{"Id": n, "Who": f"w{n}"} for n in range(1, 8)])
        assert conn.scalars(listed, {"p_who": ["w2", "w5", "nobody"]}).all() == [2, 5]
        assert conn.scalars(listed, {"p_who": [f"w{n}" for n in range(1, 8)]}).all() == list(
            range(1, 8)
        )
        assert conn.scalars(listed, {"p_who": []}).all() == []
    engine.dispose()


def test_postgresql_runs_one_statement_whatever_the_length_of_the_key_list(
    postgresql_url: str,
) -> None:
    engine = tables.create_engine(postgresql_url)
    _sample.create(engine)
    c = _sample.c
    listed = sa.select(c.Id).where(plans.key_in(c.Who, "p_who"))
    sent = set()
    with engine.connect() as conn:
        for keys in (["a"], ["a", "b", "c"], [f"k{n}" for n in range(500)]):
            result = conn.execute(listed, {"p_who": keys})
            assert result.all() == []
            sent.add(result.context.statement)
    engine.dispose()
    [text] = sent  # an IN list would have sent three
    assert "= ANY (" in text, text


def test_sqlite_finds_awkward_keys_through_its_json_list_and_through_the_in_list(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    awkward = ['quote"d', "it's", "請假", "back\\slash", "[x]", ""]
    c = _sample.c
    listed = sa.select(c.Who).where(plans.key_in(c.Who, "p_who")).order_by(c.Id)
    found = {}
    for json_list in (True, False):
        monkeypatch.setattr(plans, "SQLITE_JSON", json_list)
        engine = tables.create_engine(f"sqlite:///{tmp_path / f'plans-{json_list}.db'}")
        _sample.create(engine)
        sql = str(listed.compile(dialect=engine.dialect))
        assert ("json_each" in sql) is json_list, sql
        with engine.begin() as conn:
            conn.execute(_sample.insert(), [{"Id": n, "Who": w} for n, w in enumerate(awkward, 1)])
            found[json_list] = conn.scalars(listed, {"p_who": [*awkward, "other"]}).all()
        engine.dispose()
    assert found[True] == found[False] == awkward


def test_a_fetch_looks_in_its_four_places_with_one_statement_where_the_database_can(
    db_url: str,
) -> None:
    """Entries and receipts, queued and lease-expired: one statement on SQLite and
    PostgreSQL, four elsewhere; on SQLite each part walks its index, nothing sorted."""
    engine = tables.create_engine(db_url)
    tables.create_tables(engine)
    with engine.connect() as conn:
        name = conn.dialect.name
        statements = queues._due(100, name)
        assert len(statements) == (1 if name in ("sqlite", "postgresql") else 4)
        if name == "sqlite":
            [statement] = statements
            assert isinstance(statement, sa.CompoundSelect)
            plan = _plan(conn, statement.params(b_account="a", b_now=1.0))
            assert plan.count("USING INDEX IX_ReceiveQueue_Fetch") == 2, plan
            assert plan.count("USING INDEX IX_ReceiptQueue_Fetch") == 2, plan
            assert "TEMP B-TREE" not in plan, plan
    engine.dispose()
