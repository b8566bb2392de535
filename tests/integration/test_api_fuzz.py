"""The JSON API fuzzed from its own OpenAPI document (schemathesis): no 5xx, and every
answer matches the document.

A real server process over TLS on loopback (``serverproc``), with a mail server
(aiosmtpd) so the e-mail routes reach their mail, an admin token and a device token,
so the authenticated routes are reached beyond their 401. The operations come from
``/api/v1/openapi.json`` at run time: whatever routes the server has are fuzzed, with
valid (positive) and invalid (negative) requests. Bounded: :data:`BUDGET` cases shared by the
operations and modes, no shrinking (a failure is reported as the curl command that
reproduces it), so the run stays within about a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any, Final

import httpx
import hypothesis
import pytest
import requests
import schemathesis
import serverproc
from aiosmtpd.controller import Controller
from harness import free_port
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from mpg import config
from mpg.server import admins, tables
from mpg.server import app as server_app
from mpg.server.api import app as api_app
from mpg.server.api import deps
from mpg.wire import atrest, keys

#: Cases in all: at about 36 ms a case (measured: 200 cases of one route in 7.2 s) the
#: run stays near a minute however many routes there are.
BUDGET: Final = 1500
#: Cases per operation and generation mode: the budget shared, within these bounds.
FEWEST: Final = 10
MOST: Final = 100
DEVICE: Final = "dev-fuzz"

pytestmark = pytest.mark.xdist_group("api_fuzz")


class Sink:
    """An SMTP handler that accepts every mail and keeps none."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "250 OK"


@contextlib.contextmanager
def mail_server() -> Iterator[int]:
    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def api(tmp_path: pathlib.Path) -> Iterator[tuple[serverproc.ServerProcess, dict[str, str]]]:
    """The server and the bearer tokens: an admin's and a device's."""
    with mail_server() as smtp_port:
        srv = serverproc.start(
            tmp_path / "server",
            {DEVICE: "device"},
            mail_host="127.0.0.1",
            mail_port=smtp_port,
            mail_security="plain",
            mail_from="mpg@example.com",
            mail_attempts=1,
        )
        try:
            engine = tables.create_engine(srv.database_url)
            try:
                _, admin_token = admins.AdminStore(engine).add("fuzzer", "admin", "test")
            finally:
                engine.dispose()
            cred = srv.credentials[DEVICE]
            tokens = {
                "admin": admin_token,
                "device": keys.device_token(DEVICE, cred.key_id, cred.secret),
            }
            yield srv, tokens
        finally:
            srv.stop()


def token_for(path: str, tokens: dict[str, str]) -> str | None:
    """The caller a route is for: the device's own routes, anyone's registration
    routes, an admin's everything else."""
    if path == "/device" or path.startswith("/device/"):
        return tokens["device"]
    if path.startswith("/registrations"):
        return None
    return tokens["admin"]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the cases go: the API's base URL, over one session, trusting the test CA."""

    base_url: str
    session: requests.Session
    ca_file: str


def fuzz_operation(
    target: Target,
    operation: Any,
    mode: GenerationMode,
    token: str | None,
    statuses: set[int],
    examples: int,
) -> None:
    """Run ``examples`` generated cases of one operation; raise on the first failure.
    ``statuses`` collects the status codes answered."""

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = case.call(
            base_url=target.base_url,
            session=target.session,
            headers=headers,
            timeout=30,
            verify=target.ca_file,
        )
        statuses.add(response.status_code)
        checks = [not_a_server_error]
        if mode is GenerationMode.POSITIVE or response.status_code < 300:
            checks.append(response_schema_conformance)
        case.validate_response(response, checks=checks)

    run()


def test_no_request_the_openapi_document_allows_gets_a_server_error(
    api: tuple[serverproc.ServerProcess, dict[str, str]],
) -> None:
    srv, tokens = api
    schema = schemathesis.openapi.from_url(
        f"{srv.url}/api/v1/openapi.json", verify=str(srv.ca_file), timeout=30
    )
    failures: list[str] = []
    answered: dict[str, set[int]] = {}
    with requests.Session() as session:
        target = Target(f"{srv.url}/api/v1", session, str(srv.ca_file))
        operations = [result.ok() for result in schema.get_all_operations()]
        examples = max(FEWEST, min(MOST, BUDGET // (2 * len(operations))))
        for operation in operations:
            label = f"{operation.method.upper()} {operation.path}"
            statuses = answered.setdefault(label, set())
            token = token_for(operation.path, tokens)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz_operation(target, operation, mode, token, statuses, examples)
                except Exception as exc:  # every operation is fuzzed; all failures reported
                    failures.append(f"{label} ({mode}): {exc}")
    assert failures == [], "\n\n".join(failures)
    # The tokens worked: no operation was only ever refused at the door.
    assert answered
    assert {label for label, got in answered.items() if got <= {401, 403}} == set()


@dataclasses.dataclass(frozen=True)
class Door:
    """The API frame in this process, a device's credential and an admin's id."""

    api: Any
    device: keys.Credential
    admin_id: str

    def status(self, path: str, token: bytes) -> int:
        """What ``GET path`` answers with this bearer token (bytes: any encoding)."""

        async def go() -> int:
            transport = httpx.ASGITransport(app=self.api)
            async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as client:
                answer = await client.get(path, headers={"authorization": b"Bearer " + token})
                return answer.status_code

        return asyncio.run(go())


@pytest.fixture
def door(tmp_path: pathlib.Path) -> Iterator[Door]:
    """The frame with a probe route for devices (until the device routes exist, the
    frame's device check is reached through it) and the admins' ``/audit``."""
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    push = server_app.PushServer(
        config.ServerSettings(data_dir=tmp_path), engine, keys.new_master_key(), keyring
    )
    _, credential = push.accounts.add(DEVICE, "device")
    push.accounts.add("gw@example.com", "gateway")
    _, admin_token = push.admins.add("root", "admin", "test")
    api = api_app.create_api(push)

    @api.get("/probe")
    def probe(caller: deps.CallingDevice) -> dict[str, str]:
        return {"account": caller.account}

    yield Door(api, credential, admin_token.split(".")[1])
    engine.dispose()


_PIECE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
#: Bounded (no shrinking); the app is shared on purpose: refusing a token changes nothing.
_AT_THE_DOOR = hypothesis.settings(
    max_examples=300,
    deadline=None,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)


def test_the_right_tokens_get_in(door: Door) -> None:
    token = keys.device_token(DEVICE, door.device.key_id, door.device.secret)
    assert door.status("/probe", token.encode()) == 200


@pytest.mark.parametrize(
    ("path", "token"),
    [("/probe", "mpgd.{device}.{kid}.Ã€"), ("/audit", "mpga.{admin}.Ã€")],
    ids=["device-proof", "admin-secret"],
)
def test_a_token_with_non_ascii_characters_for_a_real_key_is_a_401_not_a_500(
    door: Door, path: str, token: str
) -> None:
    """Found by the tests below: the secret was compared or hashed as ASCII text."""
    text = token.format(device=DEVICE, kid=door.device.key_id, admin=door.admin_id)
    assert door.status(path, text.encode()) == 401


@_AT_THE_DOOR
@hypothesis.given(data=st.data())
def test_any_bearer_token_on_a_device_route_is_refused_at_the_door_never_a_5xx(
    door: Door, data: st.DataObject
) -> None:
    token = data.draw(
        st.one_of(
            _PIECE,
            st.builds(lambda *p: ".".join(p), st.just("mpgd"), _PIECE, _PIECE, _PIECE),
            st.builds(
                lambda account, kid, proof: f"mpgd.{account}.{kid}.{proof}",
                st.sampled_from([DEVICE, DEVICE.upper(), "gw@example.com", "", "x" * 300]),
                st.sampled_from([door.device.key_id, "", "k" * 65, "k.1"]),
                _PIECE,
            ),
        )
    )
    assert door.status("/probe", token.encode("utf-8")) in (400, 401, 403)


@_AT_THE_DOOR
@hypothesis.given(data=st.data())
def test_any_bearer_token_on_an_admin_route_is_refused_at_the_door_never_a_5xx(
    door: Door, data: st.DataObject
) -> None:
    token = data.draw(
        st.one_of(
            _PIECE,
            st.builds(lambda *p: ".".join(p), st.just("mpga"), _PIECE, _PIECE),
            st.builds(lambda secret: f"mpga.{door.admin_id}.{secret}", _PIECE),
        )
    )
    assert door.status("/audit", token.encode("utf-8")) in (400, 401, 403)
