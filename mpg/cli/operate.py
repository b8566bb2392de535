"""``mpg void`` and ``mpg retry``: an operator's two hands on Outbox rows.

``void`` withdraws a message (recalling it from the server when the server already
has it); ``retry`` requeues rows that timed out (97) or failed (99) once their cause
is fixed. Both go through the repository and the transition table like the gateway.
"""

from __future__ import annotations

import click

from mpg import errors
from mpg.cli import context
from mpg.gateway import client as client_mod
from mpg.gateway import voiding
from mpg.storage.states import OutboxState as S
from mpg.wire import keys


def push_client(obj: context.CliContext) -> client_mod.PushClient | None:
    """A client of the push server, or None when no credential is configured."""
    gw = obj.settings.gateway
    if gw.secret is None and gw.secret_file is None:
        return None
    try:
        credential = keys.parse_credential(gw.credential_text())
    except errors.WireError as exc:
        raise errors.ConfigError(f"gateway.secret: {exc}") from exc
    return client_mod.PushClient(gw, credential)


@click.command("void")
@click.argument("tx_ids", metavar="TxMessageId...", nargs=-1, required=True)
@click.option("--reason", default="by an operator", show_default=True, help="For StatusLog.")
@click.pass_obj
def void(obj: context.CliContext, tx_ids: tuple[str, ...], reason: str) -> None:
    """Void messages not yet sent; recall those the server already accepted (19/20)."""
    push = push_client(obj)
    voider = voiding.Voider(obj.outbox(), push)
    failures = 0
    try:
        for tx in tx_ids:
            try:
                done = voider.void(tx, reason)
            except (errors.ValidationError, errors.TransitionError) as exc:
                click.echo(f"mpg: {tx}: {exc}", err=True)
                failures += 1
                continue
            click.echo(f"{tx}: {done.from_state} -> 98 ({done.note})")
    finally:
        if push is not None:
            push.close()
    if failures:
        raise errors.CommandError(f"{failures} of {len(tx_ids)} not voided")


@click.command("retry")
@click.argument("tx_ids", metavar="[TxMessageId...]", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every row in 99 (failed).")
@click.option("--all-timed-out", is_flag=True, help="Every row in 97 (timed out).")
@click.pass_obj
def retry(
    obj: context.CliContext, tx_ids: tuple[str, ...], all_failed: bool, all_timed_out: bool
) -> None:
    """Requeue failed (99) or timed-out (97) rows to 10 once their cause is fixed."""
    if not (tx_ids or all_failed or all_timed_out):
        raise click.UsageError("name TxMessageIds, or give --all-failed / --all-timed-out")
    repo = obj.outbox()
    wanted: dict[S, list[str]] = {S.FAILED: [], S.TIMED_OUT: []}
    if all_failed:
        wanted[S.FAILED] += repo.ids_in_state(S.FAILED)
    if all_timed_out:
        wanted[S.TIMED_OUT] += repo.ids_in_state(S.TIMED_OUT)
    refused = []
    for tx in tx_ids:
        row = repo.get(tx)
        if row is None or row.state not in (S.FAILED, S.TIMED_OUT):
            shown = "no such row" if row is None else f"in State {row.state}"
            refused.append(f"{tx} ({shown})")
            continue
        wanted[S(row.state)].append(tx)
    moved = 0
    for state, ids in wanted.items():
        note = f"requeued by an operator (was {int(state)})"
        moved += len(repo.transition([(tx, note) for tx in ids], state, S.READY))
    click.echo(f"requeued {moved} row(s)")
    if refused:
        raise errors.CommandError("not requeued (only 97 and 99 can be): " + ", ".join(refused))
