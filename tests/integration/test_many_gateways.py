"""Two and three gateway processes on one Outbox (PostgreSQL, MariaDB): each row is
sent exactly once.

The proof is on both sides: every row ends in State 20 with one 10 -> 12 step in its
history, and the processes' ``batch_submitted`` log events add up to exactly the
number of rows, so no row was submitted twice (the server would have accepted a
repeat silently, being idempotent). The full 5,000 rows run under ``-m slow``.
"""

from __future__ import annotations

import collections
import json
import pathlib

import pytest
import sqlalchemy as sa
from harness import World, wait_for

from mpg.storage import tables

o = tables.outbox.c
t = tables.transition.c


def seed(url: str, n: int) -> None:
    """The ERP inserts ``n`` ready rows addressed to account erp-b."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                tables.outbox.insert(),
                [
                    {
                        "TxMessageId": f"tx-{i:05d}",
                        "SourceDomain": "example.com",
                        "ReceiverType": "U",
                        "ReceiverList": "erp-b",
                        "Subject": f"第 {i} 號",
                        "Content": "<c/>",
                        "ContentType": "MSG",
                        "AttachmentList": "",
                        "State": 10,
                        "Priority": "N",
                    }
                    for i in range(n)
                ],
            )
    finally:
        engine.dispose()


def counts(url: str) -> tuple[dict[int, int], collections.Counter[str]]:
    """Rows per State, and how many times each row was claimed (10 -> 12)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            states = dict(conn.execute(sa.select(o.State, sa.func.count()).group_by(o.State)).all())
            claims = collections.Counter(
                str(key)
                for (key,) in conn.execute(
                    sa.select(t.MessageKey).where(t.FromState == 10, t.ToState == 12)
                )
            )
    finally:
        engine.dispose()
    return {int(k): int(v) for k, v in states.items()}, claims


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
    if db_url.startswith("sqlite"):
        pytest.skip("several gateway processes on one Outbox: tested on PostgreSQL and MariaDB")
    world.start_server()
    world.gateway("erp-b")
    sender = world.gateway("erp-a", database_url=db_url)
    seed(db_url, rows)
    for i in range(processes):
        world.start(
            sender.config,
            "run",
            env={"MPG_GATEWAY__INSTANCE": f"gw-{i}", "MPG_GATEWAY__BATCH_SIZE": "50"},
            name=f"gw-{i}",
        )
    wait_for(
        f"{rows} rows to reach State 20",
        lambda: counts(db_url)[0] == {20: rows},
        timeout=300,
    )
    world.stop_all()
    _, claims = counts(db_url)
    assert len(claims) == rows
    assert set(claims.values()) == {1}
    per_process = [submitted(world.root / f"gw-{i}.log") for i in range(processes)]
    assert sum(per_process) == rows, per_process


@pytest.mark.parametrize("processes", [2, 3])
def test_gateway_processes_send_each_row_exactly_once(
    world: World, db_url: str, processes: int
) -> None:
    """500 rows, 2 or 3 gateway processes on one Outbox: each row submitted once."""
    run_gateways(world, db_url, processes, 500)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 3])
def test_gateway_processes_send_5000_rows_exactly_once(
    world: World, db_url: str, processes: int
) -> None:
    """5,000 rows, 2 or 3 gateway processes on one Outbox: each row submitted once."""
    run_gateways(world, db_url, processes, 5000)
