"""Removals end to end through the API: devices register as phones do (by code, by
e-mail with the code read from a real SMTP server on loopback), admins delete codes and
remove domains, and exactly the devices each removal names lose their access."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from apicall import call
from smtp_sink import Sink, mail_settings, smtp_sink

from mpg.db import transactions
from mpg.server import app, tables
from mpg.server.api import deps
from mpg.wire import atrest, keys


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as served:
        yield served


@pytest.fixture
def push(tmp_path: pathlib.Path, sink: tuple[Sink, int]) -> Iterator[app.PushServer]:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    server = app.PushServer(
        mail_settings(sink[1], data_dir=tmp_path), engine, keys.new_master_key(), keyring
    )
    yield server
    engine.dispose()


@pytest.fixture
def admin(push: app.PushServer) -> str:
    token = push.admins.add("root", "admin", "cli:root")[1]
    for group in ("north", "south"):
        body = {"group": group, "name": group.title()}
        assert call(push, "POST", "/groups", token, json=body).status_code == 201
    return token


def _token(registered: httpx.Response) -> str:
    assert registered.status_code == 200, registered.text
    done = registered.json()["registration"]
    credential = keys.parse_credential(done["credential"])
    return deps.device_token(done["account"], credential.key_id, credential.secret)


def _by_code(push: app.PushServer, code: str, device: str) -> httpx.Response:
    body = {"code": code, "device_id": device, "platform": "android"}
    return call(push, "POST", "/registrations/code", json=body)


def _code(push: app.PushServer, admin: str, group: str = "north", **more: Any) -> tuple[str, str]:
    made = call(push, "POST", "/codes", admin, json={"name": "n", "group": group, **more})
    assert made.status_code == 201, made.text
    return made.json()["code_id"], made.json()["code"]


def _alive(push: app.PushServer, token: str) -> int:
    return call(push, "GET", "/device", token).status_code


def test_deleting_a_code_cuts_off_exactly_its_devices_and_refuses_the_code_for_ever(
    push: app.PushServer, admin: str
) -> None:
    first_id, first = _code(push, admin)
    _, second = _code(push, admin)
    mine = [_token(_by_code(push, first, f"phone-{n}")) for n in (1, 2)]
    other = _token(_by_code(push, second, "phone-3"))
    assert [_alive(push, t) for t in (*mine, other)] == [200, 200, 200]

    impact = call(push, "GET", f"/codes/{first_id}/impact", admin).json()
    assert impact["devices"] == 2
    assert call(push, "DELETE", f"/codes/{first_id}", admin).json()["devices"] == 2

    assert [_alive(push, t) for t in (*mine, other)] == [403, 403, 200]
    refused = _by_code(push, first, "phone-4")
    assert (refused.status_code, refused.json()["error"]) == (410, "registration_code_deleted")
    listed = call(push, "GET", "/devices", admin).json()
    assert [d["device_id"] for d in listed] == ["phone-3"]


def test_an_expired_code_registers_nothing_and_keeps_its_devices(
    push: app.PushServer, admin: str
) -> None:
    code_id, code = _code(push, admin, valid_until=time.time() + 3600)
    kept = _token(_by_code(push, code, "phone-1"))
    with transactions.begin(push.engine, "letting the code expire") as conn:
        conn.execute(tables.registration_code.update().values(ValidUntil=time.time() - 1))

    refused = _by_code(push, code, "phone-2")

    assert (refused.status_code, refused.json()["error"]) == (410, "registration_code_expired")
    assert _alive(push, kept) == 200
    shown = call(push, "GET", f"/codes/{code_id}", admin).json()
    assert (shown["status"], shown["devices"]) == ("expired", 1)


def test_removing_a_domain_from_one_group_cuts_off_only_its_devices_there(
    push: app.PushServer, admin: str, sink: tuple[Sink, int]
) -> None:
    for group in ("north", "south"):
        body = {"domain": "firma.example", "group": group, "email": "it@firma.example"}
        assert call(push, "POST", "/domains", admin, json=body).status_code == 201
        path = f"/domains/firma.example/groups/{group}/verify"
        assert call(push, "POST", path, admin, json={"code": sink[0].code()}).status_code == 200

    def by_mail(person: str, group: str) -> str:
        device = {
            "device_id": f"{person}-phone",
            "platform": "ios",
            "email": f"{person}@firma.example",
        }
        asked = call(push, "POST", "/registrations/email", json=device)
        assert asked.status_code == 200, asked.text
        body = {**device, "code": sink[0].code(), "group": group}
        return _token(call(push, "POST", "/registrations/email/confirm", json=body))

    north = by_mail("anna", "north")
    south = by_mail("ben", "south")
    _, code = _code(push, admin)
    coded = _token(_by_code(push, code, "carl-phone"))

    path = "/domains/firma.example/groups/north"
    assert call(push, "GET", path + "/impact", admin).json()["devices"] == 1
    assert call(push, "DELETE", path, admin).json()["devices"] == 1

    assert [_alive(push, t) for t in (north, south, coded)] == [403, 200, 200]
    with transactions.connect(push.engine, "reading devices") as conn:
        left = conn.execute(sa.select(tables.device.c.GroupId, tables.device.c.Via)).all()
    assert sorted(map(tuple, left)) == [("north", "code"), ("south", "email")]
    domains_left = call(push, "GET", "/domains", admin).json()
    assert [(d["domain"], d["group"]) for d in domains_left] == [("firma.example", "south")]
