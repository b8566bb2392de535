"""DDL per database, generated from :mod:`mpg.storage.tables`.

``schema/<dialect>.sql`` are this module's output, for DBAs who create the tables by
hand; ``init_db`` creates the same tables from the same definitions. Regenerate with
``python -m mpg.storage.ddl --write``; ``--check`` exits 1 when a file drifted (and a
unit test does the same).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg.storage import tables

#: The repository's ``schema/`` directory.
SCHEMA_DIR: Final = pathlib.Path(__file__).resolve().parents[2] / "schema"


def _dialects() -> dict[str, sa.Dialect]:
    """The dialects the files are generated for, by file stem."""
    return {
        "sqlite": _dialect("sqlite"),
        # SQL Server 2012+ (what a live connection detects): NVARCHAR(max) and
        # VARBINARY(max) rather than the deprecated NTEXT and IMAGE.
        "mssql": _dialect("mssql", deprecate_large_types=True),
        "postgresql": _dialect("postgresql"),
        "mariadb": _dialect("mariadb"),
    }


def _dialect(backend: str, **options: Any) -> sa.Dialect:
    """A backend's default dialect, not connected: compiling DDL loads no driver."""
    return sa.make_url(f"{backend}://").get_dialect()(**options)


DIALECTS: Final = tuple(_dialects())


def dialect(name: str) -> sa.Dialect:
    """The unconnected dialect the DDL of ``name`` is generated for (tests compile with it)."""
    return _dialects()[name]


def _header(name: str) -> str:
    return (
        f"-- MPG tables for {name}.\n"
        "-- GENERATED from mpg/storage/tables.py by mpg.storage.ddl; do not edit by hand.\n"
        "-- Regenerate with: python -m mpg.storage.ddl --write\n"
        "-- Outbox, OutboxAttachment, Inbox, InboxAttachment are the integration contract;\n"
        "-- MpgTransition is the gateway's own history table.\n"
    )


def _clean(statement: str) -> str:
    """Compiled DDL without SQLAlchemy's blank lines and trailing blanks, ending in ';'."""
    lines = [line.rstrip() for line in statement.strip().splitlines()]
    return "\n".join(lines) + ";\n"


def render(name: str) -> str:
    """The DDL file for one dialect (``sqlite``, ``mssql``, ``postgresql``, ``mariadb``)."""
    dialect = _dialects()[name]
    parts = [_header(name)]
    for table in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES):
        parts.append(_clean(str(sa.schema.CreateTable(table).compile(dialect=dialect))))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            parts.append(_clean(str(sa.schema.CreateIndex(index).compile(dialect=dialect))))
    return "\n".join(parts)


def path_for(name: str, directory: pathlib.Path = SCHEMA_DIR) -> pathlib.Path:
    """Where the DDL file of one dialect lives."""
    return directory / f"{name}.sql"


def drifted(directory: pathlib.Path = SCHEMA_DIR) -> list[str]:
    """Names of the dialects whose file is missing or differs from :func:`render`."""
    stale = []
    for name in DIALECTS:
        target = path_for(name, directory)
        if not target.exists() or target.read_text(encoding="utf-8") != render(name):
            stale.append(name)
    return stale


def write(directory: pathlib.Path = SCHEMA_DIR) -> list[pathlib.Path]:
    """Rewrite every DDL file; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DIALECTS:
        target = path_for(name, directory)
        target.write_text(render(name), encoding="utf-8", newline="\n")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mpg.storage.ddl [--write | --check] [--dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m mpg.storage.ddl", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite schema/*.sql")
    action.add_argument("--check", action="store_true", help="exit 1 if a file drifted")
    parser.add_argument("--dir", type=pathlib.Path, default=SCHEMA_DIR, help="schema directory")
    args = parser.parse_args(argv)
    if args.write:
        for target in write(args.dir):
            print(f"wrote {target}")
        return 0
    stale = drifted(args.dir)
    for name in stale:
        print(f"{path_for(name, args.dir)} differs from mpg/storage/tables.py", file=sys.stderr)
    if stale:
        print("run: python -m mpg.storage.ddl --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
