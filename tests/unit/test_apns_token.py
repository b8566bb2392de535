"""APNs provider tokens: one per time window, the same in every process."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mpg import errors
from mpg.server.push import apnstoken

START = 1_800_000_000 - 1_800_000_000 % 2400


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def tokens_at(key_pem: bytes, now: list[float]) -> apnstoken.ProviderTokens:
    return apnstoken.ProviderTokens(
        "KEY1234567", "TEAM123456", lambda: key_pem, clock=lambda: now[0]
    )


def test_two_processes_make_the_identical_token_in_one_window(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    now = [START + 10.0]
    first, second = tokens_at(pem(key), now), tokens_at(pem(key), [START + 2000.0])
    assert first.current() == second.current()


def test_the_token_verifies_with_kid_iss_and_the_window_start(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    token = tokens_at(pem(key), [START + 100.0]).current()
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567"}
    claims = jwt.decode(
        token, key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims == {"iss": "TEAM123456", "iat": START}


def test_the_next_window_gives_a_new_token(key: ec.EllipticCurvePrivateKey) -> None:
    now = [START + 10.0]
    tokens = tokens_at(pem(key), now)
    first = tokens.current()
    now[0] = START + 2399.0
    assert tokens.current() == first
    now[0] = START + 2400.0
    assert tokens.current() != first


def test_renew_reads_a_replaced_key(key: ec.EllipticCurvePrivateKey) -> None:
    files = [pem(key)]
    tokens = apnstoken.ProviderTokens("K", "T", lambda: files[0], clock=lambda: START + 1.0)
    before = tokens.current()
    assert tokens.renew() == before  # same key on disk: same token
    files[0] = pem(ec.generate_private_key(ec.SECP256R1()))
    assert tokens.renew() != before


def test_a_window_outside_apples_20_to_60_minutes_is_refused(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    with pytest.raises(ValueError, match="20 to 60 minutes"):
        apnstoken.ProviderTokens("K", "T", lambda: pem(key), window=600)


def test_a_key_that_is_not_p256_is_a_config_error() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(errors.ConfigError, match="EC P-256"):
        apnstoken.ProviderTokens("K", "T", lambda: pem(rsa_key), where="apns key")


def test_a_file_that_is_no_key_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="not a PEM private key"):
        apnstoken.ProviderTokens("K", "T", lambda: b"hello", where="apns key")
