"""Attachment files on disk, encrypted: staged chunked uploads and ranged downloads.

An upload is keyed by (account, TxMessageId, SeqNo) in ``UploadStage``. While it
arrives its stage is a folder under ``data_dir/blobs`` (a random name, so a message's
file can never be overwritten by a later upload with the same key) holding
**segments**: each chunk's new bytes as one file encrypted with the data key
(:meth:`mpg.wire.atrest.Keyring.stream_writer`, bound to the segment's id, which its
name carries with its offset and length). An upload body is decrypted from its
envelope straight into such an encrypted file while it is spooled (:class:`Spooled`,
:meth:`BlobStore.spool`), which then becomes the segment by a rename: no clear byte of
an attachment is ever written to disk. Bytes the server already has are skipped, so a
client that restarts an upload from the beginning is safe.

The final chunk carries the whole file's size and SHA-256: the segments are decrypted
in order into the SHA-256 and into one new encrypted file (bound to its own name),
which is fsynced and becomes the stage's ``Path`` once both match; the segments go.
A submitted message then takes the file over (:mod:`mpg.server.queues`), and
downloads decrypt only the chunks of the range asked for
(:meth:`mpg.wire.atrest.Keyring.read_range`). Files are streamed; none is held whole
in memory. A file of an older version (``BlobKeyId`` NULL) is read as it is until
``mpg server rekey`` encrypts it.

Each account has a quota of staged bytes and staged files (``server.upload_quota_bytes``,
``server.upload_quota_files``): an upload beyond it is refused with 429, to retry
once the account's submits have taken its stages over or housekeeping has purged
the abandoned ones (:func:`mpg.server.housekeeping.purge_stages`). A stage's
``Size`` is what it holds, updated with every chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import threading
import uuid
from typing import BinaryIO, Final

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import transactions
from mpg.server import states, tables
from mpg.server.vault import Vault
from mpg.wire import atrest, model

log = structlog.get_logger(__name__)

#: Segment files in a stage folder: offset, clear length (hex) and the segment's id.
_SEGMENT: Final = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{32})")
#: Largest range one download answers (the client asks for its chunk size).
MAX_RANGE: Final = 16 * 1024 * 1024
#: Uploads of different files run in parallel; chunks of one file one at a time.
_LOCK_STRIPES: Final = 64


@dataclasses.dataclass(frozen=True, slots=True)
class UploadStatus:
    """What the server holds of one upload."""

    received: int
    complete: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """One range of an attachment and what the whole file is."""

    size: int
    sha256: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Spooled:
    """An upload chunk spooled encrypted (:meth:`BlobStore.spool`)."""

    path: pathlib.Path
    segment: str  # its id (32 hex digits): the place it is encrypted for
    length: int  # clear bytes


def segment_place(segment: str) -> atrest.Place:
    """Where a staged segment (or a spooled upload body) is encrypted for."""
    return atrest.Place("UploadStage", "Segment", segment)


def blob_place(path: str | pathlib.Path) -> atrest.Place:
    """Where an attachment file is encrypted for: its own (random) file name."""
    return atrest.Place("TransmitAttachment", "Blob", pathlib.PurePath(path).name)


def remove(path: str | pathlib.Path) -> None:
    """Delete a stage folder or a file; nothing if it is gone already."""
    target = pathlib.Path(path)
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


class BlobStore:
    """Staged uploads and downloads on disk, their bookkeeping in the server database."""

    def __init__(
        self,
        engine: sa.Engine,
        root: pathlib.Path,
        vault: Vault,
        *,
        quota_bytes: int = 2**62,
        quota_files: int = 2**31,
    ) -> None:
        self._engine = engine
        self._root = root
        self._vault = vault
        self._keyring = vault.keyring
        self._quota_bytes = quota_bytes
        self._quota_files = quota_files
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    def spool(self, path: pathlib.Path) -> tuple[str, atrest.StreamWriter, BinaryIO]:
        """A new segment id, the writer that encrypts a chunk into ``path`` for it, and
        the open file (close the writer, then the file; then :class:`Spooled`)."""
        segment = uuid.uuid4().hex
        fh = path.open("wb")
        return segment, self._keyring.stream_writer(fh, segment_place(segment)), fh

    def upload(
        self,
        account: str,
        tx: str,
        seq: int,
        offset: int,
        chunk: bytes | Spooled,
        *,
        final: bool,
        size: int | None = None,
        sha256: str | None = None,
    ) -> UploadStatus:
        """Store one chunk of (account, tx, seq) at ``offset``; check the file when final.

        Raises :class:`mpg.errors.ValidationError` for a gap before ``offset``, or a
        final size or digest that does not match (the stage then starts over), and
        :class:`mpg.errors.TooManyRequests` beyond the account's quota.
        """
        if offset < 0 or seq < 0:
            raise errors.ValidationError("offset", "offset and seq must not be negative")
        expected: tuple[int, str] | None = None
        if final:
            if size is None or not sha256:
                raise errors.ValidationError("size", "the final chunk carries size and sha256")
            expected = (size, sha256.lower())
        account_id = self._vault.account_id(account)
        submitted = self._submitted(account_id, tx, seq)
        if submitted is not None:
            # The message was already accepted: a repeated upload has nothing to do.
            return UploadStatus(submitted, True)
        path, complete, stored = self._stage(account_id, tx, seq)
        if complete:
            return UploadStatus(stored, True)
        length = chunk.length if isinstance(chunk, Spooled) else len(chunk)
        with self._lock(path):
            if not path.is_dir():
                # Completed (or purged) by another request while this one waited.
                return self.upload(
                    account, tx, seq, offset, chunk, final=final, size=size, sha256=sha256
                )
            held = _held(path)
            if offset + length > held and offset <= held:
                self._check_quota(account_id, offset + length - held)
            received = self._append(path, held, offset, chunk)
            if received != held:
                self._record_size(account_id, tx, seq, received)
            if expected is None:
                return UploadStatus(received, False)
            problem, blob = self._seal(path, *expected)
            if blob is None:
                for segment in list(path.iterdir()):
                    segment.unlink(missing_ok=True)
                self._record_size(account_id, tx, seq, 0)
                log.info("upload_rejected", account=account, tx=tx, seq=seq, reason=problem)
                raise errors.ValidationError("sha256", f"attachment {seq}: {problem}")
            s = tables.upload_stage.c
            states.check(states.UploadState.RECEIVING, states.UploadState.COMPLETE)
            with transactions.begin(self._engine, "recording an upload") as conn:
                conn.execute(
                    tables.upload_stage.update()
                    .where(
                        s.SenderAccount == account_id,
                        s.TxMessageId == tx,
                        s.SeqNo == seq,
                        s.Path == str(path),
                    )
                    .values(
                        Size=expected[0],
                        Complete=True,
                        Sha256=expected[1],
                        Path=str(blob),
                        KeyId=self._keyring.current,
                    )
                )
            remove(path)
        log.info("upload_complete", account=account, tx=tx, seq=seq, size=expected[0])
        return UploadStatus(expected[0], True)

    def download(self, account: str, message_id: str, seq: int, offset: int, length: int) -> Range:
        """Read ``length`` bytes (at most :data:`MAX_RANGE`) from ``offset``.

        The caller must be the message's sender or one of its recipients
        (:class:`mpg.errors.Forbidden`); :class:`mpg.errors.NotFound` when there is
        no such message or attachment.
        """
        if offset < 0 or length < 0:
            raise errors.ValidationError("offset", "offset and length must not be negative")
        account_id = self._vault.account_id(account)
        for attempt in range(2):
            file = self._attachment(account, account_id, message_id, seq)
            length = min(length, MAX_RANGE, max(file.FileSize - offset, 0))
            if not length:
                return Range(file.FileSize, file.Sha256, b"")
            try:
                with open(file.BlobPath, "rb") as fh:
                    if file.BlobKeyId is None:  # a clear file of an older version
                        fh.seek(offset)
                        data = fh.read(length)
                    else:
                        data = self._keyring.read_range(
                            fh, blob_place(file.BlobPath), offset, length
                        )
                return Range(file.FileSize, file.Sha256, data)
            except FileNotFoundError:
                # A rekey replaced the file between the lookup and the open: look again.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _attachment(self, account: str, account_id: str, message_id: str, seq: int) -> tables.Row:
        """The attachment's row, if ``account`` may read the message."""
        t, a, r = tables.transmit_queue.c, tables.transmit_attachment.c, tables.receive_queue.c
        with transactions.begin(self._engine, "finding an attachment") as conn:
            msg = conn.execute(
                sa.select(t.SenderAccount, t.State).where(t.MessageId == message_id)
            ).first()
            if msg is None or msg.State == states.MessageState.REFUSED:
                raise errors.NotFound(f"no message {message_id}")
            if msg.SenderAccount != account_id:
                entry = conn.execute(
                    sa.select(r.EntryId)
                    .where(
                        r.MessageId == message_id,
                        r.Recipient == account_id,
                        r.Kind == model.DeliveryKind.MESSAGE,
                        r.State != states.EntryState.WITHDRAWN,
                    )
                    .limit(1)
                ).first()
                if entry is None:
                    raise errors.Forbidden(f"{account} may not read message {message_id}")
            file = conn.execute(
                sa.select(a.FileSize, a.Sha256, a.BlobPath, a.BlobKeyId).where(
                    a.MessageId == message_id, a.SeqNo == seq
                )
            ).first()
        if file is None:
            raise errors.NotFound(f"message {message_id} has no attachment {seq}")
        return file

    def _submitted(self, account_id: str, tx: str, seq: int) -> int | None:
        """The size of the attachment if (account, tx) was accepted already, else None."""
        t, a = tables.transmit_queue.c, tables.transmit_attachment.c
        with transactions.begin(self._engine, "reading a submitted attachment") as conn:
            row = conn.execute(
                sa.select(a.FileSize)
                .join_from(
                    tables.transmit_queue, tables.transmit_attachment, t.MessageId == a.MessageId
                )
                .where(
                    t.SenderAccount == account_id,
                    t.TxMessageId == tx,
                    t.State != states.MessageState.REFUSED,
                    a.SeqNo == seq,
                )
            ).first()
        return None if row is None else int(row.FileSize)

    def _stage(self, account_id: str, tx: str, seq: int) -> tuple[pathlib.Path, bool, int]:
        """The stage's folder (its file when complete), whether it is complete and its
        size; created when new. A stage of an older version still receiving (a clear
        file, ``KeyId`` NULL) starts over."""
        s = tables.upload_stage.c
        key = (s.SenderAccount == account_id, s.TxMessageId == tx, s.SeqNo == seq)
        with transactions.begin(self._engine, "staging an upload") as conn:
            row = conn.execute(sa.select(s.Path, s.Complete, s.Size, s.KeyId).where(*key)).first()
            if row is not None and (row.Complete or row.KeyId is not None):
                return pathlib.Path(row.Path), bool(row.Complete), int(row.Size)
            if row is not None:
                conn.execute(tables.upload_stage.delete().where(*key))
                remove(row.Path)
            count = conn.execute(
                sa.select(sa.func.count()).where(s.SenderAccount == account_id)
            ).scalar_one()
            if count >= self._quota_files:
                raise errors.TooManyRequests(
                    f"the account holds {count} staged uploads, the most it may; "
                    "submit or wait for abandoned ones to be purged"
                )
            name = uuid.uuid4().hex
            path = self._root / name[:2] / name
            # The folder exists before the row commits: a concurrent chunk that sees the
            # row can use it. A folder left by a failed commit is empty and harmless.
            path.mkdir(parents=True, exist_ok=True)
            states.check(None, states.UploadState.RECEIVING)
            conn.execute(
                tables.upload_stage.insert().values(
                    SenderAccount=account_id,
                    TxMessageId=tx,
                    SeqNo=seq,
                    Size=0,
                    Path=str(path),
                    Complete=False,
                    KeyId=self._keyring.current,
                )
            )
        return path, False, 0

    def _append(self, stage: pathlib.Path, held: int, offset: int, chunk: bytes | Spooled) -> int:
        """Add the part of ``chunk`` beyond the ``held`` bytes as a new segment; return
        the new size. A spooled chunk that starts at ``held`` becomes the segment as it is."""
        if offset > held:
            raise errors.ValidationError(
                "offset", f"gap: the server holds {held} bytes, the chunk starts at {offset}"
            )
        length = chunk.length if isinstance(chunk, Spooled) else len(chunk)
        if offset + length <= held:
            return held
        skip = held - offset
        if isinstance(chunk, Spooled) and not skip:
            os.replace(chunk.path, stage / _segment_name(held, length, chunk.segment))
            return held + length
        segment = uuid.uuid4().hex
        temp = stage / f".{segment}.tmp"
        with temp.open("wb") as fh:
            writer = self._keyring.stream_writer(fh, segment_place(segment))
            if isinstance(chunk, Spooled):
                with chunk.path.open("rb") as source:
                    self._keyring.decrypt_stream(
                        source, _Skipping(writer, skip), segment_place(chunk.segment)
                    )
            else:
                writer.write(chunk[skip:])
            writer.close()
        os.replace(temp, stage / _segment_name(held, length - skip, segment))
        return held + length - skip

    def _seal(self, stage: pathlib.Path, size: int, sha256: str) -> tuple[str, pathlib.Path | None]:
        """Decrypt the segments in order into one new encrypted file and their SHA-256:
        ('', the file) when size and digest match and it is on disk, else the problem."""
        held = _held(stage)
        if held != size:
            return f"size is {held}, expected {size}", None
        name = uuid.uuid4().hex
        blob = self._root / name[:2] / name
        digest = hashlib.sha256()
        blob.parent.mkdir(parents=True, exist_ok=True)
        with blob.open("wb") as fh:
            writer = self._keyring.stream_writer(fh, blob_place(blob))
            tee = _Tee(digest, writer)
            for file_name, segment, _, _ in _segments(stage):
                with (stage / file_name).open("rb") as source:
                    self._keyring.decrypt_stream(source, tee, segment_place(segment))
            writer.close()
            if digest.hexdigest() != sha256:
                fh.close()
                blob.unlink()
                return "sha256 does not match", None
            fh.flush()
            os.fsync(fh.fileno())
        return "", blob

    def _check_quota(self, account_id: str, more: int) -> None:
        """Refuse ``more`` staged bytes beyond the account's quota (429)."""
        s = tables.upload_stage.c
        with transactions.begin(self._engine, "summing staged uploads") as conn:
            staged = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(s.Size), 0)).where(
                    s.SenderAccount == account_id
                )
            ).scalar_one()
        if int(staged) + more > self._quota_bytes:
            raise errors.TooManyRequests(
                f"the account has {int(staged)} bytes of staged uploads; {more} more would "
                f"pass its quota of {self._quota_bytes}"
            )

    def _record_size(self, account_id: str, tx: str, seq: int, size: int) -> None:
        s = tables.upload_stage.c
        with transactions.begin(self._engine, "recording an upload's size") as conn:
            conn.execute(
                tables.upload_stage.update()
                .where(s.SenderAccount == account_id, s.TxMessageId == tx, s.SeqNo == seq)
                .values(Size=size)
            )

    def _lock(self, path: pathlib.Path) -> threading.Lock:
        return self._locks[hash(path.name) % _LOCK_STRIPES]


class _Skipping:
    """A sink that drops its first ``skip`` bytes and passes the rest on."""

    def __init__(self, sink: atrest.StreamWriter, skip: int) -> None:
        self._sink = sink
        self._skip = skip

    def write(self, data: bytes) -> int:
        dropped = min(self._skip, len(data))
        self._skip -= dropped
        if dropped < len(data):
            self._sink.write(data[dropped:])
        return len(data)


class _Tee:
    """A sink that hashes what it passes on."""

    def __init__(self, digest: hashlib._Hash, sink: atrest.StreamWriter) -> None:
        self._digest = digest
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._sink.write(data)


def _segment_name(offset: int, length: int, segment: str) -> str:
    return f"{offset:016x}-{length:016x}-{segment}"


def _segments(stage: pathlib.Path) -> list[tuple[str, str, int, int]]:
    """The stage's segments as (file name, id, offset, length), by offset (temp files
    skipped)."""
    found = []
    for entry in stage.iterdir():
        match = _SEGMENT.fullmatch(entry.name)
        if match:
            found.append((entry.name, match[3], int(match[1], 16), int(match[2], 16)))
    return sorted(found, key=lambda seg: seg[2])


def _held(stage: pathlib.Path) -> int:
    """Clear bytes the stage's segments hold (they follow each other from 0)."""
    return max((offset + length for _, _, offset, length in _segments(stage)), default=0)
