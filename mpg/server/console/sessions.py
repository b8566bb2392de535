"""Console sessions, kept on the server (table ``ConsoleSession``).

The browser holds a random 256-bit id in a cookie; the table holds only its SHA-256,
so a copy of the table signs nobody in. A session ends when it has been idle for
``server.console_idle_timeout`` or has lasted ``server.console_session_lifetime``
(:func:`expired`), at sign-out, and when its admin is disabled. Each sign-in makes a
new id (an id planted before sign-in is worth nothing after it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa

from mpg.db import transactions
from mpg.server import audit, tables
from mpg.server.console import csrf

#: The cookie holding the session id.
COOKIE: Final = "mpg_console_session"
_ID_BYTES: Final = 32
#: Longest cookie value looked at (a generated id is 43 characters).
MAX_ID_CHARS: Final = 100
#: Longest gap between two writes of a session's last-seen time.
TOUCH_SECONDS: Final = 60.0
#: Most sessions :meth:`SessionStore.live` lists.
MAX_LISTED: Final = 500


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """How long a session lasts: ``idle`` seconds without a request, ``lifetime`` in all."""

    idle: float
    lifetime: float


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser."""

    name: str
    role: str
    #: How it signed in: ``password`` or ``oidc``.
    source: str
    csrf: str
    created_at: float
    last_seen: float


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    """A live session as admins see it: ``key`` is the kept hash, never the id."""

    key: str
    name: str
    role: str
    source: str
    created_at: float
    last_seen: float


def expired(session: Session, now: float, policy: Policy) -> bool:
    """True when ``session`` has been idle too long or has lasted too long."""
    return now - session.last_seen >= policy.idle or now - session.created_at >= policy.lifetime


def needs_touch(session: Session, now: float, policy: Policy) -> bool:
    """True when the last-seen time is worth writing (not on every request)."""
    return now - session.last_seen >= min(TOUCH_SECONDS, policy.idle / 10)


def digest(session_id: str) -> str:
    """What the table keeps of a session id."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class SessionStore:
    """Sessions in the server database."""

    def __init__(
        self, engine: sa.Engine, policy: Policy, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.policy = policy
        self._clock = clock

    def create(self, name: str, role: str, source: str) -> tuple[str, Session]:
        """A new session; its id (for the cookie, never stored) and the session.

        Sessions past their lifetime are removed on the way (they can never be used).
        """
        now = self._clock()
        session_id = secrets.token_urlsafe(_ID_BYTES)
        session = Session(name, role, source, csrf.new_token(), now, now)
        c = tables.console_session.c
        with transactions.begin(self._engine, "starting a console session") as conn:
            conn.execute(
                tables.console_session.delete().where(c.CreatedAt <= now - self.policy.lifetime)
            )
            conn.execute(
                tables.console_session.insert().values(
                    SessionHash=digest(session_id),
                    Name=name,
                    Role=role,
                    Source=source,
                    CsrfToken=session.csrf,
                    CreatedAt=now,
                    LastSeen=now,
                )
            )
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of ``session_id``; None (and the row gone) when it expired."""
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return None
        c = tables.console_session.c
        key = digest(session_id)
        with transactions.connect(self._engine, "reading a console session") as conn:
            row = conn.execute(
                sa.select(tables.console_session).where(c.SessionHash == key)
            ).first()
        if row is None:
            return None
        session = Session(
            row.Name, row.Role, row.Source, row.CsrfToken, row.CreatedAt, row.LastSeen
        )
        now = self._clock()
        if expired(session, now, self.policy):
            self.end(session_id)
            return None
        if needs_touch(session, now, self.policy):
            with transactions.begin(self._engine, "touching a console session") as conn:
                conn.execute(
                    tables.console_session.update().where(c.SessionHash == key).values(LastSeen=now)
                )
            session = dataclasses.replace(session, last_seen=now)
        return session

    def end(self, session_id: str) -> None:
        """End the session of ``session_id`` (nothing if there is none)."""
        c = tables.console_session.c
        with transactions.begin(self._engine, "ending a console session") as conn:
            conn.execute(tables.console_session.delete().where(c.SessionHash == digest(session_id)))

    def live(self) -> list[Listed]:
        """The sessions not expired, most recently used first."""
        now = self._clock()
        c = tables.console_session.c
        query = (
            sa.select(tables.console_session)
            .where(c.LastSeen > now - self.policy.idle)
            .where(c.CreatedAt > now - self.policy.lifetime)
            .order_by(c.LastSeen.desc())
            .limit(MAX_LISTED)
        )
        with transactions.connect(self._engine, "listing console sessions") as conn:
            rows = conn.execute(query).all()
        return [
            Listed(r.SessionHash, r.Name, r.Role, r.Source, r.CreatedAt, r.LastSeen) for r in rows
        ]

    def end_listed(self, key: str, actor: str) -> str | None:
        """End the session listed as ``key`` (audited); its user's name, None if gone."""
        c = tables.console_session.c
        with transactions.begin(self._engine, "ending a console session") as conn:
            row = conn.execute(sa.select(c.Name).where(c.SessionHash == key)).first()
            if row is None:
                return None
            conn.execute(tables.console_session.delete().where(c.SessionHash == key))
            audit.record(conn, actor, "console.session.end", row.Name, "signed out by an admin")
        return str(row.Name)
