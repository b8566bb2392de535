"""The admin console in a real browser: sign-in and sign-out, refusals, lockout, session
expiry, CSRF, roles, the audit log, accessibility (axe-core) and a phone's width.

The screenshots of docs/console.md are taken here.
"""

from __future__ import annotations

import pathlib
import re
import time
from collections.abc import Callable
from typing import Any

import consoleworld
import pytest
import serverproc
from conftest import PHONE, sign_in, start_server

IDLE_SECONDS = 8.0


def _csrf(page: Any) -> str:
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    return str(token)


def test_sign_in_and_sign_out(
    page_as: Callable[..., Any], screenshot: Callable[[Any, str], pathlib.Path]
) -> None:
    page = page_as(None)
    page.goto("/console/audit")
    assert "/console/login?next=%2Faudit" in page.url
    screenshot(page, "login")
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password").fill(consoleworld.USERS["ada"][1])
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/console/audit$"))
    assert page.get_by_role("heading", name="Audit log").is_visible()
    assert page.get_by_text("ada (admin)").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/login"))
    assert page.get_by_role("status").inner_text() == "You have signed out."
    page.goto("/console/audit")
    assert "/console/login" in page.url


def test_wrong_password_is_refused_without_saying_which_part(
    page_as: Callable[..., Any], console_server: serverproc.ServerProcess
) -> None:
    page = page_as(None)
    sign_in(page, console_server.url, "vera", password="this is not her password")
    assert page.get_by_role("alert").inner_text() == "Wrong user name or password."
    assert page.get_by_label("User name").input_value() == "vera"
    sign_in(page, console_server.url, "vera")  # and the right one still works
    assert "/console/login" not in page.url


def test_lockout_after_repeated_failures(
    page_as: Callable[..., Any],
    console_server: serverproc.ServerProcess,
    screenshot: Callable[[Any, str], pathlib.Path],
) -> None:
    page = page_as(None)
    for attempt in range(3):
        sign_in(page, console_server.url, "otto", password=f"guess number {attempt}")
    alert = page.get_by_role("alert").inner_text()
    assert alert.startswith("Too many failed sign-ins. Signing in is locked until ")
    screenshot(page, "lockout")
    sign_in(page, console_server.url, "otto")
    assert "locked until" in page.get_by_role("alert").inner_text()
    _clear_lockouts(console_server)


def _clear_lockouts(srv: serverproc.ServerProcess) -> None:
    import sqlalchemy as sa

    from mpg.server import tables

    engine = tables.create_engine(srv.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(tables.console_lockout))
    finally:
        engine.dispose()


def test_session_ends_after_the_idle_timeout(
    page_as: Callable[..., Any], tmp_path: pathlib.Path
) -> None:
    srv = start_server(tmp_path, console_idle_timeout=IDLE_SECONDS)
    try:
        page = page_as("vera", server=srv)
        page.goto("/console/audit")
        assert page.get_by_role("heading", name="Audit log").is_visible()
        time.sleep(IDLE_SECONDS + 1)
        page.reload()
        assert "/console/login?next=%2Faudit" in page.url
    finally:
        srv.stop()


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_change_without_the_csrf_token_is_refused(page: Any, token: str | None) -> None:
    form = {} if token is None else {"csrf": token}
    answer = page.request.post("/console/logout", form=form, max_redirects=0)
    assert answer.status == 403
    assert "CSRF" in answer.text()
    page.reload()
    assert page.get_by_role("button", name="Sign out").is_visible()


def test_viewer_sees_no_change_buttons_and_a_forged_change_is_refused(
    page_as: Callable[..., Any],
) -> None:
    viewer = page_as("vera")
    viewer.goto("/console/sessions")
    assert viewer.get_by_role("heading", name="Sessions").is_visible()
    assert viewer.get_by_role("button", name=re.compile("^End")).count() == 0
    admin = page_as("ada")
    admin.goto("/console/sessions")
    key = admin.locator("input[name=key]").first.get_attribute("value")
    answer = viewer.request.post(
        "/console/sessions/end", form={"csrf": _csrf(viewer), "key": key}, max_redirects=0
    )
    assert answer.status == 403
    assert "this needs the admin role" in answer.text()
    admin.reload()
    assert admin.locator(f"input[name=key][value='{key}']").count() == 1


def test_audit_page_lists_a_change_made_in_the_console(
    page_as: Callable[..., Any], screenshot: Callable[[Any, str], pathlib.Path]
) -> None:
    operator = page_as("otto")
    admin = page_as("ada")
    admin.goto("/console/sessions")
    screenshot(admin, "sessions")
    row = admin.get_by_role("row").filter(has_text="otto").first
    row.get_by_role("button", name=re.compile("^End")).click()
    admin.wait_for_url(re.compile(r"/console/sessions\?notice="))
    assert admin.get_by_role("status").inner_text() == "Ended a session of otto."
    operator.reload()
    assert "/console/login" in operator.url
    admin.goto("/console/audit")
    admin.get_by_label("What (action starts with)").fill("console.")
    admin.get_by_role("button", name="Filter").click()
    admin.wait_for_url(re.compile(r"what=console\."))
    first = admin.get_by_role("row").nth(1)
    assert "console:ada" in first.inner_text()
    assert "console.session.end" in first.inner_text()
    admin.get_by_label("What (action starts with)").fill("")
    admin.get_by_role("button", name="Filter").click()
    screenshot(admin, "audit")


@pytest.mark.parametrize("path", ["/console/login", "/console/audit", "/console/sessions"])
def test_pages_have_no_serious_accessibility_violations(
    page_as: Callable[..., Any], axe: Callable[[Any], list[dict[str, Any]]], path: str
) -> None:
    page = page_as("ada" if path != "/console/login" else None)
    page.goto(path)
    assert axe(page) == []


def test_refusal_page_has_no_serious_accessibility_violations(
    page_as: Callable[..., Any], axe: Callable[[Any], list[dict[str, Any]]]
) -> None:
    page = page_as("vera")
    answer = page.request.post("/console/logout", form={}, max_redirects=0)
    assert answer.status == 403
    page.set_content(answer.text())
    assert axe(page) == []


@pytest.mark.parametrize("path", ["/console/login", "/console/audit", "/console/sessions"])
def test_pages_fit_a_phone_screen(
    page_as: Callable[..., Any],
    screenshot: Callable[[Any, str], pathlib.Path],
    axe: Callable[[Any], list[dict[str, Any]]],
    path: str,
) -> None:
    page = page_as("ada" if path != "/console/login" else None, viewport=PHONE)
    page.goto(path)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{path} is {width} px wide on a 375 px screen"
    assert axe(page) == []
    if path == "/console/audit":
        screenshot(page, "audit-phone")


def test_keyboard_reaches_the_skip_link_first(page: Any) -> None:
    page.goto("/console/audit")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"


def test_htmx_runs_under_the_csp_and_sends_the_csrf_header(page: Any) -> None:
    page.goto("/console/audit", wait_until="load")  # deferred scripts have run
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.evaluate("htmx.config.includeIndicatorStyles") is False
    assert page.evaluate("htmx.config.allowEval") is False
    # A change sent by htmx, as page modules do with hx-post: the frame accepts it only
    # with the session's token, which <body hx-headers> adds.
    page.evaluate("htmx.ajax('POST', '/console/logout', {source: document.body, target: '#main'})")
    page.get_by_role("heading", name="Sign in").wait_for()  # the answer, swapped in
    page.goto("/console/audit")
    assert "/console/login" in page.url
