"""Many rows into one table in one go, the fastest way each database offers.

A server transaction inserts hundreds of rows at once (a batch's messages, their
queue entries, their events). SQLAlchemy's executemany handles each row's
parameters in Python, which cost as much as the database's own insert:

* **SQLite**: the rows go to the driver as tuples, the statement compiled once per
  statement and set of keys; a value whose type SQLAlchemy would convert for
  SQLite (a bool, a float) goes through that same conversion.
* **PostgreSQL**: ``COPY … FROM STDIN`` through psycopg, which adapts each value by
  its Python type (text, numbers, bytes, bool, None) in C. An error (a unique
  violation when another process inserted the same key) is raised as SQLAlchemy
  would raise it, so :func:`mpg.db.transactions.retrying` sees the lost race.
* **Elsewhere** (MariaDB, SQL Server): SQLAlchemy's executemany.

:func:`update_many` does the same for an UPDATE run once per parameter set (the
gateway's compare-and-set moves): driver tuples on SQLite, SQLAlchemy elsewhere.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

Values = Callable[[Mapping[str, Any]], tuple[Any, ...]]


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys: column names) into ``table``."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        keys = tuple(rows[0])
        sql, values, _ = _sqlite_statement(_insert_of(table, keys))
        conn.exec_driver_sql(sql, list(map(values, rows)))
    elif dialect == "postgresql":
        _copy(conn, table, rows)
    else:
        conn.execute(table.insert(), list(rows))


def update_many(
    conn: sa.Connection, statement: sa.Update, params: Sequence[Mapping[str, Any]]
) -> int:
    """Run ``statement`` once per parameter set; the number of rows changed in all."""
    if not params:
        return 0
    if conn.dialect.name == "sqlite":
        sql, values, names = _sqlite_statement(statement)
        # A statement holding values of its own (not parameters) is left to SQLAlchemy.
        if names <= params[0].keys():
            return int(conn.exec_driver_sql(sql, list(map(values, params))).rowcount)
    return int(conn.execute(statement, list(params)).rowcount)


@functools.cache
def _insert_of(table: sa.Table, columns: tuple[str, ...]) -> sa.Insert:
    return table.insert().values({name: sa.bindparam(name) for name in columns})


# Bounded: a caller may build its statement anew on each call.
@functools.lru_cache(maxsize=64)
def _sqlite_statement(statement: sa.Insert | sa.Update) -> tuple[str, Values, frozenset[str]]:
    """SQLite's text of ``statement``, what turns a parameter set into its values in
    order (converted as SQLAlchemy would convert them), and the names it takes."""
    dialect = sqlite_dialect.dialect()
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    getter = _getter(names)
    converters = [
        (n, convert)
        for n, name in enumerate(names)
        if (convert := compiled.binds[name].type.bind_processor(dialect)) is not None
    ]
    if not converters:
        return compiled.string, getter, frozenset(names)

    def values(row: Mapping[str, Any]) -> tuple[Any, ...]:
        out = list(getter(row))
        for n, convert in converters:
            out[n] = convert(out[n])
        return tuple(out)

    return compiled.string, values, frozenset(names)


def _getter(columns: tuple[str, ...]) -> Values:
    """What takes a row's values out in the order of ``columns``."""
    if len(columns) == 1:
        # itemgetter of one name returns the value alone, not a 1-tuple.
        return lambda row: (row[columns[0]],)
    return operator.itemgetter(*columns)


@functools.cache
def _copy_statement(table: sa.Table, columns: tuple[str, ...]) -> tuple[str, Values]:
    """PostgreSQL's COPY of ``columns`` into ``table`` and the getter of its values."""
    names = ", ".join(f'"{name}"' for name in columns)
    return f'COPY "{table.name}" ({names}) FROM STDIN', _getter(columns)


def _copy(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    sql, values = _copy_statement(table, tuple(rows[0]))
    dbapi = conn.dialect.loaded_dbapi
    raw: Any = conn.connection.dbapi_connection
    try:
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(values(row))
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi.Error) from exc
