"""An Entra-style OpenID Connect identity provider on loopback, for ID-token tests.

The issuer is a tiny ``http.server`` behind TLS (trustme) serving a multi-tenant
discovery document and a JWKS made of keys generated here; tokens are signed with PyJWT.

For the admin console's sign-in it is also a single-tenant provider
(:meth:`Issuer.console_issuer`) with an authorization endpoint, which signs in the
person :attr:`Issuer.person` at once (as if they had entered their password there)
and redirects back with a code, and a token endpoint, which redeems a code once,
checks its PKCE verifier and redirect URI and answers with an ID token.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
OTHER_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


class Issuer:
    """The loopback identity provider: discovery document and a swappable key set."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.key_fetches = 0
        self.base = ""
        self.discovery_issuer = ""
        #: Claims of the person the authorization endpoint signs in (console sign-in).
        self.person: dict[str, Any] = {}
        #: Claims replacing the ID token's (e.g. a wrong nonce), for refusal tests.
        self.token_overrides: dict[str, Any] = {}
        #: The query of each authorization request, in order.
        self.authorize_requests: list[dict[str, str]] = []
        self._codes: dict[str, dict[str, str]] = {}

    def console_issuer(self) -> str:
        """The single-tenant issuer the console signs in with."""
        return f"{self.base}/{TENANT}/v2.0"

    def _authorize(self, query: dict[str, str]) -> str:
        """Sign :attr:`person` in; the URL the browser is sent back to."""
        self.authorize_requests.append(query)
        code = secrets.token_urlsafe(16)
        self._codes[code] = query
        back = {"code": code, "state": query.get("state", "")}
        return query["redirect_uri"] + "?" + urllib.parse.urlencode(back)

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Redeem a code once: the ID token, or an OAuth error."""
        asked = self._codes.pop(form.get("code", ""), None)
        if asked is None or form.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if (
            asked.get("code_challenge_method") != "S256"
            or base64.urlsafe_b64encode(digest).decode().rstrip("=") != asked.get("code_challenge")
            or form.get("redirect_uri") != asked.get("redirect_uri")
            or form.get("client_id") != asked.get("client_id")
        ):
            return 400, {"error": "invalid_grant", "error_description": "PKCE or redirect_uri"}
        payload = claims(self, nonce=asked.get("nonce"), **self.person)
        payload.update(self.token_overrides)
        return 200, {"token_type": "Bearer", "id_token": sign(payload)}

    def serve(self, ca: trustme.CA) -> Iterator[Issuer]:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, raw_query = self.path.partition("?")
                query = dict(urllib.parse.parse_qsl(raw_query))
                if path == "/common/v2.0/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.discovery_issuer,
                        "jwks_uri": issuer.base + "/common/discovery/v2.0/keys",
                    }
                elif path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.console_issuer(),
                        "authorization_endpoint": f"{issuer.base}/{TENANT}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{issuer.base}/{TENANT}/oauth2/v2.0/token",
                        "jwks_uri": issuer.base + "/common/discovery/v2.0/keys",
                    }
                elif path == "/common/discovery/v2.0/keys":
                    issuer.key_fetches += 1
                    body = {"keys": issuer.keys}
                elif path == f"/{TENANT}/oauth2/v2.0/authorize":
                    self.send_response(302)
                    self.send_header("Location", issuer._authorize(query))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                else:
                    self.send_error(404)
                    return
                self._json(200, body)

            def do_POST(self) -> None:
                if self.path != f"/{TENANT}/oauth2/v2.0/token":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                self._json(*issuer._token(form))

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{server.server_address[1]}"
        self.discovery_issuer = self.base + "/{tenantid}/v2.0"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def claims(issuer: Issuer, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    tenant = overrides.get("tid", TENANT)
    base = {
        "iss": f"{issuer.base}/{tenant}/v2.0",
        "aud": CLIENT_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": TENANT,
        "email": "Anna.Meier@Example.COM",
        "nonce": "n-0S6_WzA2Mj",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = RSA_KEY, kid: str = "k1", alg: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})
