"""Account credentials and the wrapping of their keys for storage at rest.

A credential is a key id and a 32-byte secret, handed to a gateway as one token
``<kid>.<base64url(secret) without padding>``. The server keeps each secret wrapped
with its master key (AES-256-GCM); the associated data binds the wrapped key to its
account and key id, so a wrapped key copied to another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
import secrets
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mpg import errors

SECRET_BYTES: Final = 32
_IV_BYTES: Final = 12
_WRAP_VERSION: Final = b"\x01"
_WRAP_CONTEXT: Final = b"mpg-key-wrap/v1"
_KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64: Final = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
#: First part of a device's bearer token for the JSON API (docs/devices.md, "The API").
DEVICE_TOKEN_PREFIX: Final = "mpgd"  # noqa: S105 - a label, not a secret
_DEVICE_PROOF_LABEL: Final = b"mpg device api v1"


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    """One key of an account: its id and its 32-byte secret (never shown in repr)."""

    key_id: str
    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise errors.WireError("key id must be 1-64 characters of A-Z a-z 0-9 _ -")
        if len(self.secret) != SECRET_BYTES:
            raise errors.WireError(
                f"credential secret must be {SECRET_BYTES} bytes, got {len(self.secret)}"
            )


def new_credential() -> Credential:
    """A fresh credential: key id ``k`` + 8 hex digits, 32 random bytes."""
    return Credential(key_id="k" + secrets.token_hex(4), secret=secrets.token_bytes(SECRET_BYTES))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode base64url or standard base64, padding optional; ValueError if neither."""
    if not _B64.fullmatch(text):
        raise ValueError("not base64")
    body = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc


def format_credential(credential: Credential) -> str:
    """The credential as its token ``<kid>.<base64url secret>``."""
    return f"{credential.key_id}.{_b64url(credential.secret)}"


def parse_credential(text: str) -> Credential:
    """Read a credential token (surrounding whitespace ignored, e.g. from a file).

    Raises :class:`errors.WireError` saying what is wrong, never echoing the secret.
    """
    parts = text.strip().split(".")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise errors.WireError("credential must look like '<key id>.<base64url key>'")
    key_id, encoded = parts
    if not _KEY_ID.fullmatch(key_id):
        raise errors.WireError("credential key id must be 1-64 characters of A-Z a-z 0-9 _ -")
    try:
        secret = _b64decode(encoded)
    except ValueError:
        raise errors.WireError("credential key is not base64url") from None
    if len(secret) != SECRET_BYTES:
        raise errors.WireError(f"credential key must be {SECRET_BYTES} bytes, got {len(secret)}")
    return Credential(key_id=key_id, secret=secret)


def new_master_key() -> bytes:
    """A fresh 32-byte master key for wrapping account keys."""
    return secrets.token_bytes(SECRET_BYTES)


def format_master_key(master: bytes) -> str:
    """The master key as base64url text without padding (what :func:`parse_master_key` reads)."""
    return _b64url(_check_key(master, "master key"))


def parse_master_key(text: str) -> bytes:
    """Read a master key given as base64url or base64 of 32 bytes (padding optional)."""
    try:
        key = _b64decode(text.strip())
    except ValueError:
        raise errors.WireError("master key is not base64 or base64url") from None
    if len(key) != SECRET_BYTES:
        raise errors.WireError(f"master key must be {SECRET_BYTES} bytes, got {len(key)}")
    return key


def _check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, bytes) or len(key) != SECRET_BYTES:
        raise errors.WireError(f"{what} must be {SECRET_BYTES} bytes")
    return key


def _wrap_aad(account: str, key_id: str) -> bytes:
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    parts = [_WRAP_CONTEXT, account.encode("utf-8"), key_id.encode("utf-8")]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def wrap_key(master: bytes, account: str, key_id: str, secret: bytes) -> bytes:
    """Encrypt an account's secret with the master key, bound to account and key id.

    The result is ``0x01 | IV (12) | ciphertext ‖ tag``.
    """
    aead = AESGCM(_check_key(master, "master key"))
    _check_key(secret, "account key")
    iv = secrets.token_bytes(_IV_BYTES)
    return _WRAP_VERSION + iv + aead.encrypt(iv, secret, _wrap_aad(account, key_id))


def unwrap_key(master: bytes, account: str, key_id: str, wrapped: bytes) -> bytes:
    """The secret :func:`wrap_key` wrapped for this account and key id.

    Raises :class:`errors.WireError` if it does not open (wrong master key, or the
    wrapped key belongs to another account or key id, or was altered).
    """
    aead = AESGCM(_check_key(master, "master key"))
    if len(wrapped) < 1 + _IV_BYTES or wrapped[:1] != _WRAP_VERSION:
        raise errors.WireError("wrapped key is malformed")
    iv = wrapped[1 : 1 + _IV_BYTES]
    try:
        secret = aead.decrypt(iv, wrapped[1 + _IV_BYTES :], _wrap_aad(account, key_id))
    except InvalidTag:
        raise errors.WireError(
            "wrapped key does not open: wrong master key, account or key id"
        ) from None
    return _check_key(secret, "unwrapped key")


def device_proof(secret: bytes) -> str:
    """What a device shows the JSON API instead of its key: HMAC-SHA256 under the key."""
    mac = hmac.new(secret, _DEVICE_PROOF_LABEL, hashlib.sha256).digest()
    return _b64url(mac)


def device_token(account: str, key_id: str, secret: bytes) -> str:
    """The bearer token a device with this credential sends to the JSON API.

    Here, below the server and the phone agent, because both need it: the server to
    check a token, :mod:`mpg.agent` to make one.
    """
    return f"{DEVICE_TOKEN_PREFIX}.{account}.{key_id}.{device_proof(secret)}"
