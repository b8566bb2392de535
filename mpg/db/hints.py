"""What to do about a database URL no engine can be made from: the one fix, named.

Pure: the caller passes the URL's driver name (``postgresql+psycopg``) and the error
SQLAlchemy raised, and gets the sentence to show. Kept apart from engine creation so
the gateway and the server (and whatever module creates engines later) say the same.
"""

from __future__ import annotations

from typing import Final

#: The distribution on the package index (the import package and command are ``mpg``).
DISTRIBUTION: Final = "mpg-push-gateway"

#: URL schemes MPG ships a driver for -> the pip extra that installs it.
SHIPPED: Final = {
    "postgresql+psycopg": "postgresql",
    "mysql+pymysql": "mariadb",
    "mariadb+pymysql": "mariadb",
    "mssql+pyodbc": "mssql",
}

#: A database's other spellings -> the scheme MPG ships a driver for.
SCHEME_FOR: Final = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mssql": "mssql+pyodbc",
    "sqlserver": "mssql+pyodbc",
}


def _odbc_library_missing(error: BaseException) -> bool:
    """pyodbc is installed but cannot load unixODBC's shared library."""
    text = str(error)
    return "libodbc" in text or ("pyodbc" in text and "shared object" in text)


def driver_problem(key: str, drivername: str, error: BaseException) -> str:
    """The message for ``key`` (``database_url``) when its driver cannot be loaded."""
    if drivername == "mssql+pyodbc" and _odbc_library_missing(error):
        return (
            f"{key}: pyodbc is installed but cannot load unixODBC ({error}); install it "
            "and Microsoft's ODBC Driver 18 for SQL Server (Debian: sudo apt-get install "
            "unixodbc, then msodbcsql18 from Microsoft's repository; docs/deployment.md)"
        )
    extra = SHIPPED.get(drivername)
    if extra is not None:
        return (
            f"{key}: the driver for {drivername}:// is not installed; "
            f"install it with: pip install '{DISTRIBUTION}[{extra}]'"
        )
    scheme = SCHEME_FOR.get(drivername.split("+", 1)[0])
    if scheme is not None:
        return (
            f"{key}: MPG has no driver for {drivername}://; "
            f"write the URL as {scheme}://… (the rest stays as it is)"
        )
    return (
        f"{key}: unknown database {drivername}://; MPG works with sqlite:///, "
        + ", ".join(f"{s}://" for s in SHIPPED)
        + " (docs/databases.md)"
    )
