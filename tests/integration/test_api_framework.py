"""The JSON API's frame: admin and device tokens, roles, the one error shape, OpenAPI."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import httpx
import pytest
from fastapi import security

from mpg import config, errors
from mpg.server import app, tables
from mpg.server.api import deps
from mpg.wire import atrest, keys


@pytest.fixture
def push(tmp_path: pathlib.Path) -> app.PushServer:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    settings = config.ServerSettings(data_dir=tmp_path)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    server = app.PushServer(settings, engine, keys.new_master_key(), keyring)
    yield server
    engine.dispose()


def call(
    push: app.PushServer, method: str, path: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app.create_app(push))
        async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as client:
            return await client.request(method, path, headers=headers, **kw)

    return asyncio.run(go())


def test_an_admin_token_reads_the_audit_log_that_records_its_creation(
    push: app.PushServer,
) -> None:
    _, token = push.admins.add("alice", "viewer", "cli:root")
    answer = call(push, "GET", "/api/v1/audit", token)
    assert answer.status_code == 200
    [entry] = answer.json()
    assert (entry["actor"], entry["action"], entry["target"]) == (
        "cli:root",
        "admin.create",
        "alice",
    )


@pytest.mark.parametrize(
    "token",
    [None, "nonsense", "mpga.x.y", "mpgd.a.b.c"],
    ids=["none", "garbage", "unknown-admin", "device-token"],
)
def test_every_failed_admin_authentication_is_the_same_401(
    push: app.PushServer, token: str | None
) -> None:
    answer = call(push, "GET", "/api/v1/audit", token)
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthenticated", "detail": "authentication failed"}


def test_a_wrong_secret_for_a_real_admin_id_is_refused(push: app.PushServer) -> None:
    _admin, token = push.admins.add("bob", "admin", "cli:root")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert call(push, "GET", "/api/v1/audit", forged).status_code == 401


def test_a_disabled_admin_is_told_so(push: app.PushServer) -> None:
    _, token = push.admins.add("carol", "admin", "cli:root")
    push.admins.disable("carol", "cli:root")
    answer = call(push, "GET", "/api/v1/audit", token)
    assert answer.status_code == 403
    assert "disabled" in answer.json()["detail"]


def test_a_request_breaking_the_schema_is_a_400_naming_the_field(push: app.PushServer) -> None:
    _, token = push.admins.add("dave", "viewer", "cli:root")
    answer = call(push, "GET", "/api/v1/audit?limit=0", token)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "bad_request"
    assert "limit" in body["detail"]


def test_unknown_paths_and_methods_have_the_error_shape(push: app.PushServer) -> None:
    missing = call(push, "GET", "/api/v1/no-such-thing")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = call(push, "DELETE", "/api/v1/audit")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


def test_the_openapi_document_is_generated_from_the_routes(push: app.PushServer) -> None:
    answer = call(push, "GET", "/api/v1/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert "/audit" in document["paths"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_a_device_token_proves_the_key_without_sending_it(push: app.PushServer) -> None:
    account, credential = push.accounts.add("phone-1", "device")
    token = deps.device_token(account, credential.key_id, credential.secret)
    assert credential.secret.hex() not in token
    assert deps.device(push, _bearer(token)) == deps.Device(account, credential.key_id)
    with pytest.raises(errors.UnknownKey, match="wrong device proof"):
        deps.device(push, _bearer(deps.device_token(account, credential.key_id, b"x" * 32)))


def test_a_gateway_key_is_not_a_device_token(push: app.PushServer) -> None:
    account, credential = push.accounts.add("erp@example.com", "gateway")
    token = deps.device_token(account, credential.key_id, credential.secret)
    with pytest.raises(errors.Forbidden, match="not a device"):
        deps.device(push, _bearer(token))


def _bearer(token: str) -> security.HTTPAuthorizationCredentials:
    return security.HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
