"""The Windows service: a thin pywin32 shell around :func:`mpg.service.host.run_role`.

Imported only on Windows (``mpg service`` imports it when ``sys.platform`` is
``win32``). pywin32's service framework is used rather than a wrapper such as NSSM or
WinSW because it is a real service of the Service Control Manager: start, stop and
the stop-pending wait hint are ours to report, events go to the Event Log, and
nothing besides Python packages has to be fetched and installed. Everything below
this layer (the run loop, stopping, logging to a file) is platform-neutral and
tested on Linux; ``docs/windows.md`` is the step-by-step for Windows Server.
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any, Final

import servicemanager
import win32service
import win32serviceutil

from mpg.ops import heap
from mpg.service import host

#: Milliseconds the Service Control Manager is told a stop may take (grace + margin).
STOP_WAIT_HINT_MS: Final = 45_000
_CONFIG_OPTION: Final = "config"


class _MpgService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
    """One MPG role as a Windows service; the config path is a service option."""

    _svc_role_: host.Role

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self._stop = threading.Event()

    def SvcStop(self) -> None:  # noqa: N802 - pywin32's name
        """The SCM asks to stop: finish the work in hand, then return from SvcDoRun."""
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)
        self._stop.set()

    def SvcDoRun(self) -> None:  # noqa: N802 - pywin32's name
        """Run the role until stopped; start and stop are written to the Event Log."""
        config_file = win32serviceutil.GetServiceCustomOption(self._svc_name_, _CONFIG_OPTION)
        servicemanager.LogMsg(
            servicemanager.EVENTLOG_INFORMATION_TYPE,
            servicemanager.PYS_SERVICE_STARTED,
            (self._svc_name_, f" with {config_file}"),
        )
        code = host.run_role(
            self._svc_role_, pathlib.Path(config_file), self._stop, started=heap.settle
        )
        servicemanager.LogMsg(
            servicemanager.EVENTLOG_INFORMATION_TYPE,
            servicemanager.PYS_SERVICE_STOPPED,
            (self._svc_name_, f" (exit code {code})"),
        )


class GatewayService(_MpgService):
    """``mpg-gateway``: ``mpg run`` as a service."""

    _svc_name_ = "mpg-gateway"
    _svc_display_name_ = "MPG gateway"
    _svc_description_ = "Moves Outbox rows to the MPG push server and fetches into Inbox."
    _svc_role_: host.Role = "gateway"


class ServerService(_MpgService):
    """``mpg-server``: ``mpg server`` as a service."""

    _svc_name_ = "mpg-server"
    _svc_display_name_ = "MPG push server"
    _svc_description_ = "The MPG push server: queues messages for their recipients."
    _svc_role_: host.Role = "server"


SERVICES: Final[dict[str, type[_MpgService]]] = {
    "gateway": GatewayService,
    "server": ServerService,
}

_STATES: Final = {
    win32service.SERVICE_STOPPED: "stopped",
    win32service.SERVICE_START_PENDING: "starting",
    win32service.SERVICE_STOP_PENDING: "stopping",
    win32service.SERVICE_RUNNING: "running",
}


def install(
    role: host.Role, config_file: pathlib.Path, user: str | None, password: str | None
) -> str:
    """Register the service (automatic start) and remember its config file."""
    cls = SERVICES[role]
    win32serviceutil.InstallService(
        f"{cls.__module__}.{cls.__name__}",
        cls._svc_name_,
        cls._svc_display_name_,
        startType=win32service.SERVICE_AUTO_START,
        description=cls._svc_description_,
        userName=user,
        password=password,
    )
    win32serviceutil.SetServiceCustomOption(cls._svc_name_, _CONFIG_OPTION, str(config_file))
    return str(cls._svc_name_)


def uninstall(role: host.Role) -> None:
    """Remove the service (stop it first)."""
    win32serviceutil.RemoveService(SERVICES[role]._svc_name_)


def start(role: host.Role) -> None:
    """Start the service."""
    win32serviceutil.StartService(SERVICES[role]._svc_name_)


def stop(role: host.Role) -> None:
    """Stop the service (the message in hand is finished first)."""
    win32serviceutil.StopService(SERVICES[role]._svc_name_)


def status(role: host.Role) -> str:
    """``running``, ``stopped``, ``starting`` or ``stopping``."""
    state = win32serviceutil.QueryServiceStatus(SERVICES[role]._svc_name_)[1]
    return _STATES.get(state, f"state {state}")
