"""``mpg server admin …``: credentials for the admin API (mpg.server.admins)."""

from __future__ import annotations

import collections.abc
import contextlib
import getpass
import json

import click
import sqlalchemy as sa

from mpg import config
from mpg.server import admins, tables


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


@admin.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(admins.ROLES),
    default="admin",
    show_default=True,
    help="viewer reads; operator also acts on messages and devices; admin changes all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def add(obj: object, name: str, role: str, as_json: bool) -> None:
    """Create admin NAME; its token is shown only this once."""
    with server_engine(obj) as engine:
        created, token = admins.AdminStore(engine).add(name, role, cli_actor())
    if as_json:
        click.echo(json.dumps({"name": name, "role": role, "token": token}))
        return
    click.echo(f"admin {created.name} ({created.role})")
    click.echo("token (shown only now; send it as 'Authorization: Bearer <token>'):")
    click.echo(token)


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
