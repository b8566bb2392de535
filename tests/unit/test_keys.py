"""Credentials, master keys and key wrapping."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpg import errors
from mpg.wire import keys

MASTER = bytes(range(32))


def test_new_credential_has_the_documented_shape() -> None:
    """Key id is 'k' + 8 hex digits and the secret 32 random bytes."""
    a, b = keys.new_credential(), keys.new_credential()
    assert re.fullmatch(r"k[0-9a-f]{8}", a.key_id)
    assert len(a.secret) == 32
    assert a.secret != b.secret


def test_secret_is_not_shown_in_repr() -> None:
    """Logging a credential does not leak its secret."""
    cred = keys.new_credential()
    assert cred.secret.hex() not in repr(cred)
    assert "secret" not in repr(cred)


@given(st.binary(min_size=32, max_size=32), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_credential_token_round_trips(secret: bytes, key_id: str) -> None:
    """format_credential and parse_credential are inverse."""
    cred = keys.Credential(key_id, secret)
    token = keys.format_credential(cred)
    assert "=" not in token
    assert keys.parse_credential(token) == cred


def test_credential_token_tolerates_surrounding_whitespace() -> None:
    """A token read from a file with its newline still parses."""
    cred = keys.new_credential()
    assert keys.parse_credential(f"  {keys.format_credential(cred)}\n") == cred


@pytest.mark.parametrize(
    ("token", "match"),
    [
        ("", "must look like"),
        ("k12345678", "must look like"),
        ("k1.k2.abc", "must look like"),
        (".abcd", "must look like"),
        ("bad id." + "A" * 43, "key id"),
        ("k12345678.not base64!", "not base64url"),
        (
            "k12345678." + base64.urlsafe_b64encode(bytes(16)).decode().rstrip("="),
            "32 bytes, got 16",
        ),
        (
            "k12345678." + base64.urlsafe_b64encode(bytes(33)).decode().rstrip("="),
            "32 bytes, got 33",
        ),
    ],
)
def test_malformed_credential_says_why(token: str, match: str) -> None:
    """Wrong shape, key id, encoding or length raise WireError with the reason."""
    with pytest.raises(errors.WireError, match=match):
        keys.parse_credential(token)


def test_credential_error_does_not_echo_the_secret() -> None:
    """The refusal message never contains the secret text."""
    secret_text = base64.urlsafe_b64encode(bytes(range(20))).decode().rstrip("=")
    with pytest.raises(errors.WireError) as info:
        keys.parse_credential(f"k12345678.{secret_text}")
    assert secret_text not in str(info.value)


def test_credential_refuses_wrong_secret_length() -> None:
    """A Credential is always 32 bytes of secret."""
    with pytest.raises(errors.WireError, match="32 bytes"):
        keys.Credential("k1", b"short")


def test_master_key_round_trips_in_both_base64_alphabets() -> None:
    """parse_master_key reads base64url and standard base64, with or without padding."""
    master = bytes([0xFB, 0xFF] * 16)  # bytes that differ between the two alphabets
    assert keys.parse_master_key(keys.format_master_key(master)) == master
    assert keys.parse_master_key(base64.b64encode(master).decode()) == master
    assert keys.parse_master_key(base64.urlsafe_b64encode(master).decode() + "\n") == master
    assert len(keys.new_master_key()) == 32


@pytest.mark.parametrize("text", ["", "!!!!", base64.b64encode(bytes(31)).decode(), "a" * 45])
def test_malformed_master_key_is_refused(text: str) -> None:
    """Not base64, or not 32 bytes: WireError."""
    with pytest.raises(errors.WireError, match="master key"):
        keys.parse_master_key(text)


def test_wrapped_key_unwraps_for_its_account_and_key_id() -> None:
    """wrap_key then unwrap_key with the same binding gives the secret back."""
    secret = keys.new_credential().secret
    wrapped = keys.wrap_key(MASTER, "erp-a@example.com", "k0000abcd", secret)
    assert secret not in wrapped
    assert keys.unwrap_key(MASTER, "erp-a@example.com", "k0000abcd", wrapped) == secret


@pytest.mark.parametrize(
    ("master", "account", "key_id"),
    [
        (bytes(32), "erp-a@example.com", "k0000abcd"),
        (MASTER, "erp-b@example.com", "k0000abcd"),
        (MASTER, "erp-a@example.com", "k0000abce"),
        (MASTER, "erp-a@example.co", "mk0000abcd"),
    ],
)
def test_wrapped_key_does_not_open_elsewhere(master: bytes, account: str, key_id: str) -> None:
    """Another master key, account or key id (even shifted characters) is refused."""
    wrapped = keys.wrap_key(MASTER, "erp-a@example.com", "k0000abcd", bytes(32))
    with pytest.raises(errors.WireError, match="does not open"):
        keys.unwrap_key(master, account, key_id, wrapped)


def test_altered_wrapped_key_is_refused() -> None:
    """A changed or truncated wrapped key is refused."""
    wrapped = keys.wrap_key(MASTER, "a", "k", bytes(32))
    altered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(errors.WireError):
        keys.unwrap_key(MASTER, "a", "k", altered)
    with pytest.raises(errors.WireError, match="malformed"):
        keys.unwrap_key(MASTER, "a", "k", wrapped[:5])


def test_wrap_refuses_wrong_key_sizes() -> None:
    """Master key and secret must both be 32 bytes."""
    with pytest.raises(errors.WireError, match="master key"):
        keys.wrap_key(b"short", "a", "k", bytes(32))
    with pytest.raises(errors.WireError, match="account key"):
        keys.wrap_key(MASTER, "a", "k", b"short")
