"""SQLite's WAL checkpoints run by a thread of their own (mpg.db.checkpoints)."""

from __future__ import annotations

import pathlib
import threading
import time

import pytest
import sqlalchemy as sa
from harness import World
from structlog.testing import capture_logs

from mpg import config
from mpg.db import checkpoints, engine
from mpg.gateway import runner

OPTIONS = engine.EngineOptions("database_url")


def _engine(path: pathlib.Path) -> sa.Engine:
    eng = engine.create_engine(f"sqlite:///{path}", OPTIONS)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (v BLOB)")
    return eng


def _write(eng: sa.Engine, kib: int) -> None:
    with eng.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t (v) VALUES (randomblob(?))", (kib * 1024,))


def test_a_commit_stays_in_the_log_until_the_checkpointer_copies_it(tmp_path: pathlib.Path) -> None:
    """The connections no longer checkpoint a small log themselves; a look does."""
    db = tmp_path / "mpg.db"
    eng = _engine(db)
    try:
        before = db.stat().st_size
        _write(eng, 2048)
        assert db.stat().st_size == before  # the 2 MiB are in mpg.db-wal only
        assert checkpoints.Checkpointer(eng).look()
        assert db.stat().st_size > before + 2 * 1024 * 1024
    finally:
        eng.dispose()


def test_a_look_with_nothing_committed_since_the_last_does_nothing(tmp_path: pathlib.Path) -> None:
    eng = _engine(tmp_path / "mpg.db")
    checkpointer = checkpoints.Checkpointer(eng)
    try:
        _write(eng, 4)
        assert checkpointer.look()
        assert not checkpointer.look()
        _write(eng, 4)
        assert checkpointer.look()
    finally:
        checkpointer.stop()
        eng.dispose()


def test_every_connection_keeps_an_automatic_checkpoint_as_a_safety_net(
    tmp_path: pathlib.Path,
) -> None:
    eng = _engine(tmp_path / "mpg.db")
    try:
        with eng.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == checkpoints.SAFETY_PAGES
    finally:
        eng.dispose()


def test_the_thread_checkpoints_while_it_runs_and_once_more_when_stopped(
    tmp_path: pathlib.Path,
) -> None:
    db = tmp_path / "mpg.db"
    eng = _engine(db)
    checkpointer = checkpoints.Checkpointer(eng, interval=0.02)
    checkpointer.start()
    try:
        before = db.stat().st_size
        _write(eng, 512)
        deadline = time.monotonic() + 5
        while db.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert db.stat().st_size > before
        _write(eng, 512)
        checkpointer.stop()  # its last look copies this too
        stopped = db.stat().st_size
        assert stopped > before + 1024 * 1024
        _write(eng, 512)
        time.sleep(0.1)
        assert db.stat().st_size == stopped  # nobody copies any more
    finally:
        checkpointer.stop()
        eng.dispose()


def test_a_failing_look_is_logged_once_and_the_next_ones_go_on(tmp_path: pathlib.Path) -> None:
    eng = engine.create_engine(f"sqlite:///{tmp_path}/missing-folder/mpg.db", OPTIONS)
    checkpointer = checkpoints.Checkpointer(eng)
    with capture_logs() as logs:
        assert not checkpointer.look()
        assert not checkpointer.look()
    assert [entry["event"] for entry in logs] == ["checkpoint_failed"]
    (tmp_path / "missing-folder").mkdir()
    with capture_logs() as logs:
        assert checkpointer.look()
    assert [entry["event"] for entry in logs] == ["checkpoint_recovered"]
    checkpointer.stop()
    eng.dispose()


@pytest.mark.parametrize(
    ("url", "wanted"),
    [("sqlite:///{tmp}/mpg.db", True), ("sqlite://", False), ("sqlite:///:memory:", False)],
)
def test_only_a_sqlite_file_gets_a_checkpointer(
    tmp_path: pathlib.Path, url: str, wanted: bool
) -> None:
    eng = engine.create_engine(url.format(tmp=tmp_path), OPTIONS)
    assert checkpoints.wanted(eng) is wanted
    eng.dispose()


def _checkpointers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "mpg-checkpoint"}


def test_a_running_gateway_checkpoints_its_database_and_stops_doing_so_with_it(
    local_world: World,
) -> None:
    local_world.init_server()
    gateway = runner.Gateway(config.load(local_world.gateway("erp-a").config))
    before = _checkpointers()
    gateway.start()
    try:
        [started] = _checkpointers() - before
    finally:
        gateway.stop()
    assert not started.is_alive()


def test_a_running_server_checkpoints_its_database(local_world: World) -> None:
    before = _checkpointers()
    local_world.start_server()
    assert len(_checkpointers() - before) == 1
