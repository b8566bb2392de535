"""Outbound attachment files: read only inside ``attachment_roots``, never via a link.

The gateway reads the files an Outbox row (``AttachmentList``) or a drop file
(``path=``) names with its own rights, so a row must not be able to send whatever the
gateway can read. :meth:`AttachmentRoots.open` accepts a path only when

1. it is absolute and its resolved form (``os.path.realpath``) lies inside one of the
   configured roots (resolved themselves when loaded): ``/tmp/../etc/passwd`` and a
   link pointing out of a root are refused here;
2. opening it from that root one component at a time (``openat`` relative to the
   folder opened before, each with ``O_NOFOLLOW``) meets no symbolic link, so a file
   or folder swapped for a link after step 1 is refused, not followed;
3. the opened descriptor is a regular file and is none of the gateway's own secret
   files (configuration, credential, database, the server's key files), compared by
   device and inode, so a hard link to one is refused too.

The caller reads the bytes from that same descriptor: what was checked is what is
sent. A refusal is a :class:`mpg.errors.AttachmentRefused` (a ``ValueError``) whose
text is the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pathlib
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO, Final

from mpg import config, errors, faults

#: What the server calls its master key file under ``server.data_dir`` by default.
MASTER_KEY_NAME: Final = "master.key"

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
#: Where ``openat`` is missing (Windows) the file is opened by its resolved path and
#: checked against a fresh resolve afterwards instead (docs/security.md says so).
_WALK: Final = os.open in os.supports_dir_fd and bool(_NOFOLLOW and _DIRECTORY)


@dataclasses.dataclass(frozen=True, slots=True)
class AttachmentRoots:
    """The folders attachments may come from and the files never sent from them."""

    roots: tuple[str, ...]
    #: path -> what it is ("the gateway's credential file (gateway.secret_file)").
    protected: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(
        cls, roots: Sequence[os.PathLike[str] | str], protected: Mapping[str, str] | None = None
    ) -> AttachmentRoots:
        """Resolve ``roots`` now (links in a root's own path are the operator's)."""
        return cls(tuple(os.path.realpath(r) for r in roots), dict(protected or {}))

    @classmethod
    def from_settings(
        cls, settings: config.Settings, *, extra: Sequence[pathlib.Path] = ()
    ) -> AttachmentRoots:
        """The configured roots (plus ``extra``: folders the gateway writes itself)."""
        return cls.create([*settings.gateway.attachment_roots, *extra], secret_files(settings))

    def check(self, path: str) -> int:
        """The size of the file at ``path`` if it may be sent, else AttachmentRefused."""
        with self.open(path) as (_, size):
            return size

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[tuple[BinaryIO, int]]:
        """Open ``path`` for sending: ``(file, size)``, or AttachmentRefused saying why."""
        fd = self._open_fd(path)
        with os.fdopen(fd, "rb") as fh:
            yield fh, os.fstat(fh.fileno()).st_size

    def _open_fd(self, path: str) -> int:
        if not os.path.isabs(path):
            raise errors.AttachmentRefused("is not a full path")
        if not self.roots:
            raise errors.AttachmentRefused(
                "is not inside an attachment root (gateway.attachment_roots is empty)"
            )
        resolved = os.path.realpath(path)
        root = next((r for r in self.roots if _inside(resolved, r)), None)
        if root is None:
            target = "" if resolved == path else f" (it leads to {resolved})"
            raise errors.AttachmentRefused(f"is outside the attachment roots{target}")
        # Tests stop the process here (``MPG_FAILPOINTS=attachment.before_open:stop``)
        # to swap the file between the check and the open.
        faults.reach(faults.ATTACHMENT_BEFORE_OPEN)
        try:
            fd = _open_below(root, resolved)
        except OSError as exc:
            raise errors.AttachmentRefused(_reason(exc)) from None
        try:
            self._check_opened(os.fstat(fd), resolved)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_opened(self, st: os.stat_result, resolved: str) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise errors.AttachmentRefused("is not a regular file")
        for secret, what in self.protected.items():
            with contextlib.suppress(OSError):
                known = os.stat(secret)
                if (known.st_dev, known.st_ino) == (st.st_dev, st.st_ino):
                    raise errors.AttachmentRefused(f"is {what}, which is never sent")
        if not _WALK and os.path.realpath(resolved) != resolved:
            raise errors.AttachmentRefused(
                "changed while it was opened (a link appeared on its path)"
            )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _open_below(root: str, resolved: str) -> int:
    """Open ``resolved`` (inside ``root``) without following a link below ``root``."""
    if not _WALK:
        return os.open(resolved, os.O_RDONLY | _CLOEXEC | getattr(os, "O_BINARY", 0))
    parts = os.path.relpath(resolved, root).split(os.sep)
    folder = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=folder)
            os.close(folder)
            folder = below
        return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link (or one replaced it after the path was checked)"
    if exc.errno == errno.ENOTDIR:
        return "has a link or a file where its path needs a folder"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return f"cannot be read ({exc.strerror})"


def secret_files(settings: config.Settings) -> dict[str, str]:
    """The gateway's (and, on a shared host, the server's) secret files by path."""
    gw, server = settings.gateway, settings.server
    found: dict[str, str] = {}
    if settings.source:
        found[settings.source] = "the configuration file"
    if gw.secret_file is not None:
        found[str(gw.secret_file)] = "the gateway's credential file (gateway.secret_file)"
    database = _sqlite_file(gw.database_url)
    if database:
        for suffix in ("", "-wal", "-shm", "-journal"):
            found[database + suffix] = "the gateway's database"
    key = server.master_key_file or server.data_dir / MASTER_KEY_NAME
    found[str(key)] = "the server's master key file"
    if server.tls_key is not None:
        found[str(server.tls_key)] = "the server's TLS key"
    return found


def _sqlite_file(url: str) -> str:
    """The file of a ``sqlite:///`` URL (``sqlite:////abs`` is absolute), else ''."""
    if not url.startswith("sqlite:///"):
        return ""
    path = url.removeprefix("sqlite:///").partition("?")[0]
    return "" if path in ("", ":memory:") else path
