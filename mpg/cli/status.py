"""``mpg status``: how many Outbox rows are in each state, and the Inbox at a glance."""

from __future__ import annotations

import json
from typing import Any

import click

from mpg import errors, exitcodes, timefmt
from mpg.cli import context, operate
from mpg.db import transactions
from mpg.storage import states


def state_name(code: int) -> str:
    """``READY`` for 10; ``UNKNOWN`` for a code the document does not define."""
    try:
        return states.OutboxState(code).name
    except ValueError:
        return "UNKNOWN"


def readiness(obj: context.CliContext) -> dict[str, str]:
    """What the gateway's /readyz checks, from here: ``{check: "ok" | reason}``.

    The server is asked only when a credential is configured (it is the gateway's
    client that pings it); otherwise it reads "not checked".
    """
    results = {"database": "ok", "server": "not checked (no gateway credential configured)"}
    try:
        transactions.probe_writable(obj.engine)
    except errors.StorageError as exc:
        results["database"] = str(exc)
    push = operate.push_client(obj)
    if push is not None:
        try:
            push.ping()
            results["server"] = "ok"
        except errors.ServerError as exc:
            results["server"] = str(exc)
        finally:
            push.close()
    return results


def collect(obj: context.CliContext) -> dict[str, Any]:
    """The status report as plain data (what ``--json`` prints)."""
    gateway = obj.settings.gateway
    repo = obj.outbox()
    counts = repo.counts()
    codes = sorted({int(s) for s in states.OutboxState} | set(counts))
    oldest = repo.oldest_pending()
    pending: dict[str, Any] | None = None
    if oldest is not None:
        tx, status_time = oldest
        since = timefmt.parse_text(status_time)
        age = (timefmt.now(gateway.clock) - since).total_seconds()
        pending = {
            "tx_message_id": tx,
            "status_time": since.strftime(timefmt.TEXT_FORMAT),
            "age_seconds": max(0.0, age),
        }
    inbox = obj.inbox().counts()
    stuck = [
        {
            "tx_message_id": row.tx_message_id,
            "state": row.state,
            "status_time": (row.status_time or "").strip(),
            "status_log": row.status_log or "",
        }
        for row in repo.stuck(gateway.stuck_after)
    ]
    odd = [{"tx_message_id": str(tx), "state": repr(value)} for tx, value in repo.odd_states()]
    return {
        "gateway": gateway.account,
        "outbox": [
            {"state": code, "name": state_name(code), "count": counts.get(code, 0)}
            for code in codes
        ],
        "oldest_pending": pending,
        "ready": readiness(obj),
        "stuck_after_seconds": gateway.stuck_after,
        "stuck": stuck,
        "odd_states": odd,
        "inbox": {state.name.lower(): inbox.get(int(state), 0) for state in states.InboxState},
    }


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def exit_code(ready: dict[str, str]) -> int:
    """0 when every readiness check passed (or was not made), else the check's code.

    The database decides first (nothing works without it), then the push server.
    """
    if ready.get("database", "ok") != "ok":
        return exitcodes.DATABASE
    server = ready.get("server", "ok")
    if server != "ok" and not server.startswith("not checked"):
        return exitcodes.SERVER
    return exitcodes.OK


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def status(obj: context.CliContext, as_json: bool) -> int:
    """Health, counts per Outbox state, the oldest pending row, stuck rows, Inbox counts.

    Exits 4 when the database check fails and 5 when the push server's does.
    """
    report = collect(obj)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print(report)
    return exit_code(report["ready"])


def _print(report: dict[str, Any]) -> None:
    click.echo(f"Outbox of {report['gateway'] or '(no gateway.account)'}")
    for check, result in report["ready"].items():
        line = f"  {check}: {result}"
        click.echo(
            line
            if result == "ok" or result.startswith("not checked")
            else click.style(line, fg="red")
        )
    for entry in report["outbox"]:
        click.echo(f"  {entry['state']:>3} {entry['name']:<22} {entry['count']:>8}")
    pending = report["oldest_pending"]
    if pending is None:
        click.echo("  oldest pending: none")
    else:
        click.echo(
            f"  oldest pending: {pending['tx_message_id']} since {pending['status_time']}"
            f" ({_age(pending['age_seconds'])} ago)"
        )
    if report["stuck"]:
        click.secho(
            f"WARNING: {len(report['stuck'])} message(s) stuck in 11/12/19/20 for more than "
            f"{report['stuck_after_seconds']:g} s (oldest first):",
            fg="red",
            bold=True,
        )
        for row in report["stuck"]:
            click.echo(
                f"  {row['tx_message_id']} state {row['state']} since {row['status_time']}"
                f"  {row['status_log']}"
            )
    if report["odd_states"]:
        click.secho(
            f"WARNING: {len(report['odd_states'])} row(s) whose State is not a state code "
            "(never picked up; set State to 10 to send):",
            fg="red",
            bold=True,
        )
        for row in report["odd_states"]:
            click.echo(f"  {row['tx_message_id']} State {row['state']}")
    click.echo("Inbox")
    click.echo("  " + ", ".join(f"{name} {n}" for name, n in report["inbox"].items()))
