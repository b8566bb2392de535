"""``mpg server publish``: a new version of a group's (or category's) message file, then pushes."""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import click

from mpg import config
from mpg.cli.admins import cli_actor, server_engine
from mpg.server import publishing


@click.command("publish")
@click.argument("group")
@click.option("--category", default="", help="Publish to this category's file of GROUP.")
@click.option(
    "--file",
    "whole",
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
    help="Replace the file with this one (mpg-messagefile.xsd).",
)
@click.option("--message", "title", help="Add a message with this title.")
@click.option("--text", default="", help="The added message's text.")
@click.option("--priority", type=click.Choice(["E", "H", "N", "L"]), default="N", show_default=True)
@click.option(
    "--expires-in",
    type=click.FloatRange(min=0, min_open=True),
    help="Hours until it leaves the file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def publish(
    obj: object,
    group: str,
    category: str,
    whole: pathlib.Path | None,
    title: str | None,
    text: str,
    priority: str,
    expires_in: float | None,
    as_json: bool,
) -> None:
    """Publish to GROUP's message file (--message TITLE or --file F), then push its devices."""
    if (whole is None) == (title is None):
        raise click.UsageError("give either --message TITLE or --file F")
    settings = getattr(obj, "settings", None)
    if not isinstance(settings, config.Settings):
        raise click.UsageError("mpg server needs the settings of the main command")
    now = dt.datetime.now(dt.UTC)
    add = []
    if title is not None:
        expires = None if expires_in is None else now + dt.timedelta(hours=expires_in)
        add.append(
            publishing.new_message(
                title, text, priority=priority, expires=expires, category=category, now=now
            )
        )
    with server_engine(obj) as engine:
        done = publishing.publish(
            engine,
            publishing.message_files(settings.server),
            settings.server,
            group,
            actor=cli_actor(),
            category=category,
            add=add,
            whole=None if whole is None else whole.read_bytes(),
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "group": done.group,
                    "category": done.category,
                    "version": done.version,
                    "changed": done.changed,
                    "kept": list(done.kept),
                    "dropped": list(done.dropped),
                    "pushes": done.pushes,
                }
            )
        )
        return
    what = publishing.file_key(group, category)
    if not done.changed:
        click.echo(f"{what}: unchanged (version {done.version}); nobody pushed")
        return
    click.echo(
        f"{what}: version {done.version}, {len(done.kept)} messages"
        f" ({len(done.dropped)} dropped for size), {done.pushes} pushes queued"
    )
