"""The key-set cache's refresh rules, with a counted fetch function and a set clock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from clocks import ManualClock
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from mpg import errors
from mpg.server import jwks


def _jwk(kid: str, **extra: Any) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**ECAlgorithm.to_jwk(key, as_dict=True), "kid": kid, **extra}


class Source:
    def __init__(self, *kids: str) -> None:
        self.document: dict[str, Any] = {"keys": [_jwk(kid) for kid in kids]}
        self.calls = 0
        self.down = False

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise errors.KeySetUnavailable("issuer down")
        return self.document


def test_keys_are_fetched_again_after_the_ttl() -> None:
    source, clock = Source("a"), ManualClock()
    cache = jwks.KeySetCache(source, ttl=100, min_refetch=10, clock=clock)
    cache.key("a")
    clock.now = 99
    cache.key("a")
    assert source.calls == 1
    clock.now = 100
    cache.key("a")
    assert source.calls == 2


def test_cached_keys_stay_in_use_while_the_issuer_is_down() -> None:
    source, clock = Source("a"), ManualClock()
    cache = jwks.KeySetCache(source, ttl=100, min_refetch=10, clock=clock)
    cache.key("a")
    source.down = True
    clock.now = 200
    assert cache.key("a").key_id == "a"
    assert source.calls == 2


def test_an_issuer_down_at_the_first_fetch_is_reported() -> None:
    source = Source("a")
    source.down = True
    cache = jwks.KeySetCache(source, ttl=100, min_refetch=10, clock=ManualClock())
    with pytest.raises(errors.KeySetUnavailable, match="issuer down"):
        cache.key("a")


def test_symmetric_encryption_and_kidless_keys_are_left_out_of_a_key_set() -> None:
    document = {
        "keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            _jwk("enc", use="enc"),
            {k: v for k, v in _jwk("x").items() if k != "kid"},
            _jwk("good"),
            "junk",
        ]
    }
    assert list(jwks.parse_key_set(document)) == ["good"]


def test_a_key_set_without_a_keys_list_is_unavailable() -> None:
    with pytest.raises(errors.KeySetUnavailable, match="'keys'"):
        jwks.parse_key_set({"keys": "nope"})


def test_plain_http_key_urls_are_refused() -> None:
    with httpx.Client() as client, pytest.raises(errors.ConfigError, match="not an https URL"):
        jwks.fetcher(client, jwks_uri="http://idp.example/keys", issuer="https://idp.example")
