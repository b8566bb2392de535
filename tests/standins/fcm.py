"""An OAuth 2.0 token endpoint and an FCM HTTP v1 endpoint on loopback.

The token endpoint checks the JWT assertion google-auth signs with the service-account
key (RS256, ``iss`` the client e-mail, ``aud`` Google's token URI, the messaging scope) and
issues opaque access tokens. ``messages:send`` checks the bearer token is one it issued
and still live, the project in the path, and the request's JSON shape the way FCM
does (an INVALID_ARGUMENT naming the field); a test can script any FCM error answer.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mpg.server.push import classify
from standins.common import Script, json_answer, serve_https

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: The audience Google's token endpoint wants in the assertion, whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_SEND = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_MESSAGE_FIELDS = {"token", "data", "android", "apns", "notification", "webpush", "fcm_options"}


def fcm_error(
    status: int, rpc_status: str, error_code: str = "", field: str = ""
) -> dict[str, Any]:
    """An error body as FCM writes it (FcmError detail, BadRequest field violation)."""
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": classify.FCM_ERROR_TYPE, "errorCode": error_code})
    if field:
        details.append(
            {
                "@type": classify.BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field, "description": f"Invalid value at {field}"}],
            }
        )
    return {
        "error": {"code": status, "message": rpc_status, "status": rpc_status, "details": details}
    }


@functools.cache
def _service_key() -> rsa.RSAPrivateKey:
    """One service-account key per test process (making RSA keys is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FcmStandIn:
    """Both endpoints on one HTTPS server; ``script`` scripts ``messages:send`` answers."""

    def __init__(self, project_id: str = "mpg-test") -> None:
        self.project_id = project_id
        self.client_email = f"push@{project_id}.iam.gserviceaccount.com"
        self._key = _service_key()
        self.script = Script()
        self.token_script = Script()
        self.expires_in = 3600
        self.base = ""
        self.token_requests = 0
        self.pushes: list[dict[str, Any]] = []
        self.raw_pushes: list[bytes] = []
        #: Every request as received (path, headers, body), token requests included.
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        #: Called with each accepted push's message (as a phone acts on a push), if set.
        self.on_push: Callable[[dict[str, Any]], None] | None = None
        self._issued: set[str] = set()
        self._lock = threading.Lock()

    def serve(self, ca: trustme.CA) -> Iterator[FcmStandIn]:
        """Run until the generator is closed."""
        for base in serve_https(ca, self._handle):
            self.base = base
            yield self

    def service_account(self) -> dict[str, Any]:
        """A service-account key file whose ``token_uri`` points at this stand-in."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "1",
            "token_uri": self.base + "/token",
        }

    def revoke_tokens(self) -> None:
        """Forget every issued access token (as if they had expired at Google)."""
        with self._lock:
            self._issued.clear()

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append((path, headers, body))
        if method == "POST" and path == "/token":
            return self._token(body)
        match = _SEND.match(path)
        if method == "POST" and match:
            return self._send(match.group(1), headers, body)
        return json_answer(404, fcm_error(404, "NOT_FOUND"))

    def _token(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.token_requests += 1
        scripted = self.token_script.next()
        if scripted is not None:
            return scripted.status, {"content-type": "application/json"}, scripted.body
        form = urllib.parse.parse_qs(body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return json_answer(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                form["assertion"][0],
                self._key.public_key(),
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                issuer=self.client_email,
            )
        except (KeyError, jwt.InvalidTokenError) as exc:
            return json_answer(400, {"error": "invalid_grant", "error_description": str(exc)})
        if SCOPE not in str(claims.get("scope", "")).split():
            return json_answer(400, {"error": "invalid_scope"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._issued.add(token)
        return json_answer(
            200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    def _send(
        self, project: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            live = bearer in self._issued
        if not live:
            return json_answer(401, fcm_error(401, "UNAUTHENTICATED"))
        if project != self.project_id:
            return json_answer(404, fcm_error(404, "NOT_FOUND"))
        field = _shape_problem(body)
        if field:
            return json_answer(400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", field))
        scripted = self.script.next()
        if scripted is not None:
            return (
                scripted.status,
                {"content-type": "application/json", **dict(scripted.headers)},
                scripted.body,
            )
        with self._lock:
            self.raw_pushes.append(body)
            self.pushes.append(json.loads(body)["message"])
            number = len(self.pushes)
        if self.on_push is not None:
            self.on_push(self.pushes[number - 1])
        return json_answer(200, {"name": f"projects/{project}/messages/0:{number}"})


def _shape_problem(body: bytes) -> str:
    """The first field FCM would refuse, or "" when the request is well formed."""
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return "message"
    if not isinstance(message, dict):
        return "message"
    unknown = set(message) - _MESSAGE_FIELDS
    if unknown:
        return f"message.{sorted(unknown)[0]}"
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "message.token"
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "message.data"
    android = message.get("android", {})
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "message.android.priority"
    return ""
