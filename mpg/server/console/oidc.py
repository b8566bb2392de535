"""Signing in to the console through OpenID Connect (Microsoft Entra ID compatible).

The authorization code flow with PKCE (S256), ``state`` and ``nonce``: :meth:`OidcClient.
start` makes a :class:`Flow` (kept in a short-lived cookie of this browser) and the
provider's authorization URL; on the way back :meth:`OidcClient.finish` checks the
``state`` against the cookie, redeems the code with the verifier (and the client secret,
when one is configured) at the token endpoint, and checks the ID token: signed by a key
of the issuer's key set (:mod:`mpg.server.jwks`) with an allowed asymmetric algorithm,
``iss`` the configured issuer exactly, ``aud`` the client id, inside ``exp``/``nbf``/
``iat`` with the configured leeway, and the flow's ``nonce``. The person's name comes
from ``name_claim``, the role from ``role_claim`` through the configured mapping (the
highest role any value maps to); a person with no mapped value is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import httpx
import jwt

from mpg import config, errors
from mpg.server import admins, jwks
from mpg.server.console.users import ConsoleUser

#: The cookie holding the flow between leaving for the provider and coming back.
FLOW_COOKIE: Final = "mpg_console_oidc"
#: Seconds a person has to sign in at the provider.
FLOW_SECONDS: Final = 600
#: Longest flow cookie looked at.
MAX_FLOW_CHARS: Final = 2000
#: Longest name taken from a claim (the session's column).
MAX_NAME: Final = 200
#: Claims every accepted ID token carries.
REQUIRED_CLAIMS: Final = ("iss", "aud", "exp", "iat", "sub", "nonce")


def _refused(reason: str, status: int = 403) -> errors.Refused:
    return errors.Refused(status, "sign_in_failed", reason)


@dataclasses.dataclass(frozen=True, slots=True)
class Flow:
    """One sign-in in progress: random ``state``, ``nonce`` and PKCE ``verifier``."""

    state: str
    nonce: str
    verifier: str
    next_path: str
    started: float

    def to_cookie(self) -> str:
        """The cookie value (nothing secret from this browser; bound to it by ``state``)."""
        raw = json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_cookie(cls, value: str) -> Flow | None:
        """The flow of a cookie value; None when it is not one."""
        if not value or len(value) > MAX_FLOW_CHARS:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            return cls(
                str(data["state"]),
                str(data["nonce"]),
                str(data["verifier"]),
                str(data["next_path"]),
                float(data["started"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def new_flow(next_path: str, now: float) -> Flow:
    """A flow with fresh random values."""
    return Flow(
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(64),
        next_path,
        now,
    )


def challenge(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _values(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def role_of(claims: Mapping[str, Any], claim: str, roles: Mapping[str, str]) -> str | None:
    """The highest console role the claim's values map to; None when none does."""
    mapped = [roles[v] for v in _values(claims.get(claim)) if v in roles]
    return max(mapped, key=admins.ROLES.index, default=None)


def name_of(claims: Mapping[str, Any], claim: str) -> str | None:
    """The person's name from ``claim``; None when the token has no usable one."""
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        return None
    return value.strip()


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    """What the discovery document says."""

    authorization: str
    token: str
    jwks_uri: str


class OidcClient:
    """The console's OpenID Connect client of one configured provider."""

    def __init__(
        self,
        settings: config.ConsoleOidc,
        http: httpx.Client,
        *,
        algorithms: tuple[str, ...],
        leeway: float,
        keys_ttl: float,
        keys_refetch: float,
    ) -> None:
        self.settings = settings
        self._http = http
        self._algorithms = algorithms
        self._leeway = leeway
        self._lock = threading.Lock()
        self._endpoints: Endpoints | None = None
        self._keys = jwks.KeySetCache(
            lambda: jwks.get_json(self._http, self.endpoints().jwks_uri),
            ttl=keys_ttl,
            min_refetch=keys_refetch,
        )

    def endpoints(self) -> Endpoints:
        """The provider's endpoints, from its discovery document (read once)."""
        with self._lock:
            if self._endpoints is None:
                url = self.settings.key_set_discovery_url()
                document = jwks.get_json(self._http, url)
                if document.get("issuer") != self.settings.issuer:
                    raise errors.KeySetUnavailable(
                        f"{url}: names issuer {document.get('issuer')!r}, "
                        f"expected {self.settings.issuer!r}"
                    )
                found = [document.get(k) for k in ("authorization_endpoint", "token_endpoint")]
                found.append(document.get("jwks_uri"))
                if not all(isinstance(v, str) for v in found):
                    raise errors.KeySetUnavailable(f"{url}: lacks an endpoint or jwks_uri")
                urls = [jwks.require_https(str(v), "an OpenID Connect endpoint") for v in found]
                self._endpoints = Endpoints(*urls)
            return self._endpoints

    def start(self, next_path: str, redirect_url: str) -> tuple[Flow, str]:
        """A new flow and the URL that sends the browser to the provider."""
        flow = new_flow(next_path, time.time())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "response_mode": "query",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_url,
                "scope": " ".join(self.settings.scopes),
                "state": flow.state,
                "nonce": flow.nonce,
                "code_challenge": challenge(flow.verifier),
                "code_challenge_method": "S256",
            }
        )
        return flow, f"{self.endpoints().authorization}?{query}"

    def finish(
        self, flow: Flow | None, params: Mapping[str, str], redirect_url: str
    ) -> ConsoleUser:
        """The user the provider's answer (``params`` of the callback) signs in."""
        if flow is None or time.time() - flow.started > FLOW_SECONDS:
            raise _refused("The sign-in took too long or was not started here; try again.", 400)
        if not hmac.compare_digest(params.get("state", "").encode(), flow.state.encode()):
            raise _refused("The answer does not belong to this sign-in (state); try again.", 400)
        if params.get("error"):
            detail = params.get("error_description", "")[:300]
            raise _refused(f"The identity provider refused: {params['error'][:100]} {detail}")
        code = params.get("code", "")
        if not code:
            raise _refused("The identity provider sent no code.", 400)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_url,
            "client_id": self.settings.client_id,
            "code_verifier": flow.verifier,
        }
        if self.settings.client_secret is not None:
            form["client_secret"] = self.settings.client_secret.get_secret_value()
        try:
            answer = jwks.post_form(self._http, self.endpoints().token, form)
        except errors.KeySetUnavailable as exc:
            raise _refused(f"The identity provider could not be asked: {exc}", 502) from None
        token = answer.get("id_token")
        if not isinstance(token, str):
            raise _refused("The identity provider sent no ID token.", 502)
        return self._user(self.verify(token, flow.nonce))

    def verify(self, token: str, nonce: str) -> dict[str, Any]:
        """The claims of ID token ``token`` after every check; errors.Refused otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in self._algorithms:
                raise _refused(f"The ID token's algorithm {algorithm!r} is not allowed.")
            key = self._keys.key(str(header.get("kid", "")))
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[str(algorithm)],
                audience=self.settings.client_id,
                issuer=self.settings.issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise _refused(f"The ID token was refused: {exc}") from None
        except errors.IdTokenRefused as exc:
            raise _refused(f"The ID token was refused: {exc}") from None
        except errors.KeySetUnavailable as exc:
            raise _refused(f"The identity provider's keys are unavailable: {exc}", 502) from None
        carried = claims.get("nonce")
        if not isinstance(carried, str) or not hmac.compare_digest(
            carried.encode(), nonce.encode()
        ):
            raise _refused("The ID token was refused: it is not for this sign-in (nonce).")
        return claims

    def _user(self, claims: Mapping[str, Any]) -> ConsoleUser:
        name = name_of(claims, self.settings.name_claim)
        if name is None:
            raise _refused(f"The ID token has no usable {self.settings.name_claim!r} claim.")
        role = role_of(claims, self.settings.role_claim, self.settings.roles)
        if role is None:
            raise _refused(
                f"{name} has no console role: none of the {self.settings.role_claim!r} "
                "values is mapped to one. Ask an administrator."
            )
        return ConsoleUser(name, role)
