"""Attachment files on disk: staged chunked uploads and ranged downloads.

An upload is keyed by (account, TxMessageId, SeqNo) in ``UploadStage`` and written
to its own file under ``data_dir/blobs`` (a random name, so a message's file can
never be overwritten by a later upload with the same key). Chunks are appended at
their offset; bytes the server already has are skipped, so a client that restarts
an upload from the beginning is safe. The final chunk carries the whole file's size
and SHA-256: the server checks both, fsyncs the file and marks the stage complete.
A submitted message then takes the file over (:mod:`mpg.server.queues`), and
downloads read ranges of it. Files are streamed; none is held whole in memory.

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
import shutil
import threading
import uuid
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import transactions
from mpg.server import states, tables
from mpg.wire import model

log = structlog.get_logger(__name__)

#: Bytes read at a time when hashing a finished upload.
HASH_BLOCK: Final = 1024 * 1024
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


class BlobStore:
    """Staged uploads and downloads on disk, their bookkeeping in the server database."""

    def __init__(
        self,
        engine: sa.Engine,
        root: pathlib.Path,
        *,
        quota_bytes: int = 2**62,
        quota_files: int = 2**31,
    ) -> None:
        self._engine = engine
        self._root = root
        self._quota_bytes = quota_bytes
        self._quota_files = quota_files
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    def upload(
        self,
        account: str,
        tx: str,
        seq: int,
        offset: int,
        chunk: bytes | pathlib.Path,
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
        submitted = self._submitted(account, tx, seq)
        if submitted is not None:
            # The message was already accepted: a repeated upload has nothing to do.
            return UploadStatus(submitted, True)
        path, complete, stored = self._stage(account, tx, seq)
        if complete:
            return UploadStatus(stored, True)
        length = chunk.stat().st_size if isinstance(chunk, pathlib.Path) else len(chunk)
        with self._lock(path):
            held = path.stat().st_size
            if offset + length > held and offset <= held:
                self._check_quota(account, offset + length - held)
            received = _append(path, offset, chunk)
            if received != held:
                self._record_size(account, tx, seq, received)
            if expected is None:
                return UploadStatus(received, False)
            problem = _verify(path, *expected)
            if problem:
                with path.open("r+b") as fh:
                    fh.truncate(0)
                self._record_size(account, tx, seq, 0)
                log.info("upload_rejected", account=account, tx=tx, seq=seq, reason=problem)
                raise errors.ValidationError("sha256", f"attachment {seq}: {problem}")
        s = tables.upload_stage.c
        states.check(states.UploadState.RECEIVING, states.UploadState.COMPLETE)
        with transactions.begin(self._engine, "recording an upload") as conn:
            conn.execute(
                tables.upload_stage.update()
                .where(s.SenderAccount == account, s.TxMessageId == tx, s.SeqNo == seq)
                .values(Size=expected[0], Complete=True, Sha256=expected[1])
            )
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
        t, a, r = tables.transmit_queue.c, tables.transmit_attachment.c, tables.receive_queue.c
        with transactions.begin(self._engine, "finding an attachment") as conn:
            msg = conn.execute(
                sa.select(t.SenderAccount, t.State).where(t.MessageId == message_id)
            ).first()
            if msg is None or msg.State == states.MessageState.REFUSED:
                raise errors.NotFound(f"no message {message_id}")
            if msg.SenderAccount != account:
                entry = conn.execute(
                    sa.select(r.EntryId)
                    .where(
                        r.MessageId == message_id,
                        r.Recipient == account,
                        r.Kind == model.DeliveryKind.MESSAGE,
                        r.State != states.EntryState.WITHDRAWN,
                    )
                    .limit(1)
                ).first()
                if entry is None:
                    raise errors.Forbidden(f"{account} may not read message {message_id}")
            file = conn.execute(
                sa.select(a.FileSize, a.Sha256, a.BlobPath).where(
                    a.MessageId == message_id, a.SeqNo == seq
                )
            ).first()
        if file is None:
            raise errors.NotFound(f"message {message_id} has no attachment {seq}")
        length = min(length, MAX_RANGE, max(file.FileSize - offset, 0))
        data = b""
        if length:
            with open(file.BlobPath, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
        return Range(file.FileSize, file.Sha256, data)

    def _submitted(self, account: str, tx: str, seq: int) -> int | None:
        """The size of the attachment if (account, tx) was accepted already, else None."""
        t, a = tables.transmit_queue.c, tables.transmit_attachment.c
        with transactions.begin(self._engine, "reading a submitted attachment") as conn:
            row = conn.execute(
                sa.select(a.FileSize)
                .join_from(
                    tables.transmit_queue, tables.transmit_attachment, t.MessageId == a.MessageId
                )
                .where(
                    t.SenderAccount == account,
                    t.TxMessageId == tx,
                    t.State != states.MessageState.REFUSED,
                    a.SeqNo == seq,
                )
            ).first()
        return None if row is None else int(row.FileSize)

    def _stage(self, account: str, tx: str, seq: int) -> tuple[pathlib.Path, bool, int]:
        """The stage's file, whether it is complete and its size; created when new."""
        s = tables.upload_stage.c
        with transactions.begin(self._engine, "staging an upload") as conn:
            row = conn.execute(
                sa.select(s.Path, s.Complete, s.Size).where(
                    s.SenderAccount == account, s.TxMessageId == tx, s.SeqNo == seq
                )
            ).first()
            if row is not None:
                return pathlib.Path(row.Path), bool(row.Complete), int(row.Size)
            count = conn.execute(
                sa.select(sa.func.count()).where(s.SenderAccount == account)
            ).scalar_one()
            if count >= self._quota_files:
                raise errors.TooManyRequests(
                    f"{account} holds {count} staged uploads, the most it may; "
                    "submit or wait for abandoned ones to be purged"
                )
            name = uuid.uuid4().hex
            path = self._root / name[:2] / name
            # The file exists before the row commits: a concurrent chunk that sees the
            # row can open it. A file left by a failed commit is empty and harmless.
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
            states.check(None, states.UploadState.RECEIVING)
            conn.execute(
                tables.upload_stage.insert().values(
                    SenderAccount=account,
                    TxMessageId=tx,
                    SeqNo=seq,
                    Size=0,
                    Path=str(path),
                    Complete=False,
                )
            )
        return path, False, 0

    def _check_quota(self, account: str, more: int) -> None:
        """Refuse ``more`` staged bytes beyond the account's quota (429)."""
        s = tables.upload_stage.c
        with transactions.begin(self._engine, "summing staged uploads") as conn:
            staged = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(s.Size), 0)).where(
                    s.SenderAccount == account
                )
            ).scalar_one()
        if int(staged) + more > self._quota_bytes:
            raise errors.TooManyRequests(
                f"{account} has {int(staged)} bytes of staged uploads; {more} more would "
                f"pass its quota of {self._quota_bytes}"
            )

    def _record_size(self, account: str, tx: str, seq: int, size: int) -> None:
        s = tables.upload_stage.c
        with transactions.begin(self._engine, "recording an upload's size") as conn:
            conn.execute(
                tables.upload_stage.update()
                .where(s.SenderAccount == account, s.TxMessageId == tx, s.SeqNo == seq)
                .values(Size=size)
            )

    def _lock(self, path: pathlib.Path) -> threading.Lock:
        return self._locks[hash(path.name) % _LOCK_STRIPES]


def _append(path: pathlib.Path, offset: int, chunk: bytes | pathlib.Path) -> int:
    """Write the part of ``chunk`` (bytes, or a file's) beyond what the file holds;
    return the new size."""
    with path.open("r+b") as fh:
        held = fh.seek(0, os.SEEK_END)
        if offset > held:
            raise errors.ValidationError(
                "offset", f"gap: the server holds {held} bytes, the chunk starts at {offset}"
            )
        if isinstance(chunk, bytes):
            new = chunk[held - offset :] if offset + len(chunk) > held else b""
            fh.write(new)
            return held + len(new)
        with chunk.open("rb") as source:
            source.seek(held - offset)
            shutil.copyfileobj(source, fh, HASH_BLOCK)
        return fh.tell()


def _verify(path: pathlib.Path, size: int, sha256: str) -> str:
    """'' when the file has this size and digest (and is on disk), else the problem."""
    digest = hashlib.sha256()
    with path.open("r+b") as fh:
        held = fh.seek(0, os.SEEK_END)
        if held != size:
            return f"size is {held}, expected {size}"
        fh.seek(0)
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
        if digest.hexdigest() != sha256:
            return "sha256 does not match"
        os.fsync(fh.fileno())
    return ""
