"""The admin API for groups, categories, domains, registration codes and devices, in
process over ASGI, with the domain's code read from a real SMTP server on loopback."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from apicall import call
from devicerows import add_device, devices, disabled_accounts
from smtp_sink import Sink, mail_settings, smtp_sink

from mpg import config
from mpg.server import app, tables
from mpg.wire import atrest, keys


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as served:
        yield served


def _push(tmp_path: pathlib.Path, settings: Any) -> app.PushServer:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    return app.PushServer(settings, engine, keys.new_master_key(), keyring)


@pytest.fixture
def push(tmp_path: pathlib.Path, sink: tuple[Sink, int]) -> Iterator[app.PushServer]:
    server = _push(tmp_path, mail_settings(sink[1], data_dir=tmp_path))
    yield server
    server.engine.dispose()


@pytest.fixture
def tokens(push: app.PushServer) -> dict[str, str]:
    return {
        role: push.admins.add(role, role, "cli:root")[1] for role in ("viewer", "operator", "admin")
    }


def _group(push: app.PushServer, admin: str, group: str = "north") -> None:
    body = {"group": group, "name": group.title(), "region": "Nord"}
    assert call(push, "POST", "/groups", admin, json=body).status_code == 201


def test_viewers_read_groups_and_only_admins_change_them(
    push: app.PushServer, tokens: dict[str, str]
) -> None:
    body = {"group": "north", "name": "North", "file_url": "https://files.example/n.xml"}
    refused = call(push, "POST", "/groups", tokens["operator"], json=body)
    assert refused.status_code == 403
    created = call(push, "POST", "/groups", tokens["admin"], json=body)
    assert created.status_code == 201
    assert created.json()["file_url"] == "https://files.example/n.xml"
    changed = call(push, "PATCH", "/groups/north", tokens["admin"], json={"region": "Nord"})
    assert changed.json()["region"] == "Nord"
    listed = call(push, "GET", "/groups", tokens["viewer"]).json()
    assert [(g["group"], g["name"], g["region"]) for g in listed] == [("north", "North", "Nord")]
    assert call(push, "DELETE", "/groups/north", tokens["admin"]).status_code == 204
    missing = call(push, "GET", "/groups/north", tokens["viewer"])
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    audit = call(push, "GET", "/audit", tokens["viewer"]).json()
    assert [(e["actor"], e["action"]) for e in audit[:3]] == [
        ("admin", "group.remove"),
        ("admin", "group.change"),
        ("admin", "group.create"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"group": "North", "name": "x"}, "group"),
        ({"group": "n" * 51, "name": "x"}, "group"),
        ({"group": "north", "name": ""}, "name"),
        ({"group": "north", "name": "x", "file_url": "ftp://f.example/x"}, "file_url"),
        ({"group": "north", "name": "x\u0000y"}, "name"),
        ({"group": "north", "name": "x", "colour": "red"}, "colour"),
    ],
    ids=["upper-case", "too-long", "empty-name", "not-https", "control-char", "unknown-field"],
)
def test_a_bad_group_is_refused_naming_the_field(
    push: app.PushServer, tokens: dict[str, str], body: dict[str, str], field: str
) -> None:
    answer = call(push, "POST", "/groups", tokens["admin"], json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_request"
    assert field in answer.json()["detail"]


def test_a_group_with_devices_is_not_removed_and_the_refusal_says_what_is_left(
    push: app.PushServer, tokens: dict[str, str]
) -> None:
    _group(push, tokens["admin"])
    add_device(push.engine, push.keyring, group="north", via="code", via_ref="c")
    answer = call(push, "DELETE", "/groups/north", tokens["admin"])
    assert answer.status_code == 409
    assert "still has 1 device" in answer.json()["detail"]


def test_categories_are_added_listed_changed_and_removed(
    push: app.PushServer, tokens: dict[str, str]
) -> None:
    admin = tokens["admin"]
    _group(push, admin)
    body = {"category": "storm", "name": "Storm", "preselected": True}
    assert call(push, "POST", "/groups/north/categories", admin, json=body).status_code == 201
    again = call(push, "POST", "/groups/north/categories", admin, json=body)
    assert again.status_code == 409
    nowhere = call(push, "POST", "/groups/west/categories", admin, json=body)
    assert nowhere.status_code == 404
    patched = call(
        push, "PATCH", "/groups/north/categories/storm", admin, json={"preselected": False}
    )
    assert patched.json()["preselected"] is False
    [listed] = call(push, "GET", "/groups/north/categories", tokens["viewer"]).json()
    assert (listed["category"], listed["name"]) == ("storm", "Storm")
    assert listed["created_at"] == pytest.approx(time.time(), abs=600)
    assert call(push, "DELETE", "/groups/north/categories/storm", admin).status_code == 204
    assert call(push, "GET", "/groups/north/categories", admin).json() == []


def test_a_domain_is_registered_verified_with_the_mailed_code_and_removed_with_its_devices(
    push: app.PushServer, tokens: dict[str, str], sink: tuple[Sink, int]
) -> None:
    admin = tokens["admin"]
    _group(push, admin)
    _group(push, admin, "south")
    body = {"domain": "Firma.Example", "group": "north", "email": "it@firma.example"}
    pending = call(push, "POST", "/domains", admin, json=body)
    assert pending.status_code == 201
    assert pending.json()["verified"] is False
    assert pending.json()["email"] == "it@firma.example"
    code = sink[0].code()
    path = "/domains/firma.example/groups/north"
    wrong = call(push, "POST", path + "/verify", admin, json={"code": "12345"})
    assert wrong.json()["error"] == "code_malformed"
    verified = call(push, "POST", path + "/verify", admin, json={"code": code})
    assert verified.status_code == 200
    assert verified.json()["verified"] is True
    used = call(push, "POST", path + "/verify", admin, json={"code": code})
    assert used.status_code == 409
    mine = add_device(
        push.engine, push.keyring, group="north", via="email", via_ref="firma.example"
    )
    theirs = add_device(
        push.engine, push.keyring, group="south", via="email", via_ref="firma.example"
    )

    impact = call(push, "GET", path + "/impact", tokens["viewer"])
    assert impact.json() == {"domain": "firma.example", "group": "north", "devices": 1}
    assert mine in devices(push.engine)
    assert call(push, "DELETE", path, tokens["operator"]).status_code == 403
    removed = call(push, "DELETE", path, admin)

    assert removed.json() == {"domain": "firma.example", "group": "north", "devices": 1}
    assert devices(push.engine) == {theirs}
    assert call(push, "GET", "/domains", tokens["viewer"]).json() == []


def test_resend_mails_a_new_code_and_the_old_one_stops_working(
    push: app.PushServer, tokens: dict[str, str], sink: tuple[Sink, int]
) -> None:
    admin = tokens["admin"]
    _group(push, admin)
    body = {"domain": "firma.example", "group": "north", "email": "it@firma.example"}
    call(push, "POST", "/domains", admin, json=body)
    old = sink[0].code()
    path = "/domains/firma.example/groups/north"
    assert call(push, "POST", path + "/resend", admin).status_code == 204
    new = sink[0].code()
    assert len(sink[0].received) == 2
    if old != new:
        refused = call(push, "POST", path + "/verify", admin, json={"code": old})
        assert refused.json()["error"] == "code_wrong"
    assert call(push, "POST", path + "/verify", admin, json={"code": new}).status_code == 200
    listed = call(push, "GET", "/domains?group=north", tokens["viewer"]).json()
    assert [(d["domain"], d["verified"]) for d in listed] == [("firma.example", True)]


def test_without_a_mail_server_registering_a_domain_is_refused_clearly(
    tmp_path: pathlib.Path,
) -> None:
    push = _push(tmp_path, config.ServerSettings(data_dir=tmp_path))
    try:
        _, admin = push.admins.add("root", "admin", "cli:root")
        _group(push, admin)
        body = {"domain": "firma.example", "group": "north", "email": "it@firma.example"}
        answer = call(push, "POST", "/domains", admin, json=body)
    finally:
        push.engine.dispose()
    assert answer.status_code == 404
    assert answer.json()["error"] == "mail_off"
    assert "server.mail_host" in answer.json()["detail"]


def test_a_registration_code_is_shown_once_and_deleting_it_removes_its_devices(
    push: app.PushServer, tokens: dict[str, str]
) -> None:
    admin = tokens["admin"]
    _group(push, admin)
    body = {"name": "Site A", "group": "north", "note": "gate 2", "valid_until": time.time() + 3600}
    created = call(push, "POST", "/codes", admin, json=body)
    assert created.status_code == 201
    code_id, code = created.json()["code_id"], created.json()["code"]
    assert len(code) == 24
    shown = call(push, "GET", f"/codes/{code_id}", tokens["viewer"]).json()
    assert "code" not in shown
    assert code not in str(call(push, "GET", "/codes", tokens["viewer"]).json())
    assert shown["status"] == "valid"
    endless = call(push, "PATCH", f"/codes/{code_id}", admin, json={"valid_until": None})
    assert endless.json()["valid_until"] is None
    add_device(push.engine, push.keyring, group="north", via="code", via_ref=code_id)
    impact = call(push, "GET", f"/codes/{code_id}/impact", tokens["viewer"])
    assert impact.json() == {"code_id": code_id, "group": "north", "devices": 1}

    deleted = call(push, "DELETE", f"/codes/{code_id}", admin)

    assert deleted.json()["devices"] == 1
    assert devices(push.engine) == set()
    assert call(push, "GET", f"/codes/{code_id}", admin).json()["status"] == "deleted"
    again = call(push, "DELETE", f"/codes/{code_id}", admin)
    assert (again.status_code, again.json()["error"]) == (410, "registration_code_deleted")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/codes/not-a-uuid", None),
        ("POST", "/codes", {"name": "x", "group": "north", "valid_until": -1}),
        ("POST", "/codes", {"name": "x", "group": "north", "valid_until": 1e300}),
        ("POST", "/codes", {"name": "x", "group": "north", "note": "n" * 1001}),
        ("GET", "/devices?limit=0", None),
        ("GET", "/domains/UPPER.example/groups/north/impact", None),
        ("GET", "/devices/dev-%00", None),
    ],
    ids=[
        "code-id",
        "negative-validity",
        "huge-validity",
        "long-note",
        "limit",
        "domain-case",
        "nul-in-account",
    ],
)
def test_out_of_range_input_is_a_400(
    push: app.PushServer, tokens: dict[str, str], method: str, path: str, body: Any
) -> None:
    answer = call(push, method, path, tokens["admin"], json=body)
    assert answer.status_code == 400, answer.text


def test_admins_see_devices_decrypted_and_operators_remove_them(
    push: app.PushServer, tokens: dict[str, str]
) -> None:
    _group(push, tokens["admin"])
    _group(push, tokens["admin"], "south")
    north = add_device(
        push.engine,
        push.keyring,
        group="north",
        via="email",
        via_ref="firma.example",
        device_id="PIXEL-7-0042",
        subscriptions=("flood", "storm"),
        push_token_at=time.time() - 120,
    )
    add_device(push.engine, push.keyring, group="south", via="code", via_ref="c")
    listed = call(push, "GET", "/devices?group=north", tokens["viewer"]).json()
    assert [d["account"] for d in listed] == [north]
    shown = call(push, "GET", f"/devices/{north}", tokens["viewer"]).json()
    assert shown["device_id"] == "PIXEL-7-0042"
    assert shown["subscriptions"] == ["flood", "storm"]
    assert (shown["via"], shown["via_ref"], shown["platform"]) == (
        "email",
        "firma.example",
        "android",
    )
    assert 120 <= shown["push_token_age"] < 3600
    assert len(call(push, "GET", "/devices", tokens["viewer"]).json()) == 2

    assert call(push, "DELETE", f"/devices/{north}", tokens["viewer"]).status_code == 403
    assert call(push, "DELETE", f"/devices/{north}", tokens["operator"]).status_code == 204

    gone = call(push, "GET", f"/devices/{north}", tokens["viewer"])
    assert gone.status_code == 404
    assert disabled_accounts(push.engine) == {north}
    assert call(push, "DELETE", f"/devices/{north}", tokens["operator"]).status_code == 404


def test_the_openapi_document_describes_the_directory_routes_and_their_limits(
    push: app.PushServer,
) -> None:
    document = call(push, "GET", "/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/groups",
        "/groups/{group}",
        "/groups/{group}/categories/{category}",
        "/domains/{domain}/groups/{group}/verify",
        "/domains/{domain}/groups/{group}/impact",
        "/codes/{code_id}/impact",
        "/devices/{account}",
    ):
        assert path in paths, path
    group_in = document["components"]["schemas"]["GroupIn"]["properties"]["group"]
    assert (group_in["pattern"], group_in["maxLength"]) == ("^[a-z0-9][a-z0-9_-]{0,49}$", 50)
