"""systemd: unit file content and the notify protocol on a real datagram socket."""

from __future__ import annotations

import os
import pathlib
import socket
import tempfile
from collections.abc import Iterator

import pytest

from mpg.ops import systemd


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket, as systemd provides (short path: sun_path limit)."""
    folder = tempfile.mkdtemp(prefix="mpg-sd-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def unit(**changes: object) -> str:
    args: dict[str, object] = {
        "command": ["/opt/mpg/bin/python", "-m", "mpg.cli.main", "--config", "/etc/mpg/gw.toml"],
        "config_file": pathlib.Path("/etc/mpg/gw.toml"),
        "user": "mpg",
        "writable": [pathlib.Path("/var/lib/mpg")],
    }
    args.update(changes)
    return systemd.unit_text("gateway", **args)  # type: ignore[arg-type]


def test_unit_is_a_hardened_notify_service_with_a_watchdog() -> None:
    """Type=notify, WatchdogSec, strict file system, no privileges, writable data only."""
    lines = set(unit().splitlines())
    for expected in (
        "Type=notify",
        f"WatchdogSec={systemd.WATCHDOG_SEC}",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/mpg",
        "User=mpg",
        "CapabilityBoundingSet=",
        "Environment=MPG_CONFIG=/etc/mpg/gw.toml",
        "ExecStart=/opt/mpg/bin/python -m mpg.cli.main --config /etc/mpg/gw.toml",
    ):
        assert expected in lines


def test_unit_quotes_paths_with_spaces_and_grants_low_ports_only_when_asked() -> None:
    """A data folder with a space stays one path; port < 1024 gets CAP_NET_BIND_SERVICE."""
    text = unit(writable=[pathlib.Path("/srv/mpg data")], bind_privileged_port=True)
    assert 'ReadWritePaths="/srv/mpg data"' in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text
    assert "ReadWritePaths" not in unit(writable=[])


def test_notifier_is_silent_without_notify_socket() -> None:
    """Outside systemd nothing is sent and no watchdog is asked for."""
    notifier = systemd.Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval() is None


def test_notifier_sends_ready_watchdog_and_stopping(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """Each message arrives as one datagram of KEY=VALUE lines."""
    sock, path = notify_socket
    notifier = systemd.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_interval() == 2.0
    assert notifier.ready("up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    """WATCHDOG_PID naming another process means no pings from this one."""
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert systemd.Notifier(env).watchdog_interval() is None


def test_a_vanished_socket_does_not_stop_the_service(tmp_path: pathlib.Path) -> None:
    """Sending to a socket that is gone returns False instead of raising."""
    assert not systemd.Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()


def test_unit_raises_the_open_file_limit_above_the_default_1024() -> None:
    """Each connection is an open file: the unit sets LimitNOFILE well above 1,024."""
    lines = unit().splitlines()
    assert f"LimitNOFILE={systemd.OPEN_FILES}" in lines
    assert systemd.OPEN_FILES >= 16 * 1024
