"""Locking out guessers: failed console sign-ins counted per user name and per address.

Failures count within a window of ``server.console_lockout_seconds`` from the first
one; reaching the limit (``console_lockout_failures`` for a name,
``console_lockout_address_failures`` for a client address) locks that subject for the
same time. A locked subject is refused before its password is looked at, so a guesser
learns nothing more, and a name nobody has counts like any other (no hint that it
does not exist). A good sign-in clears its name's count, not its address's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from mpg.db import transactions
from mpg.server import tables


@dataclasses.dataclass(frozen=True, slots=True)
class Count:
    """Failures of one subject in its current window."""

    failures: int
    window_start: float
    locked_until: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """Failures that lock a user name / an address, and the window and lock in seconds."""

    user_failures: int
    address_failures: int
    seconds: float


def after_failure(count: Count | None, now: float, limit: int, seconds: float) -> Count:
    """The count after one more failure at ``now``; locked when it reaches ``limit``."""
    if count is None or now - count.window_start >= seconds:
        count = Count(0, now)
    failures = count.failures + 1
    locked = now + seconds if failures >= limit else count.locked_until
    return Count(failures, count.window_start, locked)


def locked_until(count: Count | None, now: float) -> float | None:
    """Until when the subject is locked, or None when it is not (any more)."""
    if count is None or count.locked_until is None or count.locked_until <= now:
        return None
    return count.locked_until


def user_subject(name: str) -> str:
    """The lockout subject of a user name (case-folded: one person, one count)."""
    return "user:" + name.casefold()[:250]


def address_subject(address: str) -> str:
    """The lockout subject of a client address."""
    return "addr:" + address[:250]


class LockoutStore:
    """Failure counts in the server database (shared by every server process)."""

    def __init__(
        self, engine: sa.Engine, policy: Policy, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.policy = policy
        self._clock = clock

    def _read(self, conn: sa.Connection, subjects: Sequence[str]) -> dict[str, Count]:
        c = tables.console_lockout.c
        rows = conn.execute(sa.select(tables.console_lockout).where(c.Subject.in_(subjects))).all()
        return {r.Subject: Count(r.Failures, r.WindowStart, r.LockedUntil) for r in rows}

    def locked_until(self, name: str, address: str) -> float | None:
        """Until when a sign-in as ``name`` from ``address`` is refused; None: not locked."""
        subjects = (user_subject(name), address_subject(address))
        with transactions.connect(self._engine, "reading console lockouts") as conn:
            counts = self._read(conn, subjects)
        now = self._clock()
        until = [t for s in subjects if (t := locked_until(counts.get(s), now)) is not None]
        return max(until, default=None)

    def failed(self, name: str, address: str) -> float | None:
        """Count one failure for ``name`` and ``address``; until when either is now locked."""
        # Two processes may count the first failure of a subject at once: run again.
        return transactions.retrying(lambda: self._count_failure(name, address))

    def _count_failure(self, name: str, address: str) -> float | None:
        now = self._clock()
        limits = {
            user_subject(name): self.policy.user_failures,
            address_subject(address): self.policy.address_failures,
        }
        table = tables.console_lockout
        c = table.c
        with transactions.begin(self._engine, "counting a failed console sign-in") as conn:
            # Counts whose window and lock are over can go: guessed names leave no trail.
            conn.execute(
                table.delete()
                .where(c.WindowStart <= now - self.policy.seconds)
                .where(sa.or_(c.LockedUntil.is_(None), c.LockedUntil <= now))
            )
            counts = self._read(conn, list(limits))
            for subject, limit in limits.items():
                before = counts.get(subject)
                after = after_failure(before, now, limit, self.policy.seconds)
                values = {
                    "Failures": after.failures,
                    "WindowStart": after.window_start,
                    "LockedUntil": after.locked_until,
                }
                if before is None:
                    conn.execute(table.insert().values(Subject=subject, **values))
                else:
                    conn.execute(table.update().where(c.Subject == subject).values(**values))
                counts[subject] = after
        until = [t for s in limits if (t := locked_until(counts[s], now)) is not None]
        return max(until, default=None)

    def succeeded(self, name: str) -> None:
        """A good sign-in as ``name``: its failures are forgotten."""
        c = tables.console_lockout.c
        with transactions.begin(self._engine, "clearing console sign-in failures") as conn:
            conn.execute(tables.console_lockout.delete().where(c.Subject == user_subject(name)))
