"""Who is using the console: the dependencies page routes declare.

The frame (:func:`load`, a dependency of every route of the console app) reads the
session cookie once per request and refuses an unsafe request without the right CSRF
token; page routes then declare :data:`Viewer`, :data:`Operator` or :data:`Admin`
for the signed-in user with at least that role (not signed in:
:class:`mpg.errors.SignInRequired`, a 303 to the sign-in page; role too low:
:class:`mpg.errors.Forbidden`, the 403 page) and :data:`Server` for the stores.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Final

import fastapi
from starlette import concurrency

from mpg import config, errors
from mpg.server.console import csrf, lockout, oidc, sessions, users
from mpg.server.console.users import ConsoleUser as ConsoleUser

if TYPE_CHECKING:
    from mpg.server.app import PushServer

#: Content types whose body is a form the CSRF field may be read from.
_FORMS: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclasses.dataclass(frozen=True, slots=True)
class MenuItem:
    """One entry of the console's menu: shown to users with ``role`` or above."""

    label: str
    path: str
    role: str = "viewer"


@dataclasses.dataclass(frozen=True, slots=True)
class Console:
    """The console's own state, beside the push server's stores."""

    settings: config.ServerSettings
    sessions: sessions.SessionStore
    lockouts: lockout.LockoutStore
    users: users.ConsoleUsers
    #: None when OpenID Connect sign-in is not configured (``server.console_oidc``).
    oidc: oidc.OidcClient | None
    #: The menu entries whose pages exist.
    menu: tuple[MenuItem, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """The request's live session and its user."""

    session_id: str
    session: sessions.Session
    user: ConsoleUser


def server(request: fastapi.Request) -> PushServer:
    """The :class:`~mpg.server.app.PushServer` whose stores the pages use."""
    push: PushServer = request.app.state.push
    return push


Server = Annotated["PushServer", fastapi.Depends(server)]


def console(request: fastapi.Request) -> Console:
    """The console's state."""
    state: Console = request.app.state.console
    return state


def page_path(request: fastapi.Request) -> str:
    """The request's path inside the console (``/audit``), with its query."""
    path = request.url.path[len(request.scope.get("root_path", "")) :] or "/"
    return path + (f"?{request.url.query}" if request.url.query else "")


def signed_in(request: fastapi.Request) -> Signed | None:
    """The request's session as :func:`load` found it (None: not signed in)."""
    signed: Signed | None = getattr(request.state, "signed", None)
    return signed


def _lookup(state: Console, session_id: str) -> Signed | None:
    session = state.sessions.get(session_id) if session_id else None
    if session is None:
        return None
    user = ConsoleUser(session.name, session.role)
    if session.source == "password":
        # The admin as it is now: disabled, removed or with another role since sign-in.
        current = state.users.current(session.name)
        if current is None:
            state.sessions.end(session_id)
            return None
        user = current
    return Signed(session_id, session, user)


async def _given_token(request: fastapi.Request) -> str | None:
    header = request.headers.get(csrf.HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(_FORMS):
        value = (await request.form()).get(csrf.FIELD)
        return value if isinstance(value, str) else None
    return None


async def load(request: fastapi.Request) -> None:
    """The frame's check of every request: find the session; refuse a forged change."""
    session_id = request.cookies.get(sessions.COOKIE, "")
    signed = await concurrency.run_in_threadpool(_lookup, console(request), session_id)
    request.state.signed = signed
    if request.method not in csrf.UNSAFE:
        return
    expected = signed.session.csrf if signed else request.cookies.get(csrf.PRE_COOKIE)
    if csrf.matches(expected, await _given_token(request)):
        return
    if signed is None and session_id:
        # The session ended while the form was open: sign in again (nothing was changed).
        raise errors.SignInRequired("/")
    raise errors.Forbidden(
        "This form has expired or did not come from this console (CSRF check). "
        "Reload the page and try again."
    )


class RoleCheck:
    """The dependency that admits the signed-in user with at least ``role``."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __call__(self, request: fastapi.Request) -> ConsoleUser:
        """The user, or errors.SignInRequired / errors.Forbidden."""
        signed = signed_in(request)
        if signed is None:
            raise errors.SignInRequired(page_path(request) if request.method == "GET" else "/")
        if not signed.user.may(self.role):
            raise errors.Forbidden(
                f"You are signed in as {signed.user.name}, a {signed.user.role}; "
                f"this needs the {self.role} role."
            )
        return signed.user


Viewer = Annotated[ConsoleUser, fastapi.Depends(RoleCheck("viewer"))]
Operator = Annotated[ConsoleUser, fastapi.Depends(RoleCheck("operator"))]
Admin = Annotated[ConsoleUser, fastapi.Depends(RoleCheck("admin"))]
