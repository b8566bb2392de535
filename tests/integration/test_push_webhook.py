"""The webhook provider against a receiver over TLS on loopback that checks the HMAC signature."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import httpx
import pytest
import trustme
from standins.common import ca_file, client_context, configured_send
from standins.webhook import WebhookStandIn

from mpg import config
from mpg.server.push.base import Provider, PushRequest
from mpg.server.push.outcome import OutcomeKind
from mpg.server.push.webhook import WebhookProvider
from mpg.wire import push
from mpg.wire.push import Notice, NoticeKind

SECRET = b"a-long-shared-secret-of-the-receiver"
NOTICE = Notice(NoticeKind.RECALL, "acme", priority="E", message_id="m-9")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[WebhookStandIn]:
    yield from WebhookStandIn(SECRET).serve(ca)


def make(receiver: WebhookStandIn, ca: trustme.CA, secret: bytes = SECRET) -> WebhookProvider:
    return WebhookProvider("acme-hook", receiver.url, secret, verify=client_context(ca))


@pytest.fixture
def provider(receiver: WebhookStandIn, ca: trustme.CA) -> Iterator[WebhookProvider]:
    p = make(receiver, ca)
    yield p
    p.close()


def send(provider: Provider) -> tuple[OutcomeKind, str, float | None]:
    result = provider.send(PushRequest("device-7", NOTICE))
    return result.kind, result.reason, result.retry_after


def test_signed_push_is_accepted_with_the_notice(
    provider: WebhookProvider, receiver: WebhookStandIn
) -> None:
    assert send(provider)[0] is OutcomeKind.DELIVERED
    assert receiver.received == [
        {
            "kind": "recall",
            "group": "acme",
            "priority": "E",
            "message_id": "m-9",
            "collapse_id": "m:m-9",
            "token": "device-7",
        }
    ]


def test_wrong_secret_is_refused_and_is_a_configuration_alarm(
    receiver: WebhookStandIn, ca: trustme.CA
) -> None:
    provider = make(receiver, ca, secret=b"not-the-secret")
    assert send(provider)[0] is OutcomeKind.CONFIG_ALARM
    assert receiver.refused == ["MPG-Signature: no valid v1 signature"]
    provider.close()


def test_a_replayed_request_is_refused_by_the_receiver(
    receiver: WebhookStandIn, ca: trustme.CA
) -> None:
    body = push.webhook_body(NOTICE, "device-7")
    headers = push.webhook_headers(SECRET, body)
    with httpx.Client(verify=client_context(ca)) as client:
        assert client.post(receiver.url, content=body, headers=headers).status_code == 204
        assert client.post(receiver.url, content=body, headers=headers).status_code == 401
    assert receiver.refused == ["replayed"]


@pytest.mark.parametrize(
    ("status", "kind", "after"),
    [
        (410, OutcomeKind.TOKEN_GONE, None),
        (429, OutcomeKind.RETRY, 20.0),
        (503, OutcomeKind.RETRY, 20.0),
        (400, OutcomeKind.MESSAGE_ERROR, None),
    ],
)
def test_receiver_answers_are_classified(
    provider: WebhookProvider,
    receiver: WebhookStandIn,
    status: int,
    kind: OutcomeKind,
    after: float | None,
) -> None:
    receiver.script.then(status, retry_after="20")
    assert send(provider) == (kind, f"HTTP {status}", after)


def test_receiver_down_is_retried(ca: trustme.CA) -> None:
    provider = WebhookProvider("p", "https://127.0.0.1:1/push", SECRET, verify=client_context(ca))
    assert send(provider)[0] is OutcomeKind.RETRY
    provider.close()


def test_a_configured_entry_signs_with_the_secret_from_its_file(
    receiver: WebhookStandIn, ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    entry = config.PushProvider(
        name="acme-hook",
        kind="webhook",
        groups=("acme",),
        url=receiver.url,
        secret_file=secret_file,
        ca_bundle=ca_file(ca, tmp_path),
    )
    assert configured_send(entry, "web", "device-7", NOTICE) is OutcomeKind.DELIVERED
    assert receiver.refused == []
