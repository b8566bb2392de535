"""PURE: a provider's HTTP answer -> :class:`~mpg.server.push.outcome.PushOutcome`.

Each provider's errors mean what its documentation says they mean (docs/push.md,
"Token hygiene"); the tables below are that documentation in code. A status or reason
none of them names falls back on the status class: 5xx and 429 are retried, any other
4xx is this message's fault.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from typing import Any, Final

from mpg.server.push import outcome
from mpg.server.push.outcome import PushOutcome

#: The longest wait a Retry-After can ask for (a day).
MAX_RETRY_AFTER: Final = 86400.0
#: FCM: at least this long after QUOTA_EXCEEDED (Firebase's guidance is one minute).
FCM_QUOTA_PAUSE: Final = 60.0
#: The FCM error details that say which error it is, and which field was wrong.
FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE: Final = "type.googleapis.com/google.rpc.BadRequest"
#: The field an INVALID_ARGUMENT names when the registration token is the bad part.
FCM_TOKEN_FIELD: Final = "message.token"  # noqa: S105 (a field name)

_FCM_GONE: Final = frozenset({"UNREGISTERED"})
_FCM_RETRY: Final = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"})
#: The project's credentials or setup are wrong, not the device: SENDER_ID_MISMATCH
#: (the token belongs to another Firebase project than the group's key),
#: THIRD_PARTY_AUTH_ERROR (the APNs key uploaded to Firebase), PERMISSION_DENIED.
_FCM_ALARM: Final = frozenset({"SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED"})

_APNS_GONE: Final = frozenset({"Unregistered", "ExpiredToken"})
_APNS_FLAGGED: Final = frozenset({"BadDeviceToken"})
#: The app's topic, certificate or key do not fit: nothing a retry or another token fixes.
_APNS_ALARM: Final = frozenset(
    {
        "DeviceTokenNotForTopic",
        "TopicDisallowed",
        "BadTopic",
        "MissingTopic",
        "BadCertificate",
        "BadCertificateEnvironment",
        "Forbidden",
        "MissingProviderToken",
    }
)
#: The provider token was refused: make it again once, then it is a configuration alarm.
_APNS_RENEW: Final = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})
_APNS_RETRY: Final = frozenset(
    {
        "TooManyRequests",
        "TooManyProviderTokenUpdates",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
    }
)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the ``Retry-After`` header asks for (delta or HTTP date), None if absent/bad,
    at most :data:`MAX_RETRY_AFTER` (a provider's answer must not park a push for ever)."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _fallback(status: int, reason: str, after: float | None) -> PushOutcome:
    if status == 429 or status >= 500:
        return outcome.retry(reason, after)
    return outcome.message_error(reason)


def fcm_error(body: bytes) -> tuple[str, bool]:
    """The FCM error code (FcmError ``errorCode``, else the RPC ``status``) and whether a
    BadRequest field violation names the registration token."""
    error = _json(body).get("error")
    if not isinstance(error, dict):
        return "", False
    code = str(error.get("status", ""))
    names_token = False
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
            code = str(detail["errorCode"])
        elif detail.get("@type") == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations")
            names_token = names_token or any(
                isinstance(v, dict) and v.get("field") == FCM_TOKEN_FIELD
                for v in (violations if isinstance(violations, list) else [])
            )
    return code, names_token


def fcm(status: int, headers: Mapping[str, str], body: bytes, now: float) -> PushOutcome:
    """Classify an FCM HTTP v1 ``messages:send`` answer."""
    if 200 <= status < 300:
        return outcome.delivered(str(_json(body).get("name", "")))
    code, names_token = fcm_error(body)
    reason = code or f"HTTP {status}"
    after = retry_after(headers, now)
    if code in _FCM_GONE:
        return outcome.token_gone(reason)
    if code == "INVALID_ARGUMENT":
        if names_token:
            return outcome.token_gone(f"{reason} ({FCM_TOKEN_FIELD})")
        return outcome.message_error(reason)
    if code == "QUOTA_EXCEEDED" or status == 429:
        return outcome.retry(reason, max(after or 0.0, FCM_QUOTA_PAUSE))
    if code in _FCM_RETRY:
        return outcome.retry(reason, after)
    if code == "UNAUTHENTICATED" or (status == 401 and not code):
        return outcome.config_alarm(reason, renew_credential=True)
    if code in _FCM_ALARM or status in (401, 403, 404):
        # 404 without UNREGISTERED: the project in the URL does not exist.
        return outcome.config_alarm(reason)
    return _fallback(status, reason, after)


def apns(status: int, headers: Mapping[str, str], body: bytes, now: float) -> PushOutcome:
    """Classify an APNs answer (``:status`` and the JSON ``reason``)."""
    if status == 200:
        return outcome.delivered(headers.get("apns-id", ""))
    reason = str(_json(body).get("reason", "")) or f"HTTP {status}"
    if reason in _APNS_GONE or status == 410:
        return outcome.token_gone(reason)
    if reason in _APNS_FLAGGED:
        return outcome.token_flagged(
            f"{reason} (a sandbox token sent to production, or the reverse?)"
        )
    if reason in _APNS_ALARM:
        return outcome.config_alarm(reason)
    if reason in _APNS_RENEW:
        return outcome.config_alarm(reason, renew_credential=True)
    after = retry_after(headers, now)
    if reason in _APNS_RETRY:
        return outcome.retry(reason, after)
    return _fallback(status, reason, after)


def webhook(status: int, headers: Mapping[str, str], now: float) -> PushOutcome:
    """Classify a webhook receiver's answer (its contract is in docs/push.md)."""
    if 200 <= status < 300:
        return outcome.delivered(headers.get("x-request-id", ""))
    reason = f"HTTP {status}"
    if 300 <= status < 400:
        return outcome.config_alarm(f"{reason}: redirected; configure the final https URL")
    if status in (404, 410):
        return outcome.token_gone(reason)
    if status in (401, 403):
        return outcome.config_alarm(f"{reason}: the receiver refuses the signature")
    after = retry_after(headers, now)
    if status in (408, 425):
        return outcome.retry(reason, after)
    return _fallback(status, reason, after)
