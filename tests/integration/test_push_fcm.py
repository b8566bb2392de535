"""The FCM provider against an OAuth token endpoint and an FCM v1 stand-in over TLS on loopback."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest
import trustme
from standins.common import ca_file, client_context, configured_send
from standins.fcm import FcmStandIn, fcm_error

from mpg import config
from mpg.server.push.base import Provider, PushRequest
from mpg.server.push.fcm import FcmProvider
from mpg.server.push.outcome import OutcomeKind
from mpg.wire.push import Notice, NoticeKind

TOKEN = "dGVzdC1kZXZpY2UtdG9rZW4"
NOTICE = Notice(NoticeKind.MESSAGE, "acme", priority="H", message_id="m-1")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def fcm(ca: trustme.CA) -> Iterator[FcmStandIn]:
    yield from FcmStandIn().serve(ca)


def provider_for(fcm: FcmStandIn, ca: trustme.CA, **changes: str) -> FcmProvider:
    info = {**fcm.service_account(), **changes}
    return FcmProvider("acme-android", info, endpoint=fcm.base, verify=client_context(ca))


@pytest.fixture
def provider(fcm: FcmStandIn, ca: trustme.CA) -> Iterator[FcmProvider]:
    p = provider_for(fcm, ca)
    yield p
    p.close()


def send(provider: Provider, token: str = TOKEN) -> tuple[OutcomeKind, str, float | None]:
    result = provider.send(PushRequest(token, NOTICE))
    return result.kind, result.reason, result.retry_after


def test_push_reaches_fcm_with_the_notice_and_nothing_else(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    result = provider.send(PushRequest(TOKEN, NOTICE))
    assert result.kind is OutcomeKind.DELIVERED
    assert result.provider_id == "projects/mpg-test/messages/0:1"
    (message,) = fcm.pushes
    assert message["token"] == TOKEN
    assert message["data"] == {
        "kind": "message",
        "group": "acme",
        "priority": "H",
        "message_id": "m-1",
    }
    assert message["android"]["priority"] == "HIGH"
    assert message["android"]["notification"]["tag"] == message["android"]["collapse_key"]
    assert "title" not in message["android"]["notification"]


def test_access_token_is_fetched_once_and_reused(provider: FcmProvider, fcm: FcmStandIn) -> None:
    for _ in range(3):
        assert send(provider)[0] is OutcomeKind.DELIVERED
    assert fcm.token_requests == 1


def test_access_token_near_expiry_is_fetched_again(provider: FcmProvider, fcm: FcmStandIn) -> None:
    fcm.expires_in = 60  # inside google-auth's refresh margin: stale as soon as it arrives
    send(provider)
    send(provider)
    assert fcm.token_requests == 2


def test_unregistered_token_is_gone(provider: FcmProvider, fcm: FcmStandIn) -> None:
    fcm.script.then(404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"))
    assert send(provider)[:2] == (OutcomeKind.TOKEN_GONE, "UNREGISTERED")


def test_invalid_argument_naming_the_token_removes_it(provider: FcmProvider) -> None:
    # An empty token: the stand-in's own shape check names message.token, as FCM does.
    kind, reason, _ = send(provider, token="")
    assert kind is OutcomeKind.TOKEN_GONE
    assert "message.token" in reason


def test_invalid_argument_naming_another_field_is_a_message_error(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    fcm.script.then(
        400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl")
    )
    assert send(provider)[0] is OutcomeKind.MESSAGE_ERROR


def test_quota_exceeded_retries_no_sooner_than_a_minute(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    fcm.script.then(429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), retry_after="10")
    assert send(provider) == (OutcomeKind.RETRY, "QUOTA_EXCEEDED", 60.0)


@pytest.mark.parametrize(("status", "code"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
def test_unavailable_and_internal_retry_after_retry_after(
    provider: FcmProvider, fcm: FcmStandIn, status: int, code: str
) -> None:
    fcm.script.then(status, fcm_error(status, code, code), retry_after="30")
    assert send(provider) == (OutcomeKind.RETRY, code, 30.0)


def test_sender_id_mismatch_is_a_configuration_alarm(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    fcm.script.then(403, fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"))
    assert send(provider)[:2] == (OutcomeKind.CONFIG_ALARM, "SENDER_ID_MISMATCH")


def test_revoked_access_token_is_renewed_once_and_the_push_goes_out(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    send(provider)
    fcm.revoke_tokens()
    assert send(provider)[0] is OutcomeKind.DELIVERED
    assert fcm.token_requests == 2
    assert len(fcm.pushes) == 2


def test_access_token_refused_after_renewal_is_a_configuration_alarm(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    fcm.script.then(401, fcm_error(401, "UNAUTHENTICATED")).then(
        401, fcm_error(401, "UNAUTHENTICATED")
    )
    kind, reason, _ = send(provider)
    assert kind is OutcomeKind.CONFIG_ALARM
    assert "again after renewing" in reason
    assert fcm.token_requests == 2


def test_oauth_grant_refused_is_a_configuration_alarm(
    provider: FcmProvider, fcm: FcmStandIn
) -> None:
    fcm.token_script.then(
        400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    )
    kind, reason, _ = send(provider)
    assert kind is OutcomeKind.CONFIG_ALARM
    assert "invalid_grant" in reason
    assert fcm.pushes == []


def test_key_of_another_account_is_refused_by_the_token_endpoint(
    fcm: FcmStandIn, ca: trustme.CA
) -> None:
    provider = provider_for(fcm, ca, client_email="intruder@elsewhere.iam.gserviceaccount.com")
    assert send(provider)[0] is OutcomeKind.CONFIG_ALARM
    provider.close()


def test_wrong_project_is_a_configuration_alarm(fcm: FcmStandIn, ca: trustme.CA) -> None:
    provider = provider_for(fcm, ca, project_id="someone-else")
    assert send(provider)[0] is OutcomeKind.CONFIG_ALARM
    provider.close()


def test_fcm_unreachable_is_retried(fcm: FcmStandIn, ca: trustme.CA) -> None:
    provider = FcmProvider(
        "acme-android", fcm.service_account(), endpoint=fcm.base, verify=client_context(ca)
    )
    send(provider)  # the access token is cached
    provider._url = "https://127.0.0.1:1/v1/projects/mpg-test/messages:send"
    assert send(provider)[0] is OutcomeKind.RETRY
    provider.close()


def test_token_endpoint_unreachable_is_retried(fcm: FcmStandIn, ca: trustme.CA) -> None:
    info = {**fcm.service_account(), "token_uri": "https://127.0.0.1:1/token"}
    provider = FcmProvider("acme-android", info, endpoint=fcm.base, verify=client_context(ca))
    kind, reason, _ = send(provider)
    assert kind is OutcomeKind.RETRY
    assert "unreachable" in reason
    provider.close()


def test_a_configured_entry_reaches_fcm_with_its_key_file_and_ca(
    fcm: FcmStandIn, ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    key_file = tmp_path / "acme-firebase.json"
    key_file.write_text(json.dumps(fcm.service_account()), encoding="utf-8")
    key_file.chmod(0o600)
    entry = config.PushProvider(
        name="acme-android",
        kind="fcm",
        groups=("acme",),
        service_account_file=key_file,
        endpoint=fcm.base,
        ca_bundle=ca_file(ca, tmp_path),
    )
    assert configured_send(entry, "android", TOKEN, NOTICE) is OutcomeKind.DELIVERED
    assert len(fcm.pushes) == 1


def test_token_answer_that_is_no_token_is_retried(provider: FcmProvider, fcm: FcmStandIn) -> None:
    fcm.token_script.then(200, b"<html>a proxy's sign-in page</html>")
    kind, reason, _ = send(provider)
    assert kind is OutcomeKind.RETRY
    assert "unreadable" in reason
