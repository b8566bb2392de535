"""``mpg init-db``: create the gateway's tables in ``gateway.database_url``."""

from __future__ import annotations

import json

import click

from mpg.cli import context
from mpg.storage import database, tables


@click.command("init-db")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def init_db(obj: context.CliContext, as_json: bool) -> None:
    """Create the Outbox, Inbox, attachment and history tables that are missing.

    Tables that already exist are used as they are and never altered.
    """
    created = set(database.init_db(obj.engine))
    names = [table.name for table in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES)]
    present = [name for name in names if name not in created]
    if as_json:
        click.echo(json.dumps({"created": sorted(created), "present": present}))
        return
    for name in names:
        if name in created:
            click.echo(f"created          {name}")
        else:
            click.echo(f"already present  {name} (left as it is)")
    click.echo(f"database: {obj.engine.url.render_as_string(hide_password=True)}")
