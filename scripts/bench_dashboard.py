"""Benchmark of the console dashboard's figures (mpg.server.dashboard) on many messages.

Fills a server database with N messages (one in ten still queued, the rest served;
received over the last 30 days) and times :func:`mpg.server.dashboard.collect` and
each of its message queries. Prints a Markdown table for docs/console.md.

    .venv/bin/python scripts/bench_dashboard.py --messages 1000000
    .venv/bin/python scripts/bench_dashboard.py --url postgresql+psycopg://... --messages 200000

The database is a fresh SQLite file unless ``--url`` names one (its TransmitQueue is
emptied first).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from mpg.server import accounts, dashboard, queues, tables
from mpg.wire import atrest, keys

BATCH = 20_000
RUNS = 5


def fill(engine: sa.Engine, count: int, now: float) -> None:
    """``count`` messages of one sender, one in ten queued, over the last 30 days."""
    rng = random.Random(1)
    with engine.begin() as conn:
        conn.execute(tables.transmit_queue.delete())
        for start in range(0, count, BATCH):
            conn.execute(
                tables.transmit_queue.insert(),
                [
                    {
                        "MessageId": str(uuid.uuid4()),
                        "SenderAccount": "a-bench",
                        "TxMessageId": str(uuid.uuid4()),
                        "ReceivedAt": now - rng.random() * 30 * 86400,
                        "RecipientCount": 1,
                        "ServedCount": 0,
                        "RecalledCount": 0,
                        "State": "queued" if rng.random() < 0.1 else "served",
                        "SubmitResult": "",
                    }
                    for _ in range(min(BATCH, count - start))
                ],
            )


def timed(action: Callable[[], object]) -> float:
    """The median of :data:`RUNS` runs of ``action``, in milliseconds."""
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp(prefix='mpg-dash-')}/server.db"
    engine = tables.create_engine(url)
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k1": keys.new_master_key()}, "k1")
    names = accounts.AccountStore(engine, keys.new_master_key(), keyring).vault
    store = queues.QueueStore(engine, names)
    now = time.time()
    began = time.perf_counter()
    fill(engine, args.messages, now)
    filled = time.perf_counter() - began

    def with_conn(query: Callable[[sa.Connection], object]) -> Callable[[], object]:
        def run() -> object:
            with engine.connect() as conn:
                return query(conn)

        return run

    rows = [
        ("messages per state", with_conn(dashboard.message_counts)),
        ("messages per hour", with_conn(lambda conn: dashboard.hourly(conn, now))),
        (
            "stuck messages",
            with_conn(lambda conn: dashboard.stuck(conn, names, stuck_after=3600, now=now)),
        ),
        (
            "the whole dashboard",
            lambda: dashboard.collect(engine, store, names, stuck_after=3600, now=now),
        ),
    ]
    print(f"{args.messages} messages on {engine.dialect.name} (filled in {filled:.0f} s)\n")
    print("| figure | median of 5, ms |\n| --- | ---: |")
    for label, action in rows:
        print(f"| {label} | {timed(action):.0f} |")
    engine.dispose()


if __name__ == "__main__":
    main()
