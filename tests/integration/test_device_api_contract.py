"""CONTRACT TEST of the phone agent's JSON API client against a STAND-IN server.

The registration and device routes (docs/devices.md, "The API") are not in this tree
yet, so a small HTTPS app on loopback plays them, written to the agreed shapes:
registration answers, the groups to choose from, ``{"error", "detail"}`` refusals,
the device's bearer token. It checks what the agent sends; the end-to-end test with the
real routes replaces it once they exist. Messages (fetch, reply) are tested against
the real server in ``test_device_agent.py``.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import pathlib
import stat
import threading
from collections.abc import Iterator
from typing import Any

import fastapi
import pytest
import trustme
import uvicorn
from click.testing import CliRunner
from harness import free_port, wait_for
from starlette import responses

from mpg import errors, exitcodes
from mpg.agent import agent as agent_mod
from mpg.cli import device as device_cli
from mpg.wire import keys, model

CODE = "WXWC-BYB6-WK95-2SWA-0438"
MAILED = "123456"
GROUPS = [
    {"id": "north", "name": "North", "region": "N", "file_url": "https://files.example/n.ibi"},
    {"id": "south", "name": "South", "region": "S", "file_url": "https://files.example/s.ibi"},
]
CATEGORIES = [
    {"id": "storm", "name": "Storm", "preselected": True, "subscribed": True},
    {"id": "flood", "name": "Flood", "preselected": False, "subscribed": False},
]


def refuse(status: int, code: str, detail: str, **headers: str) -> responses.JSONResponse:
    return responses.JSONResponse({"error": code, "detail": detail}, status, headers=headers)


@dataclasses.dataclass
class StandIn:
    """The stand-in's memory: what it was sent, and the credentials it issued."""

    url: str
    ca_file: pathlib.Path
    seen: list[tuple[str, str, Any]] = dataclasses.field(default_factory=list)
    issued: dict[str, keys.Credential] = dataclasses.field(default_factory=dict)

    def bodies(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.seen if (m, p) == (method, path)]


API = "/api/v1"


async def body_of(memory: StandIn, request: fastapi.Request) -> Any:
    """The request's JSON body (None when empty), recorded with its method and path."""
    data = await request.json() if await request.body() else None
    memory.seen.append((request.method, request.url.path.removeprefix(API), data))
    return data


def stand_in_app(memory: StandIn) -> fastapi.FastAPI:
    """The registration routes and the device's own routes, to the agreed shapes."""
    app = fastapi.FastAPI()
    registration_routes(app, memory)
    device_routes(app, memory)
    return app


def registration_routes(app: fastapi.FastAPI, memory: StandIn) -> None:
    api = API

    def registration(group: dict[str, str], device_id: str) -> responses.JSONResponse:
        account = f"dev-{len(memory.issued):032x}"
        credential = keys.new_credential()
        memory.issued[account] = credential
        return responses.JSONResponse(
            {
                "account": account,
                "credential": keys.format_credential(credential),
                "key_id": credential.key_id,
                "group": group,
                "categories": CATEGORIES,
            },
            201,
        )

    @app.post(api + "/registrations/email")
    async def email(request: fastapi.Request) -> responses.Response:
        body = await body_of(memory, request)
        if body["email"].startswith("flood@"):
            return refuse(
                429,
                "rate_limited",
                "too many codes asked for this address; retry in 4320 s",
                **{"Retry-After": "4320"},
            )
        return responses.JSONResponse({}, 202)

    @app.post(api + "/registrations/email/confirm")
    async def confirm(request: fastapi.Request) -> responses.Response:
        body = await body_of(memory, request)
        if body["code"] != MAILED:
            return refuse(400, "code_wrong", "wrong code; 4 tries left")
        if body["email"].endswith("@two.example") and "group" not in body:
            return responses.JSONResponse({"groups": GROUPS}, 200)
        chosen = next((g for g in GROUPS if g["id"] == body.get("group", "north")), None)
        if chosen is None:
            return refuse(400, "bad_request", "group: not a group of this domain")
        return registration(chosen, body["device_id"])

    @app.post(api + "/registrations/code")
    async def code(request: fastapi.Request) -> responses.Response:
        body = await body_of(memory, request)
        if body["code"] != CODE:
            return refuse(410, "registration_code_deleted", "this registration code was deleted")
        return registration(GROUPS[0], body["device_id"])

    @app.post(api + "/registrations/id-token")
    async def id_token(request: fastapi.Request) -> responses.Response:
        body = await body_of(memory, request)
        if body["id_token"] != "header.claims.signature":
            return refuse(400, "wrong_audience", "the token is for another application")
        return registration(GROUPS[1], body["device_id"])


def device_routes(app: fastapi.FastAPI, memory: StandIn) -> None:
    api = API

    def caller(request: fastapi.Request) -> str | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        prefix, _, rest = token.partition(".")
        parts = rest.rsplit(".", 2)
        if prefix != "mpgd" or len(parts) != 3 or parts[0] not in memory.issued:
            return None
        credential = memory.issued[parts[0]]
        right = keys.device_proof(credential.secret)
        if parts[1] != credential.key_id or not hmac.compare_digest(parts[2], right):
            return None
        return parts[0]

    @app.api_route(api + "/device{rest:path}", methods=["GET", "PUT", "POST", "DELETE"])
    async def own(request: fastapi.Request, rest: str) -> responses.Response:
        body = await body_of(memory, request)
        account = caller(request)
        if account is None:
            return refuse(401, "unauthenticated", "authentication failed")
        if rest == "":
            return responses.JSONResponse({"account": account, "group": GROUPS[0]["id"]})
        if rest == "/subscriptions":
            return responses.JSONResponse({"categories": CATEGORIES})
        if rest == "/subscriptions/nope":
            return refuse(404, "not_found", "no category nope in group north")
        return responses.JSONResponse({"ok": True, "echo": body})


@pytest.fixture
def stand_in(tmp_path: pathlib.Path) -> Iterator[StandIn]:
    """The stand-in over TLS on loopback (uvicorn in a thread), trusted via its own CA."""
    ca = trustme.CA()
    ca_file = tmp_path / "stand-in-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pem = tmp_path / "stand-in.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    port = free_port()
    memory = StandIn(f"https://127.0.0.1:{port}", ca_file)
    server = uvicorn.Server(
        uvicorn.Config(
            stand_in_app(memory),
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(pem),
            ssl_keyfile=str(pem),
            access_log=False,
            log_config=None,  # leave the process's logging as the other tests expect it
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for("the stand-in to start", lambda: server.started)
    try:
        yield memory
    finally:
        server.should_exit = True
        thread.join(30)


def run(state: pathlib.Path, *args: str, stdin: str | None = None) -> Any:
    """``mpg device --state STATE ARGS``, which must succeed; its JSON output."""
    result = CliRunner().invoke(device_cli.device, ["--state", str(state), *args], input=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def failing(state: pathlib.Path, *args: str) -> BaseException:
    """``mpg device --state STATE ARGS``, which must fail; the error it ended with."""
    result = CliRunner().invoke(device_cli.device, ["--state", str(state), *args])
    assert result.exit_code != 0, result.output
    assert result.exception is not None
    return result.exception


def server_args(stand_in: StandIn) -> list[str]:
    return ["--server", stand_in.url, "--ca", str(stand_in.ca_file)]


def test_email_registration_with_two_groups_asks_then_joins_the_chosen_one(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    started = run(
        state, "register", *server_args(stand_in), "--email", "anna@two.example",
        "--device-id", "serial-1", "--platform", "ios", "--app-version", "2.1", "--json",
    )  # fmt: skip
    assert started == {"registered": False, "pending_email": "anna@two.example",
                       "device_id": "serial-1"}  # fmt: skip
    assert stand_in.bodies("POST", "/registrations/email") == [
        {"email": "anna@two.example", "device_id": "serial-1", "platform": "ios",
         "app_version": "2.1"}
    ]  # fmt: skip
    offered = run(state, "confirm", MAILED, "--json")
    assert offered == {
        "registered": False,
        "groups": [{k: g[k] for k in ("id", "name", "region")} for g in GROUPS],
    }
    joined = run(state, "confirm", MAILED, "--group", "south", "--json")
    assert (joined["registered"], joined["group"]["id"]) == (True, "south")
    assert stand_in.bodies("POST", "/registrations/email/confirm")[-1] == {
        "email": "anna@two.example", "device_id": "serial-1", "code": MAILED, "group": "south"
    }  # fmt: skip
    credential = stand_in.issued[joined["account"]]
    assert (state / "credential").read_text().strip() == keys.format_credential(credential)
    assert stat.S_IMODE((state / "credential").stat().st_mode) == 0o600
    info = run(state, "info", "--json")
    assert (info["account"], info["group"]["id"], info["pending_email"]) == (
        joined["account"],
        "south",
        "",
    )


def test_a_refusal_shows_the_servers_detail_and_exits_with_the_server_code(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *server_args(stand_in), "--email", "anna@one.example", "--json")
    wrong = failing(state, "confirm", "000000")
    assert isinstance(wrong, errors.RefusedByServer)
    assert (wrong.status, wrong.code) == (400, "code_wrong")
    assert "wrong code; 4 tries left" in str(wrong)
    assert exitcodes.for_exception(wrong) == exitcodes.SERVER
    limited = failing(state, "register", "--email", "flood@one.example")
    assert isinstance(limited, errors.TransientServerError)
    assert "too many codes asked for this address" in str(limited)
    assert "retry after 4320 s" in str(limited)
    assert exitcodes.for_exception(limited) == exitcodes.SERVER


def test_confirming_without_an_email_registration_waiting_says_what_to_do(
    tmp_path: pathlib.Path,
) -> None:
    refused = failing(tmp_path / "phone", "confirm", MAILED)
    assert "no e-mail registration is waiting; run `mpg device register --email`" in str(refused)


def test_an_agent_not_yet_registered_says_so_and_exits_with_the_configuration_code(
    tmp_path: pathlib.Path,
) -> None:
    refused = failing(tmp_path / "phone", "fetch")
    assert isinstance(refused, errors.ConfigError)
    assert "not registered; run `mpg device register` first" in str(refused)
    assert exitcodes.for_exception(refused) == exitcodes.CONFIG


def test_a_managed_address_starts_an_email_registration(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    managed = tmp_path / "managed.json"
    managed.write_text(json.dumps({"email": "anna@one.example"}))
    started = run(
        tmp_path / "phone", "register", *server_args(stand_in), "--managed", str(managed), "--json"
    )
    assert started["pending_email"] == "anna@one.example"
    (tmp_path / "bad.json").write_text(json.dumps({"emial": "x"}))
    refused = failing(tmp_path / "phone", "register", "--managed", str(tmp_path / "bad.json"))
    assert "unknown keys ['emial']" in str(refused)


def test_registering_by_code_and_by_a_managed_configuration_file(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    by_code = run(tmp_path / "a", "register", *server_args(stand_in), "--code", CODE, "--json")
    assert by_code["group"]["id"] == "north"
    managed = tmp_path / "managed.json"
    managed.write_text(
        json.dumps(
            {"server_url": stand_in.url, "ca_file": str(stand_in.ca_file),
             "registration_code": CODE}
        )
    )  # fmt: skip
    preset = run(tmp_path / "b", "register", "--managed", str(managed), "--json")
    assert preset["registered"] is True
    assert [b["code"] for b in stand_in.bodies("POST", "/registrations/code")] == [CODE, CODE]
    deleted = failing(tmp_path / "c", "register", *server_args(stand_in), "--code", "X" * 20)
    assert isinstance(deleted, errors.RefusedByServer)
    assert deleted.code == "registration_code_deleted"


def test_registering_by_an_id_token_read_from_stdin_sends_its_nonce(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    reg = run(
        state, "register", *server_args(stand_in), "--id-token", "-", "--nonce", "n-1",
        "--device-id", "serial-2", "--json",
        stdin="header.claims.signature\n",
    )  # fmt: skip
    assert reg["group"]["id"] == "south"
    [body] = stand_in.bodies("POST", "/registrations/id-token")
    assert body == {
        "id_token": "header.claims.signature",
        "device_id": "serial-2",
        "platform": "android",
        "app_version": "mpg-device",
        "nonce": "n-1",
    }


def test_the_devices_own_calls_carry_a_token_that_proves_its_credential(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *server_args(stand_in), "--code", CODE, "--json")
    run(state, "push-token", "fcm-token-1", "--json")
    run(state, "start", "--json")
    run(state, "subscribe", "flood", "--json")
    run(state, "unsubscribe", "storm", "--json")
    assert run(state, "subscriptions", "--json") == {"categories": CATEGORIES}
    assert run(state, "info", "--from-server", "--json")["server"]["group"] == "north"
    assert [(m, p, b) for m, p, b in stand_in.seen if p.startswith("/device")] == [
        ("PUT", "/device/push-token", {"token": "fcm-token-1", "platform": "android"}),
        ("POST", "/device/start", {"app_version": "mpg-device"}),
        ("PUT", "/device/subscriptions/flood", None),
        ("DELETE", "/device/subscriptions/storm", None),
        ("GET", "/device/subscriptions", None),
        ("GET", "/device", None),
    ]
    kept = {c["id"]: c["subscribed"] for c in run(state, "info", "--json")["categories"]}
    assert kept == {"storm": False, "flood": True}
    assert run(state, "info", "--json")["push_token"] == "fcm-token-1"
    missing = failing(state, "subscribe", "nope")
    assert isinstance(missing, errors.RefusedByServer)
    assert "no category nope in group north" in str(missing)


def test_a_credential_that_does_not_match_is_refused_as_unauthenticated(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *server_args(stand_in), "--code", CODE, "--json")
    (state / "credential").write_text(keys.format_credential(keys.new_credential()))
    refused = failing(state, "start")
    assert isinstance(refused, errors.RefusedByServer)
    assert (refused.status, refused.code) == (401, "unauthenticated")


def test_reading_marks_the_local_row_and_reports_its_message_id(
    stand_in: StandIn, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *server_args(stand_in), "--code", CODE, "--json")
    with agent_mod.Agent(state) as agent:
        agent.inbox().store([delivery("rx-1", "msg-1", agent.state.account)], {}, {})
    first = run(state, "read", "rx-1", "--json")
    assert (first["changed"], first["server"]["echo"]) == (True, {"message_id": "msg-1"})
    [row] = run(state, "inbox", "--state", "read", "--json")
    assert (row["RxMessageId"], row["State"]) == ("rx-1", 29)
    again = run(state, "read", "rx-1", "--json")
    assert again["changed"] is False
    assert len(stand_in.bodies("POST", "/device/read")) == 2
    unknown = failing(state, "read", "rx-2")
    assert "no message rx-2 in the Inbox" in str(unknown)


def delivery(rx: str, message_id: str, owner: str) -> model.Delivery:
    return model.Delivery(
        rx_message_id=rx, message_id=message_id, app_code="BPM", source_domain="example.com",
        agent_sender="erp@example.com", sender="erp@example.com", owner=owner,
        receiver_type="D", receiver_list=owner, bcc_list="", subject="s", content="<c/>",
        content_type="MSG", alert_flag=True, priority="N", keywords="",
        transmit_time="2026-11-30 10:00:00",
    )  # fmt: skip
