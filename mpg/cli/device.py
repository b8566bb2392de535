"""``mpg device …``: the reference phone agent (mpg.agent) on the command line.

It does what a phone's app does, against a real server: register (three ways, or an
account made by hand), keep the credential in its state folder, set its push token,
subscribe, fetch its messages into a local Inbox, read them (reported to the server)
and answer approvals. Every command a script reads has ``--json``. docs/devices.md,
"The phone agent".
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import click

from mpg import config, errors, logs
from mpg.agent import agent as agent_mod
from mpg.agent import api_client
from mpg.cli import content as content_cli
from mpg.cli import inbox as inbox_cli

#: Where the state folder is when neither --state nor the variable names one.
DEFAULT_STATE: Final = "~/.mpg-device"
STATE_ENV: Final = "MPG_DEVICE_STATE"
_META: Final = "mpg.device.state"
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


def _emit(data: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    for line in lines:
        click.echo(line)


@contextmanager
def _agent() -> Iterator[agent_mod.Agent]:
    root = click.get_current_context().meta[_META]
    with agent_mod.Agent(root) as agent:
        yield agent


@click.group("device")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    envvar=STATE_ENV,
    default=DEFAULT_STATE,
    show_default=True,
    help=f"The agent's state folder (credential, settings, Inbox); also ${STATE_ENV}.",
)
@click.pass_context
def device(ctx: click.Context, state_dir: pathlib.Path) -> None:
    """The reference phone agent: register, fetch, read and answer like a phone."""
    ctx.meta[_META] = state_dir.expanduser()
    # Only warnings and errors, on standard error: standard output is for --json.
    logs.configure(config.LogSettings(level="warning"), "device")


def _registration_data(reg: api_client.Registration) -> dict[str, Any]:
    return {
        "registered": True,
        "account": reg.account,
        "key_id": reg.key_id,
        "group": {
            "id": reg.group.id,
            "name": reg.group.name,
            "region": reg.group.region,
            "file_url": reg.group.file_url,
        },
        "categories": list(reg.categories),
        "replaced": reg.replaced,
    }


def _registered(reg: api_client.Registration, as_json: bool, where: pathlib.Path) -> None:
    chosen = [str(c.get("id")) for c in reg.categories if c.get("subscribed")]
    _emit(
        _registration_data(reg),
        as_json,
        [
            f"registered as {reg.account} (key {reg.key_id}) in group {reg.group.id}"
            + (f" ({reg.group.name})" if reg.group.name else ""),
            f"subscribed: {', '.join(chosen) or 'nothing'}",
            *(["(an earlier registration of this device id was replaced)"] if reg.replaced else []),
            f"credential kept in {where}",
        ],
    )


def _offered(choice: api_client.GroupChoice, as_json: bool, then: str) -> None:
    groups = [{"id": g.id, "name": g.name, "region": g.region} for g in choice.groups]
    data: dict[str, Any] = {"registered": False, "groups": groups}
    if choice.expires_in:
        data["expires_in"] = choice.expires_in
    _emit(
        data,
        as_json,
        [f"several groups are offered; choose one: {then}"]
        + [f"  {g['id']:<20} {g['name']} ({g['region']})" for g in groups],
    )


def _managed(path: str | None) -> dict[str, str]:
    """A managed-configuration file: a JSON object of the keys an MDM would push."""
    if path is None:
        return {}
    try:
        data = json.loads(content_cli.read_text(path))
    except ValueError as exc:
        raise errors.ValidationError("managed", f"{path}: not JSON: {exc}") from exc
    known = {"server_url", "ca_file", "registration_code", "email"}
    if not isinstance(data, dict):
        raise errors.ValidationError("managed", f"{path}: not a JSON object")
    if not set(data) <= known:
        raise errors.ValidationError(
            "managed", f"{path}: unknown keys {sorted(set(data) - known)}; known: {sorted(known)}"
        )
    return {k: str(v) for k, v in data.items()}


@device.command("register")
@click.option("--server", "server_url", help="The push server, https://host:port.")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Trust only this CA bundle for the server's certificate.",
)
@click.option("--device-id", help="The device id to register (default: one made once and kept).")
@click.option("--platform", help="android, ios, ... (default android).")
@click.option("--app-version", help="The app version reported.")
@click.option("--email", help="Register by e-mail: a code is mailed; then `mpg device confirm`.")
@click.option("--code", "registration_code", help="Register with a registration code.")
@click.option(
    "--id-token", "id_token_file", help="Register with the ID token in FILE ('-': stdin)."
)
@click.option("--nonce", help="The nonce the ID token was requested with.")
@click.option("--group", help="The group to join when the ID token's tenant maps to several.")
@click.option(
    "--managed",
    "managed_file",
    help="A managed-configuration JSON file (server_url, "
    "ca_file, registration_code, email); the options above win over it.",
)
@_json
def register(
    server_url: str | None,
    ca_file: str | None,
    device_id: str | None,
    platform: str | None,
    app_version: str | None,
    email: str | None,
    registration_code: str | None,
    id_token_file: str | None,
    nonce: str | None,
    group: str | None,
    managed_file: str | None,
    as_json: bool,
) -> None:
    """Register this device, by e-mail, code or ID token."""
    managed = _managed(managed_file)
    ways = [w for w in (email, registration_code, id_token_file) if w]
    if len(ways) > 1:
        raise click.UsageError("give only one of --email, --code, --id-token")
    if not ways:
        registration_code = managed.get("registration_code")
        email = None if registration_code else managed.get("email")
        if not (registration_code or email):
            raise click.UsageError("give --email, --code or --id-token (or --managed with one)")
    with _agent() as agent:
        agent.configure(
            server_url=server_url or managed.get("server_url"),
            ca_file=ca_file or managed.get("ca_file"),
            device_id=device_id,
            platform=platform,
            app_version=app_version,
        )
        agent.save()
        if email:
            seconds = agent.register_email(email)
            _emit(
                {
                    "registered": False,
                    "pending_email": email,
                    "device_id": agent.state.device_id,
                    "expires_in": seconds,
                },
                as_json,
                [
                    f"a verification code was mailed to {email} (valid {seconds} s); "
                    "run `mpg device confirm CODE`"
                ],
            )
            return
        if registration_code:
            reg: api_client.Registration | api_client.GroupChoice
            reg = agent.register_code(registration_code)
        else:
            assert id_token_file is not None
            reg = agent.register_id_token(content_cli.read_text(id_token_file), nonce, group)
        if isinstance(reg, api_client.GroupChoice):
            _offered(reg, as_json, "send the token again with --group GROUP")
            return
        _registered(reg, as_json, agent.folder.credential_path)


@device.command("confirm")
@click.argument("code")
@click.option("--group", help="The group to join, when the address's domain has several.")
@_json
def confirm(code: str, group: str | None, as_json: bool) -> None:
    """Send the CODE mailed by `register --email`; registers, or lists the groups of the
    address's domain (then `mpg device choose GROUP`: the code is used up)."""
    with _agent() as agent:
        answer = agent.confirm(code, group)
        if isinstance(answer, api_client.Registration):
            _registered(answer, as_json, agent.folder.credential_path)
            return
    _offered(answer, as_json, "run `mpg device choose GROUP`")


@device.command("choose")
@click.argument("group")
@_json
def choose(group: str, as_json: bool) -> None:
    """Join GROUP, one of those `mpg device confirm` offered (within its time)."""
    with _agent() as agent:
        reg = agent.choose(group)
        _registered(reg, as_json, agent.folder.credential_path)


@device.command("use-account")
@click.argument("account")
@click.option("--credential-file", required=True, help="Its credential token ('-': stdin).")
@click.option("--server", "server_url", required=True, help="The push server, https://host:port.")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Trust only this CA bundle for the server's certificate.",
)
def use_account(account: str, credential_file: str, server_url: str, ca_file: str | None) -> None:
    """Act as ACCOUNT, made by hand with `mpg server account add --kind device`."""
    with _agent() as agent:
        agent.configure(server_url=server_url, ca_file=ca_file)
        agent.use_account(account, content_cli.read_text(credential_file))
    click.echo(f"using account {account}")


@device.command("info")
@click.option("--from-server", is_flag=True, help="Also ask the server (GET /device).")
@_json
def info(from_server: bool, as_json: bool) -> None:
    """What the agent keeps (never the credential), and what the server knows."""
    with _agent() as agent:
        data: dict[str, Any] = {**agent.state.as_dict(), "state_folder": str(agent.folder.root)}
        if from_server:
            with agent.api() as api:
                data["server"] = api.device()
    _emit(data, as_json, [f"{key}: {value}" for key, value in data.items()])


@device.command("push-token")
@click.argument("token")
@click.option("--platform", help="The push service's platform (default: the device's).")
@_json
def push_token(token: str, platform: str | None, as_json: bool) -> None:
    """Set or refresh the device's push token on the server."""
    with _agent() as agent:
        answer = agent.set_push_token(token, platform)
    _emit(answer, as_json, ["push token set"])


@device.command("start")
@_json
def start(as_json: bool) -> None:
    """Report an app start (the server subscribes newly preselected categories)."""
    with _agent() as agent:
        answer = agent.start()
    added = ", ".join(answer.get("added", ())) or "nothing"
    _emit(answer, as_json, [f"start reported; newly subscribed: {added}"])


def _category_lines(items: list[dict[str, Any]]) -> list[str]:
    return [
        f"{'[x]' if c.get('subscribed') else '[ ]'} {c.get('id')}  {c.get('name', '')}"
        for c in items
    ]


@device.command("subscriptions")
@_json
def subscriptions(as_json: bool) -> None:
    """The group's categories and which are subscribed (from the server)."""
    with _agent() as agent:
        answer = agent.subscriptions()
    _emit(answer, as_json, _category_lines(answer) or ["the group has no categories"])


def _subscribe(category: str, on: bool, as_json: bool) -> None:
    with _agent() as agent:
        answer = agent.subscribe(category, on=on)
    _emit(
        answer,
        as_json,
        [f"{'subscribed to' if on else 'unsubscribed from'} {category}", *_category_lines(answer)],
    )


@device.command("subscribe")
@click.argument("category")
@_json
def subscribe(category: str, as_json: bool) -> None:
    """Subscribe to CATEGORY of the device's group."""
    _subscribe(category, True, as_json)


@device.command("unsubscribe")
@click.argument("category")
@_json
def unsubscribe(category: str, as_json: bool) -> None:
    """Unsubscribe from CATEGORY."""
    _subscribe(category, False, as_json)


@device.command("fetch")
@click.option(
    "--wait",
    type=click.FloatRange(0, 300),
    default=0.0,
    show_default=True,
    help="Seconds to wait for a message when none is queued (long poll).",
)
@click.option("--max", "max_items", type=click.IntRange(1, 5000), default=200, show_default=True)
@_json
def fetch(wait: float, max_items: int, as_json: bool) -> None:
    """Fetch queued messages into the local Inbox (each once) and acknowledge them."""
    with _agent() as agent:
        got = agent.fetch(max_items, wait)
    _emit(
        {"new": list(got.new), "repeated": got.repeated, "receipts": got.receipts},
        as_json,
        [f"{len(got.new)} new message(s)"] + [f"  {rx}" for rx in got.new],
    )


@device.command("inbox")
@click.option(
    "--state",
    "state_name",
    type=click.Choice(list(inbox_cli.STATE_FILTER)),
    default="all",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@_json
def inbox(state_name: str, limit: int, as_json: bool) -> None:
    """The local Inbox, oldest first."""
    wanted = inbox_cli.STATE_FILTER[state_name]
    with _agent() as agent:
        rows = agent.inbox().list(None if wanted is None else int(wanted), limit)
    data = [inbox_cli.public(r, with_content=False) for r in rows]
    _emit(data, as_json, inbox_cli.table_lines(data) if data else ["no messages"])


@device.command("show")
@click.argument("rx_message_id")
@_json
def show(rx_message_id: str, as_json: bool) -> None:
    """One message of the local Inbox, with its Content."""
    with _agent() as agent:
        data = inbox_cli.public(agent.message(rx_message_id), with_content=True)
    data["parsed"], data["parse_error"] = inbox_cli.parsed_content(data.get("Content"))
    _emit(
        data,
        as_json,
        [
            f"{k}: {'' if v is None else v}"
            for k, v in data.items()
            if k not in ("parsed", "parse_error", "attachments")
        ],
    )


@device.command("read")
@click.argument("rx_message_id")
@_json
def read(rx_message_id: str, as_json: bool) -> None:
    """Mark a message read here (State 29) and report it to the server."""
    with _agent() as agent:
        moved, answer = agent.read(rx_message_id)
    _emit(
        {"rx_message_id": rx_message_id, "changed": moved, "server": answer},
        as_json,
        [f"{rx_message_id} read" + ("" if moved else " (already read)") + "; server told"],
    )


@device.command("reply")
@click.argument("rx_message_id")
@click.option("--approve", "answer", flag_value="approve", help="Answer 'approve'.")
@click.option("--reject", "answer", flag_value="reject", help="Answer 'reject'.")
@click.option("--answer", "answer", help="Another value the approval offers (e.g. drop).")
@click.option("--comment", help="The comment field's text.")
@_json
def reply(rx_message_id: str, answer: str | None, comment: str | None, as_json: bool) -> None:
    """Answer the approval RX_MESSAGE_ID with a REPLY to its sender's gateway."""
    if not answer:
        raise click.UsageError("give --approve, --reject or --answer VALUE")
    with _agent() as agent:
        msg, result = agent.reply(rx_message_id, answer, comment)
    _emit(
        {
            "tx_message_id": msg.tx_message_id,
            "message_id": result.message_id,
            "to": list(msg.receivers),
            "answer": answer,
        },
        as_json,
        [f"replied {answer} to {msg.receivers[0]}: MessageId {result.message_id}"],
    )
