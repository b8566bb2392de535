"""Console users: the admins of :mod:`mpg.server.admins`, with a console password.

The password is kept as an argon2id hash (argon2-cffi's defaults, RFC 9106's second
recommended profile: 64 MiB, 3 passes, 4 lanes) in ``AdminCredential.PasswordHash``;
role and disabled state are the admin's own, so disabling an admin ends both its API
token and its console sign-in. A sign-in with an unknown name, or a name without a
password, still verifies the password against a dummy hash: it takes as long as a
wrong password, so timing tells no one which names exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Iterator
from typing import Final

import argon2
import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.server import admins, audit, tables

MIN_PASSWORD: Final = 12
#: Longest password accepted: hashing is memory-hard, not length-bound, but a limit
#: keeps a megabyte "password" from being read and hashed at all.
MAX_PASSWORD: Final = 256
#: Longest user name looked at (the column's width is 100).
MAX_NAME: Final = 100
#: Hashes computed at once: each takes 64 MiB, so a flood of sign-ins waits its turn
#: instead of taking the server's memory.
MAX_CONCURRENT_HASHES: Final = 4
#: Seconds a sign-in waits for its turn to hash before it is refused (503).
HASH_WAIT_SECONDS: Final = 10.0

_hasher = argon2.PasswordHasher()
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


@contextlib.contextmanager
def _turn() -> Iterator[None]:
    if not _hashing.acquire(timeout=HASH_WAIT_SECONDS):
        raise errors.Unavailable("too many sign-ins at once; try again in a moment")
    try:
        yield
    finally:
        _hashing.release()


@dataclasses.dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A signed-in console user: the name the audit log shows and the role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """True when this user's role is ``role`` or above (viewer < operator < admin)."""
        return admins.ROLES.index(self.role) >= admins.ROLES.index(role)

    @property
    def actor(self) -> str:
        """Who an audit entry names for this user's changes."""
        return f"console:{self.name}"


def password_problem(name: str, password: str) -> str | None:
    """Why ``password`` is not good enough for ``name``, or None when it is."""
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password must have at most {MAX_PASSWORD} characters"
    if name and name.casefold() in password.casefold():
        return "the password must not contain the user name"
    if len(set(password)) < 5:
        return "the password must have at least 5 different characters"
    return None


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of ``password``."""
    with _turn():
        return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not the password of anyone at all")


def _verified(stored: str | None, password: str) -> bool:
    dummy = _dummy_hash()
    try:
        with _turn():
            return _hasher.verify(stored or dummy, password) and stored is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


class ConsoleUsers:
    """Console passwords of the admins in the server database."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def set_password(self, name: str, password: str, actor: str) -> None:
        """Give admin ``name`` the console password ``password`` (audited, never logged).

        ValidationError when the password is too weak, NotFound when there is no such admin.
        """
        problem = password_problem(name, password)
        if problem is not None:
            raise errors.ValidationError("password", problem)
        hashed = hash_password(password)
        c = tables.admin_credential.c
        with transactions.begin(self._engine, "setting a console password") as conn:
            done = conn.execute(
                tables.admin_credential.update().where(c.Name == name).values(PasswordHash=hashed)
            )
            if done.rowcount == 0:
                raise errors.NotFound(f"no admin {name}")
            audit.record(conn, actor, "admin.password", name, "console password set")

    def check(self, name: str, password: str) -> ConsoleUser | None:
        """The user ``name`` when ``password`` is theirs and they are enabled; else None."""
        if len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
            _verified(None, password[:MAX_PASSWORD])
            return None
        row = self._row(name)
        good = _verified(row.PasswordHash if row is not None else None, password)
        if row is None or not good or row.Disabled:
            return None
        return ConsoleUser(row.Name, row.Role)

    def current(self, name: str) -> ConsoleUser | None:
        """Admin ``name`` as it is now (role changes, disabling); None when gone or disabled."""
        row = self._row(name)
        if row is None or row.Disabled or row.PasswordHash is None:
            return None
        return ConsoleUser(row.Name, row.Role)

    def _row(self, name: str) -> tables.Row | None:
        c = tables.admin_credential.c
        with transactions.connect(self._engine, "reading a console user") as conn:
            return conn.execute(
                sa.select(c.Name, c.Role, c.Disabled, c.PasswordHash).where(c.Name == name)
            ).first()
