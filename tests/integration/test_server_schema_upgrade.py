"""A deployed server database is brought up to date by create_tables."""

from __future__ import annotations

from collections.abc import Iterator

import dbservers
import pytest
import sqlalchemy as sa

from mpg.server import tables


@pytest.fixture
def mariadb_url(mariadb_server: dbservers.Server | str) -> str:
    if isinstance(mariadb_server, str):
        if dbservers.in_ci():
            pytest.fail(f"mariadb is required under CI: {mariadb_server}")
        pytest.skip(mariadb_server)
    return dbservers.fresh_database(mariadb_server.url, dbservers.database_name())


@pytest.fixture
def engine(mariadb_url: str) -> Iterator[sa.Engine]:
    engine = tables.create_engine(mariadb_url)
    yield engine
    engine.dispose()


def test_single_precision_unix_times_of_an_older_mariadb_database_become_double(
    engine: sa.Engine,
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE SeenNonce (NonceKey VARCHAR(64) PRIMARY KEY, ExpiresAt FLOAT NOT NULL)"
        )
    tables.create_tables(engine)
    with engine.begin() as conn:
        conn.execute(tables.seen_nonce.insert().values(NonceKey="k", ExpiresAt=1764528000.25))
        value = conn.execute(sa.select(tables.seen_nonce.c.ExpiresAt)).scalar_one()
        column = next(
            c for c in sa.inspect(conn).get_columns("SeenNonce") if c["name"] == "ExpiresAt"
        )
    assert value == 1764528000.25
    assert type(column["type"]).__name__.upper() == "DOUBLE"
    assert column["nullable"] is False
