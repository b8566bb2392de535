"""Sealed envelopes: framing, tamper detection, response binding and replay protection."""

from __future__ import annotations

import json
import struct
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpg import errors
from mpg.wire import envelope

KEY = bytes(range(32))
OTHER_KEY = bytes(32)
NOW = 1_790_000_000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
args_strategy = st.dictionaries(st.text(), json_values, max_size=4)
names = st.text(min_size=1, max_size=40)


def sealed(
    args: dict[str, Any] | None = None, plaintext: bytes = b"<ack/>"
) -> tuple[envelope.EnvelopeHeader, bytes]:
    """A request header and its envelope sealed with KEY."""
    header = envelope.request_header("erp-a@example.com", "k0123abcd", "ack", args, now=NOW)
    return header, envelope.seal(KEY, header, plaintext)


def reframe(data: bytes, header_obj: dict[str, Any]) -> bytes:
    """The envelope with its header replaced by ``header_obj`` (canonical), body kept."""
    (length,) = struct.unpack_from(">H", data, 4)
    new = json.dumps(header_obj, sort_keys=True, separators=(",", ":")).encode()
    return b"MPG1" + struct.pack(">H", len(new)) + new + data[6 + length :]


@given(
    account=names,
    key_id=names,
    op=names,
    args=args_strategy,
    plaintext=st.binary(max_size=2048),
    key=st.binary(min_size=32, max_size=32),
)
def test_sealed_envelope_opens_to_the_same_header_and_payload(
    account: str, key_id: str, op: str, args: dict[str, Any], plaintext: bytes, key: bytes
) -> None:
    """Any header (Unicode included) and payload round-trip through seal and open."""
    header = envelope.request_header(account, key_id, op, args, now=NOW)
    data = envelope.seal(key, header, plaintext)
    assert envelope.peek(data) == header
    assert envelope.open_sealed(key, data) == (header, plaintext)


@given(args=args_strategy, plaintext=st.binary(max_size=256))
def test_response_round_trips_with_its_reply_to(args: dict[str, Any], plaintext: bytes) -> None:
    """A response header keeps re, and check_response accepts it for its request."""
    request, _ = sealed()
    response = envelope.response_header(request, args, now=NOW + 1)
    header, body = envelope.open_sealed(KEY, envelope.seal(KEY, response, plaintext))
    assert header == response
    assert body == plaintext
    envelope.check_response(request, header)


def test_framing_and_header_are_as_documented() -> None:
    """Magic, big-endian length, canonical ASCII JSON with the documented keys."""
    _, data = sealed({"tx": "审批", "seq": 1})
    assert data[:4] == b"MPG1"
    (length,) = struct.unpack(">H", data[4:6])
    raw = data[6 : 6 + length]
    assert raw.isascii()
    obj = json.loads(raw)
    assert set(obj) == {"v", "acct", "kid", "op", "ts", "nonce", "dir", "args"}
    assert raw == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert (obj["v"], obj["dir"], obj["ts"]) == (1, "req", NOW)
    assert len(data) == 6 + length + 12 + len(b"<ack/>") + 16


def test_nonce_is_16_random_bytes_base64url() -> None:
    """Each header gets a fresh 22-character base64url nonce."""
    a = envelope.request_header("a", "k", "op")
    b = envelope.request_header("a", "k", "op")
    assert a.nonce != b.nonce
    assert len(a.nonce) == 22
    assert set(a.nonce) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_response_carries_re_and_request_does_not() -> None:
    """Only responses put the request's nonce under 're'."""
    request, data = sealed()
    response = envelope.response_header(request)
    resp_data = envelope.seal(KEY, response, b"")
    assert b'"re"' not in data
    assert f'"re":"{request.nonce}"'.encode() in resp_data
    assert (response.account, response.op) == (request.account, request.op)


def test_every_flipped_byte_is_refused() -> None:
    """Changing any single byte (header, IV, ciphertext or tag) makes opening fail."""
    _, data = sealed(plaintext=b"payload")
    for i in range(len(data)):
        broken = bytearray(data)
        broken[i] ^= 0x01
        with pytest.raises(errors.TamperedEnvelope):
            envelope.open_sealed(KEY, bytes(broken))


def test_tampered_header_is_refused() -> None:
    """A header rewritten to another account does not open, even though it parses."""
    _, data = sealed()
    obj = json.loads(data[6 : 6 + struct.unpack_from(">H", data, 4)[0]])
    obj["acct"] = "mallory@example.com"
    forged = reframe(data, obj)
    assert envelope.peek(forged).account == "mallory@example.com"
    with pytest.raises(errors.TamperedEnvelope):
        envelope.open_sealed(KEY, forged)


def test_wrong_key_is_refused() -> None:
    """An envelope sealed with another key does not open."""
    _, data = sealed()
    with pytest.raises(errors.TamperedEnvelope):
        envelope.open_sealed(OTHER_KEY, data)


def test_truncated_envelopes_are_refused() -> None:
    """Every truncation of an envelope is refused."""
    _, data = sealed()
    for n in range(len(data)):
        with pytest.raises(errors.TamperedEnvelope):
            envelope.open_sealed(KEY, data[:n])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.update(v=2),
        lambda o: o.update(v=True),
        lambda o: o.update(dir="sideways"),
        lambda o: o.update(ts="1790000000"),
        lambda o: o.update(ts=True),
        lambda o: o.update(acct=""),
        lambda o: o.update(args=[]),
        lambda o: o.update(extra=1),
        lambda o: o.pop("nonce"),
        lambda o: o.update(dir="resp"),  # a response must carry re
    ],
)
def test_malformed_header_is_refused_by_peek(mutate: Any) -> None:
    """Headers with wrong keys or types are refused before any key is looked up."""
    _, data = sealed()
    obj = json.loads(data[6 : 6 + struct.unpack_from(">H", data, 4)[0]])
    mutate(obj)
    with pytest.raises(errors.TamperedEnvelope):
        envelope.peek(reframe(data, obj))


@pytest.mark.parametrize(
    "data",
    [b"", b"MPG1", b"MPG2\x00\x02{}" + bytes(28), b"MPG1\x00\x02{}" + bytes(28), b"x" * 100],
)
def test_garbage_is_refused_by_peek(data: bytes) -> None:
    """Wrong magic, an empty header object or random bytes are TamperedEnvelope."""
    with pytest.raises(errors.TamperedEnvelope):
        envelope.peek(data)


def test_non_canonical_header_is_refused() -> None:
    """The same header written with spaces (a second spelling) is refused."""
    _, data = sealed()
    (length,) = struct.unpack_from(">H", data, 4)
    loose = json.dumps(json.loads(data[6 : 6 + length]), sort_keys=True).encode()
    forged = b"MPG1" + struct.pack(">H", len(loose)) + loose + data[6 + length :]
    with pytest.raises(errors.TamperedEnvelope):
        envelope.peek(forged)


def test_refusals_do_not_say_which_check_failed() -> None:
    """Framing and tag failures carry the same message."""
    _, data = sealed()
    messages = set()
    for bad in (data[:5], data[:-1] + bytes([data[-1] ^ 1]), b"MPG1\x00\x01x" + bytes(28)):
        with pytest.raises(errors.TamperedEnvelope) as info:
            envelope.open_sealed(KEY, bad)
        messages.add(str(info.value))
    assert len(messages) == 1


def test_seal_refuses_a_short_key() -> None:
    """A key that is not 32 bytes is a programming error, reported as WireError."""
    header, _ = sealed()
    with pytest.raises(errors.WireError, match="32 bytes"):
        envelope.seal(b"short", header, b"")


def test_seal_refuses_args_that_are_not_json() -> None:
    """Arguments must be JSON-able."""
    header = envelope.request_header("a", "k", "op", {"when": object()})
    with pytest.raises(errors.WireError, match="JSON"):
        envelope.seal(KEY, header, b"")


def test_seal_refuses_an_oversized_header() -> None:
    """A header over 65535 bytes cannot be framed."""
    header = envelope.request_header("a", "k", "op", {"big": "x" * 70_000})
    with pytest.raises(errors.WireError, match="too long"):
        envelope.seal(KEY, header, b"")


# ------------------------------------------------------------- response binding


def test_response_to_another_request_is_refused() -> None:
    """A response whose re names another nonce does not answer this request."""
    request, _ = sealed()
    other = envelope.request_header(request.account, request.key_id, request.op)
    with pytest.raises(errors.TamperedEnvelope):
        envelope.check_response(request, envelope.response_header(other))


def test_reflected_request_is_not_a_response() -> None:
    """A request sent back as the answer is refused."""
    request, _ = sealed()
    with pytest.raises(errors.TamperedEnvelope):
        envelope.check_response(request, request)


def test_response_for_another_op_is_refused() -> None:
    """re matches but op differs: refused."""
    request, _ = sealed()
    response = envelope.response_header(request)
    forged = envelope.EnvelopeHeader(
        response.account,
        response.key_id,
        "fetch",
        response.timestamp,
        response.nonce,
        "resp",
        {},
        reply_to=request.nonce,
    )
    with pytest.raises(errors.TamperedEnvelope):
        envelope.check_response(request, forged)


# ------------------------------------------------------------------ replay guard


def test_fresh_request_passes_and_its_replay_is_refused() -> None:
    """The first use of a nonce passes; the second is ReplayedEnvelope."""
    guard = envelope.ReplayGuard(300)
    header, _ = sealed()
    guard.check(header, now=NOW)
    with pytest.raises(errors.ReplayedEnvelope, match="nonce"):
        guard.check(header, now=NOW + 10)


def test_same_nonce_from_another_account_is_not_a_replay() -> None:
    """Nonces are remembered per account."""
    guard = envelope.ReplayGuard(300)
    header, _ = sealed()
    guard.check(header, now=NOW)
    other = envelope.EnvelopeHeader(
        "erp-b@example.com", header.key_id, header.op, header.timestamp, header.nonce, "req", {}
    )
    guard.check(other, now=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_timestamp_outside_the_window_is_refused(offset: int) -> None:
    """Stale and future timestamps beyond the window are refused."""
    guard = envelope.ReplayGuard(300)
    header, _ = sealed()
    with pytest.raises(errors.ReplayedEnvelope, match="window"):
        guard.check(header, now=NOW + offset)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamp_at_the_window_edge_is_accepted(offset: int) -> None:
    """Exactly window seconds away is still inside."""
    guard = envelope.ReplayGuard(300)
    header, _ = sealed()
    guard.check(header, now=NOW + offset)


def test_response_cannot_pass_as_a_request() -> None:
    """The guard refuses a header whose direction is resp."""
    guard = envelope.ReplayGuard(300)
    request, _ = sealed()
    with pytest.raises(errors.ReplayedEnvelope, match="response"):
        guard.check(envelope.response_header(request, now=NOW), now=NOW)


def test_expired_nonces_are_pruned() -> None:
    """Nonces whose timestamp left the window are forgotten (memory stays bounded)."""
    guard = envelope.ReplayGuard(300)
    for n in range(50):
        guard.check(envelope.request_header("a", "k", "op", now=NOW + n), now=NOW + n)
    assert len(guard) == 50
    guard.check(envelope.request_header("a", "k", "op", now=NOW + 1000), now=NOW + 1000)
    assert len(guard) == 1


def test_full_guard_fails_closed() -> None:
    """Beyond max_entries live nonces, new requests are refused rather than forgotten."""
    guard = envelope.ReplayGuard(300, max_entries=3)
    for _ in range(3):
        guard.check(envelope.request_header("a", "k", "op", now=NOW), now=NOW)
    with pytest.raises(errors.ReplayedEnvelope, match="too many"):
        guard.check(envelope.request_header("a", "k", "op", now=NOW), now=NOW)
    guard.check(envelope.request_header("a", "k", "op", now=NOW + 400), now=NOW + 400)


def test_guard_admits_each_nonce_once_across_threads() -> None:
    """Eight threads racing the same 200 headers: each header passes exactly once."""
    guard = envelope.ReplayGuard(300)
    headers = [envelope.request_header("a", "k", "op", now=NOW) for _ in range(200)]
    passed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for header in headers:
            try:
                guard.check(header, now=NOW)
            except errors.ReplayedEnvelope:
                continue
            with lock:
                passed.append(header.nonce)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(passed) == sorted(h.nonce for h in headers)


def test_guard_refuses_a_non_positive_window() -> None:
    """A zero window would refuse everything; it is a configuration error."""
    with pytest.raises(ValueError, match="positive"):
        envelope.ReplayGuard(0)
