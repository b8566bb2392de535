"""``mpg server``: run the push server, prepare it, manage its accounts.

* ``mpg server`` runs the server in the foreground until SIGTERM or Ctrl-C.
* ``mpg server init`` creates the server's tables and, when no master key is
  configured, the master key file (mode 0600).
* ``mpg server account add NAME --kind gateway|user|device`` creates an account and
  shows its credential token once (or writes it to ``--credential-file``, mode 0600);
  ``account list``, ``account disable``, ``account rotate-key`` (adds a key) and
  ``account disable-key`` manage them.
* ``mpg server explain MESSAGEID RECIPIENT`` names where a delivery stopped
  (:mod:`mpg.cli.explain`).
* ``mpg server rekey`` and ``mpg server data-key add|list`` rotate the data keys
  (:mod:`mpg.cli.rekey`).
"""

from __future__ import annotations

import collections.abc
import contextlib
import json
import os
from typing import Any, Protocol

import click

from mpg import config, logs
from mpg.cli import admins as admins_cli
from mpg.cli import directory as directory_cli
from mpg.cli import explain as explain_cli
from mpg.cli import publish as publish_cli
from mpg.cli import rekey as rekey_cli
from mpg.ops import heap
from mpg.server import accounts, datakeys, main, tables
from mpg.wire import keys


class _Obj(Protocol):
    """What the group needs from ``ctx.obj``: the settings (``mpg.cli.context``)."""

    @property
    def settings(self) -> config.Settings: ...


@click.group("server", invoke_without_command=True)
@click.pass_context
def server(ctx: click.Context) -> int | None:
    """The push server: with no subcommand, run it in the foreground."""
    if ctx.invoked_subcommand is not None:
        return None
    settings = _settings(ctx.obj)
    logs.configure(settings.log, "server")
    heap.settle()
    return main.serve(settings, announce=click.echo)


@server.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def init(obj: _Obj, as_json: bool) -> None:
    """Create the server's tables and its master key file if none is configured.

    Existing tables and an existing key file are left as they are.
    """
    settings = _settings(obj).server
    engine = tables.create_engine(settings.database_url)
    try:
        created = tables.create_tables(engine)
    finally:
        engine.dispose()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.master_key is not None:
        key_file, key_state = None, "configured"
    else:
        path = accounts.master_key_path(settings)
        key_file = str(path)
        key_state = "created" if accounts.create_master_key_file(path) else "present"
    if settings.data_keys is not None:
        data_file, data_state = None, "configured"
    else:
        data_path = datakeys.data_keys_path(settings)
        data_file = str(data_path)
        data_state = "created" if datakeys.create_data_keys_file(data_path) else "present"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "created": created,
                    "master_key": key_state,
                    "master_key_file": key_file,
                    "data_keys": data_state,
                    "data_keys_file": data_file,
                }
            )
        )
        return
    for table in tables.ALL_TABLES:
        state = "created" if table.name in created else "already present"
        click.echo(f"{state:<16} {table.name}")
    if key_file is None:
        click.echo("master key       from server.master_key (MPG_SERVER__MASTER_KEY)")
    else:
        click.echo(f"master key       {key_state}: {key_file}")
    if data_file is None:
        click.echo("data keys        from server.data_keys (MPG_SERVER__DATA_KEYS)")
    else:
        click.echo(f"data keys        {data_state}: {data_file}")


@server.group("account")
def account() -> None:
    """Accounts that may talk to the server (gateways, users, devices)."""


@account.command("add")
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(accounts.KINDS), required=True, help="What the account is."
)
@click.option(
    "--credential-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the credential token to this file (mode 0600) instead of printing it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def add(obj: _Obj, name: str, kind: str, credential_file: str | None, as_json: bool) -> None:
    """Create account NAME with one key; its credential is shown only this once."""
    with _store(obj) as store:
        account_id, credential = store.add(name, kind)
    _hand_out(account_id, kind, credential, credential_file, as_json)


@account.command("rotate-key")
@click.argument("name")
@click.option(
    "--credential-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the new credential token to this file (mode 0600) instead of printing it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def rotate_key(obj: _Obj, name: str, credential_file: str | None, as_json: bool) -> None:
    """Add a new key to account NAME; older keys work until disabled (disable-key)."""
    with _store(obj) as store:
        info, credential = store.rotate_key(name)
    _hand_out(info.account_id, info.kind, credential, credential_file, as_json)


@account.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the accounts as JSON.")
@click.pass_obj
def list_accounts(obj: _Obj, as_json: bool) -> None:
    """List the accounts, their kind, state and key ids (never the keys)."""
    with _store(obj) as store:
        found = store.all_accounts()
    if as_json:
        click.echo(json.dumps([_as_dict(info) for info in found], ensure_ascii=False))
        return
    for info in found:
        state = "disabled" if info.disabled else "enabled"
        key_ids = ", ".join(k.key_id + (" (disabled)" if k.disabled else "") for k in info.keys)
        click.echo(f"{info.account_id:<40} {info.kind:<8} {state:<9} keys: {key_ids}")


@account.command("disable")
@click.argument("name")
@click.pass_obj
def disable(obj: _Obj, name: str) -> None:
    """Disable account NAME: its requests are refused (a running server: within 30 s)."""
    with _store(obj) as store:
        account_id = store.disable(name)
    click.echo(f"disabled {account_id}")


@account.command("disable-key")
@click.argument("name")
@click.argument("key_id")
@click.pass_obj
def disable_key(obj: _Obj, name: str, key_id: str) -> None:
    """Disable key KEY_ID of account NAME (after its holder moved to a newer key)."""
    with _store(obj) as store:
        account_id = store.disable_key(name, key_id)
    click.echo(f"disabled key {key_id} of {account_id}")


def _settings(obj: object) -> config.Settings:
    settings = getattr(obj, "settings", None)
    if not isinstance(settings, config.Settings):
        raise click.UsageError("mpg server needs the settings of the main command")
    return settings


@contextlib.contextmanager
def _store(obj: _Obj) -> collections.abc.Iterator[accounts.AccountStore]:
    """The account store on the server database (tables created if missing)."""
    settings = _settings(obj).server
    master_key = accounts.load_master_key(settings)
    keyring = datakeys.load_keyring(settings)
    engine = tables.create_engine(settings.database_url)
    try:
        tables.create_tables(engine)
        yield accounts.AccountStore(engine, master_key, keyring)
    finally:
        engine.dispose()


def _hand_out(
    account_id: str,
    kind: str,
    credential: keys.Credential,
    credential_file: str | None,
    as_json: bool,
) -> None:
    """Show the credential once, or write it to a file only its owner can read."""
    token = keys.format_credential(credential)
    if credential_file is not None:
        _write_secret(credential_file, token)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "account": account_id,
                    "kind": kind,
                    "key_id": credential.key_id,
                    "credential": None if credential_file else token,
                    "credential_file": credential_file,
                }
            )
        )
    elif credential_file is not None:
        click.echo(f"{account_id} ({kind}): key {credential.key_id} written to {credential_file}")
    else:
        click.echo(f"{account_id} ({kind}): key {credential.key_id}")
        click.echo("credential (shown only now; give it to the account's holder):")
        click.echo(token)


def _write_secret(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode does not apply to a file that already existed.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text + "\n")


def _as_dict(info: accounts.AccountInfo) -> dict[str, Any]:
    return {
        "account": info.account_id,
        "kind": info.kind,
        "disabled": info.disabled,
        "created_at": info.created_at,
        "keys": [
            {"key_id": k.key_id, "disabled": k.disabled, "created_at": k.created_at}
            for k in info.keys
        ],
    }


server.add_command(admins_cli.admin)
server.add_command(directory_cli.group)
server.add_command(directory_cli.category)
server.add_command(directory_cli.domain)
server.add_command(directory_cli.code)
server.add_command(directory_cli.device)
server.add_command(rekey_cli.rekey_command)
server.add_command(rekey_cli.data_key)
server.add_command(publish_cli.publish)
server.add_command(explain_cli.explain_command)
