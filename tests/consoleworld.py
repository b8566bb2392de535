"""A push server with the admin console, its users per role, and an HTTP client of it.

Used by the console's integration tests (httpx) and browser tests (Playwright,
tests/console/conftest.py): one real ``mpg server`` over TLS on loopback.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
from collections.abc import Iterator

import httpx
import serverproc

from mpg.server import admins, tables
from mpg.server.console import users

#: Console users: name -> (role, password).
USERS = {
    "ada": ("admin", "correct horse battery staple"),
    "otto": ("operator", "operator's long passphrase"),
    "vera": ("viewer", "viewer sees but never changes"),
}
#: The user of each role.
USER_OF = {role: name for name, (role, _) in USERS.items()}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_users(database_url: str) -> None:
    """Create the :data:`USERS` as admins with console passwords."""
    engine = tables.create_engine(database_url)
    try:
        for name, (role, password) in USERS.items():
            admins.AdminStore(engine).add(name, role, "test")
            users.ConsoleUsers(engine).set_password(name, password, "test")
    finally:
        engine.dispose()


def start(root: pathlib.Path, **settings: object) -> serverproc.ServerProcess:
    """A running server (``[server]`` ``settings``) with the console users."""
    srv = serverproc.start(root, {}, **settings)
    add_users(srv.database_url)
    return srv


@contextlib.contextmanager
def client(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client of ``srv`` that trusts its test CA and keeps cookies."""
    with httpx.Client(base_url=srv.url, verify=srv.tls_context(), timeout=60) as http:
        yield http


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token in a page's forms."""
    found = _CSRF.search(page.text)
    assert found is not None, f"no CSRF field in {page.url}: {page.text[:500]}"
    return found.group(1)


def sign_in(http: httpx.Client, name: str, password: str | None = None) -> httpx.Response:
    """Sign in through the login form; the answer to the form's POST (signed in
    already: the form is posted with the session's token, as a second tab would)."""
    form = http.get("/console/login", follow_redirects=True)
    return http.post(
        "/console/login",
        data={
            "csrf": csrf_of(form),
            "name": name,
            "password": USERS[name][1] if password is None else password,
            "next": "/",
        },
    )
