"""The interface every push provider has, and what they share.

``Provider.send(PushRequest) -> PushOutcome`` never raises for anything the network
or the provider does: a refused connection, a timeout, a 5xx and a dead token all come
back classified (:mod:`mpg.server.push.outcome`). It raises only for programming
errors, so a job worker can call it in a loop and act on the outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from typing import Protocol

import httpx

from mpg.server.push import outcome
from mpg.server.push.outcome import PushOutcome
from mpg.wire.push import Notice, NoticeContent


@dataclasses.dataclass(frozen=True, slots=True)
class PushRequest:
    """One push to one device token. ``content`` only for groups that allow it."""

    token: str
    notice: Notice
    content: NoticeContent | None = None


class Provider(Protocol):
    """A push service one group's devices are reached through."""

    #: The configured name (``[[server.push_providers]] name``), for logs and alarms.
    name: str

    def send(self, request: PushRequest) -> PushOutcome:
        """Send one push; the provider's answer classified, never an exception."""
        ...

    def close(self) -> None:
        """Close connections; the provider is not used afterwards."""
        ...


def token_tag(token: str) -> str:
    """A short fingerprint of a device token for logs (the token itself is personal data)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as the classifiers take it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def post(
    client: httpx.Client, url: str, headers: Mapping[str, str], body: bytes
) -> Answer | PushOutcome:
    """POST and read the answer; a transport failure is a RETRY outcome, not an exception."""
    try:
        response = client.post(url, headers=dict(headers), content=body)
    except httpx.TimeoutException as exc:
        return outcome.retry(f"timeout: {type(exc).__name__}")
    except httpx.RequestError as exc:  # connection, TLS, HTTP/2 protocol, undecodable body
        return outcome.retry(f"connection failed: {exc or type(exc).__name__}")
    return Answer(response.status_code, response.headers, response.content)


def with_renewal(attempt: Callable[[bool], PushOutcome]) -> PushOutcome:
    """``attempt(False)``; if the provider refused our credential, ``attempt(True)`` once
    (renewing it first). A second refusal is the configuration alarm it says it is."""
    first = attempt(False)
    if not first.renew_credential:
        return first
    second = attempt(True)
    if not second.renew_credential:
        return second
    return dataclasses.replace(
        second,
        reason=second.reason + " (again after renewing the credential)",
        renew_credential=False,
    )
