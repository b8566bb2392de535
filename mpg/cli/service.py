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
from collections.abc import Sequence
from types import ModuleType
from typing import Final

import click

import mpg
from mpg import config, errors, exitcodes
from mpg.ops import systemd

ROLE = click.Choice(["gateway", "server"])


def command_for(role: systemd.Role, config_file: pathlib.Path) -> list[str]:
    """The command line the service runs: this Python, this MPG, the given config."""
    verb = ["run"] if role == "gateway" else ["server"]
    return [sys.executable, "-m", "mpg.cli.main", "--config", str(config_file), *verb]


def writable_paths(role: systemd.Role, settings: config.Settings) -> list[pathlib.Path]:
    """Folders the service writes: SQLite database folders (with their WAL files), the
    server's data folder, the gateway's file folders and the log file's folder."""
    urls = [settings.gateway.database_url if role == "gateway" else settings.server.database_url]
    paths = [
        pathlib.Path(url.removeprefix("sqlite:///")).parent
        for url in urls
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:"
    ]
    if role == "server":
        paths.append(pathlib.Path(settings.server.data_dir))
    else:
        gw = settings.gateway
        folders = (gw.drop_dir, gw.inbound_dir, gw.receipt_dir, gw.attachment_dir)
        paths += [folder for folder in folders if folder is not None]
    if settings.log.file is not None:
        paths.append(settings.log.file.parent)
    return [p.resolve() for p in paths]


def readable_paths(role: systemd.Role, settings: config.Settings) -> list[pathlib.Path]:
    """Files the service reads besides its configuration: secrets, keys, certificates."""
    files: tuple[pathlib.Path | None, ...]
    if role == "gateway":
        files = (settings.gateway.secret_file, settings.gateway.ca_bundle)
    else:
        server = settings.server
        files = (server.master_key_file, server.tls_cert, server.tls_key)
    return [pathlib.Path(f).resolve() for f in files if f is not None]


#: Folders the unit hides from the service (PrivateTmp=yes gives it empty ones).
PRIVATE_FOLDERS: Final = (pathlib.Path("/tmp"), pathlib.Path("/var/tmp"))  # noqa: S108 - named, not used

_PERMISSION_BITS: Final = {"r": 4, "w": 2, "x": 1}


def _allows(st: os.stat_result, uid: int, gids: set[int], need: str) -> bool:
    """Whether the owner/group/other bits of ``st`` give ``uid`` every right in ``need``."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return all(bits & _PERMISSION_BITS[right] for right in need)


def unreachable(
    needs: Sequence[tuple[pathlib.Path, str]], user: str, uid: int, gids: set[int]
) -> list[str]:
    """Why the service, run as ``user``, could not use each path the unit points at.

    ``needs`` pairs a path with the rights it needs (``r``, ``w``, ``x``); every folder
    above it must let ``user`` through. Paths under /tmp are refused whatever the
    rights: the unit's PrivateTmp=yes gives the service an empty /tmp of its own.
    """
    problems = []
    for path, need in needs:
        hidden = [folder for folder in PRIVATE_FOLDERS if path.is_relative_to(folder)]
        if hidden:
            problems.append(
                f"{path} is under {hidden[0]}, which the service does not see "
                "(PrivateTmp=yes): move it, e.g. under /opt/mpg, /etc/mpg or /var/lib/mpg"
            )
            continue
        for folder in reversed(path.parents):
            if folder.exists() and not _allows(folder.stat(), uid, gids, "x"):
                problems.append(f"{path}: user {user} cannot enter {folder}")
                break
        else:
            if not path.exists():
                problems.append(f"{path} does not exist")
            elif not _allows(path.stat(), uid, gids, need):
                wanted = "/".join({"r": "read", "w": "write", "x": "run"}[r] for r in need)
                problems.append(f"{path}: user {user} cannot {wanted} it")
    return problems


def check_unit_paths(
    user: str, role: systemd.Role, config_file: pathlib.Path, settings: config.Settings
) -> None:
    """Refuse to write a unit that could not start: ``user`` missing, a path out of reach."""
    import pwd  # here: Linux only, and this runs only where systemd units are written

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise errors.CommandError(
            f"user {user} does not exist: create it (sudo useradd --system --home-dir "
            f"/var/lib/mpg --shell /usr/sbin/nologin {user}) or name another with --user"
        ) from None
    gids = set(os.getgrouplist(user, account.pw_gid))
    needs: list[tuple[pathlib.Path, str]] = [
        (pathlib.Path(sys.executable).absolute(), "x"),
        (pathlib.Path(sys.executable).resolve(), "x"),
        (pathlib.Path(mpg.__file__).resolve().parent, "rx"),
        (config_file, "r"),
        *((path, "r") for path in readable_paths(role, settings)),
        *((path, "rwx") for path in writable_paths(role, settings)),
    ]
    problems = unreachable(needs, user, account.pw_uid, gids)
    if problems:
        raise errors.CommandError(
            f"the {role} service could not start as user {user}: "
            + "; ".join(problems)
            + " (docs/deployment.md installs MPG where a service can reach it)"
        )


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
    check_unit_paths(user, role, config_file, settings)
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
