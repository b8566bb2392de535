"""The default provider: writes the push to the log and sends nothing."""

from __future__ import annotations

import structlog

from mpg.server.push import outcome
from mpg.server.push.base import PushRequest, token_tag
from mpg.server.push.outcome import PushOutcome
from mpg.wire.push import collapse_id, data_fields

_log = structlog.get_logger("mpg.push")


class LogProvider:
    """Every push is "delivered" to the log (a group with no real provider configured)."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    def send(self, request: PushRequest) -> PushOutcome:
        """Log the notice (never its content, the token only as a fingerprint)."""
        _log.info(
            "push_logged",
            provider=self.name,
            token=token_tag(request.token),
            collapse_id=collapse_id(request.notice),
            **data_fields(request.notice),
        )
        return outcome.delivered()

    def close(self) -> None:
        """Nothing to close."""
