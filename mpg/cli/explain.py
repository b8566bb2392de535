"""``mpg server explain MESSAGEID RECIPIENT``: where the delivery to one recipient stopped."""

from __future__ import annotations

import json

import click

from mpg import config, exitcodes
from mpg.cli.admins import server_engine
from mpg.server import accounts, datakeys, deliveryfacts, explain, vault


@click.command("explain")
@click.argument("message_id")
@click.argument("recipient")
@click.option("--json", "as_json", is_flag=True, help="Print the chain as JSON.")
@click.pass_obj
def explain_command(obj: object, message_id: str, recipient: str, as_json: bool) -> int:
    """Walk the delivery of MESSAGEID to RECIPIENT and name its first broken link.

    RECIPIENT is written as in the ReceiverList: a device id, a dev-… account, or a
    gateway or user name. Exits 0 when no link is broken, 6 when one is, 7 when the
    server knows no such message or recipient.
    """
    settings = getattr(obj, "settings", None)
    if not isinstance(settings, config.Settings):
        raise click.UsageError("mpg server needs the settings of the main command")
    names = vault.Vault(
        accounts.load_master_key(settings.server), datakeys.load_keyring(settings.server)
    )
    with server_engine(obj) as engine:
        found = deliveryfacts.explain_with(engine, names, message_id, recipient)
    if as_json:
        click.echo(json.dumps(found.as_dict(), ensure_ascii=False))
    else:
        _print(found)
    if found.unknown is not None:
        return exitcodes.NOT_FOUND
    return exitcodes.OK if found.first_broken is None else exitcodes.NOT_DELIVERED


def _print(found: explain.Explanation) -> None:
    for link in found.links:
        mark = "ok    " if link.ok else "BROKEN"
        click.echo(f"{mark} {link.name:<13} {link.detail}")
    click.echo(found.summary())
