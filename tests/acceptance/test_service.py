"""MPG as a systemd service: real processes against a real NOTIFY_SOCKET, and the unit."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from subprocess import CompletedProcess

import pytest
from harness import DEADLINE, World, wait_for

import mpg
from mpg.cli import service


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """The datagram socket systemd would hand the service in NOTIFY_SOCKET."""
    folder = tempfile.mkdtemp(prefix="mpg-sd-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(DEADLINE)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder)


def next_message(sock: socket.socket, wanted: str) -> list[str]:
    """Read datagrams until one carries ``wanted``; returns every line read."""
    seen: list[str] = []
    while wanted not in seen:
        seen += sock.recv(4096).decode().splitlines()
    return seen


def service_env(path: str) -> dict[str, str]:
    # 1 s watchdog timeout: a ping every 0.5 s, so a test sees several quickly.
    return {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}


def test_gateway_process_speaks_the_notify_protocol(
    world: World, notify_socket: tuple[socket.socket, str]
) -> None:
    """`mpg run` sends READY=1, then WATCHDOG=1 pings, then STOPPING=1 on SIGTERM."""
    sock, path = notify_socket
    world.start_server()
    gw = world.gateway("erp")
    proc = gw.run(env=service_env(path))
    assert "READY=1" in next_message(sock, "READY=1")
    next_message(sock, "WATCHDOG=1")
    next_message(sock, "WATCHDOG=1")
    proc.send_signal(signal.SIGTERM)
    next_message(sock, "STOPPING=1")
    assert proc.wait(timeout=DEADLINE) == 0


def test_server_process_speaks_the_notify_protocol(
    world: World, notify_socket: tuple[socket.socket, str]
) -> None:
    """`mpg server` sends READY=1 once listening, watchdog pings, STOPPING=1 on SIGTERM."""
    sock, path = notify_socket
    world.mpg(world.server_config, "server", "init")
    proc = world.start(world.server_config, "server", env=service_env(path), name="server")
    next_message(sock, "READY=1")
    assert world.listening()
    next_message(sock, "WATCHDOG=1")
    proc.send_signal(signal.SIGTERM)
    next_message(sock, "STOPPING=1")
    assert proc.wait(timeout=DEADLINE) == 0


@pytest.fixture
def service_home() -> Iterator[pathlib.Path]:
    """A folder a service can reach (not under /tmp, which PrivateTmp hides from it)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="mpg-service-test-", dir=pathlib.Path.home()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def service_config(world: World, role: str, folder: pathlib.Path) -> pathlib.Path:
    """A configuration for ``role`` whose every file is in ``folder``."""
    (folder / "data").mkdir()
    shutil.copy(world.root / "server.pem", folder / "server.pem")
    (folder / "cred").write_text("k1.secret\n")
    config = folder / f"{role}.toml"
    if role == "gateway":
        config.write_text(
            '[gateway]\naccount = "erp@example.com"\ndatabase_url = "sqlite:///gw.db"\n'
            f'server_url = "https://127.0.0.1:{world.port}"\nsecret_file = "cred"\n'
        )
    else:
        config.write_text(
            '[server]\ndatabase_url = "sqlite:///server.db"\ndata_dir = "data"\n'
            'tls_cert = "server.pem"\ntls_key = "server.pem"\n'
        )
    return config


def install(world: World, config: pathlib.Path, role: str, *args: str) -> CompletedProcess[str]:
    return world.mpg(
        config,
        "service",
        "install",
        "--role",
        role,
        "--config",
        str(config),
        "--unit-dir",
        str(world.root / "units"),
        "--no-enable",
        *args,
        check=False,
    )


@pytest.mark.parametrize("role", ["gateway", "server"])
def test_service_install_writes_a_unit_systemd_accepts(
    world: World, role: str, service_home: pathlib.Path
) -> None:
    """The unit written by `mpg service install` passes `systemd-analyze verify`.

    Where this checkout itself lies under /tmp (a CI clone may), the service could not
    run its Python or import MPG (PrivateTmp=yes): then the install must refuse and
    name both, and the unit's content is left to tests/unit/test_systemd.py.
    """
    config = service_config(world, role, service_home)
    done = install(world, config, role, "--user", getpass.getuser())
    hidden = [
        path
        for path in (pathlib.Path(sys.executable), pathlib.Path(mpg.__file__).parent)
        if any(path.is_relative_to(folder) for folder in service.PRIVATE_FOLDERS)
    ]
    if hidden:
        assert done.returncode == 1
        for path in hidden:
            assert f"{path} is under /" in done.stderr, done.stderr
        assert not (world.root / "units" / f"mpg-{role}.service").exists()
        return
    assert done.returncode == 0, done.stderr
    unit = world.root / "units" / f"mpg-{role}.service"
    assert f"wrote {unit}" in done.stdout
    text = unit.read_text()
    assert "Type=notify" in text
    assert f"--config {config}" in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the content was checked above")
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify reports problems on stderr even with exit 0; an accepted unit prints nothing
    # about itself (other units of the host may be named, they are not ours).
    ours = [line for line in done.stderr.splitlines() if unit.name in line]
    assert done.returncode == 0, done.stderr
    assert ours == [], done.stderr


def test_service_install_refuses_a_user_that_does_not_exist(
    world: World, service_home: pathlib.Path
) -> None:
    """No unit is written for a User= systemd could not start it as; the fix is named."""
    config = service_config(world, "gateway", service_home)
    done = install(world, config, "gateway", "--user", "mpg-no-such-user")
    assert done.returncode == 1
    assert "user mpg-no-such-user does not exist: create it (sudo useradd --system" in done.stderr
    assert not (world.root / "units").exists()


def test_service_install_refuses_paths_the_service_cannot_see(world: World) -> None:
    """A configuration and database under /tmp would be invisible behind PrivateTmp=yes."""
    world.mpg(world.server_config, "server", "init")
    config = world.gateway("erp").config  # in the test's folder under /tmp
    done = install(world, config, "gateway", "--user", getpass.getuser())
    assert done.returncode == 1
    assert f"{config} is under /tmp, which the service does not see (PrivateTmp=yes)" in (
        done.stderr
    )
    assert not (world.root / "units").exists()


def log_events(world: World, name: str, event: str) -> list[dict[str, object]]:
    found = []
    for line in (world.root / f"{name}.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == event:
                found.append(entry)
    return found


def test_sighup_reloads_what_is_safe_and_keeps_running(world: World) -> None:
    """SIGHUP applies poll_interval, names server_url as needing a restart, keeps going."""
    world.start_server()
    gw = world.gateway("erp")
    # At debug level the file watcher logs every write to the log beside the database,
    # which writes the log again: keep this test's log small enough to read repeatedly.
    gw.config.write_text(gw.config.read_text().replace('level = "debug"', 'level = "info"'))
    proc = gw.run()
    first = gw.mpg("send", "--to", "erp@example.com", "--content", "x").stdout.strip()
    gw.wait_state(first, 29)
    text = gw.config.read_text()
    text = text.replace("poll_interval = 0.2", "poll_interval = 0.3")
    text = text.replace(f"127.0.0.1:{world.port}", "localhost:1")
    gw.config.write_text(text)
    proc.send_signal(signal.SIGHUP)
    [reloaded] = wait_for("the reload", lambda: log_events(world, "erp", "config_reloaded"))
    assert reloaded["applied"] == ["poll_interval"]
    assert reloaded["restart_needed"] == ["server_url"]
    tx = gw.mpg("send", "--to", "erp@example.com", "--content", "x").stdout.strip()
    gw.wait_state(tx, 29)  # still talking to the server it started with
    assert proc.poll() is None


def test_server_survives_sighup(world: World) -> None:
    """The server applies the log settings on SIGHUP and keeps serving."""
    proc = world.start_server()
    # The socket listens before the SIGHUP handler is installed; the lifespan's
    # server_started event comes after it (systemd, too, reloads only after READY=1).
    wait_for("the server to start", lambda: log_events(world, "server", "server_started"))
    proc.send_signal(signal.SIGHUP)
    wait_for("the reload", lambda: log_events(world, "server", "config_reloaded"))
    assert proc.poll() is None
    assert world.listening()
