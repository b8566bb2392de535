"""The console's management pages over HTTPS against a real ``mpg server`` process:
the same stores and rules as the API, audited as the console user, roles enforced.

One server serves the module; each test makes its own groups (ids named after it).
"""

from __future__ import annotations

import pathlib
import re
import uuid
from collections.abc import Iterator

import consoleworld
import httpx
import pytest
import serverproc
import sqlalchemy as sa
from devicecli import account_of, register_with_code
from smtp_sink import smtp_sink

from mpg.server import audit, tables

pytestmark = pytest.mark.xdist_group("console_management")

_CODE = re.compile(r'data-testid="new-code">([^<]+)<')
_TOKEN = re.compile(r'data-testid="new-token">([^<]+)<')


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serverproc.ServerProcess]:
    server = consoleworld.start(tmp_path_factory.mktemp("console"))
    try:
        yield server
    finally:
        server.stop()


def signed_in(srv: serverproc.ServerProcess, name: str) -> Iterator[httpx.Client]:
    with consoleworld.client(srv) as http:
        assert consoleworld.sign_in(http, name).status_code == 303
        yield http


@pytest.fixture
def admin(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    yield from signed_in(srv, "ada")


@pytest.fixture
def operator(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    yield from signed_in(srv, "otto")


@pytest.fixture
def viewer(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    yield from signed_in(srv, "vera")


def post(http: httpx.Client, page: str, path: str, **fields: str) -> httpx.Response:
    """Submit a form of ``page`` to ``path`` with the page's CSRF token."""
    token = consoleworld.csrf_of(http.get(page))
    return http.post(path, data={"csrf": token, **fields})


def new_group(http: httpx.Client) -> str:
    group = "g" + uuid.uuid4().hex[:10]
    done = post(http, "/console/groups", "/console/groups", group=group, name=f"Group {group}")
    assert done.status_code == 303, done.text
    return group


def new_code(http: httpx.Client, group: str, name: str = "Front desk") -> str:
    made = post(http, "/console/codes", "/console/codes", name=name, group=group, note="tablets")
    assert made.status_code == 200, made.text
    found = _CODE.search(made.text)
    assert found is not None
    return found.group(1)


def audited(srv: serverproc.ServerProcess, action: str, target: str) -> list[audit.Entry]:
    engine = tables.create_engine(srv.database_url)
    try:
        return [
            e
            for e in audit.entries(engine, limit=1000)
            if e.action == action and e.target == target
        ]
    finally:
        engine.dispose()


def test_an_admin_creates_a_group_and_a_category_audited_as_the_console_user(
    srv: serverproc.ServerProcess, admin: httpx.Client
) -> None:
    group = new_group(admin)
    page = admin.get(f"/console/groups/{group}")
    assert page.status_code == 200
    assert f"Group {group}" in page.text
    added = post(
        admin,
        f"/console/groups/{group}",
        f"/console/groups/{group}/categories",
        category="floods",
        name="Floods",
        preselected="true",
    )
    assert added.status_code == 303
    assert "Floods" in admin.get(f"/console/groups/{group}").text
    [entry] = audited(srv, "group.create", group)
    assert entry.actor == "console:ada"
    [entry] = audited(srv, "category.create", f"{group}/floods")
    assert entry.actor == "console:ada"


def test_a_taken_group_id_is_refused_409_with_the_store_s_words(admin: httpx.Client) -> None:
    group = new_group(admin)
    again = post(admin, "/console/groups", "/console/groups", group=group, name="Again")
    assert again.status_code == 409
    assert f"group {group} already exists" in again.text


def test_a_group_holding_a_code_is_refused_409_naming_what_it_holds(
    admin: httpx.Client,
) -> None:
    group = new_group(admin)
    new_code(admin, group)
    refused = post(admin, f"/console/groups/{group}", f"/console/groups/{group}/remove")
    assert refused.status_code == 409
    assert "still has 1 registration code" in refused.text


def test_a_code_is_shown_once_and_deleting_it_confirms_then_removes_its_devices(
    srv: serverproc.ServerProcess, admin: httpx.Client, tmp_path: pathlib.Path
) -> None:
    group = new_group(admin)
    code = new_code(admin, group, "Lobby")
    listing = admin.get(f"/console/codes?group={group}")
    assert "Lobby" in listing.text
    assert code not in listing.text
    phone = tmp_path / "phone"
    joined = register_with_code(phone, srv.url, srv.ca_file, code)
    assert joined["group"]["id"] == group
    account = account_of(phone)
    assert account in admin.get(f"/console/devices?group={group}").text

    code_id = re.search(r'data-code="([0-9a-f-]{36})"', listing.text)
    assert code_id is not None
    confirm = admin.get(f"/console/codes/{code_id.group(1)}/delete")
    assert confirm.status_code == 200
    assert "removes <strong>1 device</strong>" in confirm.text
    assert account in admin.get(f"/console/devices?group={group}").text  # nothing gone yet
    deleted = post(
        admin,
        f"/console/codes/{code_id.group(1)}/delete",
        f"/console/codes/{code_id.group(1)}/delete",
    )
    assert deleted.status_code == 303
    assert "1 device of" in admin.get(deleted.headers["location"]).text
    assert account not in admin.get(f"/console/devices?group={group}").text
    [entry] = audited(srv, "code.delete", code_id.group(1))
    assert (entry.actor, entry.detail) == ("console:ada", "1 devices removed")


def test_an_operator_removes_a_device_but_may_not_create_a_group(
    srv: serverproc.ServerProcess,
    admin: httpx.Client,
    operator: httpx.Client,
    tmp_path: pathlib.Path,
) -> None:
    group = new_group(admin)
    register_with_code(tmp_path / "tablet", srv.url, srv.ca_file, new_code(admin, group))
    account = account_of(tmp_path / "tablet")
    page = f"/console/devices/{account}/remove"
    assert operator.get(page).status_code == 200
    assert post(operator, page, page).status_code == 303
    assert account not in operator.get("/console/devices").text
    [entry] = audited(srv, "device.remove", account)
    assert entry.actor == "console:otto"
    forged = post(operator, "/console/groups", "/console/groups", group="nope", name="Nope")
    assert forged.status_code == 403


def test_a_viewer_sees_the_pages_without_a_change_button_and_a_forged_post_is_refused(
    admin: httpx.Client, viewer: httpx.Client
) -> None:
    group = new_group(admin)
    new_code(admin, group)
    for page in (
        "/",
        "/groups",
        f"/groups/{group}",
        "/codes",
        "/devices",
        "/domains",
        "/accounts",
        "/files",
        f"/groups/{group}/file",
    ):
        shown = viewer.get("/console" + page)
        assert shown.status_code == 200, page
        forms = re.findall(r'<form[^>]*method="post"[^>]*>', shown.text)
        assert len(forms) == 1, (page, forms)
        assert 'action="/console/logout"' in forms[0]
        assert "Delete" not in shown.text
        assert "Remove…" not in shown.text
    forged = post(viewer, "/console/groups", "/console/groups", group="nope", name="Nope")
    assert forged.status_code == 403
    assert viewer.get(f"/console/groups/{group}").status_code == 200


def test_an_admin_adds_an_account_whose_token_is_shown_once_then_disables_it(
    srv: serverproc.ServerProcess, admin: httpx.Client
) -> None:
    name = f"erp-{uuid.uuid4().hex[:8]}@example.com"
    added = post(admin, "/console/accounts", "/console/accounts", name=name, kind="gateway")
    assert added.status_code == 200
    token = _TOKEN.search(added.text)
    assert token is not None
    listing = admin.get("/console/accounts?kind=gateway")
    assert name in listing.text
    assert token.group(1) not in listing.text
    disabled = post(
        admin, f"/console/accounts/disable?name={name}", "/console/accounts/disable", name=name
    )
    assert disabled.status_code == 303
    engine = tables.create_engine(srv.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(tables.account.c.Disabled).where(
                    tables.account.c.AccountId == srv.vault.account_id(name)
                )
            ).one()
    finally:
        engine.dispose()
    assert row.Disabled
    assert [e.actor for e in audited(srv, "account.create", srv.vault.account_id(name))] == [
        "console:ada"
    ]


def test_a_domain_cannot_be_registered_without_a_mail_server_and_the_page_says_why(
    admin: httpx.Client,
) -> None:
    group = new_group(admin)
    assert "No mail server is configured" in admin.get("/console/domains").text
    refused = post(
        admin,
        "/console/domains",
        "/console/domains",
        domain="firma.example",
        group=group,
        email="it@firma.example",
    )
    assert refused.status_code == 404
    assert "no mail server is configured" in refused.text


def test_publishing_to_a_group_s_file_shows_its_new_version_and_messages(
    srv: serverproc.ServerProcess, admin: httpx.Client
) -> None:
    group = new_group(admin)
    page = f"/console/groups/{group}/file"
    assert "Nothing published yet" in admin.get(page).text
    done = post(admin, page, page, title="Plant closed", text="Until Monday.", priority="H")
    assert done.status_code == 303
    shown = admin.get(done.headers["location"])
    assert "Plant closed" in shown.text
    assert "Until Monday." in shown.text
    assert 'data-testid="file-version"' in shown.text
    assert audited(srv, "file.publish", group)[0].actor == "console:ada"


def test_the_dashboard_counts_devices_of_a_new_group(
    srv: serverproc.ServerProcess, admin: httpx.Client, tmp_path: pathlib.Path
) -> None:
    group = new_group(admin)
    register_with_code(tmp_path / "p", srv.url, srv.ca_file, new_code(admin, group))
    figures = admin.get("/console/dashboard/figures")
    assert figures.status_code == 200
    assert f'data-group="{group}">1<' in figures.text
    assert "<html" not in figures.text


def test_a_domain_is_registered_confirmed_with_the_mailed_code_and_removed_after_a_confirm(
    tmp_path: pathlib.Path,
) -> None:
    """With a mail server: pending, a wrong code refused in words, verified, removed."""
    with smtp_sink() as (mails, port):
        srv = consoleworld.start(
            tmp_path / "mail",
            mail_host="127.0.0.1",
            mail_port=port,
            mail_security="plain",
            mail_from="noreply@mpg.example",
            mail_attempts=1,
        )
        try:
            for admin in signed_in(srv, "ada"):
                group = new_group(admin)
                registered = post(
                    admin,
                    "/console/domains",
                    "/console/domains",
                    domain="firma.example",
                    group=group,
                    email="it@firma.example",
                )
                assert registered.status_code == 303
                assert (
                    "mailed to it@firma.example" in admin.get(registered.headers["location"]).text
                )
                assert ">pending<" in admin.get("/console/domains").text
                verify = f"/console/domains/firma.example/groups/{group}/verify"
                wrong = "000000" if mails.code() != "000000" else "111111"
                refused = post(admin, "/console/domains", verify, code=wrong)
                assert refused.status_code == 403
                assert "code" in refused.text
                assert post(admin, "/console/domains", verify, code=mails.code()).status_code == 303
                assert "verified " in admin.get("/console/domains").text
                remove = f"/console/domains/firma.example/groups/{group}/remove"
                confirm = admin.get(remove)
                assert "removes <strong>0 devices</strong>" in confirm.text
                assert post(admin, remove, remove).status_code == 303
                assert "No domain." in admin.get(f"/console/domains?group={group}").text
                for action in ("domain.register", "domain.verify", "domain.remove"):
                    [entry] = audited(srv, action, f"firma.example/{group}")
                    assert entry.actor == "console:ada"
        finally:
            srv.stop()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"group": "Not A Slug", "name": "x"}, "group"),
        ({"group": "ok-id", "name": ""}, "name"),
        ({"group": "ok-id", "name": "x" * 5000}, "name"),
    ],
)
def test_a_bad_field_is_refused_400_naming_it_and_nothing_is_created(
    srv: serverproc.ServerProcess, admin: httpx.Client, fields: dict[str, str], words: str
) -> None:
    refused = post(admin, "/console/groups", "/console/groups", **fields)
    assert refused.status_code == 400
    assert words in refused.text
    assert audited(srv, "group.create", fields["group"]) == []


def test_a_code_valid_until_in_the_past_or_not_a_date_is_refused_400(
    admin: httpx.Client,
) -> None:
    group = new_group(admin)
    for value in ("2001-01-01T00:00", "next week"):
        refused = post(
            admin, "/console/codes", "/console/codes", name="Old", group=group, valid_until=value
        )
        assert refused.status_code == 400
        assert "valid_until" in refused.text
