"""Bulk writes (mpg.db.bulk) on every database: values exact, rows counted, a lost race reported."""

from __future__ import annotations

import enum

import pytest
import sqlalchemy as sa

from mpg import errors
from mpg.db import bulk, engine, transactions

metadata = sa.MetaData()
sample = sa.Table(
    "BulkSample",
    metadata,
    sa.Column("Id", sa.Unicode(50), primary_key=True),
    sa.Column("Name", sa.Unicode(100)),
    sa.Column("Count", sa.BigInteger()),
    sa.Column("At", sa.Double()),
    sa.Column("Flag", sa.Boolean()),
    sa.Column("Blob", engine.max_binary()),
    sa.Column("Text", engine.max_text()),
)


class Kind(enum.StrEnum):
    QUEUED = "queued"


def _engine(db_url: str) -> sa.Engine:
    made = engine.create_engine(db_url, engine.EngineOptions("test.url"))
    metadata.create_all(made)
    return made


def test_rows_inserted_in_bulk_read_back_exactly(db_url: str) -> None:
    made = _engine(db_url)
    rows = [
        {
            "Id": f"row-{n}",
            "Name": Kind.QUEUED if n % 2 else '名前\t\\N "quoted"\n',
            "Count": 2**40 + n,
            "At": 1764547200.123456 + n,
            "Flag": bool(n % 2),
            "Blob": bytes([0, 92, 10, 255, n % 256]),
            "Text": None if n % 3 else "x" * 5000,
        }
        for n in range(600)
    ]
    with transactions.begin(made, "inserting") as conn:
        bulk.insert_rows(conn, sample, rows)
    with transactions.connect(made, "reading") as conn:
        found = {r.Id: r._asdict() for r in conn.execute(sa.select(sample))}
    made.dispose()
    assert len(found) == 600
    for row in rows:
        got = found[row["Id"]]
        assert got["Name"] == str(row["Name"])
        assert got["Count"] == row["Count"]
        assert got["At"] == pytest.approx(row["At"], abs=1e-6)
        assert bool(got["Flag"]) is row["Flag"]
        assert bytes(got["Blob"]) == row["Blob"]
        assert got["Text"] == row["Text"]


def test_a_key_inserted_twice_is_a_lost_race_the_server_runs_again(db_url: str) -> None:
    made = _engine(db_url)
    with transactions.begin(made, "inserting") as conn:
        bulk.insert_rows(conn, sample, [{"Id": "taken", "Name": "first"}])
    again = [{"Id": "new", "Name": "n"}, {"Id": "taken", "Name": "x"}]
    with (
        pytest.raises(errors.StorageError) as caught,
        transactions.begin(made, "inserting again") as conn,
    ):
        bulk.insert_rows(conn, sample, again)
    assert transactions.lost_race(caught.value)
    with transactions.connect(made, "reading") as conn:
        names = dict(conn.execute(sa.select(sample.c.Id, sample.c.Name)).all())
    made.dispose()
    assert names == {"taken": "first"}  # the failed transaction left nothing


def test_nothing_to_insert_runs_no_statement(db_url: str) -> None:
    made = _engine(db_url)
    with transactions.begin(made, "inserting nothing") as conn:
        bulk.insert_rows(conn, sample, [])
    with transactions.connect(made, "reading") as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sample)).scalar() == 0
    made.dispose()


def test_an_update_run_per_parameter_set_counts_the_rows_it_changed(db_url: str) -> None:
    made = _engine(db_url)
    c = sample.c
    with transactions.begin(made, "inserting") as conn:
        bulk.insert_rows(conn, sample, [{"Id": f"r{n}", "Count": n} for n in range(5)])
    move = (
        sa.update(sample)
        .where(c.Id == sa.bindparam("p_id"), c.Count == sa.bindparam("p_expected"))
        .values(Flag=sa.bindparam("p_flag"), At=sa.bindparam("p_at"))
    )
    params = [
        {"p_id": "r1", "p_expected": 1, "p_flag": True, "p_at": 1.5},
        {"p_id": "r2", "p_expected": 99, "p_flag": True, "p_at": 2.5},  # changed meanwhile
        {"p_id": "r3", "p_expected": 3, "p_flag": False, "p_at": 3.5},
    ]
    with transactions.begin(made, "updating") as conn:
        assert bulk.update_many(conn, move, params) == 2
        assert bulk.update_many(conn, move, []) == 0
    with transactions.connect(made, "reading") as conn:
        found = {r.Id: (r.Flag, r.At) for r in conn.execute(sa.select(sample))}
    made.dispose()
    assert found["r1"] == (True, 1.5)
    assert found["r2"] == (None, None)
    assert found["r3"] == (False, 3.5)


def test_an_update_holding_values_of_its_own_sets_them_too(db_url: str) -> None:
    made = _engine(db_url)
    c = sample.c
    with transactions.begin(made, "inserting") as conn:
        bulk.insert_rows(conn, sample, [{"Id": f"r{n}", "Count": n} for n in range(3)])
    move = (
        sa.update(sample)
        .where(c.Id == sa.bindparam("p_id"))
        .values(Name="moved", Count=c.Count + 10, Flag=True)
    )
    with transactions.begin(made, "updating") as conn:
        assert bulk.update_many(conn, move, [{"p_id": "r0"}, {"p_id": "r2"}]) == 2
    with transactions.connect(made, "reading") as conn:
        found = {r.Id: (r.Name, r.Count, r.Flag) for r in conn.execute(sa.select(sample))}
    made.dispose()
    assert found == {"r0": ("moved", 10, True), "r1": (None, 1, None), "r2": ("moved", 12, True)}
