"""Message tracking at scale: each kind of console search on a million messages.

Loads ``--messages`` messages (default 1,000,000) straight into a server database
(SQLite file, and a throwaway PostgreSQL from ``tests/dbservers.py`` with
``--databases sqlite,postgresql``): ``TransmitQueue`` rows as the submit writes them
(pseudonyms, the Subject sealed), one or two ``ReceiveQueue`` entries each and one to
three ``MessageKeyword`` rows, with executemany in chunks. Then it times every kind
of search :func:`mpg.server.tracking.search` makes (one page of 50, the subjects
opened and the senders named, as the console shows them) and a message's timeline,
``--repeat`` times each with different values, first **without** the search indexes
(those of the tracking work: ``tables.SEARCH_INDEXES`` below) and then with them.
Prints a Markdown table (p50/p95 in ms) for docs/benchmarks.md.

Run from the repository with the dev extra: ``.venv/bin/python scripts/bench_tracking.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import dbservers

from mpg.server import tables, tracking
from mpg.server.vault import Vault
from mpg.wire import atrest, keys

#: The indexes the tracking work added; "without" drops them. (It also added
#: IX_TransmitQueue_Tx, since folded into the unique key UQ_TransmitQueue_TxSender.)
SEARCH_INDEXES = (
    "IX_TransmitQueue_Received",
    "IX_TransmitQueue_Sender",
    "IX_TransmitQueue_AppCode",
    "IX_TransmitQueue_State",
    "IX_ReceiveQueue_Recipient",
    "IX_MessageKeyword_Search",
)
SENDERS = [f"erp-{n}@example.com" for n in range(20)]
RECIPIENTS = [f"user-{n}@example.com" for n in range(5000)]
#: A gateway that gets a copy of 30 % of the messages (the ERP of a busy site).
BUSY = "erp-main@example.com"
APP_CODES = [f"APP{n}" for n in range(10)]
VOCABULARY = [f"kw{n}" for n in range(2000)]
DAYS = 30
CHUNK = 10_000


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def load(engine: sa.Engine, vault: Vault, count: int, seed: int) -> dict[str, Any]:
    """Insert ``count`` messages; return values the searches ask for."""
    rng = random.Random(seed)
    start = time.time() - DAYS * 86400
    sender_ids = [vault.account_id(s) for s in SENDERS]
    recipient_ids = [vault.account_id(r) for r in RECIPIENTS]
    busy_id = vault.account_id(BUSY)
    keyword_ids = [vault.keyword_index(k) for k in VOCABULARY]
    # Zipf-like: a few keywords are on many messages, most on few.
    weights = [1 / (n + 1) for n in range(len(VOCABULARY))]
    samples: dict[str, list[str]] = {"message_id": [], "tx": []}
    seq = 0
    began = time.perf_counter()
    for first in range(0, count, CHUNK):
        messages, entries, words = [], [], []
        for n in range(first, min(count, first + CHUNK)):
            message_id = str(uuid.uuid4())
            at = start + n * (DAYS * 86400 / count)
            state = rng.choices(["served", "queued", "refused"], [97, 2, 1])[0]
            messages.append(
                {
                    "MessageId": message_id,
                    "SenderAccount": rng.choice(sender_ids),
                    "TxMessageId": f"tx-{n}",
                    "AppCode": rng.choice(APP_CODES),
                    "SourceDomain": "example.com",
                    "ReceiverType": "U",
                    "ContentType": "MSG",
                    "AlertFlag": False,
                    "Priority": "N",
                    "TransmitTime": "2026-11-30 00:00:00",
                    "ReceivedAt": at,
                    "RecipientCount": 1,
                    "ServedCount": 1 if state == "served" else 0,
                    "RecalledCount": 0,
                    "State": state,
                    "SubmitResult": "",
                    "SubjectEnc": vault.seal(
                        f"Subject {n}", "TransmitQueue", "SubjectEnc", message_id
                    ),
                }
            )
            if n % 997 == 0:
                samples["message_id"].append(message_id)
                samples["tx"].append(f"tx-{n}")
            if state == "refused":
                continue
            chosen_recipients = rng.sample(recipient_ids, rng.choice((1, 1, 2)))
            if rng.random() < 0.3:
                chosen_recipients.append(busy_id)
            for recipient in chosen_recipients:
                seq += 1
                entries.append(
                    {
                        "EntryId": str(uuid.uuid4()),
                        "MessageId": message_id,
                        "Recipient": recipient,
                        "Kind": "message",
                        "PriorityRank": 2,
                        "State": "acked" if state == "served" else "queued",
                        "CreatedSeq": seq,
                    }
                )
            chosen = set(rng.choices(keyword_ids, weights, k=rng.randint(1, 3)))
            words += [
                {"MessageId": message_id, "KeywordIndex": k, "ReceivedAt": at} for k in chosen
            ]
        with engine.begin() as conn:
            conn.execute(tables.transmit_queue.insert(), messages)
            conn.execute(tables.receive_queue.insert(), entries)
            conn.execute(tables.message_keyword.insert(), words)
        done = min(count, first + CHUNK)
        if done % 100_000 == 0:
            rate = done / (time.perf_counter() - began)
            print(f"  loaded {done:,} messages ({rate:,.0f}/s)", file=sys.stderr)
    samples["start"] = [str(start)]
    return samples


def set_indexes(engine: sa.Engine, present: bool) -> float:
    """Create or drop the search indexes; seconds it took."""
    began = time.perf_counter()
    wanted = [
        index
        for table in tables.ALL_TABLES
        for index in table.indexes
        if index.name in SEARCH_INDEXES
    ]
    with engine.begin() as conn:
        for index in wanted:
            if present:
                index.create(conn, checkfirst=True)
            else:
                index.drop(conn, checkfirst=True)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - began


def searches(samples: dict[str, Any]) -> dict[str, Callable[[random.Random], tracking.Query]]:
    """Each kind of search, drawing its value for one repetition."""
    start = float(samples["start"][0])
    popular, words = VOCABULARY[0], VOCABULARY
    return {
        "newest (no filter)": lambda rng: tracking.Query(),
        "MessageId": lambda rng: tracking.Query(message_id=rng.choice(samples["message_id"])),
        "TxMessageId": lambda rng: tracking.Query(tx_message_id=rng.choice(samples["tx"])),
        "sender": lambda rng: tracking.Query(sender=rng.choice(SENDERS)),
        "recipient": lambda rng: tracking.Query(recipient=rng.choice(RECIPIENTS)),
        "recipient with 30 % of all": lambda rng: tracking.Query(recipient=BUSY),
        "AppCode": lambda rng: tracking.Query(app_code=rng.choice(APP_CODES)),
        "keyword (common)": lambda rng: tracking.Query(keywords=popular),
        "keyword (rare)": lambda rng: tracking.Query(keywords=rng.choice(words[1000:])),
        "state queued": lambda rng: tracking.Query(state="queued"),
        "one day": lambda rng: tracking.Query(
            since=start + (d := rng.randrange(DAYS)) * 86400, until=start + (d + 1) * 86400
        ),
        "sender + keyword": lambda rng: tracking.Query(
            sender=rng.choice(SENDERS), keywords=rng.choice(words[:200])
        ),
        "recipient + one day": lambda rng: tracking.Query(
            recipient=rng.choice(RECIPIENTS),
            since=start + (d := rng.randrange(DAYS)) * 86400,
            until=start + (d + 1) * 86400,
        ),
    }


def timed(
    engine: sa.Engine, vault: Vault, samples: dict[str, Any], repeat: int
) -> dict[str, tuple[float, float]]:
    """p50/p95 ms of each kind of search, the 20th page and a timeline."""
    rng = random.Random(7)
    figures: dict[str, tuple[float, float]] = {}
    for name, make in searches(samples).items():
        times = []
        for _ in range(repeat):
            query = make(rng)
            began = time.perf_counter()
            tracking.search(engine, vault, query)
            times.append((time.perf_counter() - began) * 1000)
        figures[name] = (statistics.median(times), percentile(times, 95))
        print(f"  {name}: p50 {figures[name][0]:.1f} ms", file=sys.stderr)
    times = []
    for _ in range(repeat):
        after = tracking.search(engine, vault, tracking.Query(sender=rng.choice(SENDERS))).after
        for _page in range(18):
            after = tracking.search(engine, vault, tracking.Query(), after=after or "").after
        began = time.perf_counter()
        tracking.search(engine, vault, tracking.Query(), after=after or "")
        times.append((time.perf_counter() - began) * 1000)
    figures["20th page (newest)"] = (statistics.median(times), percentile(times, 95))
    times = []
    for _ in range(repeat):
        message_id = rng.choice(samples["message_id"])
        began = time.perf_counter()
        tracking.timeline(engine, vault, message_id)
        times.append((time.perf_counter() - began) * 1000)
    figures["timeline"] = (statistics.median(times), percentile(times, 95))
    return figures


@contextlib.contextmanager
def database(name: str, workdir: pathlib.Path) -> Iterator[str]:
    if name == "sqlite":
        yield f"sqlite:///{workdir / 'server.db'}"
        return
    with dbservers.running(dbservers.start_postgres) as server:
        yield dbservers.fresh_database(server.url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--repeat-without", type=int, default=5)
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument(
        "--skip-without", action="store_true", help="time only with the search indexes"
    )
    args = parser.parse_args()
    vault = Vault(keys.new_master_key(), atrest.Keyring({"k1": bytes(32)}, "k1"))
    report = []
    for name in args.databases.split(","):
        with tempfile.TemporaryDirectory() as tmp, database(name, pathlib.Path(tmp)) as url:
            engine = tables.create_engine(url)
            tables.create_tables(engine)
            set_indexes(engine, present=False)
            print(f"{name}: loading {args.messages:,} messages", file=sys.stderr)
            began = time.perf_counter()
            samples = load(engine, vault, args.messages, seed=1)
            loaded = time.perf_counter() - began
            without: dict[str, tuple[float, float]] = {}
            if not args.skip_without:
                print(f"{name}: without the search indexes", file=sys.stderr)
                without = timed(engine, vault, samples, args.repeat_without)
            built = set_indexes(engine, present=True)
            print(f"{name}: with them (built in {built:.1f} s)", file=sys.stderr)
            with_ = timed(engine, vault, samples, args.repeat)
            engine.dispose()
        report.append(
            f"\n### {name}: {args.messages:,} messages (loaded in {loaded:.0f} s; "
            f"search indexes built in {built:.0f} s)\n"
        )
        report.append("| search (one page of 50) | without: p50 / p95 ms | with: p50 / p95 ms |")
        report.append("| --- | ---: | ---: |")
        for kind, (p50, p95) in with_.items():
            w50, w95 = without.get(kind, (float("nan"), float("nan")))
            report.append(f"| {kind} | {w50:,.1f} / {w95:,.1f} | {p50:,.1f} / {p95:,.1f} |")
    print("\n".join(report))


if __name__ == "__main__":
    main()
