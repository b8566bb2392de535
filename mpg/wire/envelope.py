"""The sealed envelope of ``docs/protocol.md``: AES-256-GCM with the header as AAD.

Framing::

    "MPG1" | u16 BE header length | header (canonical JSON) | IV (12) | ciphertext ‖ tag (16)

The associated data is everything before the IV, so the header travels in clear (the
server reads ``acct`` and ``kid`` to pick the key) but cannot be changed. Every framing
or tag problem raises :class:`errors.TamperedEnvelope` with one and the same message,
so that a prober learns nothing about which check failed.
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
import json
import secrets
import struct
import threading
import time
from typing import Any, BinaryIO, Final, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mpg import errors

MAGIC: Final = b"MPG1"
VERSION: Final = 1
KEY_BYTES: Final = 32
IV_BYTES: Final = 12
TAG_BYTES: Final = 16
NONCE_BYTES: Final = 16
#: Default for :class:`ReplayGuard`: nonces remembered at most (memory stays bounded).
MAX_REMEMBERED_NONCES: Final = 200_000

_LENGTH: Final = struct.Struct(">H")
_PREFIX: Final = len(MAGIC) + _LENGTH.size
#: Bytes of magic and header length that start every envelope.
PREFIX_BYTES: Final = _PREFIX
_MAX_HEADER: Final = 0xFFFF
_TAMPERED: Final = "envelope is malformed or was tampered with"
_REQUEST_KEYS: Final = frozenset({"v", "acct", "kid", "op", "ts", "nonce", "dir", "args"})
_RESPONSE_KEYS: Final = _REQUEST_KEYS | {"re"}

Direction = Literal["req", "resp"]


@dataclasses.dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The clear but authenticated header of an envelope."""

    account: str
    key_id: str
    op: str
    timestamp: int  # Unix seconds when sealed
    nonce: str  # 16 random bytes, base64url without padding
    direction: Direction
    args: dict[str, Any] = dataclasses.field(hash=False)  # small JSON-able arguments
    reply_to: str = ""  # in a response: the request's nonce
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        """The header as its JSON object (``re`` only in responses)."""
        obj: dict[str, Any] = {
            "v": self.version,
            "acct": self.account,
            "kid": self.key_id,
            "op": self.op,
            "ts": self.timestamp,
            "nonce": self.nonce,
            "dir": self.direction,
            "args": self.args,
        }
        if self.direction == "resp":
            obj["re"] = self.reply_to
        return obj


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode("ascii")


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def request_header(
    account: str,
    key_id: str,
    op: str,
    args: dict[str, Any] | None = None,
    *,
    now: float | None = None,
) -> EnvelopeHeader:
    """A fresh request header (new nonce, timestamp ``now`` or the current time)."""
    return EnvelopeHeader(
        account=account,
        key_id=key_id,
        op=op,
        timestamp=_now(now),
        nonce=_new_nonce(),
        direction="req",
        args=dict(args or {}),
    )


def response_header(
    request: EnvelopeHeader, args: dict[str, Any] | None = None, *, now: float | None = None
) -> EnvelopeHeader:
    """The header answering ``request``: same account, key and op; ``re`` its nonce."""
    return EnvelopeHeader(
        account=request.account,
        key_id=request.key_id,
        op=request.op,
        timestamp=_now(now),
        nonce=_new_nonce(),
        direction="resp",
        args=dict(args or {}),
        reply_to=request.nonce,
    )


def _aead(key: bytes) -> AESGCM:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise errors.WireError(f"envelope key must be {KEY_BYTES} bytes")
    return AESGCM(key)


def seal(key: bytes, header: EnvelopeHeader, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``key`` with ``header`` as authenticated clear text.

    Raises :class:`errors.WireError` if the key is not 32 bytes, the header is not
    valid (e.g. ``args`` not JSON-able) or longer than 65535 bytes.
    """
    aead = _aead(key)
    _check_header(header)
    try:
        header_bytes = _canonical(header.to_json())
    except (TypeError, ValueError) as exc:
        raise errors.WireError(f"envelope header is not JSON-able: {exc}") from None
    if len(header_bytes) > _MAX_HEADER:
        raise errors.WireError(f"envelope header of {len(header_bytes)} bytes is too long")
    aad = MAGIC + _LENGTH.pack(len(header_bytes)) + header_bytes
    iv = secrets.token_bytes(IV_BYTES)
    return aad + iv + aead.encrypt(iv, plaintext, aad)


def _check_header(header: EnvelopeHeader) -> None:
    problem = _header_problem(header.to_json())
    if problem:
        raise errors.WireError(f"envelope header: {problem}")


def _header_problem(obj: dict[str, Any]) -> str:
    """What is wrong with a header object, or '' when it is valid."""
    direction = obj.get("dir")
    if direction not in ("req", "resp"):
        return "dir must be 'req' or 'resp'"
    expected = _REQUEST_KEYS if direction == "req" else _RESPONSE_KEYS
    if set(obj) != expected:
        return f"keys must be {sorted(expected)}"
    if obj["v"] != VERSION or type(obj["v"]) is not int:
        return f"unsupported version {obj['v']!r}"
    for key in ("acct", "kid", "op", "nonce"):
        if not isinstance(obj[key], str) or not obj[key]:
            return f"{key} must be a non-empty string"
    if type(obj["ts"]) is not int:
        return "ts must be an integer"
    if not isinstance(obj["args"], dict):
        return "args must be an object"
    if direction == "resp" and (not isinstance(obj["re"], str) or not obj["re"]):
        return "re must be a non-empty string"
    return ""


def peek(data: bytes | bytearray) -> EnvelopeHeader:
    """The header of a sealed envelope, read without the key (to choose the key).

    Nothing in it is trustworthy until :func:`open_sealed` succeeds. Raises
    :class:`errors.TamperedEnvelope` if the framing or header is malformed.
    """
    header, _ = _split(data)
    return header


def header_end(start: bytes | bytearray) -> int | None:
    """Where the header ends (the IV's offset), from an envelope's first bytes.

    None while fewer than :data:`PREFIX_BYTES` are at hand; raises
    :class:`errors.TamperedEnvelope` when they are not an envelope's. A server reads
    this much of a body, then the header, before it reads the rest.
    """
    if len(start) < PREFIX_BYTES:
        if not MAGIC.startswith(bytes(start[: len(MAGIC)])):
            raise errors.TamperedEnvelope(_TAMPERED)
        return None
    if bytes(start[: len(MAGIC)]) != MAGIC:
        raise errors.TamperedEnvelope(_TAMPERED)
    (length,) = _LENGTH.unpack_from(start, len(MAGIC))
    return PREFIX_BYTES + int(length)


def read_header(start: bytes | bytearray) -> EnvelopeHeader:
    """The header from an envelope's first :func:`header_end` bytes (or more).

    Like :func:`peek`, nothing in it is trustworthy until the envelope opens.
    """
    end = header_end(start)
    if end is None or len(start) < end:
        raise errors.TamperedEnvelope(_TAMPERED)
    return _parse_header(bytes(start[PREFIX_BYTES:end]))


def _split(data: bytes | bytearray) -> tuple[EnvelopeHeader, int]:
    """The header and the offset of the IV; TamperedEnvelope on any framing problem."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise errors.TamperedEnvelope(_TAMPERED)
    view = memoryview(data)  # a 64 MiB body is not copied to read its header
    if len(view) < _PREFIX or bytes(view[: len(MAGIC)]) != MAGIC:
        raise errors.TamperedEnvelope(_TAMPERED)
    (length,) = _LENGTH.unpack_from(view, len(MAGIC))
    end = _PREFIX + length
    if len(view) < end + IV_BYTES + TAG_BYTES:
        raise errors.TamperedEnvelope(_TAMPERED)
    return _parse_header(bytes(view[_PREFIX:end])), end


def _parse_header(header_bytes: bytes) -> EnvelopeHeader:
    """The header from its canonical JSON bytes; TamperedEnvelope for any other form."""
    try:
        obj = json.loads(header_bytes.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise errors.TamperedEnvelope(_TAMPERED) from None
    # Only the canonical form is accepted: no duplicate keys, no second spelling of
    # the same header that a different JSON reader might understand differently.
    if not isinstance(obj, dict) or _header_problem(obj):
        raise errors.TamperedEnvelope(_TAMPERED)
    try:
        canonical = _canonical(obj)
    except ValueError:
        raise errors.TamperedEnvelope(_TAMPERED) from None
    if canonical != header_bytes:
        raise errors.TamperedEnvelope(_TAMPERED)
    return EnvelopeHeader(
        account=obj["acct"],
        key_id=obj["kid"],
        op=obj["op"],
        timestamp=obj["ts"],
        nonce=obj["nonce"],
        direction=obj["dir"],
        args=obj["args"],
        reply_to=obj.get("re", ""),
        version=obj["v"],
    )


def open_sealed(key: bytes, data: bytes | bytearray) -> tuple[EnvelopeHeader, bytes]:
    """Check and decrypt an envelope: ``(header, plaintext)``.

    Raises :class:`errors.TamperedEnvelope` if the framing is wrong or the tag does not
    verify under ``key`` (a wrong key and a changed byte look the same).
    """
    aead = _aead(key)
    header, end = _split(data)
    # Views, not slices: a 64 MiB body is not copied once more to be decrypted.
    raw = memoryview(data)
    try:
        plaintext = aead.decrypt(raw[end : end + IV_BYTES], raw[end + IV_BYTES :], raw[:end])
    except InvalidTag:
        raise errors.TamperedEnvelope(_TAMPERED) from None
    return header, plaintext


class Sink(Protocol):
    """Where decrypted or encrypted bytes go: a file, or anything with ``write``."""

    def write(self, data: bytes, /) -> object:
        """Take ``data``."""
        ...


def open_sealed_stream(
    key: bytes, source: BinaryIO, size: int, sink: Sink, *, block: int = 1024 * 1024
) -> EnvelopeHeader:
    """:func:`open_sealed` for an envelope of ``size`` bytes in a seekable file.

    The plaintext is written to ``sink`` a block at a time, so neither the envelope
    nor its plaintext is ever held whole; what ``sink`` holds must not be used unless
    this returns (the tag is checked at the end). Raises the errors of
    :func:`open_sealed`.
    """
    _aead(key)  # the key's length is checked as for a whole envelope
    start = source.read(min(size, PREFIX_BYTES + _MAX_HEADER))
    end = header_end(start)
    if end is None or size < end + IV_BYTES + TAG_BYTES:
        raise errors.TamperedEnvelope(_TAMPERED)
    header = read_header(start)
    source.seek(end)
    iv = source.read(IV_BYTES)
    source.seek(size - TAG_BYTES)
    tag = source.read(TAG_BYTES)
    if len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise errors.TamperedEnvelope(_TAMPERED)
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag)).decryptor()
    decryptor.authenticate_additional_data(bytes(start[:end]))
    source.seek(end + IV_BYTES)
    remaining = size - end - IV_BYTES - TAG_BYTES
    while remaining:
        data = source.read(min(block, remaining))
        if not data:
            raise errors.TamperedEnvelope(_TAMPERED)
        sink.write(decryptor.update(data))
        remaining -= len(data)
    try:
        sink.write(decryptor.finalize())
    except InvalidTag:
        raise errors.TamperedEnvelope(_TAMPERED) from None
    return header


def check_response(request: EnvelopeHeader, response: EnvelopeHeader) -> None:
    """Raise :class:`errors.TamperedEnvelope` unless ``response`` answers ``request``.

    A response must say ``resp``, carry the request's nonce in ``re`` and name the same
    account, key and op; otherwise it is an old answer replayed or a request reflected.
    """
    if (
        response.direction != "resp"
        or response.reply_to != request.nonce
        or response.op != request.op
        or response.account != request.account
        or response.key_id != request.key_id
    ):
        raise errors.TamperedEnvelope("the response does not answer this request")


class ReplayGuard:
    """Refuses stale, future and repeated request envelopes (thread-safe).

    Call :meth:`check` only after :func:`open_sealed` succeeded: otherwise anyone could
    fill the memory of nonces with forged ones. A nonce is remembered until its
    timestamp leaves the window, after which the timestamp check alone refuses it.
    At most ``max_entries`` nonces are remembered; beyond that new requests are refused
    (failing closed) until old ones expire.
    """

    def __init__(self, window_seconds: float, *, max_entries: int = MAX_REMEMBERED_NONCES) -> None:
        if window_seconds <= 0 or max_entries <= 0:
            raise ValueError("window_seconds and max_entries must be positive")
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}  # (account, nonce) -> expiry
        self._expiries: list[tuple[float, tuple[str, str]]] = []  # heap of the same

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def check(self, header: EnvelopeHeader, now: float | None = None) -> None:
        """Remember the request's nonce, or raise :class:`errors.ReplayedEnvelope`.

        Refuses a response presented as a request, a timestamp more than the window
        away from ``now`` (either way), and an (account, nonce) already seen.
        """
        current = time.time() if now is None else now
        if header.direction != "req":
            raise errors.ReplayedEnvelope("a response cannot be used as a request")
        if abs(current - header.timestamp) > self.window_seconds:
            raise errors.ReplayedEnvelope(
                f"timestamp {header.timestamp} is outside the {self.window_seconds}s window"
            )
        key = (header.account, header.nonce)
        with self._lock:
            self._prune(current)
            if key in self._seen:
                raise errors.ReplayedEnvelope("nonce already used")
            if len(self._seen) >= self.max_entries:
                raise errors.ReplayedEnvelope("too many requests within the replay window")
            expiry = header.timestamp + self.window_seconds
            self._seen[key] = expiry
            heapq.heappush(self._expiries, (expiry, key))

    def _prune(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, key = heapq.heappop(self._expiries)
            del self._seen[key]
