"""Logging: structlog, one :func:`configure` call at the start of each program.

Every event goes to standard error, one per line: JSON when standard error is not a
terminal (services, CI, pipes) or ``[log] format = "json"``; a readable console line
on a terminal. Timestamps are ISO-8601 UTC. Libraries that log through the standard
``logging`` module (uvicorn, httpx) are rendered the same way, so one process writes
one format.

:func:`redact` runs before rendering: values under keys that can carry secrets or
message bodies (see :data:`SENSITIVE_KEYS`) are replaced by ``"[redacted]"``, so a
careless ``log.info("x", content=row.content)`` cannot leak a message or a key.
"""

from __future__ import annotations

import logging
import logging.handlers
import pathlib
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog

from mpg import config

#: Keys whose values never reach the log (also as a suffix: ``master_key``).
SENSITIVE_KEYS: Final = frozenset(
    {"secret", "key", "token", "password", "content", "file_data", "credential"}
)
REDACTED: Final = "[redacted]"
#: Longest text field written to the log (longer ones are cut, with their length).
MAX_FIELD_CHARS: Final = 2000
# Column names are CamelCase (FileData), event keys snake_case (file_data): compare both.
_NORMALIZED: Final = frozenset(word.replace("_", "") for word in SENSITIVE_KEYS)
_SUFFIXES: Final = tuple("_" + word for word in SENSITIVE_KEYS)

#: Libraries whose info lines are noise for an operator (shown at debug level).
CHATTY_LOGGERS: Final = ("httpx", "httpcore", "apscheduler")

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def is_sensitive(key: str) -> bool:
    """True for ``secret``, ``master_key``, ``FileData`` and the like."""
    name = key.lower()
    return name.replace("_", "") in _NORMALIZED or name.endswith(_SUFFIXES)


def _scrub(value: object) -> object:
    """Redact nested mappings too: a logged dict of row columns is common."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_sensitive(str(k)) else _scrub(v) for k, v in value.items()}
    return value


def redact(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every sensitive key, at any depth of nested dicts."""
    for key in list(event_dict):
        if key == "event":
            continue
        if is_sensitive(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def cap_fields(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: cut text fields longer than :data:`MAX_FIELD_CHARS`.

    Fields often carry what a caller sent (an account name, a refusal's reason); one
    request must not write a line of megabytes.
    """
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            event_dict[key] = f"{value[:MAX_FIELD_CHARS]}… ({len(value)} chars)"
    return event_dict


def _component_adder(component: str) -> structlog.types.Processor:
    def add_component(
        logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("component", component)
        return event_dict

    return add_component


def wants_json(fmt: str, stream: TextIO) -> bool:
    """JSON unless a console was asked for or ``auto`` finds a terminal."""
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    return not _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams (pytest capture)
        return False


class RotatingWriter:
    """A text stream whose complete lines go to a rotating log file.

    structlog prints rendered lines to a stream; the standard library's
    ``RotatingFileHandler`` knows how to rotate. This joins the two: each thread's
    writes are collected up to the newline, and every complete line is handed to the
    handler (which locks, rotates when full and writes it).
    """

    def __init__(self, path: pathlib.Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self._local = threading.local()

    def write(self, text: str) -> int:
        """Collect ``text``; hand on every complete line."""
        pending = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = pending.split("\n")
        for line in lines:
            self._handler.handle(logging.makeLogRecord({"msg": line, "args": None}))
        return len(text)

    def flush(self) -> None:
        """Lines are written whole as they complete; nothing is held back but a partial one."""
        self._handler.flush()

    def isatty(self) -> bool:
        """A file is never a terminal (so ``auto`` format means JSON)."""
        return False

    def close(self) -> None:
        """Close the file (a later line reopens it)."""
        self._handler.close()


_file_writer: RotatingWriter | None = None
#: The lowest level :func:`configure` lets through (everything until it is called).
_threshold = logging.NOTSET


def wants(level: int) -> bool:
    """Whether an event at ``level`` (``logging.INFO``…) would be written.

    For a line logged once per message: structlog's filtering still builds a bound
    logger for every call it drops (about 4 µs, 1 % of a message's instructions on
    the server); asking first costs a comparison.
    """
    return level >= _threshold


def configure(
    settings: config.LogSettings, component: str, *, stream: TextIO | None = None
) -> None:
    """Set up structlog and the standard ``logging`` root for this process.

    ``component`` (``gateway``, ``server``, ``cli``) is added to every event. Events
    go to ``stream``, else to ``settings.file`` (rotating) when set, else to standard
    error. Calling it again replaces the previous setup (tests and reloads do).
    """
    global _file_writer, _threshold
    if _file_writer is not None:
        _file_writer.close()
        _file_writer = None
    out: Any = stream
    if out is None and settings.file is not None:
        out = _file_writer = RotatingWriter(settings.file, settings.max_bytes, settings.backups)
    if out is None:
        out = sys.stderr
    level = _threshold = _LEVELS[settings.level]
    json_lines = wants_json(settings.format, out)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _component_adder(component),
        redact,
        cap_fields,
    ]
    renderer: structlog.types.Processor
    if json_lines:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    # structlog events and the libraries' stdlib records go through ONE handler, whose
    # lock keeps concurrent lines whole (two writers on one stream could interleave).
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Not cached: a second configure() (tests, `mpg demo`) must take effect.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The file watcher's library logs every file event at debug level; with a log file
    # in the watched database folder each line would trigger another, forever.
    logging.getLogger("watchdog").setLevel(max(level, logging.INFO))
    # A line per HTTP request (every CLI call, every long poll) and the scheduler's
    # start-up chatter bury MPG's own events; they are there at debug level.
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(level if level <= logging.DEBUG else logging.WARNING)
