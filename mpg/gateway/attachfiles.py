"""Inbound attachments as files on disk (``[gateway] inbound_attachments = "files"``).

No supported driver streams a ``varbinary(max)``/``bytea``/``LONGBLOB`` parameter or
column through SQLAlchemy Core (docs/databases.md, "Attachments at size"), so large
attachments are kept out of ``FileData``: each is downloaded range by range into a
temporary file under ``attachment_dir``, checked against the size and SHA-256 of the
delivery, fsynced and renamed to ``<RxMessageId>/<SeqNo>-<file name>``.
``InboxAttachment.SourceUri`` then holds that path.

The file is complete before the Inbox transaction that references it commits. A crash
in between leaves an orphan file and no row; the server delivers the message again,
the same name is written again (the rename replaces it atomically) and the row is
committed then. A row therefore never points at a missing or partial file.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import tempfile
from typing import IO, Final

from mpg import errors
from mpg.gateway import client as client_mod

#: Bytes of the original file name kept in the stored name (the rest is cut).
_NAME_LIMIT: Final = 100
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


def prepare(folder: pathlib.Path) -> None:
    """Create ``attachment_dir`` at start, so an unusable one stops the gateway then."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise errors.ConfigError(
            f"gateway.attachment_dir: cannot write into {folder}: {exc.strerror}"
        ) from exc


def safe_name(file_name: str) -> str:
    """``file_name`` reduced to letters, digits, ``._-``: no separators, no dot-files."""
    base = _UNSAFE.sub("_", os.path.basename(file_name.replace("\\", "/")))
    return base.lstrip(".")[:_NAME_LIMIT] or "attachment"


def path_for(folder: pathlib.Path, rx_message_id: str, seq_no: int, file_name: str) -> pathlib.Path:
    """Where attachment ``seq_no`` of Inbox row ``rx_message_id`` is stored."""
    return folder / safe_name(rx_message_id) / f"{seq_no}-{safe_name(file_name)}"


class _Checked:
    """A write-only sink that hashes and counts what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)


def download(
    push: client_mod.PushClient,
    target: pathlib.Path,
    message_id: str,
    seq_no: int,
    chunk_size: int,
    *,
    expected_size: int | None = None,
    expected_sha256: str = "",
) -> int:
    """Stream one attachment into ``target`` atomically; returns its size.

    Only one chunk is in memory at a time. The file appears under its name only once
    complete, checked and on disk; on any failure the temporary file is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as fh:
            sink = _Checked(fh)
            push.download(message_id, seq_no, sink, chunk_size)
            fh.flush()
            os.fsync(fh.fileno())
        if (expected_size is not None and sink.size != expected_size) or (
            expected_sha256 and sink.digest.hexdigest() != expected_sha256.lower()
        ):
            raise errors.RefusedByServer(
                200,
                "bad_download",
                f"attachment {message_id}/{seq_no} does not match its delivery's size/SHA-256",
            )
        os.replace(temp, target)
    except BaseException:
        pathlib.Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return sink.size


def _fsync_dir(folder: pathlib.Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
