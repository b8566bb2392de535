"""Personal data encrypted at rest: fields, files and blind indexes (pure, no I/O).

A :class:`Keyring` holds the configured data keys by key id: the current one encrypts,
all of them decrypt, so keys rotate without stopping (a rekey re-encrypts what
:meth:`Keyring.key_id_of` shows is under an old key). From each 32-byte data key HKDF
derives separate subkeys for encryption and for the blind index, so neither use can
weaken the other.

A field (an address, a device id, a subject) is AES-256-GCM encrypted::

    version (1) | key id length (1) | key id (ASCII) | nonce (12) | ciphertext ‖ tag (16)

with its :class:`Place` (table, column, row key) and the header as associated data: a
value copied into another column or row no longer decrypts. A file is encrypted in
chunks (the STREAM construction), each its own AES-GCM message::

    "MPGR" | version | key id length | key id | chunk size (u32 BE) | salt (16)
    chunk 0 ‖ tag | chunk 1 ‖ tag | ... | final chunk ‖ tag

under a key HKDF derives from the encryption subkey and the file's random salt; chunk
``i``'s nonce is seven zero bytes, ``i`` (u32 BE) and a byte that is 1 only for the last
chunk, so a reordered, dropped or truncated chunk fails. Every chunk but the last is
full. Like :func:`mpg.wire.envelope.open_sealed_stream` a file streams from source to
sink a block at a time and the sink is not to be used unless decryption returns.
Decisions: docs/devices.md, "Personal data at rest".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Mapping
from typing import BinaryIO, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpg import errors
from mpg.wire.envelope import IV_BYTES, KEY_BYTES, TAG_BYTES, Sink

VERSION: Final = 1
FILE_MAGIC: Final = b"MPGR"
SALT_BYTES: Final = 16
#: Plaintext bytes per file chunk unless told otherwise.
CHUNK_BYTES: Final = 64 * 1024
#: Largest chunk a file header may declare (bounds the memory one chunk needs).
MAX_CHUNK_BYTES: Final = 16 * 1024 * 1024
_INFO_ENCRYPT: Final = b"mpg at-rest v1 encryption"
_INFO_INDEX: Final = b"mpg at-rest v1 blind index"
_INFO_FILE: Final = b"mpg at-rest v1 file"
_FIELD_LABEL: Final = b"mpg field\x00"
_FILE_LABEL: Final = b"mpg file\x00"
_U32: Final = struct.Struct(">I")
_MAX_CHUNKS: Final = 2**32

#: What a blind index is of: an e-mail address (normalised) or a device id (as given).
IndexKind = Literal["email", "device"]


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Where a value lives: bound to it as associated data.

    ``row`` is the row's stable key, known before the insert (e.g. a generated uuid or
    the device id's blind index in hex), never an auto-increment id assigned later.
    """

    table: str
    column: str
    row: str

    def associated_data(self) -> bytes:
        """Length-prefixed parts, so no two places share an encoding."""
        return _column_prefix(self.table, self.column) + _row_part(self.row)


def _row_part(row: str) -> bytes:
    """The row part of :meth:`Place.associated_data`, shared by the fields of a row."""
    encoded = row.encode("utf-8")
    return _U32.pack(len(encoded)) + encoded


@functools.lru_cache(maxsize=1024)
def _column_prefix(table: str, column: str) -> bytes:
    """The table and column part of :meth:`Place.associated_data` (a few dozen in use)."""
    t, c = table.encode("utf-8"), column.encode("utf-8")
    return _U32.pack(len(t)) + t + _U32.pack(len(c)) + c


def _hkdf(key: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(key)


def _check_key_id(key_id: str) -> bytes:
    encoded = key_id.encode("ascii", "replace")
    if not 1 <= len(encoded) <= 255 or not key_id.isascii() or not key_id.isprintable():
        raise errors.ConfigError(f"data key id {key_id!r}: 1 to 255 printable ASCII characters")
    return encoded


def normalize(kind: IndexKind, value: str) -> str:
    """The form a blind index is taken of: addresses trimmed and lower-cased,
    device ids as given."""
    return value.strip().lower() if kind == "email" else value


@dataclasses.dataclass(frozen=True, slots=True)
class _Subkeys:
    encrypt: bytes
    index: bytes
    #: The field cipher, made once: building it costs as much as a short field.
    aead: AESGCM


class Keyring:
    """The data keys by id; ``current`` encrypts and indexes, all of them decrypt."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise errors.ConfigError(f"data key id {current!r}: no such key")
        self._subkeys: dict[str, _Subkeys] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise errors.ConfigError(f"data key {key_id!r}: must be {KEY_BYTES} bytes")
            encrypt = _hkdf(key, _INFO_ENCRYPT)
            self._subkeys[key_id] = _Subkeys(encrypt, _hkdf(key, _INFO_INDEX), AESGCM(encrypt))
        self.current = current
        self._made_header: tuple[str, bytes] = ("", b"")

    def key_ids(self) -> list[str]:
        """The ids of the keys held, in the order given."""
        return list(self._subkeys)

    def _subkeys_for(self, key_id: str) -> _Subkeys:
        found = self._subkeys.get(key_id)
        if found is None:
            raise errors.AtRestError(f"unknown data key id {key_id!r}")
        return found

    def _header(self) -> bytes:
        # Made once per current key: every field written starts with it.
        if self._made_header[0] != self.current:
            key_id = _check_key_id(self.current)
            self._made_header = (self.current, bytes((VERSION, len(key_id))) + key_id)
        return self._made_header[1]

    # Fields

    def encrypt(self, value: str | bytes, place: Place) -> bytes:
        """``value`` (text as UTF-8) encrypted under the current key, bound to ``place``."""
        return self._encrypt(value, place.associated_data())

    def encrypt_row(
        self, table: str, row: str, values: Mapping[str, str | bytes | None]
    ) -> dict[str, bytes | None]:
        """Each of ``values`` (by column) as :meth:`encrypt` seals it at
        ``table.column`` of ``row``; None stays None. What the fields share (the row's
        part of the associated data, the header, the cipher) is found once for all."""
        row_part = _row_part(row)
        header = self._header()
        label = _FIELD_LABEL + header
        encrypt = self._subkeys[self.current].aead.encrypt
        # The row's IVs drawn in one read of the system's random source, not one each.
        ivs = os.urandom(IV_BYTES * len(values))
        sealed: dict[str, bytes | None] = {}
        for n, (column, value) in enumerate(values.items()):
            if value is None:
                sealed[column] = None
                continue
            data = value.encode("utf-8") if isinstance(value, str) else value
            nonce = ivs[n * IV_BYTES : (n + 1) * IV_BYTES]
            aad = label + _column_prefix(table, column) + row_part
            sealed[column] = header + nonce + encrypt(nonce, data, aad)
        return sealed

    def _encrypt(self, value: str | bytes, place_data: bytes) -> bytes:
        data = value.encode("utf-8") if isinstance(value, str) else value
        header = self._header()
        nonce = _nonce()
        aad = _FIELD_LABEL + header + place_data
        return header + nonce + self._subkeys[self.current].aead.encrypt(nonce, data, aad)

    def decrypt(self, blob: bytes, place: Place) -> bytes:
        """The bytes :meth:`encrypt` sealed at ``place``; :class:`errors.AtRestError`
        if the value was changed, belongs to another place or its key is unknown."""
        return self._decrypt(blob, place.associated_data(), place.table, place.column, place.row)

    def decrypt_text(self, blob: bytes, place: Place) -> str:
        """:meth:`decrypt` for a value that was text."""
        return _text(self.decrypt(blob, place))

    def decrypt_row_text(
        self, table: str, row: str, blobs: Mapping[str, bytes | None]
    ) -> dict[str, str | None]:
        """:meth:`decrypt_text` of each of ``blobs`` (by column) sealed at
        ``table.column`` of ``row``; None stays None. A field under the current key
        (the header written by :meth:`encrypt_row`, key id and its length included)
        skips reading its header again."""
        row_part = _row_part(row)
        header = self._header()
        start = len(header)
        label = _FIELD_LABEL + header
        decrypt = self._subkeys[self.current].aead.decrypt
        opened: dict[str, str | None] = {}
        for column, stored in blobs.items():
            if stored is None:
                opened[column] = None
                continue
            blob = bytes(stored)
            place_data = _column_prefix(table, column) + row_part
            if blob.startswith(header) and len(blob) >= start + IV_BYTES + TAG_BYTES:
                try:
                    data = decrypt(
                        blob[start : start + IV_BYTES],
                        blob[start + IV_BYTES :],
                        label + place_data,
                    )
                except InvalidTag:
                    raise _changed(table, column, row) from None
            else:
                data = self._decrypt(blob, place_data, table, column, row)
            opened[column] = _text(data)
        return opened

    def _decrypt(self, blob: bytes, place_data: bytes, table: str, column: str, row: str) -> bytes:
        key_id, end = _parse_header(blob, 0, "value")
        subkeys = self._subkeys_for(key_id)
        if len(blob) < end + IV_BYTES + TAG_BYTES:
            raise errors.AtRestError("encrypted value is truncated")
        aad = _FIELD_LABEL + blob[:end] + place_data
        try:
            return subkeys.aead.decrypt(blob[end : end + IV_BYTES], blob[end + IV_BYTES :], aad)
        except InvalidTag:
            raise _changed(table, column, row) from None

    def key_id_of(self, blob: bytes) -> str:
        """The key id a value or file header was encrypted under (to find what a rekey
        must re-encrypt)."""
        if blob[: len(FILE_MAGIC)] == FILE_MAGIC:
            return _parse_header(blob, len(FILE_MAGIC), "file")[0]
        return _parse_header(blob, 0, "value")[0]

    # Blind index

    def blind_index(self, kind: IndexKind, value: str) -> bytes:
        """HMAC-SHA256 of the normalised ``value`` under the current index subkey."""
        return self._index(self.current, kind, value)

    def blind_indexes(self, kind: IndexKind, value: str) -> tuple[bytes, ...]:
        """The index under every key, current first: a lookup during a rotation
        matches rows not yet re-indexed."""
        others = [key_id for key_id in self._subkeys if key_id != self.current]
        return tuple(self._index(key_id, kind, value) for key_id in [self.current, *others])

    def _index(self, key_id: str, kind: IndexKind, value: str) -> bytes:
        message = kind.encode("ascii") + b"\x00" + normalize(kind, value).encode("utf-8")
        return hmac.new(self._subkeys[key_id].index, message, hashlib.sha256).digest()

    # Files

    def encrypt_stream(
        self, source: BinaryIO, sink: Sink, place: Place, *, chunk: int = CHUNK_BYTES
    ) -> None:
        """Encrypt all of ``source`` into ``sink`` in chunks of ``chunk`` plaintext bytes."""
        writer = self.stream_writer(sink, place, chunk=chunk)
        while data := source.read(chunk):
            writer.write(data)
        writer.close()

    def stream_writer(self, sink: Sink, place: Place, *, chunk: int = CHUNK_BYTES) -> StreamWriter:
        """A file-like writer that encrypts what is written to it into ``sink``, for
        producers that push (a decrypting stream, a hash tee); :meth:`StreamWriter.close`
        seals the last chunk."""
        if not 1 <= chunk <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk must be 1 to {MAX_CHUNK_BYTES} bytes")
        salt = secrets.token_bytes(SALT_BYTES)
        header = FILE_MAGIC + self._header() + _U32.pack(chunk) + salt
        aead = AESGCM(_hkdf(self._subkeys[self.current].encrypt, _INFO_FILE, salt))
        sink.write(header)
        return StreamWriter(sink, aead, _FILE_LABEL + header + place.associated_data(), chunk)

    def read_range(self, source: BinaryIO, place: Place, offset: int, length: int) -> bytes:
        """``length`` plaintext bytes from ``offset`` of a file :meth:`encrypt_stream`
        wrote at ``place``, in a seekable ``source``: only the chunks that hold them are
        read and checked (fewer bytes at the end of the file)."""
        aead, aad, chunk, start = self._open_header(source, place)
        body = source.seek(0, 2) - start
        sealed_chunk = chunk + TAG_BYTES
        count = max(-(-body // sealed_chunk), 1)
        out = bytearray()
        index = offset // chunk
        while len(out) < length and index < count:
            source.seek(start + index * sealed_chunk)
            sealed = _read_full(source, sealed_chunk)
            try:
                data = aead.decrypt(_chunk_nonce(index, index == count - 1), sealed, aad)
            except InvalidTag:
                raise errors.AtRestError(
                    f"encrypted file chunk {index} was changed, moved or cut off"
                ) from None
            skip = offset - index * chunk if not out else 0
            out += data[skip : skip + length - len(out)]
            index += 1
        return bytes(out)

    def _open_header(self, source: BinaryIO, place: Place) -> tuple[AESGCM, bytes, int, int]:
        """Read a file header: the chunk cipher, associated data, chunk size and where
        the chunks start."""
        start = _read_full(source, len(FILE_MAGIC) + 2)
        if start[: len(FILE_MAGIC)] != FILE_MAGIC:
            raise errors.AtRestError("not an encrypted file (bad magic)")
        if len(start) < len(FILE_MAGIC) + 2:
            raise errors.AtRestError("encrypted file header is truncated")
        start += _read_full(source, start[-1] + _U32.size + SALT_BYTES)
        key_id, end = _parse_header(start, len(FILE_MAGIC), "file")
        subkeys = self._subkeys_for(key_id)
        if len(start) < end + _U32.size + SALT_BYTES:
            raise errors.AtRestError("encrypted file header is truncated")
        (chunk,) = _U32.unpack_from(start, end)
        if not 1 <= chunk <= MAX_CHUNK_BYTES:
            raise errors.AtRestError(f"encrypted file declares a chunk size of {chunk}")
        salt = start[end + _U32.size :]
        aead = AESGCM(_hkdf(subkeys.encrypt, _INFO_FILE, salt))
        return aead, _FILE_LABEL + start + place.associated_data(), chunk, len(start)

    def decrypt_stream(self, source: BinaryIO, sink: Sink, place: Place) -> None:
        """Decrypt a file :meth:`encrypt_stream` wrote at ``place`` into ``sink``.

        Raises :class:`errors.AtRestError` for an unknown key, a changed, reordered or
        missing chunk, a cut-off file or data after the last chunk.
        """
        aead, aad, chunk, _ = self._open_header(source, place)
        sealed = _read_full(source, chunk + TAG_BYTES)
        index = 0
        while True:
            if len(sealed) < TAG_BYTES:
                raise errors.AtRestError(f"encrypted file is truncated at chunk {index}")
            following = _read_full(source, chunk + TAG_BYTES)
            final = not following
            try:
                sink.write(aead.decrypt(_chunk_nonce(index, final), sealed, aad))
            except InvalidTag:
                raise errors.AtRestError(
                    f"encrypted file chunk {index} was changed, moved or cut off"
                ) from None
            if final:
                return
            sealed, index = following, index + 1


class StreamWriter:
    """Encrypts what is written into chunks (see :meth:`Keyring.stream_writer`).

    Holds at most one chunk and the bytes of the current write: a chunk is sealed only
    once more data follows it, so the last one is known at :meth:`close`.
    """

    def __init__(self, sink: Sink, aead: AESGCM, aad: bytes, chunk: int) -> None:
        self._sink = sink
        self._aead = aead
        self._aad = aad
        self._chunk = chunk
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        #: Clear bytes written so far.
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take ``data``; seal and write every chunk that more data now follows."""
        if self._closed:
            raise ValueError("write to a closed StreamWriter")
        self._buffer += data
        self.size += len(data)
        done = 0
        while len(self._buffer) - done > self._chunk:
            self._seal(bytes(self._buffer[done : done + self._chunk]), final=False)
            done += self._chunk
        del self._buffer[:done]
        return len(data)

    def close(self) -> None:
        """Seal the last chunk (empty for an empty file); writing after this is an error."""
        if not self._closed:
            self._seal(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._closed = True

    def _seal(self, data: bytes, *, final: bool) -> None:
        self._sink.write(self._aead.encrypt(_chunk_nonce(self._index, final), data, self._aad))
        self._index += 1


def _chunk_nonce(index: int, final: bool) -> bytes:
    if index >= _MAX_CHUNKS:
        raise errors.AtRestError("file too long for its chunk size")
    return bytes(7) + _U32.pack(index) + (b"\x01" if final else b"\x00")


def _nonce() -> bytes:
    """A fresh random IV: what ``secrets.token_bytes`` returns, without its two calls
    around ``os.urandom`` (a field is sealed for every personal column written)."""
    return os.urandom(IV_BYTES)


def _changed(table: str, column: str, row: str) -> errors.AtRestError:
    """The error for a value whose tag does not match its place."""
    return errors.AtRestError(
        f"encrypted value at {table}.{column} row {row!r} "
        "was changed or belongs to another row or column"
    )


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.AtRestError("decrypted value is not UTF-8 text") from None


def _parse_header(blob: bytes, offset: int, what: str) -> tuple[str, int]:
    """The key id and the end of ``version | key id length | key id`` at ``offset``."""
    if len(blob) < offset + 2:
        raise errors.AtRestError(f"encrypted {what} is truncated")
    if blob[offset] != VERSION:
        raise errors.AtRestError(f"encrypted {what} has unknown format version {blob[offset]}")
    end = offset + 2 + blob[offset + 1]
    if len(blob) < end:
        raise errors.AtRestError(f"encrypted {what} is truncated")
    try:
        return blob[offset + 2 : end].decode("ascii"), end
    except UnicodeDecodeError:
        raise errors.AtRestError(f"encrypted {what} has a malformed key id") from None


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (a pipe may return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        data = source.read(remaining)
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)
