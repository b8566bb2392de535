"""Fixtures shared by every test tier.

``db_url`` runs a test once per database: SQLite always, PostgreSQL and MariaDB on
throwaway servers started once per session (``dbservers``), SQL Server when
``MPG_TEST_MSSQL_URL`` names one. Each test gets an empty database.

Under pytest-xdist every worker is a session of its own: it starts its own throwaway
servers when a test first needs one (free ports, temporary directories of its own), and
its databases are named after it, so workers pointed at one server by ``MPG_TEST_*_URL``
never share a database. SQL Server, whose URL names the one database to use, has its
tests all run by one worker (``xdist_group``). The rules for new tests are in
``docs/testing.md``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator

import dbservers
import pytest
from harness import World

#: The databases ``db_url`` is parametrized over, in the order tests run.
DATABASES = ["sqlite", "postgresql", "mariadb"] + (
    ["mssql"] if os.environ.get("MPG_TEST_MSSQL_URL") else []
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every SQL Server test on one worker: they share the one database its URL names."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "mssql":
            item.add_marker(pytest.mark.xdist_group("mssql"))


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[World]:
    """A fresh world of real processes; every process it started is stopped afterwards."""
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.stop_all()


@pytest.fixture
def local_world(tmp_path: pathlib.Path) -> Iterator[World]:
    """A world whose push server runs in this process (``harness.InProcessServer``);
    gateways run wherever the test runs them."""
    w = World(tmp_path, in_process=True)
    try:
        yield w
    finally:
        w.stop_all()


def _server(start: Callable[[], dbservers.Server]) -> Iterator[dbservers.Server | str]:
    """A started server, or the reason there is none (a skip or, under CI, a failure)."""
    try:
        server = start()
    except dbservers.Unavailable as exc:
        yield str(exc)
        return
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[dbservers.Server | str]:
    """A throwaway PostgreSQL for the whole session (or why there is none)."""
    yield from _server(dbservers.start_postgres)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[dbservers.Server | str]:
    """A throwaway MariaDB for the whole session (or why there is none)."""
    yield from _server(dbservers.start_mariadb)


def _require(server: dbservers.Server | str, name: str) -> dbservers.Server:
    if isinstance(server, str):
        if dbservers.in_ci():
            pytest.fail(f"{name} is required under CI and unavailable: {server}")
        pytest.skip(f"{name} unavailable: {server}")
    return server


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """The URL of an empty database of each kind MPG supports."""
    name = str(request.param)
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    if name == "mssql":
        return dbservers.fresh_database(os.environ["MPG_TEST_MSSQL_URL"])
    server = _require(request.getfixturevalue(f"{name}_server"), name)
    return dbservers.fresh_database(server.url, dbservers.database_name())


@pytest.fixture
def postgresql_url(postgresql_server: dbservers.Server | str) -> str:
    """The URL of an empty PostgreSQL database, for PostgreSQL-only features."""
    server = _require(postgresql_server, "postgresql")
    return dbservers.fresh_database(server.url, dbservers.database_name())


@pytest.fixture(params=["postgresql", "mariadb"])
def database_server(request: pytest.FixtureRequest) -> tuple[dbservers.Server, str]:
    """A throwaway server of each kind (tests may restart it) and an empty database on it."""
    name = str(request.param)
    server = _require(request.getfixturevalue(f"{name}_server"), name)
    return server, dbservers.fresh_database(server.url, dbservers.database_name())
