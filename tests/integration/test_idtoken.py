"""ID-token registration checks against an OIDC issuer served over HTTPS on loopback
(:mod:`oidc_issuer`: an Entra-style discovery document and key set, tokens signed with
PyJWT)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme
from clocks import ManualClock
from oidc_issuer import (
    CLIENT_ID,
    EC_KEY,
    OTHER_RSA_KEY,
    OTHER_TENANT,
    RSA_KEY,
    TENANT,
    Issuer,
    claims,
    ec_jwk,
    rsa_jwk,
    sign,
)

from mpg import config, errors
from mpg.server import idtoken, jwks


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def issuer(ca: trustme.CA) -> Iterator[Issuer]:
    yield from Issuer().serve(ca)


@pytest.fixture
def client(ca: trustme.CA) -> Iterator[httpx.Client]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with httpx.Client(verify=context, timeout=10) as http_client:
        yield http_client


def entry(provider: Issuer, **overrides: Any) -> config.IdTokenIssuer:
    values: dict[str, Any] = {
        "issuer": provider.discovery_issuer,
        "client_id": CLIENT_ID,
        "discovery_url": provider.base + "/common/v2.0/.well-known/openid-configuration",
        "groups": [{"tenant": TENANT, "group": "north"}],
    }
    values.update(overrides)
    return config.IdTokenIssuer.model_validate(values)


def verifier(
    provider: Issuer, client: httpx.Client, clock: ManualClock | None = None, **overrides: Any
) -> tuple[idtoken.IdTokenVerifier, jwks.KeySetCache]:
    configured = entry(provider, **overrides)
    cache = jwks.KeySetCache(
        jwks.fetcher(
            client, discovery_url=configured.key_set_discovery_url(), issuer=configured.issuer
        ),
        ttl=3600,
        min_refetch=60,
        clock=clock or ManualClock(1000.0),
    )
    checker = idtoken.IdTokenVerifier(
        [configured], {configured.issuer: cache}, algorithms=("RS256", "ES256"), leeway=30
    )
    return checker, cache


def any_domain(group: str, domain: str) -> bool:
    return True


def refusal(
    checker: idtoken.IdTokenVerifier, token: str, nonce: str | None = None
) -> errors.IdTokenRefused:
    with pytest.raises(errors.IdTokenRefused) as caught:
        checker.verify(token, domain_is_verified=any_domain, nonce=nonce)
    assert caught.value.detail in str(caught.value)
    return caught.value


def test_an_entra_style_token_signed_rs256_maps_its_tenant_to_a_group(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    verified = checker.verify(
        sign(claims(issuer)), domain_is_verified=any_domain, nonce="n-0S6_WzA2Mj"
    )
    assert verified.tenant == TENANT
    assert verified.issuer == f"{issuer.base}/{TENANT}/v2.0"
    assert verified.groups == (idtoken.GroupMatch("north", "Anna.Meier@Example.COM"),)


def test_an_es256_token_is_accepted(issuer: Issuer, client: httpx.Client) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1"), ec_jwk(EC_KEY, "e1")]
    checker, _ = verifier(issuer, client)
    verified = checker.verify(
        sign(claims(issuer), EC_KEY, "e1", "ES256"), domain_is_verified=any_domain
    )
    assert verified.groups[0].group == "north"


def test_the_settings_build_a_verifier_that_fetches_through_discovery(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    settings = config.ServerSettings(id_token_issuers=(entry(issuer),))
    checker = idtoken.verifier_from_settings(settings, client)
    verified = checker.verify(sign(claims(issuer)), domain_is_verified=any_domain)
    assert verified.subject == claims(issuer)["sub"]
    assert issuer.key_fetches == 1


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"iss": "https://login.example.net/other/v2.0"}, "wrong_issuer"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not_yet_valid"),
        ({"iat": int(time.time()) + 3600}, "not_yet_valid"),
        ({"tid": OTHER_TENANT}, "unmapped_tenant"),
        ({"sub": None}, "missing_claim"),
    ],
)
def test_a_token_failing_a_claim_check_is_refused_with_its_reason(
    issuer: Issuer, client: httpx.Client, overrides: dict[str, Any], code: str
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    assert refusal(checker, sign(claims(issuer, **overrides))).code == code


def test_an_expiry_within_the_leeway_is_still_accepted(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    token = sign(claims(issuer, exp=int(time.time()) - 5))
    assert checker.verify(token, domain_is_verified=any_domain).tenant == TENANT


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    assert refusal(checker, sign(claims(issuer), OTHER_RSA_KEY)).code == "bad_signature"


def test_a_token_naming_an_unknown_kid_is_refused(issuer: Issuer, client: httpx.Client) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    assert refusal(checker, sign(claims(issuer), kid="nope")).code == "unknown_key"


def test_a_wrong_nonce_is_refused_and_a_missing_one_too(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    assert refusal(checker, sign(claims(issuer)), nonce="other").code == "nonce_mismatch"
    assert refusal(checker, sign(claims(issuer, nonce=None)), nonce="").code == "nonce_mismatch"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_none_and_hmac_with_the_public_key_are_refused(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    body = _b64(json.dumps(claims(issuer)).encode())
    unsigned = _b64(b'{"alg":"none","kid":"k1"}') + "." + body + "."
    assert refusal(checker, unsigned).code == "algorithm_not_allowed"
    # The classic confusion: HS256 keyed with the issuer's public key, which anyone has.
    head = _b64(b'{"alg":"HS256","kid":"k1","typ":"JWT"}')
    public = json.dumps(issuer.keys[0]).encode()
    mac = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert refusal(checker, f"{head}.{body}.{_b64(mac)}").code == "algorithm_not_allowed"


def test_a_token_whose_alg_does_not_fit_the_key_type_is_refused(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [ec_jwk(EC_KEY, "e1")]
    checker, _ = verifier(issuer, client)
    assert refusal(checker, sign(claims(issuer), RSA_KEY, "e1")).code == "bad_signature"


def test_garbage_is_refused_as_malformed(issuer: Issuer, client: httpx.Client) -> None:
    checker, _ = verifier(issuer, client)
    assert refusal(checker, "not.a.token").code == "malformed"
    assert refusal(checker, "x" * (idtoken.MAX_TOKEN_CHARS + 1)).code == "malformed"


def test_a_rotated_key_is_picked_up_by_one_refetch(issuer: Issuer, client: httpx.Client) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    clock = ManualClock(1000.0)
    checker, cache = verifier(issuer, client, clock)
    checker.verify(sign(claims(issuer)), domain_is_verified=any_domain)
    issuer.keys = [rsa_jwk(OTHER_RSA_KEY, "k2")]
    clock.now += 61  # past min_refetch, well within the ttl
    verified = checker.verify(
        sign(claims(issuer), OTHER_RSA_KEY, "k2"), domain_is_verified=any_domain
    )
    assert verified.tenant == TENANT
    assert (cache.fetches, issuer.key_fetches) == (2, 2)


def test_a_flood_of_random_kids_fetches_the_key_set_at_most_once_per_interval(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    clock = ManualClock(1000.0)
    checker, _ = verifier(issuer, client, clock)
    checker.verify(sign(claims(issuer)), domain_is_verified=any_domain)
    clock.now += 61
    for _ in range(50):
        token = sign(claims(issuer), kid=uuid.uuid4().hex)
        assert refusal(checker, token).code == "unknown_key"
        clock.now += 1
    # One fetch at start, one for the first unknown kid, one after 60 more seconds.
    assert issuer.key_fetches == 2
    clock.now += 20
    refusal(checker, sign(claims(issuer), kid="again"))
    assert issuer.key_fetches == 3


def test_a_group_claim_rule_picks_groups_and_the_address_needs_a_verified_domain(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(
        issuer,
        client,
        group_claim="roles",
        groups=[
            {"tenant": TENANT, "claim_value": "Dispatch", "group": "north"},
            {"tenant": TENANT, "claim_value": "Field", "group": "south"},
            {"tenant": TENANT, "claim_value": "Admin", "group": "west"},
        ],
    )
    token = sign(claims(issuer, roles=["Dispatch", "Field"]))
    verified = checker.verify(
        token, domain_is_verified=lambda group, domain: (group, domain) == ("south", "example.com")
    )
    assert verified.groups == (
        idtoken.GroupMatch("north", None),
        idtoken.GroupMatch("south", "Anna.Meier@Example.COM"),
    )
    assert refusal(checker, sign(claims(issuer, roles=["Guest"]))).code == "unmapped_tenant"


def test_an_email_claim_alone_never_maps_a_group(issuer: Issuer, client: httpx.Client) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    checker, _ = verifier(issuer, client)
    token = sign(claims(issuer, tid=OTHER_TENANT, email="boss@example.com"))
    assert refusal(checker, token).code == "unmapped_tenant"


def test_a_discovery_document_naming_another_issuer_lends_no_keys(
    issuer: Issuer, client: httpx.Client
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    issuer.discovery_issuer = "https://evil.example/{tenantid}/v2.0"
    checker, _ = verifier(issuer, client, issuer=issuer.base + "/{tenantid}/v2.0")
    with pytest.raises(errors.KeySetUnavailable, match="expected"):
        checker.verify(sign(claims(issuer)), domain_is_verified=any_domain)
    assert issuer.key_fetches == 0


def test_an_unreachable_issuer_is_reported_as_unavailable(client: httpx.Client) -> None:
    cache = jwks.KeySetCache(
        jwks.fetcher(client, jwks_uri="https://127.0.0.1:9/keys", issuer="https://x"),
        ttl=60,
        min_refetch=60,
    )
    with pytest.raises(errors.KeySetUnavailable, match=r"127\.0\.0\.1:9"):
        cache.key("k1")
