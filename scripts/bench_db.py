"""Per-database benchmark: insert -> State 20 latency and throughput of the gateway.

For each database (SQLite file, throwaway PostgreSQL and MariaDB from
``tests/dbservers.py``) it starts a real push server (SQLite) over TLS on loopback and
1 or 2 ``mpg run`` processes on that database's Outbox, then:

  paced   messages inserted one per commit at a fixed rate: insert -> State 20
          latency (what polling or wake-up costs one message)
  burst   N messages inserted in one transaction: messages/s until all are in 20
  idle    CPU the gateway processes use while nothing arrives (after the backoff)

PostgreSQL runs with the notification trigger (``mpg init-db --notify``) unless
``--no-notify``; MariaDB polls adaptively; SQLite is woken by the file watcher.

Latency runs from the ERP's commit to the gateway's transition into State 20 (the
``MpgTransition.At`` stamp, microsecond UTC, written in the same transaction).
Prints a Markdown report for docs/benchmarks.md. Uses the test harness, so run it
from the repository with the dev extra installed: ``.venv/bin/python scripts/bench_db.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import dbservers
from harness import World, wait_for

from mpg.storage import tables

o = tables.outbox.c
t = tables.transition.c


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stamp(iso: str) -> float:
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def row(tx: str) -> dict[str, Any]:
    return {
        "TxMessageId": tx,
        "SourceDomain": "example.com",
        "ReceiverType": "U",
        "ReceiverList": "erp-b",
        "Subject": f"bench {tx}",
        "Content": "<c/>",
        "ContentType": "MSG",
        "AttachmentList": "",
        "State": 10,
        "Priority": "N",
    }


def in_state_20(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(o.State == 20)).scalar_one())


def latencies(engine: sa.Engine, inserted: dict[str, float]) -> list[float]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(t.MessageKey, t.At).where(t.ToState == 20, t.MessageKey.in_(list(inserted)))
        ).all()
    return [(stamp(str(at)) - inserted[str(key)]) * 1000 for key, at in found]


def paced(engine: sa.Engine, prefix: str, rate: float, count: int) -> list[float]:
    inserted: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        tx = f"{prefix}-{i:05d}"
        with engine.begin() as conn:
            conn.execute(tables.outbox.insert(), row(tx))
        inserted[tx] = time.time()
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    wait_for("paced rows in State 20", lambda: len(latencies(engine, inserted)) == count, 120)
    return latencies(engine, inserted)


def burst(engine: sa.Engine, prefix: str, count: int) -> tuple[float, list[float]]:
    """Messages/s for ``count`` rows committed at once, and their latencies (under load)."""
    before = in_state_20(engine)
    started = time.time()
    txs = [f"{prefix}-{i:05d}" for i in range(count)]
    with engine.begin() as conn:
        conn.execute(tables.outbox.insert(), [row(tx) for tx in txs])
    committed = time.time()
    wait_for("burst rows in State 20", lambda: in_state_20(engine) - before == count, 600)
    rate = count / (time.time() - started)
    return rate, latencies(engine, dict.fromkeys(txs, committed))


@contextlib.contextmanager
def database(name: str, root: pathlib.Path) -> Iterator[str]:
    if name == "sqlite":
        yield f"sqlite:///{root / 'bench.db'}"
        return
    start = dbservers.start_postgres if name == "postgresql" else dbservers.start_mariadb
    with dbservers.running(start) as server:
        yield dbservers.fresh_database(server.url)


def bench(name: str, processes: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="mpg-bench-db-") as tmp,
        database(name, pathlib.Path(tmp)) as url,
    ):
        world = World(pathlib.Path(tmp))
        try:
            world.start_server()
            world.gateway("erp-b")
            sender = world.gateway("erp-a", database_url=url)
            if name == "postgresql" and args.notify:
                sender.mpg("init-db", "--notify")
            env = {
                "MPG_LOG__LEVEL": "warning",
                "MPG_GATEWAY__POLL_INTERVAL": str(args.poll),
                "MPG_GATEWAY__WATCH_DATABASE": str(args.watch).lower(),
            }
            gateways = [
                world.start(
                    sender.config,
                    "run",
                    env={**env, "MPG_GATEWAY__INSTANCE": f"gw-{i}"},
                    name=f"gw-{i}",
                )
                for i in range(processes)
            ]
            engine = sa.create_engine(url)
            try:
                paced(engine, "warm", args.rate, 10)
                lat = paced(engine, "paced", args.rate, args.paced)
                rate, loaded = burst(engine, "burst", args.burst)
            finally:
                engine.dispose()
            time.sleep(3)  # let the adaptive poll back off to poll_interval
            before = [cpu_seconds(p.pid) for p in gateways]
            time.sleep(args.idle)
            spent = [cpu_seconds(p.pid) - b for p, b in zip(gateways, before, strict=True)]
            idle = [seconds / args.idle * 100 for seconds in spent]
        finally:
            world.stop_all()
    return {
        "db": name,
        "processes": processes,
        "lat": lat,
        "loaded": loaded,
        "rate": rate,
        "idle": max(idle),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--databases", default="sqlite,postgresql,mariadb")
    parser.add_argument("--processes", default="1,2", help="gateway processes per run")
    parser.add_argument("--rate", type=float, default=20.0, help="paced messages/s")
    parser.add_argument("--paced", type=int, default=200, help="paced messages")
    parser.add_argument("--burst", type=int, default=2000, help="burst messages")
    parser.add_argument("--poll", type=float, default=1.0, help="gateway poll_interval")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    parser.add_argument(
        "--no-notify", dest="notify", action="store_false", help="PostgreSQL without trigger"
    )
    parser.add_argument(
        "--no-watch", dest="watch", action="store_false", help="SQLite without the file watcher"
    )
    args = parser.parse_args()
    print(
        f"poll_interval {args.poll} s; paced {args.paced} at {args.rate}/s; "
        f"burst {args.burst}; PostgreSQL trigger {'on' if args.notify else 'off'}; "
        f"SQLite file watcher {'on' if args.watch else 'off'}"
    )
    print()
    print(
        "| database | gateways | paced insert → 20 p50 | p99 | burst insert → 20 p50 | p99 "
        "| burst messages/s | idle CPU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.databases.split(","):
        for processes in (int(p) for p in args.processes.split(",")):
            r = bench(name, processes, args)
            print(
                f"| {name} | {processes} | {percentile(r['lat'], 50):,.1f} ms | "
                f"{percentile(r['lat'], 99):,.1f} ms | {percentile(r['loaded'], 50):,.0f} ms | "
                f"{percentile(r['loaded'], 99):,.0f} ms | {r['rate']:,.0f} | "
                f"{r['idle']:.2f} % |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
