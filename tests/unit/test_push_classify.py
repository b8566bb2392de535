"""Each provider's answers mean what its documentation says (docs/push.md, "Token hygiene")."""

from __future__ import annotations

import email.utils
import json

import hypothesis
import pytest
from hypothesis import strategies as st
from standins.fcm import fcm_error

from mpg.server.push import classify
from mpg.server.push.outcome import OutcomeKind

NOW = 1_800_000_000.0


def fcm_body(status: int, rpc_status: str, error_code: str = "", field: str = "") -> bytes:
    """An FCM error answer as the stand-in (and FCM) writes it."""
    return json.dumps(fcm_error(status, rpc_status, error_code, field)).encode()


def test_fcm_accepted_push_is_delivered_with_the_message_name() -> None:
    result = classify.fcm(200, {}, b'{"name": "projects/p/messages/0:1"}', NOW)
    assert result.kind is OutcomeKind.DELIVERED
    assert result.provider_id == "projects/p/messages/0:1"


def test_fcm_unregistered_removes_the_token() -> None:
    result = classify.fcm(404, {}, fcm_body(404, "NOT_FOUND", "UNREGISTERED"), NOW)
    assert (result.kind, result.reason) == (OutcomeKind.TOKEN_GONE, "UNREGISTERED")


def test_fcm_invalid_argument_naming_the_token_removes_it() -> None:
    body = fcm_body(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token")
    result = classify.fcm(400, {}, body, NOW)
    assert result.kind is OutcomeKind.TOKEN_GONE
    assert "message.token" in result.reason


def test_fcm_invalid_argument_about_another_field_is_a_message_error() -> None:
    body = fcm_body(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl")
    assert classify.fcm(400, {}, body, NOW).kind is OutcomeKind.MESSAGE_ERROR


def test_fcm_invalid_argument_without_details_is_a_message_error() -> None:
    assert classify.fcm(400, {}, fcm_body(400, "INVALID_ARGUMENT"), NOW).kind is (
        OutcomeKind.MESSAGE_ERROR
    )


def test_fcm_quota_exceeded_waits_at_least_a_minute() -> None:
    result = classify.fcm(
        429, {"retry-after": "5"}, fcm_body(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), NOW
    )
    assert (result.kind, result.retry_after) == (OutcomeKind.RETRY, 60.0)


def test_fcm_quota_exceeded_honours_a_longer_retry_after() -> None:
    result = classify.fcm(
        429, {"retry-after": "120"}, fcm_body(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), NOW
    )
    assert result.retry_after == 120.0


@pytest.mark.parametrize(("status", "code"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
def test_fcm_unavailable_and_internal_retry_after_what_the_header_says(
    status: int, code: str
) -> None:
    result = classify.fcm(status, {"retry-after": "30"}, fcm_body(status, code, code), NOW)
    assert (result.kind, result.retry_after) == (OutcomeKind.RETRY, 30.0)


def test_fcm_unavailable_without_retry_after_leaves_the_wait_to_the_backoff() -> None:
    result = classify.fcm(503, {}, fcm_body(503, "UNAVAILABLE", "UNAVAILABLE"), NOW)
    assert (result.kind, result.retry_after) == (OutcomeKind.RETRY, None)


def test_fcm_unauthenticated_asks_to_renew_the_access_token() -> None:
    result = classify.fcm(401, {}, fcm_body(401, "UNAUTHENTICATED"), NOW)
    assert result.kind is OutcomeKind.CONFIG_ALARM
    assert result.renew_credential


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, "SENDER_ID_MISMATCH"), (401, "THIRD_PARTY_AUTH_ERROR"), (403, "PERMISSION_DENIED")],
)
def test_fcm_project_setup_errors_are_configuration_alarms(status: int, code: str) -> None:
    result = classify.fcm(status, {}, fcm_body(status, code, code), NOW)
    assert (result.kind, result.renew_credential) == (OutcomeKind.CONFIG_ALARM, False)


def test_fcm_not_found_without_unregistered_is_a_wrong_project_alarm() -> None:
    assert classify.fcm(404, {}, fcm_body(404, "NOT_FOUND"), NOW).kind is OutcomeKind.CONFIG_ALARM


def test_fcm_answer_that_is_not_json_is_classified_by_its_status() -> None:
    assert classify.fcm(502, {}, b"<html>bad gateway</html>", NOW).kind is OutcomeKind.RETRY
    assert classify.fcm(413, {}, b"too large", NOW).kind is OutcomeKind.MESSAGE_ERROR


def apns_body(reason: str) -> bytes:
    return json.dumps({"reason": reason}).encode()


def test_apns_accepted_push_is_delivered_with_its_apns_id() -> None:
    result = classify.apns(200, {"apns-id": "ABC"}, b"", NOW)
    assert (result.kind, result.provider_id) == (OutcomeKind.DELIVERED, "ABC")


@pytest.mark.parametrize(
    ("status", "reason"), [(410, "Unregistered"), (400, "ExpiredToken"), (410, "ExpiredToken")]
)
def test_apns_unregistered_and_expired_tokens_are_removed(status: int, reason: str) -> None:
    result = classify.apns(status, {}, apns_body(reason), NOW)
    assert (result.kind, result.reason) == (OutcomeKind.TOKEN_GONE, reason)


def test_apns_bad_device_token_is_flagged_not_removed() -> None:
    result = classify.apns(400, {}, apns_body("BadDeviceToken"), NOW)
    assert result.kind is OutcomeKind.TOKEN_FLAGGED
    assert "sandbox" in result.reason


def test_apns_device_token_not_for_topic_is_a_configuration_alarm() -> None:
    result = classify.apns(400, {}, apns_body("DeviceTokenNotForTopic"), NOW)
    assert (result.kind, result.renew_credential) == (OutcomeKind.CONFIG_ALARM, False)


@pytest.mark.parametrize("reason", ["ExpiredProviderToken", "InvalidProviderToken"])
def test_apns_refused_provider_token_asks_for_a_renewal(reason: str) -> None:
    result = classify.apns(403, {}, apns_body(reason), NOW)
    assert (result.kind, result.renew_credential) == (OutcomeKind.CONFIG_ALARM, True)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "TooManyRequests"),
        (429, "TooManyProviderTokenUpdates"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (503, "Shutdown"),
    ],
)
def test_apns_overload_and_server_errors_retry_after_what_the_header_says(
    status: int, reason: str
) -> None:
    result = classify.apns(status, {"retry-after": "7"}, apns_body(reason), NOW)
    assert (result.kind, result.retry_after) == (OutcomeKind.RETRY, 7.0)


@pytest.mark.parametrize(
    "reason", ["BadCollapseId", "PayloadTooLarge", "BadPriority", "InvalidPushType"]
)
def test_apns_malformed_request_is_a_message_error(reason: str) -> None:
    assert classify.apns(400, {}, apns_body(reason), NOW).kind is OutcomeKind.MESSAGE_ERROR


def test_apns_unknown_server_error_retries() -> None:
    assert classify.apns(502, {}, b"", NOW).kind is OutcomeKind.RETRY


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (204, OutcomeKind.DELIVERED),
        (301, OutcomeKind.CONFIG_ALARM),
        (410, OutcomeKind.TOKEN_GONE),
        (404, OutcomeKind.TOKEN_GONE),
        (401, OutcomeKind.CONFIG_ALARM),
        (403, OutcomeKind.CONFIG_ALARM),
        (429, OutcomeKind.RETRY),
        (503, OutcomeKind.RETRY),
        (408, OutcomeKind.RETRY),
        (400, OutcomeKind.MESSAGE_ERROR),
    ],
)
def test_webhook_status_means_what_docs_push_md_says(status: int, kind: OutcomeKind) -> None:
    assert classify.webhook(status, {}, NOW).kind is kind


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert classify.retry_after({"retry-after": date}, NOW) == 90.0


@pytest.mark.parametrize("value", ["soon", "²", "٣", "1e3", "-5"])
def test_retry_after_that_is_not_ascii_digits_or_a_date_is_ignored(value: str) -> None:
    assert classify.retry_after({"retry-after": value}, NOW) is None


def test_retry_after_is_capped_at_a_day() -> None:
    assert classify.retry_after({"retry-after": "9" * 30}, NOW) == classify.MAX_RETRY_AFTER


def test_only_retry_and_delivered_are_not_permanent() -> None:
    assert not classify.apns(503, {}, b"", NOW).permanent
    assert classify.apns(410, {}, apns_body("Unregistered"), NOW).permanent


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "error",
                            "details",
                            "status",
                            "reason",
                            "@type",
                            "errorCode",
                            "fieldViolations",
                            "field",
                        ]
                    ),
                    children,
                    max_size=4,
                )
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    after=st.one_of(
        st.text(max_size=30), st.sampled_from(["²", "9" * 40, "Fri, 31 Dec 9999 23:59:59 GMT"])
    ),
)
def test_any_answer_is_classified_never_raised(status: int, body: bytes, after: str) -> None:
    headers = {"retry-after": after}
    for result in (
        classify.fcm(status, headers, body, NOW),
        classify.apns(status, headers, body, NOW),
        classify.webhook(status, headers, NOW),
    ):
        assert result.kind in OutcomeKind
        assert result.retry_after is None or result.retry_after >= 0
