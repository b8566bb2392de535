"""Statement shapes that keep every database's planner on the intended index.

A statement that picks rows by key (``EntryId IN (…)``) and also checks other columns
of those rows (``Recipient = :a AND State = 'leased'``) gives the planner a choice: look
each key up, or scan an index over the other columns and test every row found there
against the key list. Without statistics (a new database, a table that grew faster
than they were taken) both SQLite and PostgreSQL took the second, whose cost grows with
the rows behind the other columns. On PostgreSQL an acknowledgement of 500 entries
scanned all the recipient's leased entries (18–22 ms a statement) and a submit's look
for earlier answers all the sender's messages (144 ms at 20,000): PostgreSQL's own CPU
for a 20,000-message run fell from 7.7 to 3.2 s once both went by key
(docs/benchmarks.md, "The planner and the key lists").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal


def row_check(*conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """``conditions`` as one test of each row already found, which no index can serve.

    ``CASE WHEN … THEN 1 ELSE 0 END = 1``: a planner uses an index for a column
    compared with a value, never for a CASE expression, so the rows are found by the
    statement's other (key) conditions and this one only filters them. Same result as
    ``AND``-ing the conditions, on every database MPG supports.
    """
    one: sa.ColumnElement[Any] = sa.literal_column("1")
    zero: sa.ColumnElement[Any] = sa.literal_column("0")
    test: sa.ColumnElement[Any] = sa.case((sa.and_(*conditions), one), else_=zero)
    return test == one


def _sqlite_has_json() -> bool:
    try:
        sqlite3.connect(":memory:").execute("SELECT json_array(1)").close()
    except sqlite3.OperationalError:
        return False
    return True


#: Whether this process's SQLite library has the JSON functions (built in since 3.38).
SQLITE_JSON = _sqlite_has_json()


class _JsonList(sa.types.TypeDecorator[Sequence[Any]]):
    """A list bound as its JSON text (for ``json_each``)."""

    impl = sa.Unicode
    cache_ok = True

    def process_bind_param(self, value: Sequence[Any] | None, dialect: sa.Dialect) -> str:
        return json.dumps(list(value or ()))


class KeyIn(sa.ColumnElement[bool]):
    """``column`` is one of the list bound as ``name``; see :func:`key_in`."""

    inherit_cache = True
    # SQLAlchemy's own constructs declare their parts as this class-level list.
    _traverse_internals = [  # noqa: RUF012
        ("column", InternalTraversal.dp_clauseelement),
        ("listed", InternalTraversal.dp_clauseelement),
        ("array", InternalTraversal.dp_clauseelement),
        ("json", InternalTraversal.dp_clauseelement),
    ]
    type = sa.Boolean()
    # A comparison, not a boolean value: rendered as it is, never as ``… = 1``.
    _is_implicitly_boolean = True

    def __init__(self, column: sa.ColumnElement[Any], name: str) -> None:
        self.column = column
        # Every form binds the same name: each database's compilation uses one, and
        # ``params()`` reaches them all.
        self.listed: sa.BindParameter[Any] = sa.bindparam(name, expanding=True)
        self.array: sa.BindParameter[Any] = sa.bindparam(name, type_=postgresql.ARRAY(column.type))
        self.json: sa.BindParameter[Any] = sa.bindparam(name, type_=_JsonList())


def key_in(column: sa.ColumnElement[Any], name: str) -> KeyIn:
    """``column IN (…)`` of the list given as parameter ``name``, as each database
    plans it best.

    PostgreSQL gets ``column = ANY(:name)``, one array parameter: a single statement
    whatever the list's length, prepared once, whose plan looks the keys up; a list of
    500 parameters was parsed and planned anew for each length, and a generic plan of
    it built the array again for every row it tested. SQLite gets ``column IN (SELECT
    value FROM json_each(:name))``, the list as one JSON text: one statement in the
    driver's cache instead of one per length, and no parameter per key for SQLAlchemy
    to expand and the driver to bind (a SQLite built without JSON keeps the ``IN``
    list). Every other database gets the expanding ``IN`` list. The keys must be text
    or numbers (keys MPG made, or parsed as text): neither form carries a BLOB key.
    """
    return KeyIn(column, name)


@compiles(KeyIn)
def _listed(element: KeyIn, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(element.listed), **kw))


@compiles(KeyIn, "sqlite")
def _in_json_array(element: KeyIn, compiler: Any, **kw: Any) -> str:
    if not SQLITE_JSON:
        return _listed(element, compiler, **kw)
    keys = sa.func.json_each(element.json).table_valued("value")
    return str(compiler.process(element.column.in_(sa.select(keys.c.value)), **kw))


@compiles(KeyIn, "postgresql")
def _any_of_array(element: KeyIn, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column == sa.any_(element.array), **kw))


def due(
    columns: Sequence[sa.ColumnElement[Any]],
    owner: sa.ColumnElement[Any],
    state: sa.ColumnElement[Any],
    lease_until: sa.ColumnElement[Any],
    order: Sequence[sa.ColumnElement[Any]],
    max_items: int,
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The selects of a leasing queue: ``columns`` of the owner's (``b_account``) rows
    waiting (``state`` 'queued') and of those whose lease ran out (``state`` 'leased',
    ``lease_until`` before ``b_now``), each at most ``max_items`` in ``order`` and
    locked, rows another transaction holds skipped; a last column ``Again`` is 1 in
    the second.

    Two selects, not one with OR: each walks its own range of an index on
    (owner, state, order…) and stops after ``max_items``, whatever the queue's length.
    """

    def select(again: str, *where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        return (
            sa.select(*columns, sa.literal_column(again).label("Again"))
            .where(owner == sa.bindparam("b_account"), *where)
            .order_by(*order)
            .limit(max_items)
            .with_for_update(skip_locked=True)
        )

    return (
        select("0", state == "queued"),
        select("1", state == "leased", lease_until < sa.bindparam("b_now")),
    )


def at_once(selects: Sequence[sa.Select[Any]], dialect: str) -> sa.CompoundSelect[Any] | None:
    """``selects`` (of one shape, each ordered, limited and locked) as one statement
    that returns all their rows, where ``dialect`` can: a fetch looks in four places
    and a statement's own cost, not the rows, is most of a small fetch's work.

    SQLite: each select as a subquery (it has no row locks; the transaction holds
    the write lock). PostgreSQL: each a CTE, which keeps its ``FOR UPDATE SKIP
    LOCKED``. Elsewhere None: run them one by one (a locking clause cannot stand in a
    UNION there).
    """
    if dialect == "sqlite":
        return sa.union_all(*(sa.select(one.subquery()) for one in selects))
    if dialect == "postgresql":
        ctes = [one.cte(f"due_{n}") for n, one in enumerate(selects)]
        return sa.union_all(*(sa.select(cte) for cte in ctes))
    return None
