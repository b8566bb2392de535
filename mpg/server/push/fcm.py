"""Firebase Cloud Messaging, HTTP v1 API (docs/push.md, "FCM").

An OAuth 2.0 access token is obtained with google-auth from the group's service-account
key (a JWT assertion signed with the key, sent to the key file's ``token_uri``) and
reused until google-auth finds it near expiry. The token request goes through the same
httpx client as the pushes, so both use the provider's TLS settings.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

import google.auth.exceptions
import google.auth.transport
import httpx
from google.oauth2 import service_account

from mpg import errors
from mpg.server.push import classify, outcome
from mpg.server.push.base import PushRequest, post, with_renewal
from mpg.server.push.outcome import PushOutcome
from mpg.wire import push

SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_ENDPOINT: Final = "https://fcm.googleapis.com"


class _Response(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxRequest(google.auth.transport.Request):
    """google-auth's transport interface over an httpx client."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        try:
            response = self._client.request(
                method,
                url,
                content=body,
                headers=dict(headers or {}),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                str(exc) or type(exc).__name__
            ) from exc
        return _Response(response)


def load_service_account(text: str, where: str) -> dict[str, Any]:
    """A service-account key file's JSON; ConfigError names ``where`` and what is missing."""
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise errors.ConfigError(f"{where}: not JSON ({exc})") from None
    if not isinstance(info, dict):
        raise errors.ConfigError(f"{where}: not a service-account key (a JSON object)")
    missing = [
        k for k in ("project_id", "client_email", "private_key", "token_uri") if not info.get(k)
    ]
    if missing:
        raise errors.ConfigError(f"{where}: service-account key lacks {', '.join(missing)}")
    return info


class FcmProvider:
    """One Firebase project: one ``messages:send`` request per device token."""

    def __init__(
        self,
        name: str,
        service_account_info: Mapping[str, Any],
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._client = httpx.Client(verify=verify, timeout=timeout)
        try:
            self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                dict(service_account_info), scopes=[SCOPE]
            )
        except ValueError as exc:
            raise errors.ConfigError(
                f"push provider {name}: bad service-account key: {exc}"
            ) from None
        project = str(service_account_info["project_id"])
        self._url = f"{endpoint.rstrip('/')}/v1/projects/{project}/messages:send"
        self._auth = HttpxRequest(self._client)
        self._lock = threading.Lock()

    def _access_token(self, renew: bool) -> str | PushOutcome:
        """The cached access token, fetched again when near expiry (or ``renew``)."""
        try:
            with self._lock:
                if renew or not self._credentials.valid:
                    self._credentials.refresh(self._auth)
                return str(self._credentials.token)
        except google.auth.exceptions.TransportError as exc:
            return outcome.retry(f"OAuth token endpoint unreachable: {exc}")
        except google.auth.exceptions.RefreshError as exc:
            if getattr(exc, "retryable", False):
                return outcome.retry(f"OAuth token refused for now: {exc}")
            return outcome.config_alarm(f"OAuth token refused: {exc}")
        except (google.auth.exceptions.GoogleAuthError, ValueError, TypeError, KeyError) as exc:
            # A 200 that is no token answer (a proxy's page): not the key's fault.
            return outcome.retry(f"OAuth token answer unreadable: {type(exc).__name__}")

    def _attempt(self, body: bytes, renew: bool) -> PushOutcome:
        token = self._access_token(renew)
        if isinstance(token, PushOutcome):
            return token
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        answer = post(self._client, self._url, headers, body)
        if isinstance(answer, PushOutcome):
            return answer
        return classify.fcm(answer.status, answer.headers, answer.body, time.time())

    def send(self, request: PushRequest) -> PushOutcome:
        """One push; an UNAUTHENTICATED answer renews the access token and tries once more."""
        message = push.fcm_message(request.notice, request.token, request.content)
        body = json.dumps(message, ensure_ascii=False).encode()
        return with_renewal(lambda renew: self._attempt(body, renew))

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
