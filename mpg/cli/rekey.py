"""``mpg server rekey`` and ``mpg server data-key …``: rotating the data keys.

A rotation (docs/devices.md, "Rotating the data key"): ``mpg server data-key add``
appends a new key to the data key file, the servers are restarted so they all know
it, and ``mpg server rekey`` re-encrypts, while they keep running, what is still under
an older key; once it reports nothing left the old key may be removed.
"""

from __future__ import annotations

import json
import time

import click

from mpg import config
from mpg.cli.admins import server_engine
from mpg.server import accounts, datakeys, rekey, vault


def _server_settings(obj: object) -> config.ServerSettings:
    settings = getattr(obj, "settings", None)
    if not isinstance(settings, config.Settings):
        raise click.UsageError("mpg server needs the settings of the main command")
    return settings.server


@click.command("rekey")
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=rekey.BATCH,
    show_default=True,
    help="Rows per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def rekey_command(obj: object, batch: int, as_json: bool) -> None:
    """Re-encrypt everything under an older data key with the current one.

    Safe while the servers run (each batch its own transaction, every row written only
    if unchanged since it was read) and safe to run again after a stop. Accounts of an
    older version, stored with their names in clear, are moved to pseudonyms first:
    that step needs the servers stopped.
    """
    settings = _server_settings(obj)
    master_key = accounts.load_master_key(settings)
    names = vault.Vault(master_key, datakeys.load_keyring(settings))

    shown: list[tuple[str, float]] = [("", 0.0)]

    def report(what: str, progress: rekey.Progress) -> None:
        # A line per table and then at most one a second: a big table has many batches.
        now = time.monotonic()
        if what == shown[0][0] and now - shown[0][1] < 1.0:
            return
        shown[0] = (what, now)
        click.echo(
            f"{what:<20} {progress.rows:>9} rows looked at, {progress.rewritten:>9} "
            f"re-encrypted, {progress.conflicts} changed meanwhile",
            err=True,
        )

    with server_engine(obj) as engine:
        summary = rekey.run(engine, names, master_key, batch=batch, report=report)
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
        return
    click.echo(f"current data key   {summary.current}")
    click.echo(f"accounts migrated  {summary.accounts_migrated}")
    for name, progress in [*summary.tables.items(), ("attachment files", summary.files)]:
        again = (
            f", {progress.conflicts} changed meanwhile (run again)" if progress.conflicts else ""
        )
        click.echo(f"{name:<18} {progress.rewritten} re-encrypted of {progress.rows}{again}")
    if summary.stages_under_old_keys:
        click.echo(
            f"{summary.stages_under_old_keys} upload(s) not yet submitted are under an older "
            "key: run again once they are submitted or purged (server.upload_stage_ttl)"
        )


@click.group("data-key")
def data_key() -> None:
    """The data keys that encrypt personal data at rest."""


@data_key.command("add")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def add(obj: object, as_json: bool) -> None:
    """Append a new data key to the data key file; after a restart it encrypts.

    Restart every server, then run `mpg server rekey`.
    """
    settings = _server_settings(obj)
    key_id = datakeys.add_data_key(settings)
    path = str(datakeys.data_keys_path(settings))
    if as_json:
        click.echo(json.dumps({"key_id": key_id, "data_keys_file": path}))
        return
    click.echo(f"added data key {key_id} to {path}")
    click.echo("restart every server, then run `mpg server rekey`")


@data_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_obj
def list_keys(obj: object, as_json: bool) -> None:
    """List the data key ids (never the keys) and which one is current."""
    keyring = datakeys.load_keyring(_server_settings(obj))
    ids = keyring.key_ids()
    if as_json:
        click.echo(json.dumps({"current": keyring.current, "keys": ids}))
        return
    for key_id in ids:
        click.echo(key_id + (" (current)" if key_id == keyring.current else ""))
