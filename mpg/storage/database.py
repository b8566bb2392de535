"""The gateway's database: its engine settings and the creation of its tables.

The engine, transactions and error mapping are the database core's
(:mod:`mpg.db`); this module holds only what is the gateway's own: which
configuration key names the URL, and which tables ``mpg init-db`` creates.
"""

from __future__ import annotations

import re
from typing import Final

import sqlalchemy as sa

from mpg.db import engine as engines
from mpg.db import transactions
from mpg.storage import schema, tables

#: The gateway's engine: SQLAlchemy's default pool, the database's own isolation.
ENGINE_OPTIONS: Final = engines.EngineOptions(url_key="database_url")


def create_engine(url: str) -> sa.Engine:
    """An engine on the gateway's database (``database_url``; docs/databases.md)."""
    return engines.create_engine(url, ENGINE_OPTIONS)


def attribute_name(column_name: str) -> str:
    """The snake_case attribute for a column: ``TxMessageId`` -> ``tx_message_id``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", column_name).lower()


def init_db(engine: sa.Engine) -> list[str]:
    """Create the missing tables (contract and own) with their indexes; return their names.

    An existing table is used as it is and never altered (extra columns are fine);
    one that lacks a column MPG needs, or has one of an unsuitable type, raises
    :class:`~mpg.errors.SchemaMismatch` naming each (:mod:`mpg.storage.schema`).
    """
    with transactions.begin(engine, "creating tables") as conn:
        missing = set(schema.check(conn).missing_tables)
        created = [t for t in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES) if t.name in missing]
        for table in created:
            # Table.create also creates the table's Index objects (tables.py).
            table.create(conn)
    return [t.name for t in created]
