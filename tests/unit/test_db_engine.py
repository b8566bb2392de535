"""The database core's engines: what each database gets, what each program adds.

Creating an engine connects to nothing, so these need no database server.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from mpg import errors
from mpg.db import engine as engines
from mpg.db import transactions
from mpg.server import tables as server_tables
from mpg.storage import database as gateway_database


def test_mariadb_speaks_utf8mb4_for_both_programs_and_the_server_reads_committed() -> None:
    """The charset is the database's need; READ COMMITTED is the server's own option."""
    url = "mysql+pymysql://mpg@127.0.0.1/mpg"
    gateway = gateway_database.create_engine(url)
    server = server_tables.create_engine(url)
    try:
        assert gateway.url.query["charset"] == server.url.query["charset"] == "utf8mb4"
        assert server.get_execution_options().get("isolation_level") is None
        assert server.dialect._on_connect_isolation_level == "READ COMMITTED"  # type: ignore[attr-defined]
        assert gateway.dialect._on_connect_isolation_level is None  # type: ignore[attr-defined]
    finally:
        gateway.dispose()
        server.dispose()


def test_the_server_pools_connections_for_its_workers_except_in_memory(
    tmp_path: pathlib.Path,
) -> None:
    """Pool size 8 on a file database; in-memory SQLite keeps SQLAlchemy's own pool."""
    on_file = server_tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    in_memory = server_tables.create_engine("sqlite://")
    try:
        assert isinstance(on_file.pool, sa.pool.QueuePool)
        assert on_file.pool.size() == 8
        assert not isinstance(in_memory.pool, sa.pool.QueuePool)
    finally:
        on_file.dispose()
        in_memory.dispose()


@pytest.mark.parametrize(
    ("create", "key"),
    [
        (gateway_database.create_engine, "database_url"),
        (server_tables.create_engine, "server.database_url"),
    ],
)
def test_a_bad_url_is_a_config_error_naming_the_programs_key(
    create: Callable[[str], sa.Engine], key: str
) -> None:
    """Each program's errors name its own configuration key."""
    with pytest.raises(errors.ConfigError, match=rf"^{key}: "):
        create("not a url")
    with pytest.raises(errors.ConfigError, match=rf"^{key}: MPG has no driver"):
        create("postgresql+nosuchdriver://h/db")


def test_sqlite_write_transactions_begin_immediate_and_reads_do_not(
    tmp_path: pathlib.Path,
) -> None:
    """A write holds the lock from its first statement; a read takes none until it must."""
    eng = engines.create_engine(
        f"sqlite:///{tmp_path / 'x.db'}", engines.EngineOptions(url_key="database_url")
    )
    begun: list[str] = []
    # SQLite's own trace: the write's BEGIN is issued on the driver's cursor.
    sa.event.listen(eng, "connect", lambda dbapi, _: dbapi.set_trace_callback(begun.append))
    try:
        with transactions.begin(eng, "a write") as conn:
            conn.exec_driver_sql("SELECT 1")
        with transactions.connect(eng, "a read") as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.commit()
        assert [s for s in begun if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE", "BEGIN"]
    finally:
        eng.dispose()
