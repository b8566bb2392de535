"""``mpg service``: run the gateway or the server as a system service.

On Linux ``install`` writes a systemd unit (:mod:`mpg.ops.systemd`) and enables it;
``start``, ``stop``, ``status``, ``reload`` and ``uninstall`` wrap ``systemctl``. On
Windows the same commands register and control a Windows service
(:mod:`mpg.service.windows`, pywin32); ``reload`` does not exist there (restart instead).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
from types import ModuleType

import click

from mpg import config, errors, exitcodes
from mpg.ops import systemd

ROLE = click.Choice(["gateway", "server"])


def command_for(role: systemd.Role, config_file: pathlib.Path) -> list[str]:
    """The command line the service runs: this Python, this MPG, the given config."""
    verb = ["run"] if role == "gateway" else ["server"]
    return [sys.executable, "-m", "mpg.cli.main", "--config", str(config_file), *verb]


def writable_paths(role: systemd.Role, settings: config.Settings) -> list[pathlib.Path]:
    """Folders the service writes: SQLite database folders (with their WAL files), and
    the server's data folder."""
    urls = [settings.gateway.database_url if role == "gateway" else settings.server.database_url]
    paths = [
        pathlib.Path(url.removeprefix("sqlite:///")).parent
        for url in urls
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:"
    ]
    if role == "server":
        paths.append(pathlib.Path(settings.server.data_dir))
    return [p.resolve() for p in paths]


def _windows() -> ModuleType | None:
    """:mod:`mpg.service.windows` on Windows, else None (pywin32 exists only there)."""
    return importlib.import_module("mpg.service.windows") if sys.platform == "win32" else None


def _systemctl(*args: str) -> int:
    try:
        return subprocess.run(["systemctl", *args], check=False).returncode
    except FileNotFoundError:
        raise errors.CommandError("systemctl not found: is this a systemd system?") from None


@click.group("service")
def service() -> None:
    """Install and control MPG as a system service (systemd on Linux)."""


@service.command("install")
@click.option("--role", type=ROLE, required=True, help="Which program the service runs.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    required=True,
    help="The TOML file the service reads (an absolute path is stored).",
)
@click.option("--user", default="mpg", show_default=True, help="Account the service runs as.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=systemd.UNIT_DIR,
    show_default=True,
    help="Where the unit file goes.",
)
@click.option("--no-enable", is_flag=True, help="Only write the unit; do not enable it.")
@click.option(
    "--password-env",
    default=None,
    help="Windows: environment variable holding --user's password (never on the command line).",
)
def install(
    role: systemd.Role,
    config_file: pathlib.Path,
    user: str,
    unit_dir: pathlib.Path,
    no_enable: bool,
    password_env: str | None,
) -> None:
    """Write the unit file and enable it (start it with `mpg service start`)."""
    config_file = config_file.resolve()
    try:
        settings = config.load(config_file)
    except errors.ConfigError as exc:
        raise errors.CommandError(str(exc), exitcodes.CONFIG) from exc
    windows = _windows()
    if windows is not None:
        password = os.environ.get(password_env) if password_env else None
        name = windows.install(role, config_file, user if password else None, password)
        click.echo(f"installed Windows service {name}; start it with `mpg service start`")
        return
    text = systemd.unit_text(
        role,
        command=command_for(role, config_file),
        config_file=config_file,
        user=user,
        writable=writable_paths(role, settings),
        bind_privileged_port=role == "server" and 0 < settings.server.port < 1024,
    )
    unit = unit_dir / systemd.unit_name(role)
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit.write_text(text, encoding="utf-8")
    click.echo(f"wrote {unit}")
    if not no_enable:
        _systemctl("daemon-reload")
        if _systemctl("enable", systemd.unit_name(role)) != 0:
            raise errors.CommandError(f"systemctl enable {systemd.unit_name(role)} failed")
        click.echo(f"enabled {systemd.unit_name(role)}; start it with `mpg service start`")


@service.command("uninstall")
@click.option("--role", type=ROLE, required=True)
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=systemd.UNIT_DIR,
    show_default=True,
)
def uninstall(role: systemd.Role, unit_dir: pathlib.Path) -> None:
    """Stop and disable the service and remove its unit file."""
    windows = _windows()
    if windows is not None:
        windows.uninstall(role)
        click.echo(f"removed the Windows service of the {role}")
        return
    name = systemd.unit_name(role)
    _systemctl("disable", "--now", name)
    (unit_dir / name).unlink(missing_ok=True)
    _systemctl("daemon-reload")
    click.echo(f"removed {name}")


def _wrap(verb: str, help_text: str) -> click.Command:
    @click.command(verb, help=help_text)
    @click.option("--role", type=ROLE, required=True)
    def command(role: systemd.Role) -> int:
        windows = _windows()
        if windows is None:
            return _systemctl(verb, systemd.unit_name(role))
        if verb == "reload":
            raise errors.CommandError("Windows services have no reload: stop and start")
        result = getattr(windows, verb)(role)
        if result is not None:
            click.echo(result)
        return exitcodes.OK

    return command


service.add_command(_wrap("start", "Start the service (systemctl start)."))
service.add_command(_wrap("stop", "Stop the service; the message in hand is finished."))
service.add_command(_wrap("status", "Show the service's state and last log lines."))
service.add_command(
    _wrap("reload", "Re-read the configuration where safe (sends SIGHUP; see docs/operations.md).")
)
