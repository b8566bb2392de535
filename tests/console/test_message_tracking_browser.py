"""Message tracking in a real browser, with real gateways: find a message by keyword, watch
its timeline move live, recall it and see the RECALL arrive in the recipient's Inbox, the
explanation for a recipient that did not get it, and a viewer without change buttons.

The screenshots of docs/console.md's "Message tracking" are taken here.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import consoleworld
import pytest
from conftest import DESKTOP, PHONE, Problems, sign_in
from harness import World, wait_for

#: How long the page may take to show what the gateways did (the timeline polls every 2 s).
LIVE_MS = 60_000


@pytest.fixture
def tracked(world: World) -> dict[str, Any]:
    """A server with the console, gateway A (sending), B (running later) and carol (never
    running); A has sent one message with keywords to B and carol."""
    world.start_server()
    consoleworld.add_users(f"sqlite:///{world.root / 'server.db'}")
    a = world.gateway("erp-a")
    b = world.gateway("erp-b")
    world.gateway("carol")
    a.mpg(
        "send",
        "--to",
        "erp-b@example.com;carol@example.com",
        "--subject",
        "Flood warning for the river district",
        "--keywords",
        "flood;River-7",
        "--tx-id",
        "tx-flood-1",
    )
    a.run()
    a.wait_state("tx-flood-1", 20)
    return {"url": f"https://127.0.0.1:{world.port}", "a": a, "b": b}


@pytest.fixture
def open_as(
    browser: Any, tracked: dict[str, Any], page_problems: Problems
) -> Iterator[Callable[..., Any]]:
    """``open_as(name, viewport=DESKTOP)``: a browser page on the tracked server signed in
    as ``name``."""
    contexts: list[Any] = []

    def make(name: str, viewport: dict[str, int] = DESKTOP) -> Any:
        context = browser.new_context(
            ignore_https_errors=True, viewport=viewport, base_url=tracked["url"]
        )
        contexts.append(context)
        page = context.new_page()
        page_problems.watch(page)
        sign_in(page, tracked["url"], name)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def _row(page: Any, recipient: str) -> Any:
    return page.locator(f'#recipients tr[data-recipient="{recipient}"]')


def test_find_by_keyword_follow_live_recall_and_explain(
    tracked: dict[str, Any],
    open_as: Callable[..., Any],
    screenshot: Callable[[Any, str], pathlib.Path],
    axe: Callable[[Any], list[dict[str, Any]]],
) -> None:
    from playwright.sync_api import expect

    page = open_as("otto")
    page.goto("/console/messages")
    page.get_by_label("Keywords").fill("river-7")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"keywords=river-7"))
    found = page.get_by_role("link", name=re.compile(r"^[0-9a-f-]{36}$"))
    expect(found).to_have_count(1)
    expect(page.get_by_text("Flood warning for the river district")).to_be_visible()
    screenshot(page, "messages-search")
    assert axe(page) == []

    found.click()
    page.wait_for_url(re.compile(r"/console/messages/[0-9a-f-]{36}$"))
    message_id = page.url.rsplit("/", 1)[1]
    expect(_row(page, "erp-b@example.com")).to_contain_text("queued")
    expect(_row(page, "carol@example.com")).to_contain_text("queued")

    # B starts: the page shows it fetch and store the message without a reload.
    tracked["b"].run()
    expect(_row(page, "erp-b@example.com")).to_contain_text("acknowledged", timeout=LIVE_MS)
    expect(_row(page, "carol@example.com")).to_contain_text("queued")

    page.get_by_role("button", name="Recall this message").click()
    expect(page.get_by_role("status")).to_contain_text("RECALL sent to 1")
    expect(page.get_by_role("button", name="Recall this message")).to_have_count(0)
    expect(_row(page, "carol@example.com")).to_contain_text("withdrawn")
    expect(_row(page, "erp-b@example.com")).to_contain_text("RECALL arrived", timeout=LIVE_MS)
    wait_for(
        "B's Inbox to mark the message recalled",
        lambda: [
            row
            for row in tracked["b"].inbox()
            if row["MessageId"] == message_id and row["State"] == 98
        ],
    )
    expect(page.get_by_text("Final: nothing about this message moves any more.")).to_be_visible(
        timeout=LIVE_MS
    )

    _row(page, "carol@example.com").get_by_role("link", name=re.compile("Why?")).click()
    explanation = page.locator("#explanation")
    expect(explanation).to_contain_text("carol@example.com")
    expect(explanation).to_contain_text("BROKEN")
    screenshot(page, "message-timeline")
    assert axe(page) == []


def test_a_viewer_follows_a_message_on_a_phone_without_change_buttons(
    tracked: dict[str, Any],
    open_as: Callable[..., Any],
    axe: Callable[[Any], list[dict[str, Any]]],
) -> None:
    from playwright.sync_api import expect

    page = open_as("vera", viewport=PHONE)
    page.goto("/console/messages?keywords=flood")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_role("link", name=re.compile(r"^[0-9a-f-]{36}$")).click()
    expect(_row(page, "carol@example.com")).to_contain_text("queued")
    # A click returns once the new page's text is there, perhaps before its stylesheet is
    # applied (a browser paints nothing until then); the width counts once it is.
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert axe(page) == []
    expect(page.get_by_role("button", name="Recall this message")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Push again"))).to_have_count(0)
    page.get_by_label(re.compile("Recipient")).fill("carol@example.com")
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#explanation")).to_contain_text("carol@example.com")
