"""``mpg inbox list|show|read``: what the gateway stored for the ERP, and marking it read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import click

from mpg import errors
from mpg.cli import context
from mpg.storage import states
from mpg.wire import content

STATE_FILTER: Final = {"new": states.InboxState.NEW, "read": states.InboxState.READ, "all": None}
#: Columns ``inbox list`` shows, in order.
LIST_COLUMNS: Final = (
    "RxMessageId",
    "State",
    "ReceiveTime",
    "AppCode",
    "ContentType",
    "Sender",
    "Subject",
)


#: nchar(20) time columns, which SQL Server pads with blanks.
PADDED_COLUMNS: Final = frozenset({"TransmitTime", "ReceiveTime", "StatusTime"})


def _plain(value: object) -> object:
    """JSON-friendly: UUIDs as text, bytes never (FileData stays in the database)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return str(value)


def public(row: Mapping[str, Any], *, with_content: bool) -> dict[str, Any]:
    """A row as printable data; ``Content`` only when asked for, never ``FileData``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "FileData" or (key == "Content" and not with_content):
            continue
        if key == "attachments" and isinstance(value, list):
            out[key] = [public(item, with_content=False) for item in value]
        elif key in PADDED_COLUMNS and isinstance(value, str):
            out[key] = value.strip()
        else:
            out[key] = _plain(value)
    return out


def parsed_content(text: object) -> tuple[dict[str, Any] | None, str | None]:
    """(the Content as plain data, None), or (None, why not) when it does not parse:
    Content is free text, so a message that is not a Content document is no error."""
    if not isinstance(text, str) or not text.strip():
        return None, "no Content"
    try:
        return content.as_data(content.parse_content(text)), None
    except errors.WireError as exc:
        return None, str(exc)


@click.group("inbox")
def inbox() -> None:
    """Messages the gateway stored in the Inbox table."""


@inbox.command("list")
@click.option(
    "--state", "state_name", type=click.Choice(list(STATE_FILTER)), default="new", show_default=True
)
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_messages(obj: context.CliContext, state_name: str, limit: int, as_json: bool) -> None:
    """List Inbox messages (new ones by default), oldest first."""
    wanted = STATE_FILTER[state_name]
    rows = obj.inbox().list(None if wanted is None else int(wanted), limit)
    if as_json:
        click.echo(json.dumps([public(r, with_content=False) for r in rows], ensure_ascii=False))
        return
    if not rows:
        click.echo("no messages" if wanted is None else f"no {state_name} messages")
        return
    for line in table_lines([public(row, with_content=False) for row in rows]):
        click.echo(line)


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A header of :data:`LIST_COLUMNS` and one line per row, in aligned columns."""
    cells = [list(LIST_COLUMNS)] + [
        ["" if row.get(col) is None else str(row[col]).strip() for col in LIST_COLUMNS]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(LIST_COLUMNS))]
    return [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]


@inbox.command("show")
@click.argument("rx_message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, Content included.")
@click.pass_obj
def show(obj: context.CliContext, rx_message_id: str, as_json: bool) -> None:
    """Show every column of one Inbox message and its attachments."""
    row = obj.inbox().get(rx_message_id)
    if row is None:
        raise errors.CommandError(f"no Inbox message {rx_message_id}")
    data = public(row, with_content=True)
    if as_json:
        data["parsed"], data["parse_error"] = parsed_content(data.get("Content"))
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    attachments = data.pop("attachments", [])
    width = max(len(key) for key in data)
    for key, value in data.items():
        click.echo(f"{key:<{width}}  {'' if value is None else value}")
    for item in attachments:
        stored = "bytes stored" if item.get("HasFileData") else "fetch: mpg attachment fetch ID"
        click.echo(
            f"attachment {item.get('SeqNo')}: {item.get('FileName')} "
            f"({item.get('FileSize')} bytes, id {item.get('AttachmentId')}, {stored})"
        )


@inbox.command("read")
@click.argument("rx_message_ids", nargs=-1, required=True)
@click.pass_obj
def read(obj: context.CliContext, rx_message_ids: tuple[str, ...]) -> None:
    """Mark Inbox messages read (State 0 -> 29), as the ERP does after reading."""
    changed = obj.inbox().mark_read(list(rx_message_ids))
    click.echo(f"marked {changed} of {len(rx_message_ids)} read")
    if changed < len(rx_message_ids):
        raise errors.CommandError("some messages were not new (unknown, read or recalled)")
