"""What each provider's request carries: by default nothing of the message but its id."""

from __future__ import annotations

import json

import pytest

from mpg import errors
from mpg.wire import push
from mpg.wire.push import Notice, NoticeContent, NoticeKind

MESSAGE_ID = "02b2ae73-1c5e-4f0e-9a57-6d2b0f4b9d31"
TOKEN_FCM = "fcm-token-1"
TOKEN_APNS = "ab" * 32
SECRET_WORDS = ("Salary review", "confidential text", "alice@example.com", "pcagent")


def notice(kind: NoticeKind = NoticeKind.MESSAGE, priority: str = "N") -> Notice:
    return Notice(kind, "acme", priority=priority, message_id=MESSAGE_ID)


def all_request_bytes(n: Notice, content: NoticeContent | None) -> bytes:
    apns = push.apns_request(n, TOKEN_APNS, "com.acme.alerts", expiration=0, content=content)
    return b"\n".join(
        [
            json.dumps(push.fcm_message(n, TOKEN_FCM, content)).encode(),
            apns.body,
            json.dumps(apns.headers).encode(),
            push.webhook_body(n, TOKEN_FCM, content),
        ]
    )


@pytest.mark.parametrize("kind", [NoticeKind.MESSAGE, NoticeKind.RECALL])
def test_requests_carry_group_message_id_and_priority_but_no_content(kind: NoticeKind) -> None:
    data = all_request_bytes(notice(kind), None)
    assert data.count(MESSAGE_ID.encode()) >= 3
    assert b"acme" in data
    for word in SECRET_WORDS:
        assert word.encode() not in data


def test_content_appears_only_when_given() -> None:
    content = NoticeContent("Salary review", "confidential text")
    data = all_request_bytes(notice(), content)
    assert b"Salary review" in data
    assert b"confidential text" in data


def test_content_is_cut_to_fit_a_push() -> None:
    content = NoticeContent("s", "x" * 5000)
    body = push.fcm_message(notice(), TOKEN_FCM, content)
    text = body["message"]["android"]["notification"]["body"]
    assert len(text.encode()) == push.MAX_CONTENT_BYTES
    assert text.endswith("…")


def test_long_text_of_wide_characters_still_fits_an_apns_payload() -> None:
    """Cut by bytes, not characters: 3,000 CJK characters are 9 KB of UTF-8."""
    content = NoticeContent("警" * 3000, "報" * 3000)
    request = push.apns_request(notice(), TOKEN_APNS, "t", expiration=0, content=content)
    assert len(request.body) <= 4096
    alert = json.loads(request.body)["aps"]["alert"]
    assert alert["title"] == "警" * 332 + "…"
    assert alert["body"] == "報" * 332 + "…"


def test_a_recall_shares_the_collapse_id_of_its_message_everywhere() -> None:
    message, recall = notice(NoticeKind.MESSAGE), notice(NoticeKind.RECALL)
    assert push.collapse_id(message) == push.collapse_id(recall)
    fcm_m, fcm_r = (push.fcm_message(n, TOKEN_FCM)["message"]["android"] for n in (message, recall))
    assert fcm_m["collapse_key"] == fcm_r["collapse_key"] == push.collapse_id(message)
    assert fcm_m["notification"]["tag"] == fcm_r["notification"]["tag"]
    apns_m, apns_r = (
        push.apns_request(n, TOKEN_APNS, "t", expiration=0) for n in (message, recall)
    )
    assert apns_m.headers["apns-collapse-id"] == apns_r.headers["apns-collapse-id"]
    assert json.loads(apns_r.body)["aps"]["alert"]["loc-key"] == push.ALERT_KEY_RECALLED


def test_two_messages_have_different_collapse_ids() -> None:
    other = Notice(NoticeKind.MESSAGE, "acme", message_id="another")
    assert push.collapse_id(notice()) != push.collapse_id(other)


def test_a_long_message_id_gives_a_collapse_id_apns_accepts() -> None:
    n = Notice(NoticeKind.MESSAGE, "acme", message_id="x" * 200)
    assert len(push.collapse_id(n).encode()) <= push.MAX_COLLAPSE_ID


def test_publications_of_one_group_collapse_into_the_newest() -> None:
    first = Notice(NoticeKind.FILE, "acme", version='"v1"')
    second = Notice(NoticeKind.FILE, "acme", version='"v2"')
    assert push.collapse_id(first) == push.collapse_id(second)
    assert push.data_fields(second)["version"] == '"v2"'


def test_a_count_stands_for_several_messages() -> None:
    n = Notice(NoticeKind.MESSAGE, "acme", count=3)
    assert push.data_fields(n) == {
        "kind": "message",
        "group": "acme",
        "priority": "N",
        "count": "3",
    }


@pytest.mark.parametrize(
    ("priority", "apns_priority", "android"),
    [("E", "10", "HIGH"), ("H", "10", "HIGH"), ("N", "10", "NORMAL"), ("L", "5", "NORMAL")],
)
def test_priority_maps_to_each_provider(priority: str, apns_priority: str, android: str) -> None:
    n = notice(priority=priority)
    assert (
        push.apns_request(n, TOKEN_APNS, "t", expiration=0).headers["apns-priority"]
        == apns_priority
    )
    assert push.fcm_message(n, TOKEN_FCM)["message"]["android"]["priority"] == android


def test_apns_request_has_the_headers_apple_requires() -> None:
    request = push.apns_request(notice(), TOKEN_APNS, "com.acme.alerts", expiration=1234)
    assert request.path == f"/3/device/{TOKEN_APNS}"
    assert request.headers["apns-topic"] == "com.acme.alerts"
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-expiration"] == "1234"
    assert json.loads(request.body)["aps"]["mutable-content"] == 1


def test_apns_token_that_is_not_hexadecimal_is_refused() -> None:
    with pytest.raises(errors.ValidationError, match="hexadecimal"):
        push.apns_request(notice(), "../../etc", "t", expiration=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": NoticeKind.MESSAGE, "group": ""},
        {"kind": NoticeKind.MESSAGE, "group": "g"},
        {"kind": NoticeKind.RECALL, "group": "g", "count": 2},
        {"kind": NoticeKind.FILE, "group": "g"},
    ],
)
def test_incomplete_notices_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="needs"):
        Notice(**kwargs)  # type: ignore[arg-type]


def test_webhook_signature_verifies_at_the_receiver() -> None:
    body = push.webhook_body(notice(), TOKEN_FCM)
    headers = push.webhook_headers(b"s3cret", body, now=1000.0)
    push.verify_webhook(
        (b"old", b"s3cret"),
        headers[push.WEBHOOK_TIMESTAMP_HEADER],
        headers[push.WEBHOOK_SIGNATURE_HEADER],
        body,
        now=1100.0,
    )


def test_webhook_with_a_changed_body_is_refused() -> None:
    body = push.webhook_body(notice(), TOKEN_FCM)
    headers = push.webhook_headers(b"s3cret", body, now=1000.0)
    with pytest.raises(errors.WireError, match="no valid v1 signature"):
        push.verify_webhook(
            (b"s3cret",),
            headers[push.WEBHOOK_TIMESTAMP_HEADER],
            headers[push.WEBHOOK_SIGNATURE_HEADER],
            body.replace(b"acme", b"evil"),
            now=1000.0,
        )


def test_webhook_outside_the_replay_window_is_refused() -> None:
    body = b"{}"
    headers = push.webhook_headers(b"s3cret", body, now=1000.0)
    with pytest.raises(errors.WireError, match="more than 300 s"):
        push.verify_webhook(
            (b"s3cret",),
            headers[push.WEBHOOK_TIMESTAMP_HEADER],
            headers[push.WEBHOOK_SIGNATURE_HEADER],
            body,
            now=1000.0 + push.WEBHOOK_WINDOW + 1,
        )


def test_webhook_timestamp_moved_invalidates_the_signature() -> None:
    body = b"{}"
    headers = push.webhook_headers(b"s3cret", body, now=1000.0)
    with pytest.raises(errors.WireError):
        push.verify_webhook(
            (b"s3cret",), "1001", headers[push.WEBHOOK_SIGNATURE_HEADER], body, now=1000.0
        )
