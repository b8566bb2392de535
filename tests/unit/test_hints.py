"""A database URL no engine can be made from gets the one fix, not a wrong pip command."""

from __future__ import annotations

import pytest

from mpg import errors
from mpg.db import hints
from mpg.storage import database


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgres://mpg:pw@db/erp", "write the URL as postgresql+psycopg://"),
        ("mysql://mpg:pw@db/erp", "write the URL as mysql+pymysql://"),
        ("mariadb://mpg:pw@db/erp", "write the URL as mariadb+pymysql://"),
    ],
)
def test_a_scheme_without_a_shipped_driver_is_told_the_scheme_to_write(url: str, fix: str) -> None:
    """postgres:// and mysql:// need another scheme, not an extra (none would help)."""
    with pytest.raises(errors.ConfigError) as caught:
        database.create_engine(url)
    assert fix in str(caught.value)
    assert "pip install" not in str(caught.value)


def test_an_unknown_database_lists_the_schemes_mpg_works_with() -> None:
    with pytest.raises(errors.ConfigError) as caught:
        database.create_engine("oracle://scott:tiger@db/erp")
    assert "unknown database oracle://" in str(caught.value)
    assert "postgresql+psycopg://" in str(caught.value)


def test_sql_server_without_unixodbc_asks_for_unixodbc_not_pyodbc() -> None:
    """pyodbc installed but libodbc.so.2 missing: the fix is the system library."""
    error = ImportError("libodbc.so.2: cannot open shared object file: No such file or directory")
    message = hints.driver_problem("database_url", "mssql+pyodbc", error)
    assert "pyodbc is installed but cannot load unixODBC" in message
    assert "apt-get install unixodbc" in message
    assert "pip install" not in message


def test_a_shipped_driver_that_is_missing_names_this_distribution_and_its_extra() -> None:
    message = hints.driver_problem(
        "database_url", "postgresql+psycopg", ImportError("No module named 'psycopg'")
    )
    assert message.endswith("pip install 'mpg-push-gateway[postgresql]'")
