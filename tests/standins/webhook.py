"""A webhook receiver on loopback that checks MPG's HMAC signature as docs/push.md tells."""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import trustme

from mpg import config, errors
from mpg.wire import push
from standins.common import Script, ca_file, serve_https


class WebhookStandIn:
    """Accepts signed pushes at ``/push``; refuses bad or replayed signatures with 401."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.script = Script()
        self.url = ""
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []
        #: Called with each accepted push's body (as a phone acts on a push), if set.
        self.on_push: Callable[[dict[str, Any]], None] | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def serve(self, ca: trustme.CA) -> Iterator[WebhookStandIn]:
        """Run until the generator is closed."""
        for base in serve_https(ca, self._handle):
            self.url = base + "/push"
            yield self

    def forget_signatures(self) -> None:
        """Forget the signatures seen: a retry within the same second (a test whose clock
        is moved by hand) repeats the timestamp and so the signature, as a replay does."""
        with self._lock:
            self._seen.clear()

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if (method, path) != ("POST", "/push"):
            return 404, {}, b""
        signature = headers.get(push.WEBHOOK_SIGNATURE_HEADER.lower(), "")
        try:
            push.verify_webhook(
                (self.secret,),
                headers.get(push.WEBHOOK_TIMESTAMP_HEADER.lower(), ""),
                signature,
                body,
            )
        except errors.WireError as exc:
            with self._lock:
                self.refused.append(str(exc))
            return 401, {}, b""
        with self._lock:
            if signature in self._seen:
                self.refused.append("replayed")
                return 401, {}, b""
            self._seen.add(signature)
        scripted = self.script.next()
        if scripted is not None:
            return scripted.status, dict(scripted.headers), scripted.body
        pushed = json.loads(body)
        with self._lock:
            self.received.append(pushed)
        if self.on_push is not None:
            self.on_push(pushed)
        return 204, {}, b""


def provider_entry(
    receiver: WebhookStandIn,
    ca: trustme.CA,
    folder: pathlib.Path,
    *,
    name: str = "hook",
    groups: tuple[str, ...] = ("*",),
) -> config.PushProvider:
    """A ``[[server.push_providers]]`` entry pushing to ``receiver``; its secret and the
    stand-in's CA are written to ``folder`` (the secret readable by its owner only)."""
    secret = folder / "hook.secret"
    secret.write_bytes(receiver.secret)
    secret.chmod(0o600)
    return config.PushProvider(
        name=name,
        kind="webhook",
        groups=groups,
        url=receiver.url,
        secret_file=secret,
        ca_bundle=ca_file(ca, folder),
    )
