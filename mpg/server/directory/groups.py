"""Message groups (regions): ``MessageGroup`` rows, created, changed and removed by admins.

A group is what devices register into and what an Outbox row can address. Removing a
group that still has devices, domains or registration codes is refused (409, naming
what is left): those are removed first, each with its own impact shown, so removing a
group can never silently take devices with it. Its categories go with it. Deleted
registration codes keep their rows (blocked for ever) and do not hold a group back.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.server import audit, tables
from mpg.server.directory import rules


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """A message group as admins see it."""

    group_id: str
    name: str
    region: str
    file_url: str
    created_at: str


def _group(row: sa.Row[tuple[object, ...]]) -> Group:
    return Group(
        str(row.GroupId), str(row.Name), str(row.Region), str(row.FileUrl), str(row.CreatedAt)
    )


def require(conn: sa.Connection, group_id: str) -> Group:
    """The group ``group_id`` in the caller's transaction; NotFound naming it otherwise."""
    row = conn.execute(
        sa.select(tables.message_group).where(tables.message_group.c.GroupId == group_id)
    ).first()
    if row is None:
        raise errors.NotFound(f"no group {group_id}")
    return _group(row)


class GroupStore:
    """Message groups in the server database; every change is audited with it."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def add(self, group_id: str, name: str, region: str, file_url: str, actor: str) -> Group:
        """Create a group; Conflict when the id is taken."""
        group = Group(
            rules.slug("group", group_id),
            rules.name(name),
            rules.region(region),
            rules.file_url(file_url),
            timefmt.now_text("utc"),
        )
        c = tables.message_group.c

        def insert() -> None:
            with transactions.begin(self._engine, "adding a group") as conn:
                if conn.execute(sa.select(c.GroupId).where(c.GroupId == group.group_id)).first():
                    raise errors.Conflict(f"group {group.group_id} already exists")
                conn.execute(
                    tables.message_group.insert().values(
                        GroupId=group.group_id,
                        Name=group.name,
                        Region=group.region,
                        FileUrl=group.file_url,
                        CreatedAt=group.created_at,
                    )
                )
                audit.record(conn, actor, "group.create", group.group_id)

        # Two admins adding the same id at once: the loser's insert breaks the key, and
        # run again it finds the winner's row.
        transactions.retrying(insert)
        return group

    def all(self) -> list[Group]:
        """Every group, by id."""
        c = tables.message_group.c
        with transactions.connect(self._engine, "listing groups") as conn:
            rows = conn.execute(sa.select(tables.message_group).order_by(c.GroupId)).all()
        return [_group(r) for r in rows]

    def get(self, group_id: str) -> Group:
        """One group; NotFound when there is none."""
        with transactions.connect(self._engine, "reading a group") as conn:
            return require(conn, group_id)

    def change(
        self,
        group_id: str,
        actor: str,
        *,
        name: str | None = None,
        region: str | None = None,
        file_url: str | None = None,
    ) -> Group:
        """Change what is given (None: keep); the id never changes."""
        values: dict[str, str] = {}
        if name is not None:
            values["Name"] = rules.name(name)
        if region is not None:
            values["Region"] = rules.region(region)
        if file_url is not None:
            values["FileUrl"] = rules.file_url(file_url)
        c = tables.message_group.c
        with transactions.begin(self._engine, "changing a group") as conn:
            require(conn, group_id)
            if values:
                conn.execute(
                    tables.message_group.update().where(c.GroupId == group_id).values(values)
                )
                audit.record(conn, actor, "group.change", group_id, ", ".join(sorted(values)))
            return require(conn, group_id)

    def remove(self, group_id: str, actor: str) -> None:
        """Remove an empty group and its categories; Conflict naming what is left."""
        with transactions.begin(self._engine, "removing a group") as conn:
            require(conn, group_id)
            left = holding(conn, group_id)
            if left:
                raise errors.Conflict(
                    f"group {group_id} still has {left}: remove them first "
                    "(mpg server domain remove, code delete, device remove)"
                )
            conn.execute(tables.category.delete().where(tables.category.c.GroupId == group_id))
            conn.execute(
                tables.message_group.delete().where(tables.message_group.c.GroupId == group_id)
            )
            audit.record(conn, actor, "group.remove", group_id)


def holding(conn: sa.Connection, group_id: str) -> str:
    """What keeps a group from being removed, in words ("2 devices, 1 domain"); "" if nothing."""
    counts = (
        ("device", tables.device, tables.device.c.GroupId == group_id),
        ("domain", tables.domain, tables.domain.c.GroupId == group_id),
        (
            "registration code",
            tables.registration_code,
            sa.and_(
                tables.registration_code.c.GroupId == group_id,
                tables.registration_code.c.Deleted == sa.false(),
            ),
        ),
    )
    parts = []
    for what, table, where in counts:
        n = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
        if n:
            parts.append(f"{n} {what}{'s' if n != 1 else ''}")
    return ", ".join(parts)
