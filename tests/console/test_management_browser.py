"""The management pages and the dashboard in a real browser (issue 13's "Done when"):
an admin creates a group and a registration code, the reference agent (``mpg device``,
a process) registers with it, the admin deletes the code after its confirm step and
the device is gone; the dashboard shows what the database holds; a viewer gets no
change button; no serious accessibility violation. The tests take the screenshots of
docs/console.md."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serverproc
import sqlalchemy as sa
from devicecli import account_of, register_with_code
from playwright.sync_api import expect

from mpg import config
from mpg.server import accounts, datakeys, queues, tables
from mpg.server.states import MessageState
from mpg.wire import model


@pytest.fixture
def engine(console_server: serverproc.ServerProcess) -> Iterator[sa.Engine]:
    """The console server's database, to compare the pages with."""
    eng = tables.create_engine(console_server.database_url)
    yield eng
    eng.dispose()


def create_group(page: Any, group: str, name: str) -> None:
    page.goto("/console/groups")
    page.locator("#group-id").fill(group)
    page.locator("#group-name").fill(name)
    page.get_by_role("button", name="Create group").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name=f"Group {group}").is_visible()


def create_code(page: Any, group: str, name: str) -> str:
    """Create a code of ``group`` through the form; the code the page shows once."""
    page.goto(f"/console/codes?group={group}")
    page.locator("#code-name").fill(name)
    page.locator("#code-group").select_option(group)
    page.locator("#code-note").fill("for the tablets at the front desk")
    page.get_by_role("button", name="Create code").click()
    page.wait_for_load_state()
    code: str = page.get_by_test_id("new-code").inner_text()
    assert "only time it is shown" in page.content()
    return code


def test_a_device_registers_with_a_new_code_and_goes_when_the_code_is_deleted(
    page: Any,
    console_server: serverproc.ServerProcess,
    tmp_path: pathlib.Path,
    screenshot: Callable[[Any, str], pathlib.Path],
) -> None:
    group = "north-" + uuid.uuid4().hex[:6]
    create_group(page, group, "North")
    screenshot(page, "group")
    code = create_code(page, group, "Front desk")

    phone = tmp_path / "phone"
    joined = register_with_code(phone, console_server.url, console_server.ca_file, code)
    assert joined["group"]["id"] == group
    account = account_of(phone)

    page.goto(f"/console/devices?group={group}")
    row = page.locator(f'tr[data-account="{account}"]')
    assert row.is_visible()
    assert group in row.inner_text()
    screenshot(page, "devices")

    page.goto(f"/console/codes?group={group}")
    assert code not in page.content()  # shown once, never again
    screenshot(page, "codes")
    page.get_by_role("link", name="Delete Front desk…").click()
    page.wait_for_load_state()
    assert "1 device" in page.get_by_test_id("impact").inner_text()
    screenshot(page, "code-delete")
    # Still there until the delete is confirmed.
    assert account in page.request.get(f"/console/devices?group={group}").text()
    page.get_by_role("button", name="Delete the code and 1 device").click()
    page.wait_for_load_state()
    assert "1 device of" in page.get_by_role("status").inner_text()
    assert "deleted" in page.locator("table").inner_text()

    page.goto(f"/console/devices?group={group}")
    assert page.get_by_test_id("no-devices").is_visible()
    assert page.locator(f'tr[data-account="{account}"]').count() == 0


def _queue_a_message(console_server: serverproc.ServerProcess, engine: sa.Engine) -> str:
    """A gateway's message for a new user, queued in the server's database; the user."""
    settings = config.load(console_server.data_dir.parent / "server.toml").server
    store = accounts.AccountStore(
        engine, accounts.load_master_key(settings), datakeys.load_keyring(settings)
    )
    suffix = uuid.uuid4().hex[:8]
    sender, user = f"erp-{suffix}@example.com", f"user-{suffix}@example.com"
    store.add(sender, "gateway")
    store.add(user, "user")
    message = model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=sender,
        sender="alice@example.com",
        receiver_type="U",
        receivers=(user,),
        bcc=(),
        subject="subject",
        content="<content/>",
        content_type="MSG",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 05:41:07",
    )
    [result] = queues.QueueStore(engine, store.vault).submit(sender, [message])
    assert result.accepted, result.reason
    return user


def test_the_dashboard_shows_the_numbers_the_database_holds(
    page: Any,
    console_server: serverproc.ServerProcess,
    engine: sa.Engine,
    tmp_path: pathlib.Path,
    screenshot: Callable[[Any, str], pathlib.Path],
) -> None:
    group = "south-" + uuid.uuid4().hex[:6]
    create_group(page, group, "South")
    register_with_code(
        tmp_path / "p", console_server.url, console_server.ca_file, create_code(page, group, "A")
    )
    user = _queue_a_message(console_server, engine)

    page.goto("/console/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    t = tables.transmit_queue.c
    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(t.State, sa.func.count()).group_by(t.State)).all())
    assert states.get(MessageState.QUEUED, 0) >= 1
    for state in MessageState:
        shown = page.locator(f'[data-testid="messages-per-state"] td[data-state="{state}"]')
        assert shown.inner_text() == str(states.get(state, 0)), state
    assert page.locator(f'td[data-group="{group}"]').inner_text() == "1"
    depth = page.get_by_test_id("depths").get_by_role("row", name=user)
    assert depth.get_by_role("cell").inner_text() == "1"
    screenshot(page, "dashboard")

    # The figures refresh in place (htmx, under the console's CSP): a new message shows.
    queued = page.locator('[data-testid="messages-per-state"] td[data-state="queued"]')
    before = int(queued.inner_text())
    other = _queue_a_message(console_server, engine)
    with page.expect_response(lambda answer: "/console/dashboard/figures" in answer.url):
        pass
    # The swap follows the answer: wait for it (Playwright retries until it shows).
    expect(queued).to_have_text(str(before + 1))
    expect(page.get_by_test_id("depths").get_by_role("row", name=other)).to_be_visible()


MANAGEMENT_PAGES = ("/", "/groups", "/codes", "/devices", "/domains", "/accounts", "/files")


def test_a_viewer_sees_every_management_page_without_a_change_button(
    page: Any, page_as: Callable[..., Any]
) -> None:
    group = "view-" + uuid.uuid4().hex[:6]
    create_group(page, group, "Viewed")
    create_code(page, group, "Viewed code")
    viewer = page_as("vera")
    for path in (*MANAGEMENT_PAGES, f"/groups/{group}", f"/groups/{group}/file"):
        viewer.goto("/console" + path)
        assert viewer.locator("h1").count() == 1, path
        # The only form that changes anything is the sign-out.
        assert viewer.locator('form[method="post"]').count() == 1, path
        assert viewer.locator('form[method="post"]').get_attribute("action") == "/console/logout"
        for word in ("Create", "Delete", "Remove", "Publish", "Disable", "Save"):
            assert viewer.get_by_role("button", name=word).count() == 0, (path, word)
            assert viewer.get_by_role("link", name=word).count() == 0, (path, word)


def test_the_management_pages_have_no_serious_accessibility_violation(
    page: Any,
    page_as: Callable[..., Any],
    axe: Callable[[Any], list[dict[str, Any]]],
    screenshot: Callable[[Any, str], pathlib.Path],
) -> None:
    group = "a11y-" + uuid.uuid4().hex[:6]
    create_group(page, group, "Accessible")
    create_code(page, group, "Checked")
    page.goto(f"/console/groups/{group}")
    page.locator("#category-id").fill("floods")
    page.locator("#category-name").fill("Floods")
    page.get_by_role("button", name="Add category").click()
    page.wait_for_load_state()
    code_link = page.request.get(f"/console/codes?group={group}").text()
    code_id = code_link.split('data-code="', 1)[1].split('"', 1)[0]
    pages = (
        *MANAGEMENT_PAGES,
        f"/groups/{group}",
        f"/groups/{group}/file",
        f"/codes/{code_id}/delete",
        "/accounts?kind=user",
    )
    for path in pages:
        page.goto("/console" + path)
        assert axe(page) == [], path
    phone = page_as("ada", viewport={"width": 375, "height": 740})
    for path in ("/", "/groups", f"/groups/{group}", "/devices"):
        phone.goto("/console" + path)
        assert axe(phone) == [], ("phone", path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, ("phone", path, width)
    page.goto("/console/groups")
    screenshot(page, "groups")
