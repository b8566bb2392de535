"""Two and three gateway processes on one Outbox (PostgreSQL, MariaDB): each row is
sent exactly once.

The proof is on both sides: every row ends in State 20 with one 10 -> 12 step in its
history, and the processes' ``batch_submitted`` log events add up to exactly the
number of rows, so no row was submitted twice (the server would have accepted a
repeat silently, being idempotent). The full 5,000 rows run under ``-m slow``.
The gateways are processes; the push server runs in this one (``local_world``).
"""

from __future__ import annotations

import json
import pathlib

import dbservers
import erp
import pytest
from harness import World, wait_for


def submitted(log: pathlib.Path) -> int:
    """Rows one gateway process submitted, from its ``batch_submitted`` log events.

    Read as a stream of JSON objects, not lines: the stdlib logging bridge and
    structlog write to stdout from two threads, and a line may hold two events.
    """
    text = log.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    total, at = 0, text.find("{")
    while at != -1:
        event, end = decoder.raw_decode(text, at)
        if event.get("event") == "batch_submitted":
            total += int(event["count"])
        at = text.find("{", end)
    return total


def run_gateways(world: World, db_url: str, processes: int, rows: int) -> None:
    world.start_server()
    world.gateway("erp-b")
    sender = world.gateway("erp-a", database_url=db_url)
    erp.seed(db_url, rows)
    for i in range(processes):
        world.start(
            sender.config,
            "run",
            env={"MPG_GATEWAY__INSTANCE": f"gw-{i}", "MPG_GATEWAY__BATCH_SIZE": "50"},
            name=f"gw-{i}",
        )
    wait_for(
        f"{rows} rows to reach State 20",
        lambda: erp.progress(db_url)[0] == {20: rows},
        timeout=300,
    )
    world.stop_all()
    _, steps = erp.progress(db_url)
    claims = [n for (_, a, b), n in steps.items() if (a, b) == (10, 12)]
    assert len(claims) == rows
    assert set(claims) == {1}
    per_process = [submitted(world.root / f"gw-{i}.log") for i in range(processes)]
    assert sum(per_process) == rows, per_process


@pytest.mark.parametrize("processes", [2, 3])
def test_gateway_processes_send_each_row_exactly_once(
    local_world: World, database_server: tuple[dbservers.Server, str], processes: int
) -> None:
    """500 rows, 2 or 3 gateway processes on one Outbox: each row submitted once."""
    run_gateways(local_world, database_server[1], processes, 500)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 3])
def test_gateway_processes_send_5000_rows_exactly_once(
    local_world: World, database_server: tuple[dbservers.Server, str], processes: int
) -> None:
    """5,000 rows, 2 or 3 gateway processes on one Outbox: each row submitted once."""
    run_gateways(local_world, database_server[1], processes, 5000)
