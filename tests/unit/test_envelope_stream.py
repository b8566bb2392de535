"""Opening an envelope from a file, a block at a time (large uploads never held whole)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpg import errors
from mpg.wire import envelope, keys


def _sealed(payload: bytes) -> tuple[bytes, bytes]:
    cred = keys.new_credential()
    header = envelope.request_header("a@example.com", cred.key_id, "upload", {"seq": 1})
    return cred.secret, envelope.seal(cred.secret, header, payload)


@settings(max_examples=30, deadline=None)
@given(payload=st.binary(max_size=5000), block=st.integers(min_value=1, max_value=700))
def test_streamed_open_gives_what_a_whole_open_gives(payload: bytes, block: int) -> None:
    """Same header and plaintext as open_sealed, whatever the block size."""
    key, data = _sealed(payload)
    sink = io.BytesIO()
    header = envelope.open_sealed_stream(key, io.BytesIO(data), len(data), sink, block=block)
    assert (header, sink.getvalue()) == envelope.open_sealed(key, data)


@pytest.mark.parametrize("where", [0, 5, 40, -30, -1])
def test_a_changed_byte_anywhere_is_tampering(where: int) -> None:
    """Magic, length, header, ciphertext or tag changed: TamperedEnvelope."""
    key, data = _sealed(b"x" * 3000)
    changed = bytearray(data)
    changed[where] ^= 1
    with pytest.raises(errors.TamperedEnvelope):
        envelope.open_sealed_stream(key, io.BytesIO(changed), len(changed), io.BytesIO())


def test_a_wrong_key_and_a_short_file_are_tampering() -> None:
    """Another account's key, or fewer bytes than announced: TamperedEnvelope."""
    _, data = _sealed(b"payload")
    with pytest.raises(errors.TamperedEnvelope):
        envelope.open_sealed_stream(
            keys.new_credential().secret, io.BytesIO(data), len(data), io.BytesIO()
        )
    key, data = _sealed(b"payload")
    with pytest.raises(errors.TamperedEnvelope):
        envelope.open_sealed_stream(key, io.BytesIO(data[:-5]), len(data), io.BytesIO())
