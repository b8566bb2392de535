"""Run the gateway or the server until told to stop: the body of a service host.

A Windows service has no signals and no console: its control thread sets an event
when the Service Control Manager says stop, and its log must go to a file. This
module is that platform-neutral body (tested here); :mod:`mpg.service.windows` is only
the thin pywin32 shell around it.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable
from typing import Final, Literal

import structlog

from mpg import config, logs

log = structlog.get_logger(__name__)

Role = Literal["gateway", "server"]

#: Seconds between checks that the gateway's workers are still alive.
CHECK_EVERY: Final = 1.0


def service_settings(
    settings: config.Settings, role: Role, config_file: pathlib.Path
) -> config.Settings:
    """``settings`` with a log file when none is set: a service has no standard error.

    The default is ``mpg-<role>.log`` beside the configuration file.
    """
    if settings.log.file is not None:
        return settings
    log_settings = settings.log.model_copy(update={"file": config_file.parent / f"mpg-{role}.log"})
    return settings.model_copy(update={"log": log_settings})


def run_role(
    role: Role,
    config_file: pathlib.Path,
    stop: threading.Event,
    started: Callable[[], None] | None = None,
) -> int:
    """Run ``role`` with ``config_file`` until ``stop`` is set; returns the exit code.

    Stopping finishes the work in hand exactly as SIGTERM does on Linux. ``started``
    is called once the role's code is imported and its settings read, before the work
    begins: where the service applies the process's collector settings (:mod:`mpg.ops.heap`).
    """
    # Imported here: the server pulls in uvicorn, which the gateway does not need.
    from mpg.gateway import runner
    from mpg.server import main as server_main

    settings = service_settings(config.load(config_file), role, config_file)
    logs.configure(settings.log, role)
    if started is not None:
        started()
    if role == "server":
        return server_main.serve(settings, announce=lambda line: log.info(line), stop=stop)
    gateway = runner.Gateway(settings)
    gateway.start()
    try:
        while not stop.wait(CHECK_EVERY):
            if not gateway.alive():
                log.error("gateway_stalled")
                return 1  # the service manager's recovery options restart it
    finally:
        gateway.stop()
    return 0
