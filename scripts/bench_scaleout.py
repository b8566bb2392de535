"""Scale-out benchmark: throughput of one and of two ``mpg server`` processes on one
PostgreSQL.

For each server count it starts a throwaway PostgreSQL (``tests/dbservers.py``, the
server's store), that many ``mpg server`` processes on it over TLS on loopback, and
``--pairs`` pairs of gateways (each gateway its own SQLite). Sender *i* writes to
receiver *i*; the sender talks to server ``i mod N`` and its receiver to the next
one, so with two servers every message crosses from one process to the other
through the database. Each sender's ERP inserts ``--messages`` rows at once; the
figure is messages per second until every row is in State 29 (submitted, fetched,
stored, acknowledged and its receipt back: the whole server round trip), with the
CPU seconds the server processes spent per 1,000 messages.

Prints a Markdown table for docs/benchmarks.md. Run from the repository with the dev
extra installed: ``.venv/bin/python scripts/bench_scaleout.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import dbservers
from harness import Gateway, World, wait_for

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","ReceiverType","ReceiverList",'
    '"Subject","Content","ContentType","AttachmentList","State","Priority")'
    " VALUES (?,?,?,?,?,?,?,?,?,?)"
)
QUIET = {"MPG_LOG__LEVEL": "warning"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def insert(gw: Gateway, to: str, prefix: str, count: int) -> None:
    # TxMessageIds are unique per run: a repeated one would get the server's first
    # answer again (submit is idempotent) and never a second receipt.
    rows = [
        (
            f"{prefix}-{gw.name}-{n:05d}",
            "example.com",
            "U",
            to,
            f"bench {n}",
            "<c/>",
            "MSG",
            "",
            10,
            "N",
        )
        for n in range(count)
    ]
    with contextlib.closing(sqlite3.connect(gw.db, timeout=30)) as conn:
        conn.executemany(INSERT, rows)
        conn.commit()


def at_29(gw: Gateway) -> int:
    return int(gw.sql('SELECT count(*) AS n FROM "Outbox" WHERE "State" = 29')[0]["n"])


def bench(servers: int, args: argparse.Namespace) -> tuple[float, float]:
    """(messages/s, server CPU seconds per 1,000 messages) with ``servers`` processes."""
    with (
        tempfile.TemporaryDirectory(prefix="mpg-bench-scale-") as tmp,
        dbservers.running(dbservers.start_postgres) as pg,
    ):
        world = World(pathlib.Path(tmp))
        try:
            ports = world.start_servers(
                dbservers.fresh_database(pg.url), servers, max_long_poll=20, env=QUIET
            )
            server_pids = [p.pid for p in world.procs]
            pairs = []
            for i in range(args.pairs):
                sender = world.gateway(f"s{i}", port=ports[i % servers], long_poll_wait=20)
                receiver = world.gateway(f"r{i}", port=ports[(i + 1) % servers], long_poll_wait=20)
                pairs.append((sender, receiver))
            for sender, receiver in pairs:
                sender.run(env=QUIET)
                receiver.run(env=QUIET)
            for sender, receiver in pairs:  # warm-up: connections, caches
                insert(sender, receiver.name, "warm", 1)
            wait_for("warm-up", lambda: all(at_29(s) == 1 for s, _ in pairs), 60)
            for sender, _ in pairs:
                sender.sql('DELETE FROM "Outbox"')
            before = sum(cpu_seconds(pid) for pid in server_pids)
            started = time.monotonic()
            for sender, receiver in pairs:
                insert(sender, receiver.name, "bench", args.messages)
            total = args.messages * args.pairs
            wait_for(
                "every row in State 29",
                lambda: sum(at_29(s) for s, _ in pairs) == total,
                timeout=900,
            )
            elapsed = time.monotonic() - started
            spent = sum(cpu_seconds(pid) for pid in server_pids) - before
        finally:
            world.stop_all()
    return total / elapsed, spent / total * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="1,2", help="server process counts to run")
    parser.add_argument("--pairs", type=int, default=2, help="sender/receiver gateway pairs")
    parser.add_argument("--messages", type=int, default=2000, help="messages per sender")
    args = parser.parse_args()
    print(f"{args.pairs} gateway pairs, {args.messages} messages per sender, {os.cpu_count()} CPUs")
    print()
    print("| server processes | messages/s (insert → State 29) | server CPU s per 1,000 |")
    print("| --- | --- | --- |")
    for servers in (int(n) for n in args.servers.split(",")):
        rate, cpu = bench(servers, args)
        print(f"| {servers} | {rate:,.0f} | {cpu:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
