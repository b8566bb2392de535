"""Writes to a few files and their creation: what the database watcher looks out for.

On Linux (:class:`InotifyWatch`) the watcher's own thread reads inotify(7): the files
themselves are watched for writes, and their folder only for one of them being created
or moved in (SQLite deletes the WAL when the last connection closes and makes it anew
on the next write), so the kernel filters out every other file of the folder: in
``scripts/bench.py``, whose three databases share a folder, the writes to the server's
database beside a gateway's were most of its events. Elsewhere (:class:`ObserverWatch`)
watchdog's observer watches the folder and the names are sorted out after it (Windows'
ReadDirectoryChangesW watches folders only).

Why not watchdog everywhere: its inotify observer hands each event through three
threads and two queues before the watcher sees it. In ``scripts/bench.py`` (100
messages/s) that was half of the receiving gateway's CPU and a quarter of the sending
one's, and three thread hand-offs on the way from the ERP's INSERT to the pickup, each
a wait for the GIL and a core on a busy machine. Read directly, a burst of events is one
``poll`` and one ``read`` in the thread that then looks at the commit counter.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import select
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Final, Protocol

from watchdog.events import (
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What a wait saw: a file written (or made), and whether one was made anew."""

    written: bool = False
    created: bool = False


class FileWatch(Protocol):
    """Watches files for writes and their folder for their creation."""

    @property
    def events(self) -> int:
        """File events seen so far (after the kernel's filtering)."""
        ...

    def wait(self, timeout: float | None) -> Change:
        """Block until an event, ``timeout`` seconds or :meth:`interrupt`."""
        ...

    def rearm(self) -> None:
        """Watch the files there now (after a :attr:`Change.created`)."""
        ...

    def interrupt(self) -> None:
        """End the current or next :meth:`wait` at once (from any thread)."""
        ...

    def close(self) -> None:
        """Stop watching and release what the watch holds."""
        ...


def watch(files: Sequence[str]) -> FileWatch:
    """A watch of ``files`` (absolute paths in one folder) for this platform."""
    if sys.platform.startswith("linux") and _libc() is not None:
        return InotifyWatch(files)
    return ObserverWatch(files)


# -- Linux: inotify(7) through libc ----------------------------------------------------

_IN_MODIFY: Final = 0x00000002
_IN_MOVED_TO: Final = 0x00000080
_IN_CREATE: Final = 0x00000100
_IN_Q_OVERFLOW: Final = 0x00004000
_IN_IGNORED: Final = 0x00008000
_IN_ONLYDIR: Final = 0x01000000
#: struct inotify_event: wd, mask, cookie, len; then ``len`` bytes of NUL-padded name.
_EVENT: Final = struct.Struct("iIII")
_READ_BYTES: Final = 64 * 1024


def _libc() -> Any:
    """The C library when it offers inotify, else None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


def parse_events(data: bytes) -> Iterator[tuple[int, int, str]]:
    """PURE: ``(watch descriptor, mask, name)`` of each event in one ``read``."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        name = data[offset : offset + length].rstrip(b"\0")
        offset += length
        yield wd, mask, os.fsdecode(name)


class InotifyWatch:
    """inotify(7) read by the thread that calls :meth:`wait` (Linux)."""

    def __init__(self, files: Sequence[str]) -> None:
        self._libc = _libc()
        self._files = tuple(files)
        self._names = frozenset(os.path.basename(f) for f in self._files)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _os_error("inotify_init1", "")
        self._fd: int = fd
        self._interrupt_r, self._interrupt_w = os.pipe()
        os.set_blocking(self._interrupt_r, False)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._poll.register(self._interrupt_r, select.POLLIN)
        self._lock = threading.Lock()  # close() against interrupt() from another thread
        self._closed = False
        self._folder = self._add(
            os.path.dirname(self._files[0]), _IN_CREATE | _IN_MOVED_TO | _IN_ONLYDIR
        )
        self._watched: dict[int, str] = {}  # watch descriptor -> file
        self._events = 0
        self.rearm()

    @property
    def events(self) -> int:
        return self._events

    def _add(self, path: str, mask: int) -> int:
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask))
        if wd < 0:
            raise _os_error("inotify_add_watch", path)
        return wd

    def rearm(self) -> None:
        # A path whose file already has a watch gets that watch back; a file made anew
        # gets a new one, and the old one ends with IN_IGNORED (see wait).
        for path in self._files:
            try:
                self._watched[self._add(path, _IN_MODIFY)] = path
            except FileNotFoundError:
                continue  # not there yet: its creation in the folder arms it

    def wait(self, timeout: float | None) -> Change:
        ready = self._poll.poll(None if timeout is None else timeout * 1000)
        written = created = False
        for fd, _ in ready:
            if fd == self._interrupt_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._interrupt_r, 64)
                continue
            for wd, mask, name in self._read():
                self._events += 1
                if mask & _IN_Q_OVERFLOW:
                    written = created = True  # events were lost: look, and watch again
                elif mask & _IN_IGNORED:
                    self._watched.pop(wd, None)
                elif wd == self._folder:
                    if name in self._names:
                        written = created = True
                elif wd in self._watched:
                    written = True
        return Change(written, created)

    def _read(self) -> Iterator[tuple[int, int, str]]:
        while True:
            try:
                data = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                return
            yield from parse_events(data)

    def interrupt(self) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._interrupt_w, b"!")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._fd, self._interrupt_r, self._interrupt_w):
                os.close(fd)


def _os_error(call: str, path: str) -> OSError:
    code = ctypes.get_errno() or errno.EIO
    return OSError(code, f"{call}: {os.strerror(code)}", path or None)


# -- elsewhere: watchdog's observer ------------------------------------------------------


class _Handler(FileSystemEventHandler):
    def __init__(self, names: frozenset[str]) -> None:
        self._names = names
        self.changed = threading.Event()
        self.events = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events += 1
        paths = (event.src_path, event.dest_path)
        if {os.path.basename(os.fsdecode(p)) for p in paths if p} & self._names:
            self.changed.set()


class ObserverWatch:
    """watchdog's observer on the folder, every event on one of the files counted.

    The folder, not the files: on Windows ReadDirectoryChangesW watches folders only.
    """

    def __init__(self, files: Sequence[str]) -> None:
        self._handler = _Handler(frozenset(os.path.basename(f) for f in files))
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(
            self._handler,
            os.path.dirname(files[0]),
            recursive=False,
            event_filter=[FileModifiedEvent, FileCreatedEvent, FileMovedEvent],
        )
        self._observer.start()

    @property
    def events(self) -> int:
        return self._handler.events

    def rearm(self) -> None:
        """Nothing to do: the folder's watch sees a file made anew."""

    def wait(self, timeout: float | None) -> Change:
        written = self._handler.changed.wait(timeout)
        self._handler.changed.clear()
        return Change(written)

    def interrupt(self) -> None:
        self._handler.changed.set()

    def close(self) -> None:
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)
