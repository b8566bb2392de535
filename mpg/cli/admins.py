"""``mpg server admin …``: credentials for the admin API (mpg.server.admins) and
passwords for the admin console (mpg.server.console.users)."""

from __future__ import annotations

import collections.abc
import contextlib
import getpass
import json
import sys

import click
import sqlalchemy as sa

from mpg import config
from mpg.server import admins, tables
from mpg.server.console import users


@click.group("admin")
def admin() -> None:
    """Credentials that may call the admin API, and the audit log."""


@contextlib.contextmanager
def server_engine(obj: object) -> collections.abc.Iterator[sa.Engine]:
    """The server database's engine (tables created if missing), disposed after."""
    settings = getattr(obj, "settings", None)
    if not isinstance(settings, config.Settings):
        raise click.UsageError("mpg server needs the settings of the main command")
    engine = tables.create_engine(settings.server.database_url)
    try:
        tables.create_tables(engine)
        yield engine
    finally:
        engine.dispose()


def cli_actor() -> str:
    """Who an audit entry names for a change made on the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _password(name: str, from_stdin: bool, asked: bool) -> str | None:
    """The console password: one line of stdin, asked twice on a terminal, or None."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif asked:
        password = click.prompt(
            f"console password for {name}", hide_input=True, confirmation_prompt=True
        )
    else:
        return None
    problem = users.password_problem(name, password)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="password")
    return password


_password_stdin = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the console password from the first line of standard input (scripts).",
)


@admin.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(admins.ROLES),
    default="admin",
    show_default=True,
    help="viewer reads; operator also acts on messages and devices; admin changes all.",
)
@_password_stdin
@click.option(
    "--no-password",
    is_flag=True,
    help="No console password (API token only; the default when stdin is not a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def add(
    obj: object, name: str, role: str, password_stdin: bool, no_password: bool, as_json: bool
) -> None:
    """Create admin NAME: an API token (shown only this once) and a console password
    (asked twice on a terminal)."""
    asked = not no_password and sys.stdin.isatty()
    password = _password(name, password_stdin, asked)
    with server_engine(obj) as engine:
        created, token = admins.AdminStore(engine).add(name, role, cli_actor())
        if password is not None:
            users.ConsoleUsers(engine).set_password(name, password, cli_actor())
    if as_json:
        click.echo(
            json.dumps(
                {"name": name, "role": role, "token": token, "console": password is not None}
            )
        )
        return
    click.echo(f"admin {created.name} ({created.role})")
    click.echo("token (shown only now; send it as 'Authorization: Bearer <token>'):")
    click.echo(token)
    if password is None:
        click.echo(
            f"no console password; set one with 'mpg server admin password {name}'", err=True
        )


@admin.command("password")
@click.argument("name")
@_password_stdin
@click.pass_obj
def password(obj: object, name: str, password_stdin: bool) -> None:
    """Set admin NAME's console password (asked twice, or --password-stdin)."""
    chosen = _password(name, password_stdin, asked=True)
    assert chosen is not None
    with server_engine(obj) as engine:
        users.ConsoleUsers(engine).set_password(name, chosen, cli_actor())
    click.echo(f"console password of admin {name} set")


@admin.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def list_admins(obj: object, as_json: bool) -> None:
    """Every admin credential."""
    with server_engine(obj) as engine:
        found = admins.AdminStore(engine).all()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": a.name,
                        "role": a.role,
                        "disabled": a.disabled,
                        "created_at": a.created_at,
                    }
                    for a in found
                ]
            )
        )
        return
    for a in found:
        state = "disabled" if a.disabled else "enabled"
        click.echo(f"{a.name:<30} {a.role:<9} {state:<9} {a.created_at}")


@admin.command("disable")
@click.argument("name")
@click.pass_obj
def disable(obj: object, name: str) -> None:
    """Disable admin NAME: its token no longer works."""
    with server_engine(obj) as engine:
        admins.AdminStore(engine).disable(name, cli_actor())
    click.echo(f"disabled admin {name}")
