"""The service host body (what the Windows service runs), tested in a thread here."""

from __future__ import annotations

import logging
import pathlib
import threading
from collections.abc import Callable, Iterator

import pytest
import structlog
from harness import DEADLINE, World, wait_for

from mpg import config
from mpg.service import host


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """run_role configures logging for this process; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def start_role(
    role: host.Role, config_file: pathlib.Path, started: Callable[[], None] | None = None
) -> tuple[threading.Thread, threading.Event, list[int]]:
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(host.run_role(role, config_file, stop, started))
    )
    thread.start()
    return thread, stop, codes


def test_gateway_role_sends_until_stopped_and_logs_beside_its_config(world: World) -> None:
    """Setting the stop event stops the gateway cleanly (code 0); the log is a file."""
    world.start_server()
    gw = world.gateway("erp")
    thread, stop, codes = start_role("gateway", gw.config)
    try:
        tx = gw.mpg("send", "--to", "erp@example.com", "--content", "x").stdout.strip()
        gw.wait_state(tx, 29)
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert codes == [0]
    log_file = gw.config.parent / "mpg-gateway.log"
    assert '"event": "gateway_stopped"' in log_file.read_text()


def test_server_role_serves_until_stopped(world: World) -> None:
    """The server runs in a thread (no signals there) and stops when asked; the
    service's start-up hook (its collector settings) is called once, before it listens."""
    world.mpg(world.server_config, "server", "init")
    listening_when_started: list[bool] = []
    thread, stop, codes = start_role(
        "server", world.server_config, lambda: listening_when_started.append(world.listening())
    )
    try:
        wait_for("the server to listen", world.listening)
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert not thread.is_alive()
    assert codes == [0]
    assert listening_when_started == [False]


def test_a_configured_log_file_is_kept(tmp_path: pathlib.Path) -> None:
    """A service uses log.file when set, else mpg-<role>.log beside the config."""
    file = tmp_path / "gw.toml"
    settings = config.Settings(log=config.LogSettings(file=tmp_path / "mine.log"))
    assert host.service_settings(settings, "gateway", file).log.file == tmp_path / "mine.log"
    default = host.service_settings(config.Settings(), "server", file)
    assert default.log.file == tmp_path / "mpg-server.log"
