"""The default provider writes the notice to the log and nothing of the message."""

from __future__ import annotations

import structlog

from mpg.server.push.base import PushRequest, token_tag
from mpg.server.push.logprovider import LogProvider
from mpg.server.push.outcome import OutcomeKind
from mpg.wire.push import Notice, NoticeContent, NoticeKind


def test_log_provider_logs_the_notice_with_a_fingerprint_of_the_token() -> None:
    notice = Notice(NoticeKind.MESSAGE, "acme", priority="H", message_id="m-1")
    request = PushRequest("device-token-123", notice, NoticeContent("Salary review", "secret"))
    with structlog.testing.capture_logs() as logged:
        result = LogProvider().send(request)
    assert result.kind is OutcomeKind.DELIVERED
    (event,) = logged
    assert event["event"] == "push_logged"
    assert (event["group"], event["message_id"], event["collapse_id"]) == ("acme", "m-1", "m:m-1")
    assert event["token"] == token_tag("device-token-123")
    text = repr(event)
    for word in ("device-token-123", "Salary review", "secret"):
        assert word not in text
