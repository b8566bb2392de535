"""``mpg tail``: follow the state transitions of Outbox and Inbox rows as they happen.

Reads the gateway's transition history (``MpgTransition``), polling every
:data:`POLL_SECONDS`, so it works against any database and any number of gateways
writing to it, without a connection to the gateway process.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Collection
from typing import Any, Final

import click

from mpg import timefmt
from mpg.cli import context
from mpg.storage import history, states

POLL_SECONDS: Final = 0.5
BATCH: Final = 500

_FINAL_OK: Final = {int(states.OutboxState.SENT)}
_FINAL_BAD: Final = {
    int(states.OutboxState.TIMED_OUT),
    int(states.OutboxState.VOIDED),
    int(states.OutboxState.FAILED),
}


def state_label(box: str, code: int | None) -> str:
    """``10 READY`` for an Outbox code, ``29 READ`` for an Inbox one, ``-`` for none."""
    if code is None:
        return "-"
    enum_type = states.InboxState if box == "in" else states.OutboxState
    try:
        return f"{code} {enum_type(code).name}"
    except ValueError:
        return str(code)


def as_dict(row: history.Transition) -> dict[str, Any]:
    """One history row as the JSON object ``--json`` prints."""
    return {
        "id": row.id,
        "at": row.at,
        "box": row.box,
        "message_key": row.message_key,
        "from_state": row.from_state,
        "to_state": row.to_state,
        "reason": row.reason,
        "gateway": row.gateway,
    }


def as_text(row: history.Transition, colour: bool) -> str:
    """One history row as a readable line; the target state coloured on a terminal."""
    target = state_label(row.box, row.to_state)
    if colour and row.box == "out":
        if row.to_state in _FINAL_OK:
            target = click.style(target, fg="green", bold=True)
        elif row.to_state in _FINAL_BAD:
            target = click.style(target, fg="red", bold=True)
        else:
            target = click.style(target, fg="yellow")
    return (
        f"{row.at} {row.box:<3} {row.message_key} "
        f"{state_label(row.box, row.from_state)} -> {target}  {row.reason}"
    )


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> dt.datetime:
    """``--since``: an age (``90s``, ``15m``, ``2h``, ``7d``) before ``now``, or a UTC time."""
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in _UNITS:
        return dt.datetime.fromtimestamp(now - int(value[:-1]) * _UNITS[value[-1]], dt.UTC)
    try:
        return timefmt.parse_text(value).replace(tzinfo=dt.UTC)
    except ValueError:
        raise click.BadParameter(
            "give a UTC time 'yyyy-MM-dd HH:mm:ss' or an age like 90s, 15m, 2h, 7d",
            param_hint="--since",
        ) from None


def follow(
    fetch: Callable[[int], list[history.Transition]],
    start_after: int,
    emit: Callable[[history.Transition], None],
    *,
    to_states: Collection[int] = (),
    once: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Emit rows after ``start_after`` as they appear; returns the last id seen.

    ``to_states`` keeps only steps into those states. With ``once`` it stops when
    nothing new is left; otherwise it runs until interrupted, polling every
    :data:`POLL_SECONDS`.
    """
    last = start_after
    while True:
        rows = fetch(last)
        for row in rows:
            last = max(last, row.id)
            if not to_states or row.to_state in to_states:
                emit(row)
        if len(rows) >= BATCH:
            continue  # more are waiting: read on without sleeping
        if once:
            return last
        sleep(POLL_SECONDS)


@click.command("tail")
@click.option("--tx", "message_key", default=None, help="Only this TxMessageId (or RxMessageId).")
@click.option(
    "--state",
    "to_states",
    type=int,
    multiple=True,
    help="Only transitions into this state (repeatable).",
)
@click.option("--app-code", default=None, help="Only messages of this AppCode.")
@click.option(
    "--since",
    "since_text",
    default=None,
    help="Only steps at or after this time: '2026-11-23 08:00:00' (UTC) or an age "
    "such as 90s, 15m, 2h, 7d. Starts at the oldest matching row.",
)
@click.option("--since-id", type=int, default=None, help="Start after this history id.")
@click.option("--from-start", is_flag=True, help="Start at the oldest history row.")
@click.option(
    "--once",
    is_flag=True,
    help="Print what is there and exit (starts at the oldest row unless told).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def tail(
    obj: context.CliContext,
    message_key: str | None,
    to_states: tuple[int, ...],
    app_code: str | None,
    since_text: str | None,
    since_id: int | None,
    from_start: bool,
    once: bool,
    as_json: bool,
) -> None:
    """Follow state transitions live (Ctrl-C stops)."""
    if since_id is not None and from_start:
        raise click.UsageError("give only one of --since-id and --from-start")
    engine = obj.engine
    since = None if since_text is None else history.stamp(parse_since(since_text, time.time()))
    if since_id is not None:
        start = since_id
    elif from_start or once or since is not None:
        start = 0
    else:
        start = history.latest_id(engine)
    colour = not as_json and sys.stdout.isatty()

    def fetch(after: int) -> list[history.Transition]:
        # The history filters one state; several are filtered here, after the read.
        state = to_states[0] if len(to_states) == 1 else None
        return history.follow(
            engine, after, tx=message_key, state=state, app_code=app_code, since=since, limit=BATCH
        )

    def emit(row: history.Transition) -> None:
        line = json.dumps(as_dict(row), ensure_ascii=False) if as_json else as_text(row, colour)
        click.echo(line)

    follow(fetch, start, emit, to_states=set(to_states), once=once)
