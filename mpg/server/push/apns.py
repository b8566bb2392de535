"""Apple Push Notification service over HTTP/2 with token authentication (docs/push.md).

One HTTP/2 connection (httpx with h2) carries many pushes. The provider token comes from
:class:`~mpg.server.push.apnstoken.ProviderTokens`, identical in every server process.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Final, Literal

import httpx

from mpg import errors
from mpg.server.push import classify, outcome
from mpg.server.push.apnstoken import ProviderTokens
from mpg.server.push.base import PushRequest, post, with_renewal
from mpg.server.push.outcome import PushOutcome
from mpg.wire import push

ENDPOINTS: Final = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}
#: Seconds APNs keeps trying a phone that is off before it drops the push.
DEFAULT_TIME_TO_LIVE: Final = 24 * 3600


class ApnsProvider:
    """One app (topic) of one Apple developer team, in one environment."""

    def __init__(
        self,
        name: str,
        tokens: ProviderTokens,
        topic: str,
        *,
        environment: Literal["production", "sandbox"] = "production",
        endpoint: str = "",
        time_to_live: int = DEFAULT_TIME_TO_LIVE,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._tokens = tokens
        self._topic = topic
        self._base = (endpoint or ENDPOINTS[environment]).rstrip("/")
        self._ttl = time_to_live
        self._clock = clock
        self._client = httpx.Client(http2=True, verify=verify, timeout=timeout)

    def _attempt(self, request: push.ApnsRequest, renew: bool) -> PushOutcome:
        try:
            token = self._tokens.renew() if renew else self._tokens.current()
        except errors.ConfigError as exc:
            return outcome.config_alarm(str(exc))
        headers = {**request.headers, "authorization": f"bearer {token}"}
        answer = post(self._client, self._base + request.path, headers, request.body)
        if isinstance(answer, PushOutcome):
            return answer
        return classify.apns(answer.status, answer.headers, answer.body, self._clock())

    def send(self, request: PushRequest) -> PushOutcome:
        """One push; a refused provider token is made again (key re-read) and tried once more."""
        now = self._clock()
        try:
            apns_request = push.apns_request(
                request.notice,
                request.token,
                self._topic,
                expiration=int(now) + self._ttl if self._ttl else 0,
                content=request.content,
            )
        except errors.ValidationError as exc:
            return outcome.token_flagged(str(exc))
        return with_renewal(lambda renew: self._attempt(apns_request, renew))

    def close(self) -> None:
        """Close the HTTP/2 connection."""
        self._client.close()
