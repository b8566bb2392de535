"""A generic HTTPS webhook, signed with HMAC-SHA256 (docs/push.md, "Webhook")."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import httpx

from mpg.server.push import classify
from mpg.server.push.base import PushRequest, post
from mpg.server.push.outcome import PushOutcome
from mpg.wire import push


class WebhookProvider:
    """POSTs each push as JSON to ``url`` with ``MPG-Timestamp`` and ``MPG-Signature``."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: bytes,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._url = url
        self._secret = secret
        self._clock = clock
        self._client = httpx.Client(verify=verify, timeout=timeout)

    def send(self, request: PushRequest) -> PushOutcome:
        """One signed POST; the receiver's status classified."""
        body = push.webhook_body(request.notice, request.token, request.content)
        now = self._clock()
        answer = post(self._client, self._url, push.webhook_headers(self._secret, body, now), body)
        if isinstance(answer, PushOutcome):
            return answer
        return classify.webhook(answer.status, answer.headers, now)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
