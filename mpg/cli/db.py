"""``mpg init-db``: create the gateway's tables in ``gateway.database_url``."""

from __future__ import annotations

import json

import click

from mpg.cli import context
from mpg.db import notify
from mpg.storage import database, outbox_trigger, tables


@click.command("init-db")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--notify",
    "notify_trigger",
    is_flag=True,
    help="PostgreSQL: also install the Outbox trigger that wakes the gateway at once.",
)
@click.pass_obj
def init_db(obj: context.CliContext, as_json: bool, notify_trigger: bool) -> None:
    """Create the Outbox, Inbox, attachment and history tables that are missing.

    Tables that already exist are used as they are and never altered. With --notify
    (PostgreSQL only) a trigger on Outbox notifies the gateway of each ready row.
    """
    engine = obj.new_engine()
    if notify_trigger and not notify.supported(engine):
        raise click.UsageError("--notify needs a PostgreSQL database_url")
    created = set(database.init_db(engine))
    if notify_trigger:
        outbox_trigger.install_trigger(engine)
    names = [table.name for table in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES)]
    present = [name for name in names if name not in created]
    if as_json:
        result = {"created": sorted(created), "present": present}
        if notify_trigger:
            result["trigger"] = [outbox_trigger.CHANNEL]
        click.echo(json.dumps(result))
        return
    for name in names:
        if name in created:
            click.echo(f"created          {name}")
        else:
            click.echo(f"already present  {name} (left as it is)")
    if notify_trigger:
        click.echo(
            f"installed        trigger mpg_outbox_ready on Outbox (NOTIFY {outbox_trigger.CHANNEL})"
        )
    click.echo(f"database: {engine.url.render_as_string(hide_password=True)}")
