"""``mpg history TxMessageId``: one message's whole timeline, gateway and server.

The gateway's steps come from ``MpgTransition``; what the server did (receipt of the
message, each recipient's fetch and acknowledgement, a recall) comes from the
server's ``history`` operation, asked as the gateway's account. Both carry ISO-8601
UTC times, so they merge by sorting. The server's events are also shown per
recipient (each device's push, fetch, acknowledgement and read), with the delivery
summary the row's StatusLog ends with (:mod:`mpg.gateway.deliverysummary`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from mpg import errors
from mpg.cli import context, operate, tail
from mpg.gateway import deliverysummary
from mpg.storage import history as history_mod
from mpg.wire import model


def collect(obj: context.CliContext, key: str, *, ask_server: bool) -> dict[str, Any]:
    """The timeline as plain data: gateway steps, server events, and any server trouble."""
    steps = history_mod.timeline(obj.engine, key)
    row = obj.outbox().get(key)
    events: list[dict[str, Any]] = []
    found: list[model.ServerEvent] = []
    message_id = row.message_id if row is not None else None
    server_note = ""
    if ask_server and row is not None and row.message_id:
        push = operate.push_client(obj)
        if push is None:
            server_note = "no gateway credential configured: server side not shown"
        else:
            try:
                message_id, found = push.history(key)
                events = [
                    {"at": e.at, "kind": e.kind, "account": e.account, "detail": e.detail}
                    for e in found
                ]
            except errors.ServerError as exc:
                server_note = f"server side not available: {exc}"
            finally:
                push.close()
    if not steps and row is None:
        raise errors.CommandError(f"no message {key} in the Outbox, Inbox or history")
    timeline = [{"at": s.at, "source": "gateway", **tail.as_dict(s)} for s in steps] + [
        {"source": "server", **e} for e in events
    ]
    timeline.sort(key=lambda entry: str(entry["at"]))
    counts = deliverysummary.count(found) if row is not None and row.receiver_type == "D" else None
    return {
        "message_key": key,
        "message_id": message_id,
        "state": None if row is None else row.state,
        "status_log": None if row is None else row.status_log,
        "timeline": timeline,
        "recipients": per_recipient(found, own=obj.settings.gateway.account),
        "summary": None if counts is None else counts.line(),
        "server_note": server_note,
    }


def per_recipient(events: list[model.ServerEvent], *, own: str) -> list[dict[str, Any]]:
    """The server's events grouped by the recipient they concern (not the sender's own)."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for e in sorted(events, key=lambda e: e.at):
        if e.account.lower() != own.lower():
            grouped.setdefault(e.account, []).append(
                {"at": e.at, "kind": e.kind, "detail": e.detail}
            )
    return [{"account": account, "events": steps} for account, steps in grouped.items()]


def _line(entry: dict[str, Any]) -> str:
    if entry["source"] == "gateway":
        return (
            f"{entry['at']} gateway {tail.state_label(entry['box'], entry['from_state'])}"
            f" -> {tail.state_label(entry['box'], entry['to_state'])}  {entry['reason']}"
        )
    detail = f"  {entry['detail']}" if entry["detail"] else ""
    return f"{entry['at']} server  {entry['kind']} {entry['account']}{detail}"


@click.command("history")
@click.argument("key", metavar="TxMessageId")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@click.option("--local", is_flag=True, help="Only the gateway's steps; do not ask the server.")
@click.pass_obj
def history(obj: context.CliContext, key: str, as_json: bool, local: bool) -> None:
    """One message's timeline: gateway steps, server receipt, fetches, acks, recall."""
    report = collect(obj, key, ask_server=not local)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(f"{key}  MessageId {report['message_id'] or '-'}  State {report['state']}")
    for entry in report["timeline"]:
        click.echo(_line(entry))
    if report["recipients"]:
        click.echo("per recipient:")
    for recipient in report["recipients"]:
        steps = ", ".join(f"{e['kind']} {e['at'][11:19]}" for e in recipient["events"])
        click.echo(f"  {recipient['account']}  {steps}")
    if report["summary"]:
        click.echo(report["summary"])
    if report["server_note"]:
        click.echo(f"note: {report['server_note']}", err=True)
