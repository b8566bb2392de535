"""What a push says, and how each provider's request carries it (docs/push.md).

PURE: a :class:`Notice` in, the provider's request body (and APNs headers) out; the
webhook's HMAC signature and its check for receivers. No I/O.

Privacy is decided here: a notice holds only the group, the kind, a MessageId (or a
count), the priority and, for a publication, the message file's version. Subject and
content exist only in :class:`NoticeContent`, which a builder uses only when it is
given one; the registry (``mpg.server.push.registry``) gives one only to the groups
listed in ``server.push_content_groups``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import time
from typing import Any, Final

from mpg import errors

#: APNs refuses an ``apns-collapse-id`` over 64 bytes.
MAX_COLLAPSE_ID: Final = 64
#: APNs takes 4 KB of payload, FCM 4 KB of message; subject and text are each cut to
#: this many bytes of UTF-8 (not characters: 1000 characters of CJK text are 3 KB), so
#: both together stay well inside.
MAX_CONTENT_BYTES: Final = 1000
#: The localisation keys of a content-free alert: the app shows its own text.
ALERT_KEY_MESSAGE: Final = "mpg_new_message"
ALERT_KEY_RECALLED: Final = "mpg_message_recalled"
ALERT_KEY_FILE: Final = "mpg_new_publication"
#: Webhook headers (a receiver checks them with :func:`verify_webhook`).
WEBHOOK_TIMESTAMP_HEADER: Final = "MPG-Timestamp"
WEBHOOK_SIGNATURE_HEADER: Final = "MPG-Signature"
#: Seconds a webhook request stays acceptable to a receiver (either side of its clock).
WEBHOOK_WINDOW: Final = 300.0
#: Priorities that wake the phone at once (reference §4: E urgent, H high, N normal, L low).
_URGENT: Final = frozenset({"E", "H", "N"})
_HIGH_ANDROID: Final = frozenset({"E", "H"})


class NoticeKind(enum.StrEnum):
    """Why a device is pushed."""

    #: A message waits for the device (AlertFlag 1).
    MESSAGE = "message"
    #: A message the device was notified about was recalled: replace the notification.
    RECALL = "recall"
    #: The group's message file has a new version.
    FILE = "file"


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """What one push says. Never subject, content, addresses or accounts."""

    kind: NoticeKind
    group: str
    priority: str = "N"
    #: The message (MESSAGE, RECALL); empty when ``count`` is used instead.
    message_id: str = ""
    #: Messages waiting, when one push stands for several.
    count: int | None = None
    #: The message file's version (its strong ETag) for FILE notices.
    version: str = ""
    #: FILE notices of a category's file: the category ("" for the group's file).
    category: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("a notice needs its group")
        if self.kind is not NoticeKind.FILE and not self.message_id and self.count is None:
            raise ValueError(f"a {self.kind} notice needs a message_id or a count")
        if self.kind is NoticeKind.RECALL and not self.message_id:
            raise ValueError("a recall notice needs the recalled message_id")
        if self.kind is NoticeKind.FILE and not self.version:
            raise ValueError("a file notice needs the file's version")


@dataclasses.dataclass(frozen=True, slots=True)
class NoticeContent:
    """Subject and text shown in the notification: only for groups that chose so."""

    subject: str
    text: str = ""


def collapse_id(notice: Notice) -> str:
    """The id under which the phone shows a notice once, and a recall replaces it.

    A message and its recall share it (so the recall replaces the alert); a duplicate
    push after a crash collapses into the first. A publication collapses per group, so
    only the newest version's alert stays.
    """
    if notice.kind is NoticeKind.FILE:
        key = "f:" + notice.group + ("/" + notice.category if notice.category else "")
    elif notice.message_id:
        key = "m:" + notice.message_id
    else:
        key = "c:" + notice.group
    if len(key.encode()) <= MAX_COLLAPSE_ID:
        return key
    return "h:" + hashlib.sha256(key.encode()).hexdigest()[:48]


def data_fields(notice: Notice) -> dict[str, str]:
    """The notice as string pairs (FCM ``data`` takes strings only)."""
    fields = {"kind": str(notice.kind), "group": notice.group, "priority": notice.priority}
    if notice.message_id:
        fields["message_id"] = notice.message_id
    if notice.count is not None:
        fields["count"] = str(notice.count)
    if notice.version:
        fields["version"] = notice.version
    if notice.category:
        fields["category"] = notice.category
    return fields


def _alert_key(notice: Notice) -> str:
    return {
        NoticeKind.MESSAGE: ALERT_KEY_MESSAGE,
        NoticeKind.RECALL: ALERT_KEY_RECALLED,
        NoticeKind.FILE: ALERT_KEY_FILE,
    }[notice.kind]


def _cut(text: str) -> str:
    """``text`` within :data:`MAX_CONTENT_BYTES` of UTF-8, an ellipsis where it was cut."""
    data = text.encode()
    if len(data) <= MAX_CONTENT_BYTES:
        return text
    ellipsis = "…"
    room = MAX_CONTENT_BYTES - len(ellipsis.encode())
    # A character cut in two at the limit is dropped whole.
    return data[:room].decode(errors="ignore") + ellipsis


def fcm_message(notice: Notice, token: str, content: NoticeContent | None = None) -> dict[str, Any]:
    """The body of one FCM HTTP v1 ``messages:send`` request for ``token``.

    The notification carries localisation keys (the app supplies the words) unless
    ``content`` is given; its ``tag`` (and the ``collapse_key``) is the collapse id, so
    the recall's notification replaces the message's on the phone.
    """
    cid = collapse_id(notice)
    notification: dict[str, Any] = {"tag": cid}
    if content is None:
        notification["title_loc_key"] = _alert_key(notice)
    else:
        notification["title"] = _cut(content.subject)
        if content.text:
            notification["body"] = _cut(content.text)
    return {
        "message": {
            "token": token,
            "data": data_fields(notice),
            "android": {
                "collapse_key": cid,
                "priority": "HIGH" if notice.priority in _HIGH_ANDROID else "NORMAL",
                "notification": notification,
            },
        }
    }


@dataclasses.dataclass(frozen=True, slots=True)
class ApnsRequest:
    """The path, headers (without ``authorization``) and body of one APNs request."""

    path: str
    headers: dict[str, str]
    body: bytes


def apns_request(
    notice: Notice,
    token: str,
    topic: str,
    *,
    expiration: int,
    content: NoticeContent | None = None,
) -> ApnsRequest:
    """One APNs ``POST /3/device/<token>``: an alert with ``mutable-content`` (the app's
    notification service extension fetches the message over the sealed channel).

    ``expiration`` is the UNIX time after which APNs stops trying (0: once only).
    """
    if not token or not all(c in "0123456789abcdefABCDEF" for c in token):
        raise errors.ValidationError("token", "an APNs device token is hexadecimal")
    if content is None:
        alert: dict[str, Any] = {"loc-key": _alert_key(notice)}
    else:
        alert = {"title": _cut(content.subject)}
        if content.text:
            alert["body"] = _cut(content.text)
    body = {
        "aps": {"alert": alert, "mutable-content": 1, "thread-id": notice.group},
        "mpg": data_fields(notice),
    }
    headers = {
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-priority": "10" if notice.priority in _URGENT else "5",
        "apns-expiration": str(expiration),
        "apns-collapse-id": collapse_id(notice),
    }
    return ApnsRequest(f"/3/device/{token}", headers, _json(body))


def webhook_body(notice: Notice, token: str, content: NoticeContent | None = None) -> bytes:
    """The JSON a webhook receiver gets: the notice, its collapse id and the device's token."""
    body: dict[str, Any] = {**data_fields(notice), "collapse_id": collapse_id(notice)}
    body["token"] = token
    if content is not None:
        body["subject"] = _cut(content.subject)
        body["text"] = _cut(content.text)
    return _json(body)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def webhook_signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``, the signature header's value."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def webhook_headers(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body`` at ``now``."""
    timestamp = int(time.time() if now is None else now)
    return {
        "content-type": "application/json",
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
    }


def verify_webhook(
    secrets: tuple[bytes, ...],
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    now: float | None = None,
    window: float = WEBHOOK_WINDOW,
) -> None:
    """Raise :class:`errors.WireError` unless one of ``secrets`` signed ``body`` at a
    ``timestamp`` within ``window`` seconds of ``now`` (several secrets: during a rotation).

    A receiver also keeps the signatures it accepted for ``window`` seconds and refuses a
    repeat, so a captured request cannot be replayed inside the window either.
    """
    try:
        stamp = int(timestamp)
    except ValueError:
        raise errors.WireError(
            f"{WEBHOOK_TIMESTAMP_HEADER}: {timestamp[:20]!r} is no number"
        ) from None
    current = time.time() if now is None else now
    if abs(current - stamp) > window:
        raise errors.WireError(
            f"{WEBHOOK_TIMESTAMP_HEADER}: {stamp} is more than {window:.0f} s from now"
        )
    offered = [part.strip() for part in signature.split(",")]
    for secret in secrets:
        expected = webhook_signature(secret, stamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise errors.WireError(f"{WEBHOOK_SIGNATURE_HEADER}: no valid v1 signature")
