"""Wake the outbound worker when the ERP writes to a SQLite database (watchdog).

Polling stays the safety net; a change to the database file or its WAL only makes
pickup immediate instead of waiting out the poll interval. Other databases rely on
polling here (issue 5 adds LISTEN/NOTIFY and adaptive polling).
"""

from __future__ import annotations

import os
import threading

import sqlalchemy as sa
import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = structlog.get_logger("mpg.wakeup")


class _Handler(FileSystemEventHandler):
    def __init__(self, names: frozenset[str], wake: threading.Event) -> None:
        self._names = names
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
        if os.path.basename(path) in self._names:
            self._wake.set()


class DatabaseWatcher:
    """Sets ``wake`` whenever the SQLite database file or its journal changes."""

    def __init__(self, database_url: str, wake: threading.Event) -> None:
        url = sa.make_url(database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            raise ValueError("only a SQLite database file can be watched")
        path = os.path.abspath(url.database)
        base = os.path.basename(path)
        self._folder = os.path.dirname(path)
        self._handler = _Handler(frozenset({base, base + "-wal", base + "-journal"}), wake)
        self._observer = Observer()

    def start(self) -> None:
        """Begin watching (a background thread of watchdog's)."""
        self._observer.schedule(self._handler, self._folder, recursive=False)
        self._observer.daemon = True
        self._observer.start()
        log.debug("watching_database", folder=self._folder)

    def stop(self) -> None:
        """Stop watching and wait for the watcher thread."""
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)


def watchable(database_url: str) -> bool:
    """True when ``database_url`` names a SQLite file that can be watched."""
    url = sa.make_url(database_url)
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
