"""Browser tests of the admin console: Playwright driving Debian's chromium headless.

Fixtures: ``console_server`` (a real ``mpg server`` over TLS on loopback with the
console and one user per role, tests/consoleworld.py), ``browser``, ``page_as(name)``
(a new browser context signed in through the form as that user), ``page`` (signed in
as the admin), ``screenshot(page, name)`` (``docs/console/<name>.png``, the
documentation's pictures, with ``MPG_SCREENSHOTS=1``) and ``axe(page)`` (axe-core's
serious and critical violations on the page; axe.min.js is vendored here, for tests
only, never served).

Every page a test opens is watched for Content-Security-Policy violations and script
errors; one fails the test. Without /usr/bin/chromium the tests are skipped, except
under CI (``CI=true``), where that is a failure: CI must not pass by testing nothing.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import consoleworld
import pytest
import serverproc

CHROMIUM = pathlib.Path("/usr/bin/chromium")
AXE = pathlib.Path(__file__).with_name("axe.min.js")
SHOTS = pathlib.Path(__file__).parents[2] / "docs" / "console"
#: Settings of the shared server: the address limit out of the tests' way.
SETTINGS = {"console_lockout_failures": 3, "console_lockout_address_failures": 1000}
#: Console size of the documentation's screenshots, and a phone's.
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a browser test; they share a worker (one server, one browser)."""
    here = pathlib.Path(__file__).parent
    for item in items:
        if here in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.xdist_group("browser"))


# Module scope, not session: while Playwright's sync API is started, its event loop is
# the thread's running loop, and any later test on this worker that calls asyncio.run()
# fails. Stopping it after each browser module gives the worker back.
@pytest.fixture(scope="module")
def playwright_api() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must run the console's browser tests")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as api:
        yield api


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    launched = playwright_api.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
    )
    try:
        yield launched
    finally:
        launched.close()


def start_server(root: pathlib.Path, **settings: object) -> serverproc.ServerProcess:
    """A console server with the shared settings and ``settings``."""
    return consoleworld.start(root, **{**SETTINGS, **settings})


@pytest.fixture(scope="session")
def console_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[serverproc.ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("console-browser"))
    try:
        yield srv
    finally:
        srv.stop()


class Problems:
    """CSP violations and script errors the pages reported."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def watch(self, page: Any) -> None:
        def on_console(message: Any) -> None:
            url = message.location.get("url", "")
            # A refusal page (403, 429) is an answer the test expects, not a fault;
            # a sub-resource that fails to load is one.
            if message.type == "error" and not (
                message.text.startswith("Failed to load resource") and url == page.url
            ):
                self.found.append(f"{message.text} ({url})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.found.append(str(error)))


@pytest.fixture
def page_problems() -> Iterator[Problems]:
    problems = Problems()
    yield problems
    assert problems.found == [], "the pages reported errors (CSP or script)"


def sign_in(page: Any, base: str, name: str, password: str | None = None) -> None:
    """Fill and send the sign-in form as ``name``."""
    page.goto(base + "/console/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(
        consoleworld.USERS[name][1] if password is None else password
    )
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_load_state()


@pytest.fixture
def page_as(
    browser: Any, console_server: serverproc.ServerProcess, page_problems: Problems
) -> Iterator[Callable[..., Any]]:
    """``page_as(who, server=None, viewport=DESKTOP)``: a fresh browser signed in as
    ``who``, a user name of consoleworld.USERS or a role (``"viewer"``); None: not
    signed in."""
    contexts: list[Any] = []

    def make(
        name: str | None,
        server: serverproc.ServerProcess | None = None,
        viewport: dict[str, int] | None = None,
    ) -> Any:
        srv = server or console_server
        # The server's certificate is the test CA's, which chromium does not know.
        context = browser.new_context(
            ignore_https_errors=True, viewport=viewport or DESKTOP, base_url=srv.url
        )
        contexts.append(context)
        page = context.new_page()
        page_problems.watch(page)
        if name is not None:
            name = consoleworld.USER_OF.get(name, name)
            sign_in(page, srv.url, name)
            assert "/console/login" not in page.url, f"{name} could not sign in"
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(page_as: Callable[..., Any]) -> Any:
    """A browser page signed in as the admin."""
    return page_as("ada")


@pytest.fixture
def screenshot(tmp_path: pathlib.Path) -> Callable[[Any, str], pathlib.Path]:
    """``screenshot(page, name)``: the whole page as ``<name>.png``, in docs/console/ when
    ``MPG_SCREENSHOTS=1`` (refreshing the documentation's pictures), else in the test's
    temporary folder: pages show times, so every run's pictures differ, and a test run
    must not change the checkout."""

    def take(page: Any, name: str) -> pathlib.Path:
        folder = SHOTS if os.environ.get("MPG_SCREENSHOTS") == "1" else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path

    return take


@pytest.fixture
def axe() -> Callable[[Any], list[dict[str, Any]]]:
    """``axe(page)``: axe-core's serious and critical violations on the page (WCAG 2 AA)."""
    source = AXE.read_text(encoding="utf-8")

    def run(page: Any) -> list[dict[str, Any]]:
        # Evaluated through the DevTools protocol, which the page's CSP does not govern
        # (an injected <script> would be refused, as it should be).
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.evaluate(source + "\n;undefined")
        result = page.evaluate(
            """() => axe.run(document, {runOnly: {type: 'tag',
                 values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"""
        )
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]

    return run
