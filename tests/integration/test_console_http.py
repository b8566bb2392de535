"""The admin console's refusals over HTTP, against a real server over TLS on loopback:
sign-in, lockout, sessions, CSRF, roles and the frame's headers."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import consoleworld
import fastapi
import httpx
import pytest
import serverproc
import sqlalchemy as sa

from mpg.server import admins, audit, tables
from mpg.server.console import app as console_app
from mpg.server.console import deps, sessions, users

#: Address lockout high enough that the tests sharing the server never reach it.
SHARED = {"console_lockout_address_failures": 1000, "console_lockout_failures": 3}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serverproc.ServerProcess]:
    server = consoleworld.start(tmp_path_factory.mktemp("console"), **SHARED)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    with consoleworld.client(srv) as client:
        yield client


def _signed_in(srv: serverproc.ServerProcess, name: str) -> Iterator[httpx.Client]:
    with consoleworld.client(srv) as client:
        answer = consoleworld.sign_in(client, name)
        assert answer.status_code == 303, answer.text
        yield client


@pytest.fixture
def ada(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    yield from _signed_in(srv, "ada")


@pytest.fixture
def vera(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    yield from _signed_in(srv, "vera")


def _session_kept(srv: serverproc.ServerProcess, key: str) -> bool:
    engine = tables.create_engine(srv.database_url)
    try:
        with engine.connect() as conn:
            c = tables.console_session.c
            row = conn.execute(sa.select(c.Name).where(c.SessionHash == key)).first()
            return row is not None
    finally:
        engine.dispose()


def test_every_console_response_carries_the_strict_csp(
    http: httpx.Client, ada: httpx.Client
) -> None:
    answers = [
        http.get("/console/login"),
        http.get("/console/audit"),
        http.get("/console/static/console.css"),
        http.get("/console/no-such-page"),
        http.post("/console/logout", data={}),
        ada.get("/console/audit"),
    ]
    for answer in answers:
        assert answer.headers["content-security-policy"] == console_app.CSP, answer.url
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    assert "script-src 'self';" in console_app.CSP
    assert "'unsafe-inline'" not in console_app.CSP
    assert answers[0].headers["cache-control"] == "no-store"


def test_pages_hold_no_inline_script_or_style(ada: httpx.Client) -> None:
    for path in ("/console/login", "/console/audit", "/console/sessions"):
        text = ada.get(path, follow_redirects=True).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert " style=" not in text
        assert not re.search(r"\son[a-z]+=", text)


def test_not_signed_in_goes_to_sign_in_and_back_to_the_page(srv: serverproc.ServerProcess) -> None:
    with consoleworld.client(srv) as http:
        answer = http.get("/console/audit?who=ada")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/login?next=%2Faudit%3Fwho%3Dada"
        form = http.get(answer.headers["location"])
        signed = http.post(
            "/console/login",
            data={
                "csrf": consoleworld.csrf_of(form),
                "name": "otto",
                "password": consoleworld.USERS["otto"][1],
                "next": "/audit?who=ada",
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/console/audit?who=ada"


def test_sign_in_sets_a_strict_session_cookie(srv: serverproc.ServerProcess) -> None:
    with consoleworld.client(srv) as http:
        answer = consoleworld.sign_in(http, "ada")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(sessions.COOKIE + "=")
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/console"):
        assert flag in cookie
    assert "Max-Age" not in cookie
    assert "Expires" not in cookie


def test_sign_in_again_rotates_the_session_id(srv: serverproc.ServerProcess) -> None:
    with consoleworld.client(srv) as http:
        consoleworld.sign_in(http, "otto")
        first = http.cookies[sessions.COOKIE]
        consoleworld.sign_in(http, "otto")
        second = http.cookies[sessions.COOKIE]
    assert first != second
    with consoleworld.client(srv) as old:
        old.cookies.set(sessions.COOKIE, first, domain=srv.host, path="/console")
        assert old.get("/console/audit").status_code == 303


@pytest.mark.parametrize("name", ["vera", "nobody-at-all"])
def test_wrong_password_and_unknown_user_get_the_same_refusal(
    srv: serverproc.ServerProcess, name: str
) -> None:
    with consoleworld.client(srv) as http:
        answer = consoleworld.sign_in(http, name, password="not the password at all")
        again = consoleworld.sign_in(http, "vera")  # vera's count is cleared again
    assert answer.status_code == 403
    assert "Wrong user name or password." in answer.text
    assert sessions.COOKIE not in answer.headers.get("set-cookie", "")
    assert again.status_code == 303


def test_lockout_after_failures_refuses_even_the_right_password(
    srv: serverproc.ServerProcess,
) -> None:
    with consoleworld.client(srv) as http:
        answers = [
            consoleworld.sign_in(http, "otto", password=f"wrong password {n}") for n in range(3)
        ]
        right = consoleworld.sign_in(http, "otto")
        other = consoleworld.sign_in(http, "ada")
    assert [a.status_code for a in answers] == [403, 403, 429]
    assert right.status_code == 429
    assert re.search(r"locked until \d\d:\d\d:\d\d UTC", right.text)
    assert 0 < int(right.headers["retry-after"]) <= 900
    assert other.status_code == 303
    _clear_lockouts(srv)


def _clear_lockouts(srv: serverproc.ServerProcess) -> None:
    engine = tables.create_engine(srv.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(tables.console_lockout.delete())
    finally:
        engine.dispose()


def test_client_address_is_locked_after_failures_under_many_names(
    tmp_path: pathlib.Path,
) -> None:
    srv = consoleworld.start(tmp_path, console_lockout_address_failures=4)
    try:
        with consoleworld.client(srv) as http:
            codes = [
                consoleworld.sign_in(http, f"guess{n}", password="not it at all").status_code
                for n in range(4)
            ]
            right = consoleworld.sign_in(http, "ada")
    finally:
        srv.stop()
    assert codes == [403, 403, 403, 429]
    assert right.status_code == 429
    assert "Too many failed sign-ins" in right.text


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_change_without_the_session_csrf_token_is_refused(
    ada: httpx.Client, token: str | None
) -> None:
    data = {} if token is None else {"csrf": token}
    answer = ada.post("/console/logout", data=data)
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert ada.get("/console/audit").status_code == 200  # still signed in


def test_htmx_header_token_is_accepted(ada: httpx.Client) -> None:
    token = consoleworld.csrf_of(ada.get("/console/audit"))
    answer = ada.post("/console/logout", headers={"X-CSRF-Token": token}, data={})
    assert answer.status_code == 303
    assert ada.get("/console/audit").status_code == 303


def test_sign_in_post_without_the_pre_sign_in_token_is_refused(
    srv: serverproc.ServerProcess,
) -> None:
    with consoleworld.client(srv) as http:
        answer = http.post(
            "/console/login",
            data={"name": "ada", "password": consoleworld.USERS["ada"][1], "csrf": "forged"},
        )
    assert answer.status_code == 403
    assert sessions.COOKIE not in answer.headers.get("set-cookie", "")


def _role_posts() -> list[tuple[str, str]]:
    """Every POST route of the console that needs more than the viewer role."""
    found = []
    for router in console_app.ROUTERS:
        for route in router.routes:
            if not isinstance(route, fastapi.routing.APIRoute) or "POST" not in route.methods:
                continue
            roles = [
                d.call.role
                for d in route.dependant.dependencies
                if isinstance(d.call, deps.RoleCheck)
            ]
            if any(role != "viewer" for role in roles):
                found.append((route.path, roles[0]))
    return found


def test_there_are_role_protected_changes_to_forge() -> None:
    assert ("/sessions/end", "admin") in _role_posts()


@pytest.mark.parametrize(("path", "role"), _role_posts())
def test_viewer_forged_change_with_a_valid_csrf_token_is_refused(
    vera: httpx.Client, path: str, role: str
) -> None:
    token = consoleworld.csrf_of(vera.get("/console/audit"))
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    answer = vera.post("/console" + concrete, data={"csrf": token, "key": "0" * 64})
    assert answer.status_code == 403
    assert f"this needs the {role} role" in answer.text


def test_viewer_sees_no_change_buttons_and_an_admin_does(
    vera: httpx.Client, ada: httpx.Client
) -> None:
    assert "/console/sessions/end" not in vera.get("/console/sessions").text
    assert "/console/sessions/end" in ada.get("/console/sessions").text


def test_admin_ends_another_session_and_the_audit_log_lists_it(
    srv: serverproc.ServerProcess, ada: httpx.Client
) -> None:
    with consoleworld.client(srv) as otto:
        consoleworld.sign_in(otto, "otto")
        page = ada.get("/console/sessions")
        keys = re.findall(r'name="key" value="([0-9a-f]{64})"', page.text)
        own = sessions.digest(ada.cookies[sessions.COOKIE])
        otto_key = sessions.digest(otto.cookies[sessions.COOKIE])
        assert otto_key in keys
        assert own in keys
        ended = ada.post(
            "/console/sessions/end", data={"csrf": consoleworld.csrf_of(page), "key": otto_key}
        )
        assert ended.status_code == 303
        assert otto.get("/console/audit").status_code == 303
    log = ada.get("/console/audit", params={"what": "console.session"})
    assert "console:ada" in log.text
    assert "console.session.end" in log.text
    assert ">otto<" in log.text


def test_audit_log_filters_by_who_and_what(ada: httpx.Client) -> None:
    by_action = ada.get("/console/audit", params={"what": "admin.password"}).text
    assert "admin.password" in by_action
    assert "admin.create" not in by_action
    nobody = ada.get("/console/audit", params={"who": "no such actor%"}).text
    assert "No entries match the filter." in nobody


def test_idle_session_ends(srv: serverproc.ServerProcess, vera: httpx.Client) -> None:
    engine = tables.create_engine(srv.database_url)
    key = sessions.digest(vera.cookies[sessions.COOKIE])
    try:
        with engine.begin() as conn:
            c = tables.console_session.c
            conn.execute(
                tables.console_session.update()
                .where(c.SessionHash == key)
                .values(LastSeen=c.LastSeen - 1800.0)
            )
    finally:
        engine.dispose()
    assert _session_kept(srv, key)
    assert vera.get("/console/audit").status_code == 303
    assert not _session_kept(srv, key)
    with consoleworld.client(srv) as again:
        again.cookies.set(
            sessions.COOKIE, vera.cookies[sessions.COOKIE], domain=srv.host, path="/console"
        )
        assert again.get("/console/audit").status_code == 303


def test_disabling_an_admin_ends_its_console_session(srv: serverproc.ServerProcess) -> None:
    engine = tables.create_engine(srv.database_url)
    try:
        admins.AdminStore(engine).add("temp", "operator", "test")
        users.ConsoleUsers(engine).set_password("temp", "quiet river stone lamp", "test")
        with consoleworld.client(srv) as http:
            form = http.get("/console/login")
            http.post(
                "/console/login",
                data={
                    "csrf": consoleworld.csrf_of(form),
                    "name": "temp",
                    "password": "quiet river stone lamp",
                },
            )
            assert http.get("/console/audit").status_code == 200
            admins.AdminStore(engine).disable("temp", "test")
            assert http.get("/console/audit").status_code == 303
    finally:
        engine.dispose()


def test_change_without_length_or_too_large_is_refused(ada: httpx.Client) -> None:
    token = consoleworld.csrf_of(ada.get("/console/audit"))
    big = ada.post("/console/logout", data={"csrf": token, "pad": "x" * (2 * 1024 * 1024)})
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield f"csrf={token}".encode()

    unsized = ada.post(
        "/console/logout",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert unsized.status_code == 411
    assert ada.get("/console/audit").status_code == 200


def test_htmx_request_not_signed_in_is_told_to_load_the_sign_in_page(
    http: httpx.Client,
) -> None:
    answer = http.get("/console/audit", headers={"HX-Request": "true"})
    assert answer.status_code == 401
    assert answer.headers["hx-redirect"] == "/console/login?next=%2Faudit"


def test_bad_query_gets_the_400_page_naming_the_field(ada: httpx.Client) -> None:
    answer = ada.get("/console/audit", params={"before": "soon"})
    assert answer.status_code == 400
    assert "before" in answer.text


def test_disabled_console_answers_404(tmp_path: pathlib.Path) -> None:
    srv = consoleworld.start(tmp_path, console_enabled=False)
    try:
        with consoleworld.client(srv) as http:
            assert http.get("/console/login").status_code == 404
            assert http.get("/healthz").status_code == 200
    finally:
        srv.stop()


def test_oidc_routes_are_not_found_when_no_provider_is_configured(http: httpx.Client) -> None:
    assert http.get("/console/login/oidc").status_code == 404
    assert http.get("/console/login/oidc/callback?code=x&state=y").status_code == 404
    assert "/console/login/oidc" not in http.get("/console/login").text


def test_audit_log_pages_back_by_entry_and_keeps_the_filter(
    srv: serverproc.ServerProcess, ada: httpx.Client
) -> None:
    engine = tables.create_engine(srv.database_url)
    try:
        with engine.begin() as conn:
            for n in range(60):
                audit.record(conn, "cli:test", "paging.test", f"thing-{n:02d}")
    finally:
        engine.dispose()
    first = ada.get("/console/audit", params={"what": "paging."})
    targets = re.findall(r"thing-(\d\d)", first.text)
    assert targets == [f"{n:02d}" for n in range(59, 9, -1)]
    older = re.search(
        r'href="(/console/audit\?what=paging.&amp;before=\d+)" rel="next"', first.text
    )
    assert older is not None
    second = ada.get(older.group(1).replace("&amp;", "&"))
    assert re.findall(r"thing-(\d\d)", second.text) == [f"{n:02d}" for n in range(9, -1, -1)]
    assert 'rel="next"' not in second.text
    assert 'href="/console/audit?what=paging."' in second.text  # back to the newest
