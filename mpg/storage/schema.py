"""Checking tables the gateway finds against what it needs, without ever altering them.

An ERP usually creates ``Outbox`` and its siblings itself, from the original
product's DDL or its own. At start the gateway reflects every table it uses and
compares each column it needs by kind (text, integer, boolean, binary, uuid) and, for
text, by width. Every problem is named in one :class:`~mpg.errors.SchemaMismatch`
(``Outbox.Subject is VARCHAR(100); needs text of at least 200 characters``), so a DBA
fixes them all in one go. Extra columns and wider or unlimited text are fine.

``SourceUri`` is the one accepted exception: the source document declares it
``nvarchar(10)``, which holds no real path or URI. Nothing the gateway does reads it
back (outbound files come from ``AttachmentList``, inbound fetches go by message id
and sequence number), so a narrower column is used as it is: a value that does not
fit is stored as NULL, and :attr:`Report.source_uri_width` tells the repositories the
width (docs/databases.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import sqlalchemy as sa

from mpg import errors
from mpg.storage import tables

#: Columns the gateway accepts at any width (see the module docstring).
NARROW_OK: Final = frozenset({"SourceUri"})

#: Width a text column needs to hold a uuid in text form (hex without dashes).
_UUID_TEXT_WIDTH: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """What the check found: tables absent, and the widths the gateway adapts to."""

    missing_tables: tuple[str, ...]
    #: Width of ``SourceUri`` per attachment table (None: unlimited).
    source_uri_width: dict[str, int | None]

    def uri_width(self, table: sa.Table) -> int | None:
        """The SourceUri width of ``table`` as found (the gateway's own if it is absent)."""
        return self.source_uri_width.get(table.name, tables.SOURCE_URI_WIDTH)


def _kind(type_: Any) -> str:
    """The kind of a column type: text, integer, boolean, binary, uuid or other."""
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sa.Uuid):
        return "uuid"
    if isinstance(type_, sa.Boolean):
        return "boolean"
    if isinstance(type_, sa.Integer):
        return "integer"
    if isinstance(type_, sa.String):
        return "text"
    if isinstance(type_, sa.LargeBinary | sa.types._Binary):
        return "binary"
    return "other"


def _width(type_: Any) -> int | None:
    length = getattr(type_, "length", None)
    return int(length) if length else None


def _accepts(needed: Any, found: Any) -> bool:
    """Whether a found column type can hold what the gateway stores in ``needed``."""
    want, have = _kind(needed), _kind(found)
    if want == "boolean":
        # bit, BOOLEAN, MariaDB's TINYINT(1), or any integer an ERP chose.
        return have in ("boolean", "integer")
    if want == "uuid":
        width = _width(found)
        return have == "uuid" or (have == "text" and (width is None or width >= _UUID_TEXT_WIDTH))
    if want != have:
        return False
    if want == "text":
        need, got = _width(needed), _width(found)
        return need is None or got is None or got >= need
    return True


def _describe(type_: Any, dialect: sa.Dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect))
    except sa.exc.CompileError:
        return type(type_).__name__


def _requirement(type_: Any) -> str:
    kind, width = _kind(type_), _width(type_)
    if kind == "text":
        return "unlimited text" if width is None else f"text of at least {width} characters"
    if kind == "uuid":
        return f"a uuid (or text of at least {_UUID_TEXT_WIDTH} characters)"
    return {"boolean": "a bit/boolean", "integer": "an integer", "binary": "binary data"}.get(
        kind, kind
    )


def sqlite_affinity(declared: str) -> str:
    """The affinity SQLite gives a declared column type (its documented rules, in order)."""
    name = declared.upper()
    if "INT" in name:
        return "INTEGER"
    if any(part in name for part in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in name or not name.strip():
        return "BLOB"
    if any(part in name for part in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


#: Per kind the gateway stores: the SQLite affinities that keep its values unchanged
#: (0/1 stay integers under NUMERIC; no affinity converts a blob; uuids are 32-char
#: hex text, which NUMERIC would turn into a number when it looks like one).
_SQLITE_KEEPS: Final = {
    "boolean": ("INTEGER", "NUMERIC"),
    "binary": ("BLOB", "NUMERIC"),
    "uuid": ("TEXT",),
    "integer": ("INTEGER", "NUMERIC"),
}

#: The SQLite spelling to suggest for each kind, in the original DDL's words.
_SQLITE_SPELLING: Final = {
    "boolean": "bit",
    "binary": "varbinary",
    "uuid": "char(36)",
    "integer": "int",
    "text": "nvarchar",
}


def _sqlite_declared(conn: sa.Connection, table: str) -> dict[str, str]:
    """Column name (lower case) -> the type as declared in the CREATE TABLE."""
    rows = conn.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
    return {str(row[1]).lower(): str(row[2]) for row in rows}


def _sqlite_verdict(needed: Any, declared: str) -> tuple[bool, str]:
    """Whether SQLite keeps the gateway's values in a column declared ``declared``;
    if not, the problem and the spelling to use instead.

    SQLite reflects a type it does not know (``bit``, ``varbinary``,
    ``uniqueidentifier``) by its affinity only, so the declared text is judged here.
    """
    kind, affinity = _kind(needed), sqlite_affinity(declared)
    if affinity in _SQLITE_KEEPS.get(kind, ()):
        return True, ""
    spelling = _SQLITE_SPELLING.get(kind, "text")
    if kind == "text" and _width(needed):
        spelling = f"nvarchar({_width(needed)})"
    change = (
        "turns a uuid that looks like a number into a number"
        if kind == "uuid" and affinity == "NUMERIC"
        else f"does not keep {_requirement(needed)} unchanged"
    )
    return False, (
        f"is declared {declared or '(no type)'}: SQLite gives that {affinity} affinity, "
        f"which {change}; declare it {spelling}"
    )


def check(conn: sa.Connection) -> Report:
    """Compare every table MPG uses that exists with what MPG needs.

    Raises :class:`~mpg.errors.SchemaMismatch` naming every missing or unsuitable
    column; returns which tables are absent and the SourceUri widths found.
    """
    inspector = sa.inspect(conn)
    existing = {name.lower(): name for name in inspector.get_table_names()}
    problems: list[str] = []
    missing_tables: list[str] = []
    uri_widths: dict[str, int | None] = {}
    for table in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES):
        found_name = existing.get(table.name.lower())
        if found_name is None:
            missing_tables.append(table.name)
            continue
        found = {c["name"].lower(): c for c in inspector.get_columns(found_name)}
        declared = _sqlite_declared(conn, found_name) if conn.dialect.name == "sqlite" else {}
        for column in table.columns:
            have = found.get(column.name.lower())
            if have is None:
                problems.append(f"{found_name}.{column.name} missing")
                continue
            if column.name in NARROW_OK and _kind(have["type"]) == "text":
                uri_widths[table.name] = _width(have["type"])
                continue
            if _accepts(column.type, have["type"]):
                continue
            if column.name.lower() in declared and _kind(have["type"]) == "other":
                keeps, problem = _sqlite_verdict(column.type, declared[column.name.lower()])
                if not keeps:
                    problems.append(f"{found_name}.{column.name} {problem}")
            else:
                problems.append(
                    f"{found_name}.{column.name} is {_describe(have['type'], conn.dialect)}; "
                    f"needs {_requirement(column.type)}"
                )
    if problems:
        raise errors.SchemaMismatch(
            "existing tables do not fit: "
            + "; ".join(problems)
            + ". MPG never alters existing tables: change them (schema/*.sql has the "
            "expected DDL) or let `mpg init-db` create them in an empty database"
        )
    return Report(tuple(missing_tables), uri_widths)


def fit(value: str | None, width: int | None) -> str | None:
    """``value`` if it fits a column ``width`` characters wide, else None (not cut)."""
    if value is None or width is None or len(value) <= width:
        return value
    return None
