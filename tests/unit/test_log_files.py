"""Log files: JSON lines with the message ids, rotated by size, never a secret."""

from __future__ import annotations

import json
import logging
import pathlib
import threading
from collections.abc import Iterator

import pytest
import structlog

from mpg import config, logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging itself; put the defaults back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logs.configure(config.LogSettings(), "test", stream=None)
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(path: pathlib.Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_events_go_to_the_file_as_json_lines_with_ids(tmp_path: pathlib.Path) -> None:
    """With log.file set, events (structlog and stdlib) are JSON lines in that file."""
    path = tmp_path / "logs" / "mpg.log"
    logs.configure(config.LogSettings(file=path), "gateway")
    structlog.get_logger("t").info("state_changed", tx_message_id="tx-1", secret="s3cret")
    logging.getLogger("uvicorn").warning("from the standard library")
    found = lines(path)
    assert found[0]["event"] == "state_changed"
    assert found[0]["tx_message_id"] == "tx-1"
    assert found[0]["secret"] == logs.REDACTED
    assert found[1]["event"] == "from the standard library"
    assert "s3cret" not in path.read_text(encoding="utf-8")


def test_file_rotates_at_max_bytes_keeping_the_backups(tmp_path: pathlib.Path) -> None:
    """A full file is renamed .1, .2 …; at most `backups` old files are kept."""
    path = tmp_path / "mpg.log"
    logs.configure(config.LogSettings(file=path, max_bytes=2048, backups=2), "gateway")
    log = structlog.get_logger("t")
    for n in range(200):
        log.info("message_sent", tx_message_id=f"tx-{n}")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mpg.log", "mpg.log.1", "mpg.log.2"]
    for name in files:
        for entry in lines(tmp_path / name):  # every line whole, even across rotation
            assert str(entry["tx_message_id"]).startswith("tx-")
    assert path.stat().st_size <= 2048


def test_lines_from_many_threads_never_interleave(tmp_path: pathlib.Path) -> None:
    """Each thread's line arrives whole in the file."""
    path = tmp_path / "mpg.log"
    logs.configure(config.LogSettings(file=path), "gateway")
    log = structlog.get_logger("t")

    def work(n: int) -> None:
        for i in range(100):
            log.info("step", tx_message_id=f"{n}-{i}", padding="x" * 200)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lines(path)) == 400


def test_file_watcher_debug_events_are_not_logged(tmp_path: pathlib.Path) -> None:
    """At debug level the watcher library's per-event lines stay out of the log file."""
    path = tmp_path / "mpg.log"
    logs.configure(config.LogSettings(file=path, level="debug"), "gateway")
    logging.getLogger("watchdog.observers.inotify_buffer").debug("in-event %s", "x")
    structlog.get_logger("t").debug("ours")
    assert [entry["event"] for entry in lines(path)] == ["ours"]
