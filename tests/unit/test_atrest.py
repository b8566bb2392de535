"""Personal data at rest: fields, chunked files and blind indexes."""

from __future__ import annotations

import hashlib
import hmac
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpg import errors
from mpg.wire import atrest, envelope

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))
PLACE = atrest.Place("Device", "Email", "7f1c1a62-4d1e-4cb5-9d1b-0a3f5f0d3c11")
RING = atrest.Keyring({"k1": OLD_KEY}, "k1")
ROTATED = atrest.Keyring({"k1": OLD_KEY, "k2": NEW_KEY}, "k2")


@given(st.binary(max_size=2048) | st.text(max_size=512))
def test_a_field_round_trips(value: bytes | str) -> None:
    blob = RING.encrypt(value, PLACE)
    expected = value.encode("utf-8") if isinstance(value, str) else value
    assert RING.decrypt(blob, PLACE) == expected
    if isinstance(value, str):
        assert RING.decrypt_text(blob, PLACE) == value


def test_a_field_carries_its_key_id_and_not_its_clear_text() -> None:
    blob = RING.encrypt("anna.meier@example.com", PLACE)
    assert blob[:4] == b"\x01\x02k1"
    assert b"anna" not in blob
    assert RING.key_id_of(blob) == "k1"
    assert RING.encrypt("anna.meier@example.com", PLACE) != blob  # fresh nonce each time


@given(st.data())
@settings(max_examples=50)
def test_any_changed_byte_of_a_field_is_refused(data: st.DataObject) -> None:
    blob = bytearray(RING.encrypt(b"device-4711", PLACE))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(errors.AtRestError):
        RING.decrypt(bytes(blob), PLACE)


@pytest.mark.parametrize(
    "elsewhere",
    [
        atrest.Place("Device", "PushToken", PLACE.row),
        atrest.Place("Device", "Email", "another-row"),
        atrest.Place("Account", "Email", PLACE.row),
        atrest.Place("DeviceE", "mail", PLACE.row),  # same letters, other split
    ],
)
def test_a_field_moved_to_another_column_or_row_is_refused(elsewhere: atrest.Place) -> None:
    blob = RING.encrypt("anna.meier@example.com", PLACE)
    with pytest.raises(errors.AtRestError, match="another row or column"):
        RING.decrypt(blob, elsewhere)


def test_a_row_sealed_at_once_opens_field_by_field_and_field_by_field_opens_at_once() -> None:
    row = "0193a1f0-0000-7000-8000-000000000001"
    sealed = RING.encrypt_row("TransmitQueue", row, {"SubjectEnc": "Hi", "BccListEnc": None})
    assert sealed["BccListEnc"] is None
    assert (
        RING.decrypt_text(
            sealed["SubjectEnc"] or b"", atrest.Place("TransmitQueue", "SubjectEnc", row)
        )
        == "Hi"
    )
    one = RING.encrypt("Body", atrest.Place("TransmitQueue", "ContentEnc", row))
    opened = RING.decrypt_row_text("TransmitQueue", row, {"ContentEnc": one, "BccListEnc": None})
    assert opened == {"ContentEnc": "Body", "BccListEnc": None}


def test_every_field_of_every_row_gets_an_iv_of_its_own() -> None:
    """The row's IVs come from one read of the random source: none is shared, within a
    row or between rows (one IV twice under a key would break AES-GCM)."""
    columns = {f"Field{n}Enc": "same text" for n in range(8)}
    iv = envelope.IV_BYTES
    header = len(RING.encrypt("x", PLACE)) - iv - len(b"x") - envelope.TAG_BYTES
    ivs = [
        blob[header : header + iv]
        for row in ("r1", "r2", "r3")
        for blob in RING.encrypt_row("TransmitQueue", row, columns).values()
        if blob is not None
    ]
    assert len(ivs) == 24
    assert len(set(ivs)) == 24


def test_a_row_field_opened_under_another_column_is_refused_naming_the_place() -> None:
    sealed = RING.encrypt_row("TransmitQueue", "r1", {"SubjectEnc": "Hi"})
    with pytest.raises(errors.AtRestError, match=r"TransmitQueue\.ContentEnc row 'r1'"):
        RING.decrypt_row_text("TransmitQueue", "r1", {"ContentEnc": sealed["SubjectEnc"]})


def test_a_row_opens_with_fields_under_the_old_key_and_the_current_one() -> None:
    old = RING.encrypt_row("TransmitQueue", "r1", {"SubjectEnc": "Hi"})
    new = ROTATED.encrypt_row("TransmitQueue", "r1", {"ContentEnc": "Body"})
    opened = ROTATED.decrypt_row_text("TransmitQueue", "r1", {**old, **new})
    assert opened == {"SubjectEnc": "Hi", "ContentEnc": "Body"}


@settings(max_examples=60)
@given(st.data())
def test_any_changed_byte_of_a_row_field_is_refused(data: st.DataObject) -> None:
    sealed = RING.encrypt_row("TransmitQueue", "r1", {"ContentEnc": "Body"})["ContentEnc"]
    assert sealed is not None
    blob = bytearray(sealed)
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(errors.AtRestError):
        RING.decrypt_row_text("TransmitQueue", "r1", {"ContentEnc": bytes(blob)})


def test_a_field_under_an_unknown_key_id_is_refused_naming_it() -> None:
    blob = ROTATED.encrypt("x", PLACE)
    with pytest.raises(errors.AtRestError, match="unknown data key id 'k2'"):
        RING.decrypt(blob, PLACE)


def test_a_field_with_its_key_id_rewritten_is_refused() -> None:
    blob = ROTATED.encrypt("x", PLACE)
    with pytest.raises(errors.AtRestError):
        ROTATED.decrypt(blob.replace(b"k2", b"k1", 1), PLACE)


def test_after_a_rotation_old_values_still_open_and_new_ones_use_the_new_key() -> None:
    old = RING.encrypt("anna.meier@example.com", PLACE)
    assert ROTATED.decrypt_text(old, PLACE) == "anna.meier@example.com"
    new = ROTATED.encrypt(ROTATED.decrypt(old, PLACE), PLACE)
    assert (ROTATED.key_id_of(old), ROTATED.key_id_of(new)) == ("k1", "k2")


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "truncated"),
        (b"\x07\x02k1" + bytes(40), "format version 7"),
        (b"\x01\x09k1", "truncated"),
        (b"\x01\x02k1" + bytes(20), "truncated"),
    ],
)
def test_a_malformed_field_is_refused_with_its_reason(blob: bytes, message: str) -> None:
    with pytest.raises(errors.AtRestError, match=message):
        RING.decrypt(blob, PLACE)


@pytest.mark.parametrize(
    ("keys", "current", "message"),
    [
        ({"k1": b"short"}, "k1", "must be 32 bytes"),
        ({"k1": OLD_KEY}, "k9", "no such key"),
        ({"": OLD_KEY}, "", "printable ASCII"),
        ({"schlüssel": OLD_KEY}, "schlüssel", "printable ASCII"),
    ],
)
def test_a_bad_keyring_is_refused(keys: dict[str, bytes], current: str, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        atrest.Keyring(keys, current)


# Blind index


@given(st.emails())
def test_the_blind_index_of_an_address_ignores_case_and_surrounding_blanks(address: str) -> None:
    assert RING.blind_index("email", f"  {address.upper()}\t") == RING.blind_index("email", address)


def test_the_blind_index_differs_by_value_kind_and_key() -> None:
    index = RING.blind_index("email", "anna@example.com")
    assert len(index) == 32
    assert index != RING.blind_index("email", "anne@example.com")
    assert index != RING.blind_index("device", "anna@example.com")
    assert index != ROTATED.blind_index("email", "anna@example.com")


def test_device_ids_are_indexed_as_given() -> None:
    assert RING.blind_index("device", "AbC-1") != RING.blind_index("device", "abc-1")
    assert RING.blind_index("device", "AbC-1") != RING.blind_index("device", " AbC-1")


def test_during_a_rotation_lookups_match_rows_indexed_under_either_key() -> None:
    indexes = ROTATED.blind_indexes("email", "Anna@Example.com")
    assert indexes == (
        ROTATED.blind_index("email", "anna@example.com"),
        RING.blind_index("email", "anna@example.com"),
    )


def test_the_blind_index_uses_a_derived_subkey_not_the_data_key_itself() -> None:
    raw = hmac.new(OLD_KEY, b"email\x00anna@example.com", hashlib.sha256).digest()
    assert RING.blind_index("email", "anna@example.com") != raw


# Files


def _encrypt_file(data: bytes, chunk: int, ring: atrest.Keyring = RING) -> bytes:
    sink = io.BytesIO()
    ring.encrypt_stream(io.BytesIO(data), sink, PLACE, chunk=chunk)
    return sink.getvalue()


def _decrypt_file(blob: bytes, ring: atrest.Keyring = RING, place: atrest.Place = PLACE) -> bytes:
    sink = io.BytesIO()
    ring.decrypt_stream(io.BytesIO(blob), sink, place)
    return sink.getvalue()


class Trickle(io.BytesIO):
    """A source that returns at most 3 bytes per read, like a slow pipe."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(3 if size is None or size < 0 else min(size, 3))


@given(st.binary(max_size=600), st.integers(1, 100))
@settings(max_examples=60)
def test_a_file_round_trips_in_any_chunk_size(data: bytes, chunk: int) -> None:
    blob = _encrypt_file(data, chunk)
    chunks = max(1, -(-len(data) // chunk))
    header = len(atrest.FILE_MAGIC) + 4 + 4 + atrest.SALT_BYTES
    assert len(blob) == header + len(data) + 16 * chunks
    assert _decrypt_file(blob) == data


def test_a_file_read_in_short_pieces_round_trips() -> None:
    data = bytes(range(256)) * 5
    sink = io.BytesIO()
    RING.encrypt_stream(Trickle(data), sink, PLACE, chunk=100)
    out = io.BytesIO()
    RING.decrypt_stream(Trickle(sink.getvalue()), out, PLACE)
    assert out.getvalue() == data


def _chunks(blob: bytes, chunk: int) -> tuple[bytes, list[bytes]]:
    header = len(atrest.FILE_MAGIC) + 4 + 4 + atrest.SALT_BYTES
    body = blob[header:]
    step = chunk + 16
    return blob[:header], [body[i : i + step] for i in range(0, len(body), step)]


def test_a_file_cut_at_a_chunk_boundary_is_refused() -> None:
    header, chunks = _chunks(_encrypt_file(b"a" * 30, 10), 10)
    with pytest.raises(errors.AtRestError, match="chunk 1 was changed, moved or cut off"):
        _decrypt_file(header + b"".join(chunks[:2]))


def test_a_file_cut_inside_a_chunk_is_refused() -> None:
    blob = _encrypt_file(b"a" * 30, 10)
    with pytest.raises(errors.AtRestError):
        _decrypt_file(blob[:-5])
    with pytest.raises(errors.AtRestError, match="truncated at chunk 0"):
        _decrypt_file(_chunks(blob, 10)[0] + b"x")


def test_reordered_or_repeated_file_chunks_are_refused() -> None:
    header, chunks = _chunks(_encrypt_file(bytes(range(30)), 10), 10)
    for order in ([1, 0, 2], [0, 0, 2], [0, 2]):
        with pytest.raises(errors.AtRestError, match="changed, moved or cut off"):
            _decrypt_file(header + b"".join(chunks[i] for i in order))


def test_data_after_the_final_chunk_is_refused() -> None:
    blob = _encrypt_file(b"a" * 25, 10)
    with pytest.raises(errors.AtRestError, match="chunk 2"):
        _decrypt_file(blob + bytes(26))


def test_an_empty_file_cannot_be_cut_to_nothing() -> None:
    blob = _encrypt_file(b"", 10)
    assert _decrypt_file(blob) == b""
    header, _ = _chunks(blob, 10)
    with pytest.raises(errors.AtRestError, match="truncated at chunk 0"):
        _decrypt_file(header)


def test_a_file_moved_to_another_place_or_changed_in_its_header_is_refused() -> None:
    blob = _encrypt_file(b"attachment bytes", 8)
    with pytest.raises(errors.AtRestError, match="chunk 0"):
        _decrypt_file(blob, place=atrest.Place("Blob", "File", "other"))
    header, chunks = _chunks(blob, 8)
    tampered = header[:-1] + bytes([header[-1] ^ 1])  # the salt's last byte
    with pytest.raises(errors.AtRestError, match="chunk 0"):
        _decrypt_file(tampered + b"".join(chunks))


def test_a_file_header_declaring_a_huge_chunk_is_refused_before_reading_it() -> None:
    blob = bytearray(_encrypt_file(b"abc", 8))
    blob[8:12] = (atrest.MAX_CHUNK_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(errors.AtRestError, match="chunk size"):
        _decrypt_file(bytes(blob))


def test_files_follow_the_keyring_through_a_rotation() -> None:
    blob = _encrypt_file(b"old file", 4)
    assert ROTATED.key_id_of(blob) == "k1"
    assert _decrypt_file(blob, ROTATED) == b"old file"
    with pytest.raises(errors.AtRestError, match="unknown data key id 'k2'"):
        _decrypt_file(_encrypt_file(b"new file", 4, ROTATED))


@pytest.mark.parametrize(
    ("blob", "message"),
    [(b"", "bad magic"), (b"PK\x03\x04", "bad magic"), (b"MPGR\x01", "truncated")],
)
def test_something_that_is_not_an_encrypted_file_is_refused(blob: bytes, message: str) -> None:
    with pytest.raises(errors.AtRestError, match=message):
        _decrypt_file(blob)


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 100))
@settings(max_examples=60)
def test_a_file_written_in_pieces_reads_like_one_encrypted_at_once(
    pieces: list[bytes], chunk: int
) -> None:
    sink = io.BytesIO()
    writer = RING.stream_writer(sink, PLACE, chunk=chunk)
    for piece in pieces:
        writer.write(piece)
    writer.close()
    out = io.BytesIO()
    RING.decrypt_stream(io.BytesIO(sink.getvalue()), out, PLACE)
    assert out.getvalue() == b"".join(pieces)


@given(st.binary(max_size=600), st.integers(1, 100), st.integers(0, 700), st.integers(0, 700))
@settings(max_examples=80)
def test_any_range_of_a_file_reads_as_the_same_range_of_its_clear_bytes(
    data: bytes, chunk: int, offset: int, length: int
) -> None:
    blob = _encrypt_file(data, chunk)
    assert RING.read_range(io.BytesIO(blob), PLACE, offset, length) == data[offset:][:length]


def test_a_range_of_a_changed_or_cut_file_is_refused() -> None:
    blob = bytearray(_encrypt_file(b"x" * 100, 10))
    blob[-1] ^= 1  # the last chunk's tag
    with pytest.raises(errors.AtRestError, match="chunk 9"):
        RING.read_range(io.BytesIO(bytes(blob)), PLACE, 95, 5)
    cut = _encrypt_file(b"x" * 100, 10)[: -(10 + 16)]  # the last chunk dropped
    with pytest.raises(errors.AtRestError, match="chunk 8"):
        RING.read_range(io.BytesIO(cut), PLACE, 85, 5)
    with pytest.raises(errors.AtRestError):
        RING.read_range(io.BytesIO(_encrypt_file(b"abc", 10)), atrest.Place("A", "B", "C"), 0, 3)
