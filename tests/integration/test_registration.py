"""Device registration over the JSON API: by e-mail (the code read out of a mail a real
SMTP server on loopback received), by registration code and by ID token (signed by keys
an issuer serves over HTTPS on loopback); every refusal with its reason; re-registration;
the rate limit stopping a guessing loop; the device's own API."""

from __future__ import annotations

import asyncio
import pathlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme
from directory_rows import add_category, add_code, add_domain, add_group
from oidc_issuer import CLIENT_ID, RSA_KEY, TENANT, Issuer, claims, rsa_jwk, sign
from smtp_sink import Sink, smtp_sink

from mpg import config
from mpg.db import transactions
from mpg.server import app, tables
from mpg.server.api import deps
from mpg.wire import atrest, keys

DEVICE = "android-5f2b9c01"
ADDRESS = "Anna.Meier@Firma.example"


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as sink_and_port:
        yield sink_and_port


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def issuer(ca: trustme.CA) -> Iterator[Issuer]:
    provider = Issuer()
    for served in provider.serve(ca):
        served.keys = [rsa_jwk(RSA_KEY, "k1")]
        yield served


def make_push(
    tmp_path: pathlib.Path, database_url: str | None = None, **settings: Any
) -> app.PushServer:
    engine = tables.create_engine(database_url or f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    values = config.ServerSettings(data_dir=tmp_path, **settings)
    return app.PushServer(values, engine, keys.new_master_key(), keyring)


@pytest.fixture
def push(
    tmp_path: pathlib.Path, smtp: tuple[Sink, int], issuer: Issuer, ca: trustme.CA
) -> Iterator[app.PushServer]:
    ca_file = tmp_path / "idp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    entry = config.IdTokenIssuer.model_validate(
        {
            "issuer": issuer.discovery_issuer,
            "client_id": CLIENT_ID,
            "discovery_url": issuer.base + "/common/v2.0/.well-known/openid-configuration",
            "groups": [{"tenant": TENANT, "group": "north"}],
        }
    )
    server = make_push(
        tmp_path,
        mail_host="127.0.0.1",
        mail_port=smtp[1],
        mail_security="plain",
        mail_from="noreply@mpg.example",
        mail_attempts=1,
        id_token_issuers=(entry,),
        id_token_ca_bundle=ca_file,
    )
    add_group(server.engine, "north", name="North", region="Nord", file_url="https://f/n.json")
    add_group(server.engine, "south", name="South")
    add_category(server.engine, "north", "floods", preselected=True)
    add_category(server.engine, "north", "roads")
    add_category(server.engine, "south", "storms", preselected=True)
    yield server
    server.engine.dispose()


def call(
    push: app.PushServer, method: str, path: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app.create_app(push), client=("192.0.2.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as client:
            return await client.request(method, "/api/v1" + path, headers=headers, **kw)

    return asyncio.run(go())


def token_of(registration: dict[str, Any]) -> str:
    credential = keys.parse_credential(registration["credential"])
    return deps.device_token(registration["account"], credential.key_id, credential.secret)


def ask_code(push: app.PushServer, device: str = DEVICE, address: str = ADDRESS) -> httpx.Response:
    body = {"email": address, "device_id": device, "platform": "android", "app_version": "1.4"}
    return call(push, "POST", "/registrations/email", json=body)


def confirm(push: app.PushServer, code: str, device: str = DEVICE, **more: Any) -> httpx.Response:
    body = {"email": ADDRESS, "device_id": device, "code": code, "platform": "android", **more}
    return call(push, "POST", "/registrations/email/confirm", json=body)


def test_a_device_registers_by_email_with_the_code_from_the_mail(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    asked = ask_code(push)
    assert asked.status_code == 200, asked.text
    assert asked.json() == {"sent": True, "expires_in": 600}
    answer = confirm(push, smtp[0].code())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "registered"
    done = body["registration"]
    assert re.fullmatch("dev-[0-9a-f]{32}", done["account"])
    assert done["group"] == {
        "id": "north",
        "name": "North",
        "region": "Nord",
        "file_url": "https://f/n.json",
    }
    assert done["categories"] == [
        {"id": "floods", "name": "Floods", "preselected": True, "subscribed": True},
        {"id": "roads", "name": "Roads", "preselected": False, "subscribed": False},
    ]
    me = call(push, "GET", "/device", token_of(done))
    assert me.status_code == 200, me.text
    assert (me.json()["device_id"], me.json()["via"], me.json()["platform"]) == (
        DEVICE,
        "email",
        "android",
    )
    with transactions.connect(push.engine, "test") as conn:
        row = conn.execute(sa.select(tables.device)).one()
    assert (row.Via, row.ViaRef) == ("email", "firma.example")
    assert ADDRESS.lower().encode() not in row.EmailEnc
    assert DEVICE.encode() not in row.DeviceIdEnc


def test_a_domain_of_two_groups_lets_the_device_choose_with_a_single_use_token(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    add_domain(push.engine, push.keyring, "firma.example", "south")
    ask_code(push)
    code = smtp[0].code()
    offered = confirm(push, code).json()
    assert offered["status"] == "choose_group"
    assert [g["id"] for g in offered["groups"]] == ["north", "south"]
    assert offered["expires_in"] == 600
    again = confirm(push, code)
    assert (again.status_code, again.json()["error"]) == (403, "code_used")
    choose = {"email": ADDRESS, "device_id": DEVICE, "choice_token": offered["choice_token"]}
    wrong = call(push, "POST", "/registrations/email/choose", json={**choose, "group": "east"})
    assert (wrong.status_code, wrong.json()["error"]) == (404, "group_not_offered")
    chosen = call(push, "POST", "/registrations/email/choose", json={**choose, "group": "south"})
    assert chosen.status_code == 200, chosen.text
    done = chosen.json()["registration"]
    assert done["group"]["id"] == "south"
    assert done["categories"] == [
        {"id": "storms", "name": "Storms", "preselected": True, "subscribed": True}
    ]
    reused = call(push, "POST", "/registrations/email/choose", json={**choose, "group": "north"})
    assert (reused.status_code, reused.json()["error"]) == (403, "choice_token_used")


def test_naming_the_group_at_confirmation_registers_at_once(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    add_domain(push.engine, push.keyring, "firma.example", "south")
    ask_code(push)
    answer = confirm(push, smtp[0].code(), group="north").json()
    assert answer["status"] == "registered"
    assert answer["registration"]["group"]["id"] == "north"


def test_a_choice_token_for_another_device_is_refused(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    add_domain(push.engine, push.keyring, "firma.example", "south")
    ask_code(push)
    offered = confirm(push, smtp[0].code()).json()
    body = {
        "email": ADDRESS,
        "device_id": "another-device",
        "choice_token": offered["choice_token"],
        "group": "north",
    }
    answer = call(push, "POST", "/registrations/email/choose", json=body)
    assert (answer.status_code, answer.json()["error"]) == (403, "choice_token_invalid")


def test_an_address_of_no_registered_domain_gets_no_mail(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north", verified=False)
    answer = ask_code(push)
    assert (answer.status_code, answer.json()["error"]) == (404, "domain_not_registered")
    assert "firma.example" in answer.json()["detail"]
    assert smtp[0].received == []


def test_a_wrong_code_is_refused_with_the_tries_left(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    ask_code(push)
    right = smtp[0].code()
    wrong = "000000" if right != "000000" else "111111"
    answer = confirm(push, wrong)
    assert answer.status_code == 403
    assert answer.json() == {"error": "code_wrong", "detail": "wrong code; 4 tries left"}
    malformed = confirm(push, "12ab")
    assert (malformed.status_code, malformed.json()["error"]) == (400, "code_malformed")


def test_a_guessing_loop_is_stopped_by_the_rate_limit(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    ask_code(push)
    right = smtp[0].code()
    answers = []
    for guess in range(100):
        answer = confirm(push, f"{guess:06d}" if f"{guess:06d}" != right else "999999")
        answers.append(answer)
        if answer.status_code == 429:
            break
    last = answers[-1]
    assert last.status_code == 429, [a.json() for a in answers]
    assert last.json()["error"] == "rate_limited"
    assert "too many codes tried" in last.json()["detail"]
    assert int(last.headers["Retry-After"]) > 0
    # Far fewer than the million a 6-digit code has; after five even the right one fails.
    assert len(answers) <= 21
    assert {a.json()["error"] for a in answers[5:-1]} == {"code_attempts_exhausted"}
    assert confirm(push, right).status_code == 429


def test_mails_to_one_address_are_rate_limited_across_device_ids(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    statuses = [ask_code(push, device=f"dev-{n}").status_code for n in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    assert len(smtp[0].received) == 5


def test_a_registration_code_registers_into_its_group(push: app.PushServer) -> None:
    code, code_id = add_code(push.engine, push.codes.key, "south")
    body = {"code": code.lower().replace("-", " "), "device_id": DEVICE, "platform": "ios"}
    answer = call(push, "POST", "/registrations/code", json=body)
    assert answer.status_code == 200, answer.text
    done = answer.json()["registration"]
    assert done["group"]["id"] == "south"
    assert done["replaced"] is False
    with transactions.connect(push.engine, "test") as conn:
        row = conn.execute(sa.select(tables.device)).one()
    assert (row.Via, row.ViaRef, row.Platform) == ("code", code_id, "ios")


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("deleted", 410, "registration_code_deleted"),
        ("expired", 410, "registration_code_expired"),
        ("unknown", 404, "not_found"),
        ("mistyped", 400, "bad_request"),
    ],
)
def test_a_registration_code_that_cannot_register_says_why(
    push: app.PushServer, kind: str, status: int, error: str
) -> None:
    if kind == "deleted":
        code, _ = add_code(push.engine, push.codes.key, "north", deleted=True)
    elif kind == "expired":
        code, _ = add_code(push.engine, push.codes.key, "north", valid_until=time.time() - 1)
    elif kind == "unknown":
        code, _ = add_code(push.engine, b"k" * 32, "north")
    else:
        good, _ = add_code(push.engine, push.codes.key, "north")
        code = good[:-1] + ("0" if good[-1] != "0" else "1")
    answer = call(push, "POST", "/registrations/code", json={"code": code, "device_id": DEVICE})
    assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    with transactions.connect(push.engine, "test") as conn:
        assert conn.execute(sa.select(tables.device)).first() is None


def test_registering_again_replaces_the_earlier_registration(push: app.PushServer) -> None:
    north, _ = add_code(push.engine, push.codes.key, "north")
    south, south_id = add_code(push.engine, push.codes.key, "south")
    first = call(push, "POST", "/registrations/code", json={"code": north, "device_id": DEVICE})
    first_done = first.json()["registration"]
    old_token = token_of(first_done)
    assert call(push, "PUT", "/device/subscriptions/roads", old_token).status_code == 200
    second = call(push, "POST", "/registrations/code", json={"code": south, "device_id": DEVICE})
    done = second.json()["registration"]
    assert done["account"] == first_done["account"]
    assert done["replaced"] is True
    assert done["key_id"] != first_done["key_id"]
    assert call(push, "GET", "/device", old_token).status_code == 403
    me = call(push, "GET", "/device", token_of(done)).json()
    assert me["group"]["id"] == "south"
    assert [(c["id"], c["subscribed"]) for c in me["categories"]] == [("storms", True)]
    with transactions.connect(push.engine, "test") as conn:
        rows = conn.execute(sa.select(tables.device)).all()
        subscriptions = conn.execute(sa.select(tables.subscription)).all()
    assert [(r.GroupId, r.ViaRef) for r in rows] == [("south", south_id)]
    assert [(s.GroupId, s.CategoryId) for s in subscriptions] == [("south", "storms")]


def id_token_body(issuer: Issuer, **overrides: Any) -> dict[str, Any]:
    return {"id_token": sign(claims(issuer, **overrides)), "device_id": DEVICE}


def test_an_id_token_registers_into_the_group_of_its_tenant(
    push: app.PushServer, issuer: Issuer
) -> None:
    add_domain(push.engine, push.keyring, "example.com", "north")
    body = {**id_token_body(issuer), "nonce": "n-0S6_WzA2Mj"}
    answer = call(push, "POST", "/registrations/id-token", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["registration"]["group"]["id"] == "north"
    with transactions.connect(push.engine, "test") as conn:
        row = conn.execute(sa.select(tables.device)).one()
    assert (row.Via, row.ViaRef, row.EmailIndex is not None) == ("idtoken", "example.com", True)


def test_an_id_token_whose_address_is_no_verified_domain_registers_by_tenant(
    push: app.PushServer, issuer: Issuer
) -> None:
    answer = call(push, "POST", "/registrations/id-token", json=id_token_body(issuer))
    assert answer.status_code == 200, answer.text
    with transactions.connect(push.engine, "test") as conn:
        row = conn.execute(sa.select(tables.device)).one()
    assert (row.ViaRef, row.EmailEnc) == (f"tenant:{TENANT}", None)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"iss": "https://login.example/other/v2.0"}, "wrong_issuer"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ({"tid": "72f988bf-86f1-41af-91ab-2d7cd011db47"}, "unmapped_tenant"),
        ({"nonce": "another"}, "nonce_mismatch"),
    ],
    ids=["audience", "issuer", "expired", "tenant", "nonce"],
)
def test_an_id_token_refused_says_why(
    push: app.PushServer, issuer: Issuer, overrides: dict[str, Any], error: str
) -> None:
    body = {**id_token_body(issuer, **overrides), "nonce": "n-0S6_WzA2Mj"}
    answer = call(push, "POST", "/registrations/id-token", json=body)
    assert (answer.status_code, answer.json()["error"]) == (403, error), answer.text
    assert answer.json()["detail"]


def test_a_malformed_id_token_is_a_400(push: app.PushServer) -> None:
    body = {"id_token": "not.a.token", "device_id": DEVICE}
    answer = call(push, "POST", "/registrations/id-token", json=body)
    assert (answer.status_code, answer.json()["error"]) == (400, "malformed")


def test_registration_by_id_token_is_off_without_issuers(tmp_path: pathlib.Path) -> None:
    push = make_push(tmp_path)
    body = {"id_token": "a.b.c", "device_id": DEVICE}
    answer = call(push, "POST", "/registrations/id-token", json=body)
    assert (answer.status_code, answer.json()["error"]) == (404, "id_token_off")
    push.engine.dispose()


@pytest.mark.parametrize("device_id", ["a;b", "with space", "group:north", "x" * 101, "Grüße"])
def test_a_device_id_a_receiver_list_could_not_name_is_refused(
    push: app.PushServer, device_id: str
) -> None:
    code, _ = add_code(push.engine, push.codes.key, "north")
    answer = call(push, "POST", "/registrations/code", json={"code": code, "device_id": device_id})
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")
    assert "device_id" in answer.json()["detail"]


def test_an_id_token_mapping_two_groups_is_sent_again_naming_one(
    tmp_path: pathlib.Path, issuer: Issuer, ca: trustme.CA
) -> None:
    ca_file = tmp_path / "idp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    entry = config.IdTokenIssuer.model_validate(
        {
            "issuer": issuer.discovery_issuer,
            "client_id": CLIENT_ID,
            "discovery_url": issuer.base + "/common/v2.0/.well-known/openid-configuration",
            "groups": [{"tenant": TENANT, "group": "north"}, {"tenant": TENANT, "group": "south"}],
        }
    )
    push = make_push(tmp_path, id_token_issuers=(entry,), id_token_ca_bundle=ca_file)
    add_group(push.engine, "north")
    add_group(push.engine, "south")
    add_domain(push.engine, push.keyring, "bücher.example".encode("idna").decode(), "south")
    body = id_token_body(issuer, email="Anna@Bücher.example")
    offered = call(push, "POST", "/registrations/id-token", json=body).json()
    assert offered["status"] == "choose_group"
    assert [g["id"] for g in offered["groups"]] == ["north", "south"]
    assert offered["choice_token"] is None
    chosen = call(push, "POST", "/registrations/id-token", json={**body, "group": "south"})
    assert chosen.json()["registration"]["group"]["id"] == "south"
    with transactions.connect(push.engine, "test") as conn:
        row = conn.execute(sa.select(tables.device)).one()
    assert (row.GroupId, row.ViaRef) == ("south", "xn--bcher-kva.example")
    push.engine.dispose()


def test_registration_by_email_is_off_without_a_mail_server(tmp_path: pathlib.Path) -> None:
    push = make_push(tmp_path)
    answer = ask_code(push)
    assert (answer.status_code, answer.json()["error"]) == (404, "mail_off")
    push.engine.dispose()


def test_a_device_an_admin_disabled_cannot_register_itself_back(push: app.PushServer) -> None:
    code, _ = add_code(push.engine, push.codes.key, "north")
    body = {"code": code, "device_id": DEVICE}
    first = call(push, "POST", "/registrations/code", json=body).json()["registration"]
    push.accounts.disable(first["account"])
    again = call(push, "POST", "/registrations/code", json=body)
    assert (again.status_code, again.json()["error"]) == (403, "forbidden")
    assert "disabled" in again.json()["detail"]


@pytest.mark.parametrize(
    "address", ["anna@firma.example\x00", "anna meier@firma.example", "anna@", "\u2028@x.example"]
)
def test_an_address_that_is_no_address_is_a_400_naming_the_field(
    push: app.PushServer, address: str
) -> None:
    answer = ask_code(push, address=address)
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")
    assert answer.json()["detail"].startswith("email")


def test_a_mailed_code_proves_nothing_for_another_device(
    push: app.PushServer, smtp: tuple[Sink, int]
) -> None:
    add_domain(push.engine, push.keyring, "firma.example", "north")
    ask_code(push)
    answer = confirm(push, smtp[0].code(), device="another-device")
    assert (answer.status_code, answer.json()["error"]) == (403, "code_expired")
    assert confirm(push, smtp[0].code()).json()["status"] == "registered"
