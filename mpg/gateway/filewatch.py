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

The read comes :data:`COALESCE_SECONDS` after the first event: a commit writes its pages
one ``write(2)`` each, and the kernel merges a file's unread events into one, so a
gateway's own big commit is a few wake-ups instead of hundreds (read at once, they had
cost a sixth of the sending gateway's CPU in the burst). Nothing is seen later for it:
a commit's counter has rarely moved that soon after its first write
(:mod:`mpg.gateway.wakeup`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final, Protocol

from watchdog.events import (
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

#: Seconds between the first event of a burst and reading them all (Linux).
COALESCE_SECONDS: Final = 0.001


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
    if sys.platform.startswith("linux"):
        return InotifyWatch(files)
    return ObserverWatch(files)


# -- Linux: inotify(7) through inotify_simple --------------------------------------------


class InotifyWatch:
    """inotify(7) read by the thread that calls :meth:`wait` (Linux)."""

    def __init__(self, files: Sequence[str]) -> None:
        # Imported here: the library loads libc's inotify calls, which only Linux has.
        import inotify_simple

        self._flags = inotify_simple.flags
        self._files = tuple(files)
        self._names = frozenset(os.path.basename(f) for f in self._files)
        self._inotify = inotify_simple.INotify(nonblocking=True)
        self._interrupt_r, self._interrupt_w = os.pipe()
        os.set_blocking(self._interrupt_r, False)
        self._poll = select.poll()
        self._poll.register(self._inotify.fd, select.POLLIN)
        self._poll.register(self._interrupt_r, select.POLLIN)
        self._lock = threading.Lock()  # close() against interrupt() from another thread
        self._closed = False
        folder_mask = self._flags.CREATE | self._flags.MOVED_TO | self._flags.ONLYDIR
        self._folder = self._inotify.add_watch(os.path.dirname(self._files[0]), folder_mask)
        self._watched: dict[int, str] = {}  # watch descriptor -> file
        self._events = 0
        self.rearm()

    @property
    def events(self) -> int:
        return self._events

    def rearm(self) -> None:
        # A path whose file already has a watch gets that watch back; a file made anew
        # gets a new one, and the old one ends with IN_IGNORED (see wait).
        for path in self._files:
            try:
                self._watched[self._inotify.add_watch(path, self._flags.MODIFY)] = path
            except FileNotFoundError:
                continue  # not there yet: its creation in the folder arms it

    def wait(self, timeout: float | None) -> Change:
        ready = self._poll.poll(None if timeout is None else timeout * 1000)
        if any(fd == self._inotify.fd for fd, _ in ready):
            time.sleep(COALESCE_SECONDS)
        written = created = False
        for fd, _ in ready:
            if fd == self._interrupt_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._interrupt_r, 64)
                continue
            for event in self._inotify.read(timeout=0):
                self._events += 1
                if event.mask & self._flags.Q_OVERFLOW:
                    written = created = True  # events were lost: look, and watch again
                elif event.mask & self._flags.IGNORED:
                    self._watched.pop(event.wd, None)
                elif event.wd == self._folder:
                    if event.name in self._names:
                        written = created = True
                elif event.wd in self._watched:
                    written = True
        return Change(written, created)

    def interrupt(self) -> None:
        with self._lock:
            if not self._closed:
                os.write(self._interrupt_w, b"!")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._inotify.close()
            for fd in (self._interrupt_r, self._interrupt_w):
                os.close(fd)


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
