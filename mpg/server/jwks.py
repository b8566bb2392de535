"""Signing keys of an OpenID Connect issuer: fetched over HTTPS, cached, rotation-aware.

An issuer publishes its keys as a JSON Web Key Set at ``jwks_uri``, which its discovery
document (``/.well-known/openid-configuration``) names. :class:`KeySetCache` keeps the
set for ``ttl`` seconds and, when a token names a key id it does not know (the issuer
rotated its keys), fetches it once more, but at most once per ``min_refetch`` seconds:
a flood of tokens with made-up key ids costs the issuer one request per interval, not
one per token. The I/O is here; the token checks are in :mod:`mpg.server.idtoken`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import httpx
import jwt

from mpg import errors

#: Largest discovery document or key set read (real ones are a few KiB).
MAX_DOCUMENT_BYTES: Final = 256 * 1024
#: Key types a signing key may have; symmetric ("oct") keys are never accepted.
_ASYMMETRIC: Final = frozenset({"RSA", "EC", "OKP"})

Fetch = Callable[[], dict[str, Any]]


def require_https(url: str, what: str) -> str:
    """``url`` if it is an https URL with a host; ConfigError naming ``what`` otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise errors.ConfigError(f"{what}: {url!r} is not an https URL")
    return url


def get_json(client: httpx.Client, url: str) -> dict[str, Any]:
    """The JSON object at ``url``, read to at most :data:`MAX_DOCUMENT_BYTES`.

    Raises :class:`errors.KeySetUnavailable` for a refused connection, a non-200
    answer, an oversized body or anything that is not a JSON object.
    """
    return _json_answer(client, "GET", url)


def post_form(client: httpx.Client, url: str, form: dict[str, str]) -> dict[str, Any]:
    """The JSON object answering a form POSTed to ``url`` (an issuer's token endpoint),
    with :func:`get_json`'s limits and refusals."""
    return _json_answer(client, "POST", url, form)


def _json_answer(
    client: httpx.Client, method: str, url: str, form: dict[str, str] | None = None
) -> dict[str, Any]:
    require_https(url, "key set URL" if form is None else "token endpoint")
    try:
        with client.stream(
            method, url, headers={"Accept": "application/json"}, data=form
        ) as response:
            if response.status_code != 200:
                raise errors.KeySetUnavailable(f"{url}: HTTP {response.status_code}")
            body = bytearray()
            for piece in response.iter_bytes():
                body += piece
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise errors.KeySetUnavailable(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise errors.KeySetUnavailable(f"{url}: {exc}") from exc
    try:
        document = json.loads(bytes(body))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise errors.KeySetUnavailable(f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise errors.KeySetUnavailable(f"{url}: not a JSON object")
    return document


def discover_jwks_uri(client: httpx.Client, discovery_url: str, issuer: str) -> str:
    """The ``jwks_uri`` of the discovery document at ``discovery_url``.

    The document's ``issuer`` must be ``issuer`` exactly (OpenID Connect Discovery §4.3;
    for Entra's multi-tenant endpoints that is the ``{tenantid}`` template itself), so a
    wrong URL cannot silently lend another issuer's keys.
    """
    document = get_json(client, discovery_url)
    if document.get("issuer") != issuer:
        raise errors.KeySetUnavailable(
            f"{discovery_url}: names issuer {document.get('issuer')!r}, expected {issuer!r}"
        )
    uri = document.get("jwks_uri")
    if not isinstance(uri, str):
        raise errors.KeySetUnavailable(f"{discovery_url}: no jwks_uri")
    try:
        return require_https(uri, "jwks_uri")
    except errors.ConfigError as exc:
        raise errors.KeySetUnavailable(f"{discovery_url}: {exc}") from None


def parse_key_set(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document by key id.

    Keys without a ``kid``, symmetric keys, keys for encryption (``use`` other than
    ``sig``) and keys PyJWT cannot load are left out: none of them may sign a token.
    """
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise errors.KeySetUnavailable("key set has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for raw in raw_keys:
        if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
            continue
        if raw.get("kty") not in _ASYMMETRIC or raw.get("use", "sig") != "sig":
            continue
        try:
            keys[raw["kid"]] = jwt.PyJWK(raw)
        except jwt.PyJWTError:
            continue
    return keys


class KeySetCache:
    """One issuer's signing keys, refreshed after ``ttl`` and on an unknown key id.

    ``fetch`` returns the JWKS document (see :func:`fetcher`). Thread-safe; at most one
    fetch runs at a time. ``fetches`` counts the fetches made (for tests and metrics).
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        ttl: float,
        min_refetch: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or min_refetch < 0:
            raise ValueError("ttl must be positive and min_refetch not negative")
        self._fetch = fetch
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self.fetches = 0

    def key(self, kid: str) -> jwt.PyJWK:
        """The key with id ``kid``.

        Raises :class:`errors.IdTokenRefused` (``unknown_key``) when the issuer does not
        have it, and :class:`errors.KeySetUnavailable` when the keys cannot be fetched
        and none are cached.
        """
        with self._lock:
            now = self._clock()
            age = float("inf") if self._fetched_at is None else now - self._fetched_at
            if age >= self._ttl or (kid not in self._keys and age >= self._min_refetch):
                self._refresh(now)
            found = self._keys.get(kid)
        if found is None:
            raise errors.IdTokenRefused("unknown_key", f"the issuer has no signing key {kid!r}")
        return found

    def _refresh(self, now: float) -> None:
        # The attempt counts even when it fails, so an unreachable issuer is not
        # retried on every token either; the last good keys stay in use meanwhile.
        self._fetched_at = now
        self.fetches += 1
        try:
            self._keys = parse_key_set(self._fetch())
        except errors.KeySetUnavailable:
            if not self._keys:
                raise


def fetcher(
    client: httpx.Client, *, jwks_uri: str = "", discovery_url: str = "", issuer: str
) -> Fetch:
    """A fetch function for :class:`KeySetCache`: from ``jwks_uri`` if given, else from
    the ``jwks_uri`` of the discovery document (looked up again on each fetch, so an
    issuer may move its key set)."""
    if jwks_uri:
        uri = require_https(jwks_uri, "jwks_uri")
        return lambda: get_json(client, uri)
    url = require_https(discovery_url, "discovery_url")
    return lambda: get_json(client, discover_jwks_uri(client, url, issuer))
