"""systemd: the notify protocol (``Type=notify``) and the unit file ``mpg service`` writes.

The notify protocol is a datagram of ``KEY=VALUE`` lines sent to the unix socket named
by ``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). That is all of
it, so it is written here in a few lines rather than taken from a package (sdnotify,
python-systemd): no dependency, no C extension, and it does nothing at all when the
variable is unset (a terminal, Windows, a test).

``WATCHDOG_USEC`` (set by systemd from ``WatchdogSec=``) asks for ``WATCHDOG=1`` at
least that often; :meth:`Notifier.watchdog_interval` gives half of it, the usual
margin. The loops decide when they are healthy enough to ping.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import socket
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import structlog

log = structlog.get_logger(__name__)

Role = Literal["gateway", "server"]

#: Seconds systemd waits for a watchdog ping before restarting the service.
WATCHDOG_SEC: Final = 60
#: Seconds systemd waits after SIGTERM before SIGKILL (the gateway's grace is 30).
STOP_TIMEOUT_SEC: Final = 45
#: Open files a service may hold (each connection is one): LimitNOFILE.
OPEN_FILES: Final = 65536
UNIT_DIR: Final = pathlib.Path("/etc/systemd/system")


class Notifier:
    """Sends ``sd_notify`` messages when run under systemd; a no-op otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the timeout), or None if not asked."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False when not sent (never raises)."""
        if self._address is None:
            return False
        data = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, self._address)
        except OSError as exc:
            # systemd gone or the socket unreachable: the service goes on regardless.
            log.warning("sd_notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1``: start-up finished (systemd holds dependants until then)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        """``STOPPING=1``: shutting down (finishing the work in hand)."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the work loop is alive."""
        return self.notify("WATCHDOG=1")


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not used by service units


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


# ---------------------------------------------------------------------- unit files


def unit_name(role: Role) -> str:
    """``mpg-gateway.service`` or ``mpg-server.service``."""
    return f"mpg-{role}.service"


def unit_text(
    role: Role,
    *,
    command: Sequence[str],
    config_file: pathlib.Path,
    user: str,
    writable: Sequence[pathlib.Path],
    bind_privileged_port: bool = False,
) -> str:
    """The unit file for ``role`` running ``command`` (pure: nothing is written).

    Hardened: the file system is read-only but for ``writable`` (the database and
    data folders), no privilege gain, private /tmp and devices, no capabilities
    (but binding a port below 1024 when ``bind_privileged_port``).
    """
    what = "gateway (mpg run)" if role == "gateway" else "push server (mpg server)"
    capabilities = "CAP_NET_BIND_SERVICE" if bind_privileged_port else ""
    paths = " ".join(_quote_path(p) for p in sorted(set(writable)))
    lines = [
        "# Written by `mpg service install`; `mpg service uninstall` removes it.",
        "[Unit]",
        f"Description=MPG {what}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.join(command)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"Environment=MPG_CONFIG={_quote_path(config_file)}",
        f"WorkingDirectory={_quote_path(config_file.parent)}",
        f"User={user}",
        f"Group={user}",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={WATCHDOG_SEC}",
        f"TimeoutStopSec={STOP_TIMEOUT_SEC}",
        "KillMode=mixed",
        # A service gets 1,024 open files by default and every connection is one:
        # too few for a server facing the network (server.max_connections).
        f"LimitNOFILE={OPEN_FILES}",
        "UMask=0027",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        f"CapabilityBoundingSet={capabilities}",
        f"AmbientCapabilities={capabilities}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    if paths:
        lines.insert(lines.index("ProtectHome=read-only") + 1, f"ReadWritePaths={paths}")
    return "\n".join(lines)


def _quote_path(path: pathlib.Path) -> str:
    # systemd splits ReadWritePaths and Environment on spaces; quotes keep a path whole.
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text
