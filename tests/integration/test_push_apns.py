"""The APNs provider against an HTTP/2 TLS stand-in (hypercorn) that checks the JWT and headers."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from standins.apns import ApnsStandIn, apns_error
from standins.common import ca_file, client_context, configured_send

from mpg import config
from mpg.server.push.apns import ApnsProvider
from mpg.server.push.apnstoken import ProviderTokens
from mpg.server.push.base import Provider, PushRequest
from mpg.server.push.outcome import OutcomeKind
from mpg.wire.push import Notice, NoticeContent, NoticeKind

KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "com.acme.alerts"
DEVICE = "a1" * 32
NOTICE = Notice(NoticeKind.MESSAGE, "acme", priority="N", message_id="m-1")


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


#: The instant the running test started (see ``make``).
started = [0.0]


@pytest.fixture(autouse=True)
def _one_instant_per_test() -> None:
    started[0] = time.time()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def team_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def apns(
    ca: trustme.CA, team_key: ec.EllipticCurvePrivateKey, tmp_path: pathlib.Path
) -> Iterator[ApnsStandIn]:
    yield from ApnsStandIn(team_key.public_key(), KEY_ID, TEAM_ID, TOPIC).serve(ca, tmp_path)


@pytest.fixture
def key_file(team_key: ec.EllipticCurvePrivateKey, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_bytes(pem(team_key))
    return path


def make(
    apns: ApnsStandIn,
    ca: trustme.CA,
    key_file: pathlib.Path,
    *,
    topic: str = TOPIC,
    team_id: str = TEAM_ID,
) -> ApnsProvider:
    # One instant for the whole test: a window boundary passing mid-test would change the token.
    tokens = ProviderTokens(
        KEY_ID, team_id, key_file.read_bytes, where=str(key_file), clock=lambda: started[0]
    )
    return ApnsProvider("acme-ios", tokens, topic, endpoint=apns.url, verify=client_context(ca))


@pytest.fixture
def provider(apns: ApnsStandIn, ca: trustme.CA, key_file: pathlib.Path) -> Iterator[ApnsProvider]:
    p = make(apns, ca, key_file)
    yield p
    p.close()


def send(provider: Provider, device: str = DEVICE) -> tuple[OutcomeKind, str, float | None]:
    result = provider.send(PushRequest(device, NOTICE))
    return result.kind, result.reason, result.retry_after


def test_push_goes_over_http2_with_apples_headers_and_no_content(
    provider: ApnsProvider, apns: ApnsStandIn
) -> None:
    result = provider.send(PushRequest(DEVICE, NOTICE))
    assert result.kind is OutcomeKind.DELIVERED
    assert result.provider_id
    assert apns.http_versions == {"2"}
    ((headers, body),) = apns.raw_pushes
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "m:m-1"
    assert int(headers["apns-expiration"]) > time.time()
    payload = json.loads(body)
    assert payload["mpg"] == {
        "kind": "message",
        "group": "acme",
        "priority": "N",
        "message_id": "m-1",
    }
    assert "title" not in payload["aps"]["alert"]


def test_content_appears_only_when_the_request_carries_it(
    provider: ApnsProvider, apns: ApnsStandIn
) -> None:
    provider.send(PushRequest(DEVICE, NOTICE, NoticeContent("Salary review", "text")))
    assert json.loads(apns.raw_pushes[0][1])["aps"]["alert"]["title"] == "Salary review"


def test_provider_token_carries_kid_and_team_and_is_reused(
    provider: ApnsProvider, apns: ApnsStandIn
) -> None:
    for _ in range(3):
        assert send(provider)[0] is OutcomeKind.DELIVERED
    assert len(set(apns.tokens_seen)) == 1
    assert jwt.get_unverified_header(apns.tokens_seen[0])["kid"] == KEY_ID


def test_several_server_processes_share_one_provider_token(
    apns: ApnsStandIn, ca: trustme.CA, key_file: pathlib.Path
) -> None:
    processes = [make(apns, ca, key_file) for _ in range(3)]
    outcomes = [send(p)[0] for p in processes for _ in range(2)]
    assert outcomes == [OutcomeKind.DELIVERED] * 6
    assert len(set(apns.tokens_seen)) == 1
    for p in processes:
        p.close()


def test_processes_making_their_own_tokens_trip_too_many_provider_token_updates(
    apns: ApnsStandIn, ca: trustme.CA, team_key: ec.EllipticCurvePrivateKey, key_file: pathlib.Path
) -> None:
    """The control for the test above: what the shared token avoids, the stand-in catches."""

    class OwnTokens(ProviderTokens):
        def current(self) -> str:
            return jwt.encode(
                {"iss": TEAM_ID, "iat": int(time.time())}, team_key, "ES256", {"kid": KEY_ID}
            )

    first, second = (
        ApnsProvider(
            "p",
            OwnTokens(KEY_ID, TEAM_ID, key_file.read_bytes),
            TOPIC,
            endpoint=apns.url,
            verify=client_context(ca),
        )
        for _ in range(2)
    )
    assert send(first)[0] is OutcomeKind.DELIVERED
    assert send(second)[:2] == (OutcomeKind.RETRY, "TooManyProviderTokenUpdates")
    first.close()
    second.close()


@pytest.mark.parametrize(("status", "reason"), [(410, "Unregistered"), (400, "ExpiredToken")])
def test_dead_device_token_is_gone(
    provider: ApnsProvider, apns: ApnsStandIn, status: int, reason: str
) -> None:
    apns.script.then(status, apns_error(reason, timestamp=int(time.time() * 1000)))
    assert send(provider)[:2] == (OutcomeKind.TOKEN_GONE, reason)


def test_bad_device_token_is_flagged_not_removed(provider: ApnsProvider, apns: ApnsStandIn) -> None:
    apns.script.then(400, apns_error("BadDeviceToken"))
    kind, reason, _ = send(provider)
    assert kind is OutcomeKind.TOKEN_FLAGGED
    assert reason.startswith("BadDeviceToken")


def test_token_that_is_not_hex_is_flagged_without_a_request(
    provider: ApnsProvider, apns: ApnsStandIn
) -> None:
    assert send(provider, device="not/a/token")[0] is OutcomeKind.TOKEN_FLAGGED
    assert apns.tokens_seen == []


def test_wrong_topic_is_a_configuration_alarm(
    apns: ApnsStandIn, ca: trustme.CA, key_file: pathlib.Path
) -> None:
    provider = make(apns, ca, key_file, topic="com.other.app")
    assert send(provider)[:2] == (OutcomeKind.CONFIG_ALARM, "DeviceTokenNotForTopic")
    provider.close()


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "TooManyRequests"), (500, "InternalServerError"), (503, "ServiceUnavailable")],
)
def test_overload_is_retried_after_retry_after(
    provider: ApnsProvider, apns: ApnsStandIn, status: int, reason: str
) -> None:
    apns.script.then(status, apns_error(reason), retry_after="12")
    assert send(provider) == (OutcomeKind.RETRY, reason, 12.0)


def test_expired_provider_token_is_renewed_once_and_the_push_goes_out(
    provider: ApnsProvider, apns: ApnsStandIn
) -> None:
    apns.script.then(403, apns_error("ExpiredProviderToken"))
    assert send(provider)[0] is OutcomeKind.DELIVERED
    assert len(apns.pushes) == 1


def test_provider_token_refused_again_after_renewal_is_a_configuration_alarm(
    apns: ApnsStandIn, ca: trustme.CA, key_file: pathlib.Path
) -> None:
    provider = make(apns, ca, key_file, team_id="WRONGTEAM1")
    kind, reason, _ = send(provider)
    assert kind is OutcomeKind.CONFIG_ALARM
    assert reason == "InvalidProviderToken (again after renewing the credential)"
    provider.close()


def test_a_key_replaced_on_disk_is_taken_on_renewal(
    apns: ApnsStandIn, ca: trustme.CA, team_key: ec.EllipticCurvePrivateKey, key_file: pathlib.Path
) -> None:
    key_file.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    provider = make(apns, ca, key_file)  # holds the wrong key
    key_file.write_bytes(pem(team_key))  # the operator fixes the file
    assert send(provider)[0] is OutcomeKind.DELIVERED
    provider.close()


def test_malformed_request_is_a_message_error(provider: ApnsProvider, apns: ApnsStandIn) -> None:
    apns.script.then(413, apns_error("PayloadTooLarge"))
    assert send(provider)[:2] == (OutcomeKind.MESSAGE_ERROR, "PayloadTooLarge")


def test_apns_unreachable_is_retried(ca: trustme.CA, key_file: pathlib.Path) -> None:
    tokens = ProviderTokens(KEY_ID, TEAM_ID, key_file.read_bytes)
    provider = ApnsProvider(
        "p", tokens, TOPIC, endpoint="https://127.0.0.1:1", verify=client_context(ca)
    )
    assert send(provider)[0] is OutcomeKind.RETRY
    provider.close()


def test_a_configured_entry_reaches_apns_with_its_key_from_the_environment(
    apns: ApnsStandIn,
    ca: trustme.CA,
    team_key: ec.EllipticCurvePrivateKey,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_APNS_KEY", pem(team_key).decode())
    entry = config.PushProvider(
        name="acme-ios",
        kind="apns",
        groups=("acme",),
        team_id=TEAM_ID,
        key_id=KEY_ID,
        key_env="ACME_APNS_KEY",
        topic=TOPIC,
        environment="sandbox",
        endpoint=apns.url,
        ca_bundle=ca_file(ca, tmp_path),
    )
    assert configured_send(entry, "ios", DEVICE, NOTICE) is OutcomeKind.DELIVERED
