"""Each group's message file on disk and its current version in memory (docs/push.md).

:meth:`MessageFiles.publish` writes a new version atomically (temp file, fsync, rename)
into the server's folder and, when configured, into an external web server's folder;
it returns the version (its strong ETag goes into the pushes that announce it).
:meth:`MessageFiles.current` gives the version being served: it is read and
compressed once, and kept while the file's inode, size and modification time stay the
same, so a version another server process published is picked up by the next request.
"""

from __future__ import annotations

import dataclasses
import email.utils
import gzip
import hashlib
import os
import pathlib
import re
import threading
from typing import Final

from mpg import atomicfile, errors
from mpg.wire import messagefile

#: Group ids that can name a file: letters, digits, ``_ . -``, not starting with a dot.
_GROUP: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    """One version of a file, ready to serve: identity and gzip bodies, validators."""

    body: bytes
    #: The gzip body, or None when it would not be smaller.
    gzipped: bytes | None
    #: Strong ETag of the identity body; the gzip body's adds ``-gzip`` inside the quotes.
    etag: str
    #: Whole seconds since the epoch (HTTP dates have no fractions).
    modified: int

    @property
    def gzip_etag(self) -> str:
        """The gzip representation's strong ETag (another representation, another tag)."""
        return self.etag[:-1] + '-gzip"'

    @property
    def last_modified(self) -> str:
        """The ``Last-Modified`` header value."""
        return email.utils.formatdate(self.modified, usegmt=True)

    @classmethod
    def of(cls, body: bytes, modified: float) -> Version:
        """The version of ``body`` (compressed here, once)."""
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        return cls(body, packed if len(packed) < len(body) else None, etag_of(body), int(modified))


def etag_of(body: bytes) -> str:
    """The strong ETag of a file's bytes: a hash of its content."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def file_name(group: str) -> str:
    """``<group>.ibi``; ValidationError for an id that cannot name a file."""
    if not _GROUP.fullmatch(group):
        raise errors.ValidationError("group", "letters, digits, '_', '.', '-' (1 to 100)")
    return group + messagefile.SUFFIX


class MessageFiles:
    """The message files of every group, under ``folder`` (and copied to ``export_dir``)."""

    def __init__(self, folder: pathlib.Path, export_dir: pathlib.Path | None = None) -> None:
        self.folder = folder
        self.export_dir = export_dir
        self._cache: dict[str, tuple[tuple[int, int, int], Version]] = {}
        self._lock = threading.Lock()

    def publish(self, group: str, data: bytes) -> Version:
        """Write ``data`` as the group's new version (atomically, in each folder)."""
        name = file_name(group)
        target = self.folder / name
        for folder in (self.folder, self.export_dir):
            if folder is None:
                continue
            try:
                atomicfile.write_atomic(folder / name, data)
            except OSError as exc:
                raise errors.StorageError(
                    f"message file {folder / name} not written: {exc.strerror or exc}"
                ) from exc
        version = self.current(group)
        if version is None:  # removed between our write and our read: nothing to serve
            raise errors.StorageError(f"message file {target} vanished right after writing")
        return version

    def current(self, group: str) -> Version | None:
        """The version being served, or None when the group has no file (or no such id)."""
        try:
            path = self.folder / file_name(group)
        except errors.ValidationError:
            return None
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        with self._lock:
            cached = self._cache.get(group)
        if cached is not None and cached[0] == _key(stat):
            return cached[1]
        try:
            with path.open("rb") as fh:
                # The key of the file actually read (it may have been replaced since the stat).
                stat = os.fstat(fh.fileno())
                body = fh.read()
        except FileNotFoundError:
            return None
        version = Version.of(body, stat.st_mtime)
        with self._lock:
            self._cache[group] = (_key(stat), version)
        return version


def _key(stat: os.stat_result) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
