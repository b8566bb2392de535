"""Categories of a message group: ``Category`` rows (docs/devices.md, "Categories").

A device subscribes to its group's categories; a preselected one is subscribed for it
at registration and, when it was added later, at the device's next start: that is why
a category keeps the Unix time it was created (``CreatedAt``). Removing a category
removes its subscriptions with it.
"""

from __future__ import annotations

import dataclasses
import time

import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.server import audit, tables
from mpg.server.directory import groups, rules


@dataclasses.dataclass(frozen=True, slots=True)
class Category:
    """A category of a group."""

    group_id: str
    category_id: str
    name: str
    preselected: bool
    #: Unix time it was created.
    created_at: float


def _category(row: sa.Row[tuple[object, ...]]) -> Category:
    return Category(
        str(row.GroupId),
        str(row.CategoryId),
        str(row.Name),
        bool(row.Preselected),
        float(row.CreatedAt),
    )


def _where(group_id: str, category_id: str) -> sa.ColumnElement[bool]:
    c = tables.category.c
    return sa.and_(c.GroupId == group_id, c.CategoryId == category_id)


class CategoryStore:
    """Categories in the server database; every change is audited with it."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def add(
        self, group_id: str, category_id: str, name: str, preselected: bool, actor: str
    ) -> Category:
        """Create a category of an existing group; Conflict when the id is taken there."""
        category = Category(
            group_id,
            rules.slug("category", category_id),
            rules.name(name),
            preselected,
            time.time(),
        )

        def insert() -> None:
            with transactions.begin(self._engine, "adding a category") as conn:
                groups.require(conn, group_id)
                found = conn.execute(
                    sa.select(tables.category.c.CategoryId).where(
                        _where(group_id, category.category_id)
                    )
                ).first()
                if found is not None:
                    raise errors.Conflict(f"group {group_id} already has category {category_id}")
                conn.execute(
                    tables.category.insert().values(
                        GroupId=group_id,
                        CategoryId=category.category_id,
                        Name=category.name,
                        Preselected=preselected,
                        CreatedAt=category.created_at,
                    )
                )
                audit.record(
                    conn,
                    actor,
                    "category.create",
                    f"{group_id}/{category.category_id}",
                    "preselected" if preselected else "",
                )

        # Two admins adding the same id at once: the loser's insert breaks the key, and
        # run again it finds the winner's row.
        transactions.retrying(insert)
        return category

    def of_group(self, group_id: str) -> list[Category]:
        """The group's categories, by id; NotFound when the group does not exist."""
        c = tables.category.c
        with transactions.connect(self._engine, "listing categories") as conn:
            groups.require(conn, group_id)
            rows = conn.execute(
                sa.select(tables.category).where(c.GroupId == group_id).order_by(c.CategoryId)
            ).all()
        return [_category(r) for r in rows]

    def get(self, group_id: str, category_id: str) -> Category:
        """One category; NotFound naming the group or the category."""
        with transactions.connect(self._engine, "reading a category") as conn:
            return _require(conn, group_id, category_id)

    def change(
        self,
        group_id: str,
        category_id: str,
        actor: str,
        *,
        name: str | None = None,
        preselected: bool | None = None,
    ) -> Category:
        """Change the name or whether it is preselected (None: keep).

        Preselecting an existing category does not subscribe devices: they choose their
        subscriptions, and only categories created after a device's last start are
        added to it at its next start.
        """
        values: dict[str, object] = {}
        if name is not None:
            values["Name"] = rules.name(name)
        if preselected is not None:
            values["Preselected"] = preselected
        with transactions.begin(self._engine, "changing a category") as conn:
            _require(conn, group_id, category_id)
            if values:
                conn.execute(
                    tables.category.update().where(_where(group_id, category_id)).values(values)
                )
                audit.record(
                    conn,
                    actor,
                    "category.change",
                    f"{group_id}/{category_id}",
                    ", ".join(sorted(values)),
                )
            return _require(conn, group_id, category_id)

    def remove(self, group_id: str, category_id: str, actor: str) -> int:
        """Remove a category and its subscriptions; return how many subscriptions went."""
        s = tables.subscription.c
        with transactions.begin(self._engine, "removing a category") as conn:
            _require(conn, group_id, category_id)
            dropped = conn.execute(
                tables.subscription.delete().where(
                    s.GroupId == group_id, s.CategoryId == category_id
                )
            ).rowcount
            conn.execute(tables.category.delete().where(_where(group_id, category_id)))
            audit.record(
                conn,
                actor,
                "category.remove",
                f"{group_id}/{category_id}",
                f"{dropped} subscriptions",
            )
        return int(dropped)


def _require(conn: sa.Connection, group_id: str, category_id: str) -> Category:
    groups.require(conn, group_id)
    row = conn.execute(sa.select(tables.category).where(_where(group_id, category_id))).first()
    if row is None:
        raise errors.NotFound(f"group {group_id} has no category {category_id}")
    return _category(row)
