"""Registration codes: ``RegistrationCode`` rows an admin makes for a group.

The server makes the code (:func:`mpg.server.verification.new_registration_code`, 95
random bits) and keeps only its keyed digest (``CodeIndex``, HMAC under the key derived
from the master key, so a data-key rotation never loses a code): the code is shown once,
when it is made. ``CodeIndex`` is unique; a clash (about one in 2**95 per pair) is met
by drawing again.

A code is *valid*, *expired* (past ``ValidUntil``: it registers no new device, and the
devices it registered stay) or *deleted*. Deleting a code removes every device
registered with it (:mod:`removal`) and keeps its row, blocked for ever: its digest
stays taken, so the code is never issued again, and registering with it is refused
``registration_code_deleted`` (410) rather than "unknown".
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import time
import uuid
from typing import Final

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.server import audit, tables, verification
from mpg.server.directory import groups, removal, rules

#: Fresh codes drawn before giving up when each clashes with a stored one.
DRAWS: Final = 5
#: Latest ValidUntil accepted (year 9999): beyond it a float date means nothing.
MAX_VALID_UNTIL: Final = 253402300799.0


class Status(enum.Enum):
    """Where a code stands."""

    VALID = "valid"
    EXPIRED = "expired"
    DELETED = "deleted"


def status(*, deleted: bool, valid_until: float | None, now: float) -> Status:
    """A code's status at ``now``: deleted wins over expired; no ValidUntil never expires."""
    if deleted:
        return Status.DELETED
    if valid_until is not None and now >= valid_until:
        return Status.EXPIRED
    return Status.VALID


def checked_valid_until(valid_until: float, now: float) -> float:
    """``valid_until`` (Unix time) when it lies ahead and before the year 10000."""
    if not now < valid_until <= MAX_VALID_UNTIL:
        raise errors.ValidationError("valid_until", "must be a Unix time in the future")
    return valid_until


@dataclasses.dataclass(frozen=True, slots=True)
class RegCode:
    """A registration code as admins see it (never the code itself)."""

    code_id: str
    name: str
    note: str
    group_id: str
    valid_until: float | None
    status: Status
    deleted_at: str | None
    created_at: str
    #: Devices registered with it now.
    devices: int


@dataclasses.dataclass(frozen=True, slots=True)
class Impact:
    """What deleting a code would remove."""

    code_id: str
    group_id: str
    devices: int


class RegCodeStore:
    """Registration codes in the server database; every change is audited with it."""

    def __init__(
        self,
        engine: sa.Engine,
        key: bytes,
        *,
        make: collections.abc.Callable[[], str] = verification.new_registration_code,
        clock: collections.abc.Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._key = key
        self._make = make
        self._clock = clock

    def index(self, code: str) -> str:
        """The ``CodeIndex`` of a typed code (ValidationError, field code, if malformed)."""
        return verification.registration_code_digest(self._key, code).hex()

    def create(
        self,
        name: str,
        group_id: str,
        actor: str,
        *,
        note: str = "",
        valid_until: float | None = None,
    ) -> tuple[RegCode, str]:
        """Make a code for ``group_id``; return it and the code (shown once, never stored)."""
        clean_name, clean_note = rules.name(name), rules.note(note)
        if valid_until is not None:
            checked_valid_until(valid_until, self._clock())
        code_id = str(uuid.uuid4())

        def attempt() -> str:
            for _ in range(DRAWS):
                code = self._make()
                index = self.index(code)
                with transactions.begin(self._engine, "making a registration code") as conn:
                    groups.require(conn, group_id)
                    c = tables.registration_code.c
                    if conn.execute(sa.select(c.CodeId).where(c.CodeIndex == index)).first():
                        continue
                    conn.execute(
                        tables.registration_code.insert().values(
                            CodeId=code_id,
                            CodeIndex=index,
                            Name=clean_name,
                            Note=clean_note,
                            GroupId=group_id,
                            ValidUntil=valid_until,
                            Deleted=False,
                            DeletedAt=None,
                            CreatedAt=timefmt.now_text("utc"),
                        )
                    )
                    audit.record(conn, actor, "code.create", code_id, f"group {group_id}")
                    return code
            raise errors.Conflict(f"no unused registration code after {DRAWS} draws")

        # A concurrent insert of the same digest loses the race on the unique key and
        # is run again, drawing a new code.
        code = transactions.retrying(attempt)
        return self.get(code_id), code

    def all(self, group_id: str | None = None) -> list[RegCode]:
        """Every code (of one group when given), deleted ones too, newest first."""
        c = tables.registration_code.c
        query = sa.select(tables.registration_code).order_by(c.CreatedAt.desc(), c.CodeId)
        if group_id is not None:
            query = query.where(c.GroupId == group_id)
        d = tables.device.c
        counting = sa.select(d.ViaRef, sa.func.count()).where(d.Via == "code").group_by(d.ViaRef)
        with transactions.connect(self._engine, "listing registration codes") as conn:
            rows = conn.execute(query).all()
            counts = {str(ref): int(n) for ref, n in conn.execute(counting).all()}
        now = self._clock()
        return [self._code(r, counts.get(str(r.CodeId), 0), now) for r in rows]

    def get(self, code_id: str) -> RegCode:
        """One code; NotFound when there is none."""
        with transactions.connect(self._engine, "reading a registration code") as conn:
            return self._require(conn, code_id)

    def change(
        self,
        code_id: str,
        actor: str,
        *,
        name: str | None = None,
        note: str | None = None,
        valid_until: float | None = None,
        no_end: bool = False,
    ) -> RegCode:
        """Change name, note or validity (``no_end``: valid with no end); a deleted code
        cannot be changed (410 ``registration_code_deleted``)."""
        values: dict[str, object] = {}
        if name is not None:
            values["Name"] = rules.name(name)
        if note is not None:
            values["Note"] = rules.note(note)
        if no_end and valid_until is not None:
            raise errors.ValidationError("valid_until", "give an end or none, not both")
        if valid_until is not None:
            values["ValidUntil"] = checked_valid_until(valid_until, self._clock())
        if no_end:
            values["ValidUntil"] = None
        c = tables.registration_code.c
        with transactions.begin(self._engine, "changing a registration code") as conn:
            self._live(conn, code_id)
            if values:
                conn.execute(
                    tables.registration_code.update().where(c.CodeId == code_id).values(values)
                )
                audit.record(conn, actor, "code.change", code_id, ", ".join(sorted(values)))
            return self._require(conn, code_id)

    def impact(self, code_id: str) -> Impact:
        """What :meth:`delete` would remove now."""
        with transactions.connect(self._engine, "reading a code's devices") as conn:
            found = self._require(conn, code_id)
            accounts = removal.code_accounts(conn, code_id)
        return Impact(code_id, found.group_id, len(accounts))

    def delete(self, code_id: str, actor: str) -> Impact:
        """Block the code for ever and remove every device registered with it."""
        c = tables.registration_code.c
        with transactions.begin(self._engine, "deleting a registration code") as conn:
            found = self._live(conn, code_id)
            removed = removal.remove(
                conn,
                removal.code_accounts(conn, code_id),
                f"its registration code {code_id} was deleted by {actor}",
            )
            conn.execute(
                tables.registration_code.update()
                .where(c.CodeId == code_id)
                .values(Deleted=True, DeletedAt=timefmt.now_text("utc"))
            )
            audit.record(conn, actor, "code.delete", code_id, f"{removed} devices removed")
        return Impact(code_id, found.group_id, removed)

    # --- helpers ----------------------------------------------------------------

    def _require(self, conn: sa.Connection, code_id: str) -> RegCode:
        c = tables.registration_code.c
        row = conn.execute(sa.select(tables.registration_code).where(c.CodeId == code_id)).first()
        if row is None:
            raise errors.NotFound(f"no registration code {code_id}")
        devices = len(removal.code_accounts(conn, code_id))
        return self._code(row, devices, self._clock())

    def _live(self, conn: sa.Connection, code_id: str) -> RegCode:
        found = self._require(conn, code_id)
        if found.status is Status.DELETED:
            raise errors.Refused(
                410,
                "registration_code_deleted",
                f"registration code {code_id} was deleted on {found.deleted_at} and stays blocked",
            )
        return found

    @staticmethod
    def _code(row: sa.Row[tuple[object, ...]], devices: int, now: float) -> RegCode:
        valid_until = None if row.ValidUntil is None else float(row.ValidUntil)
        return RegCode(
            str(row.CodeId),
            str(row.Name),
            str(row.Note),
            str(row.GroupId),
            valid_until,
            status(deleted=bool(row.Deleted), valid_until=valid_until, now=now),
            None if row.DeletedAt is None else str(row.DeletedAt),
            str(row.CreatedAt),
            devices,
        )
