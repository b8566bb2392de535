"""An APNs endpoint on loopback: HTTP/2 over TLS (hypercorn), token authentication.

It refuses what Apple refuses: another HTTP version than 2, a provider token whose
ES256 signature does not verify with the team's public key or whose ``kid`` / ``iss``
are wrong (InvalidProviderToken), one older than an hour (ExpiredProviderToken), a
key's token changing less than 20 minutes after the last change
(TooManyProviderTokenUpdates), a missing or wrong ``apns-topic``, a push type,
priority, expiration or collapse id out of range, a device token that is not
hexadecimal (BadDeviceToken), a payload over 4 KB. A test scripts any other answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config

from standins.common import Script

_HEX = frozenset("0123456789abcdefABCDEF")
MAX_PAYLOAD = 4096
#: Apple's rule: a key's provider token changes at most once in 20 minutes.
TOKEN_UPDATE_INTERVAL = 20 * 60


class ApnsStandIn:
    """One team's key and one app's topic."""

    def __init__(
        self, public_key: ec.EllipticCurvePublicKey, key_id: str, team_id: str, topic: str
    ) -> None:
        self.public_key = public_key
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.script = Script()
        self.url = ""
        self.pushes: list[dict[str, Any]] = []
        self.raw_pushes: list[tuple[dict[str, str], bytes]] = []
        self.http_versions: set[str] = set()
        self.tokens_seen: list[str] = []
        self._last_token = ""
        self._last_change = 0.0
        self._lock = threading.Lock()

    def serve(self, ca: trustme.CA, tmp: Any) -> Iterator[ApnsStandIn]:
        """Run hypercorn (HTTP/2, TLS) in a thread until the generator is closed."""
        cert = ca.issue_cert("127.0.0.1")
        cert_file, key_file = tmp / "apns-cert.pem", tmp / "apns-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(100)
        port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket
        config.certfile, config.keyfile = str(cert_file), str(key_file)
        config.alpn_protocols = ["h2"]
        config.accesslog = config.errorlog = None
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(
            target=loop.run_until_complete,
            args=(serve(self._app, config, shutdown_trigger=stop.wait),),  # type: ignore[arg-type]
            daemon=True,
        )
        thread.start()
        self.url = f"https://127.0.0.1:{port}"
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)
            loop.close()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, out, data = self.handle(
            scope["http_version"], scope["method"], scope["path"], headers, body
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out.items()],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def handle(
        self, version: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Apple's checks in Apple's order, then the script, then acceptance."""
        with self._lock:
            self.http_versions.add(version)
        if version != "2":
            return _refuse(505, "HTTP/2 required")
        if method != "POST":
            return _refuse(405, "MethodNotAllowed")
        if not path.startswith("/3/device/"):
            return _refuse(404, "BadPath")
        problem = self._auth_problem(headers.get("authorization", ""))
        if problem:
            return problem
        problem = self._request_problem(path.removeprefix("/3/device/"), headers, body)
        if problem:
            return problem
        scripted = self.script.next()
        if scripted is not None:
            return scripted.status, dict(scripted.headers), scripted.body
        with self._lock:
            self.pushes.append({"token": path.removeprefix("/3/device/"), **json.loads(body)})
            self.raw_pushes.append((headers, body))
        return 200, {"apns-id": str(uuid.uuid4()).upper()}, b""

    def _auth_problem(self, authorization: str) -> tuple[int, dict[str, str], bytes] | None:
        token = authorization.removeprefix("bearer ")
        if not token or token == authorization:
            return _refuse(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self.public_key, algorithms=["ES256"], options={"verify_iat": False}
            )
        except jwt.InvalidTokenError:
            return _refuse(403, "InvalidProviderToken")
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return _refuse(403, "InvalidProviderToken")
        now = time.time()
        if not isinstance(claims.get("iat"), int) or now - claims["iat"] > 3600:
            return _refuse(403, "ExpiredProviderToken")
        with self._lock:
            self.tokens_seen.append(token)
            if token != self._last_token:
                if self._last_token and now - self._last_change < TOKEN_UPDATE_INTERVAL:
                    return _refuse(429, "TooManyProviderTokenUpdates")
                self._last_token, self._last_change = token, now
        return None

    def _request_problem(
        self, device: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        checks = [
            (not device or not set(device) <= _HEX, 400, "BadDeviceToken"),
            ("apns-topic" not in headers, 400, "MissingTopic"),
            (headers.get("apns-topic") != self.topic, 400, "DeviceTokenNotForTopic"),
            (headers.get("apns-push-type") not in ("alert", "background"), 400, "InvalidPushType"),
            (headers.get("apns-priority") not in ("5", "10"), 400, "BadPriority"),
            (not headers.get("apns-expiration", "0").isdigit(), 400, "BadExpirationDate"),
            (len(headers.get("apns-collapse-id", "").encode()) > 64, 400, "BadCollapseId"),
            (len(body) > MAX_PAYLOAD, 413, "PayloadTooLarge"),
            (not body, 400, "PayloadEmpty"),
        ]
        for failed, status, reason in checks:
            if failed:
                return _refuse(status, reason)
        try:
            payload = json.loads(body)
        except ValueError:
            return _refuse(400, "BadPayload")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return _refuse(400, "BadPayload")
        return None


def _refuse(status: int, reason: str) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"content-type": "application/json", "apns-id": str(uuid.uuid4()).upper()},
        json.dumps({"reason": reason}).encode(),
    )


def apns_error(reason: str, **extra: Any) -> dict[str, Any]:
    """A body as APNs writes it."""
    return {"reason": reason, **extra}
