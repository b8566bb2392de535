#!/usr/bin/env python3
"""The push server's work per message, in one process: no HTTP, no TLS, no gateways.

Runs the server's side of a burst batch by batch, exactly as the sealed protocol
drives it: for each batch of ``--batch`` messages from gateway A to gateway B,

  submit (A) -> fetch (B) -> ack (B) -> fetch of the receipts (A) -> ack (A)

each as the server handles the request: open the envelope (key lookup, replay check
with its ``SeenNonce`` row), parse the payload, the QueueStore operation, build the
answer, seal it. The clients' side (building and sealing requests, opening answers)
runs in the same thread but outside the clock. (The fetch payload is not parsed on
the clock: the store is given what it asks for, so that the script also runs against
older checkouts, ``PYTHONPATH=<checkout> python scripts/bench_queue.py``.) With
``--fold`` the acks travel in the next fetch (``<fetch><ack>…</ack></fetch>``): one
request less per batch for each gateway, as the gateway sends them.

Prints the server's CPU time (thread time) per message in total and by operation;
``--profile FILE`` writes a cProfile of the server's calls only (``python -m pstats``
or snakeviz read it). ``--db URL`` runs on another database (e.g. a throwaway
PostgreSQL); the default is a fresh SQLite file as ``mpg server`` makes it.

Figures go to docs/benchmarks.md with the machine's load; compare two checkouts by
running this script from each.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import os
import pathlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import dbservers

from mpg import config, logs
from mpg.server import app, auth, queues, tables
from mpg.wire import atrest, envelope, keys, model, payloads

SENDER = "erp-a@example.com"
RECEIVER = "erp-b@example.com"
CONTENT = (
    '<content contenttype="msg"><params><param name="sheetno" value="AF1"/></params>'
    '<view><page id="p1" name="摘要">' + "請假一天。" * 40 + "</page></view></content>"
)
_T = TypeVar("_T")


def outgoing(tx: str) -> model.OutgoingMessage:
    """A message as gateway A builds it from scripts/bench.py's Outbox row."""
    return model.OutgoingMessage(
        tx_message_id=tx,
        app_code="BPM",
        source_domain="example.com",
        agent_sender=SENDER,
        sender=SENDER,
        receiver_type="U",
        receivers=("erp-b",),
        bcc=(),
        subject=f"bench {tx}",
        content=CONTENT,
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords="",
        transmit_time="2026-11-30 12:00:00",
    )


class Bench:
    """A PushServer and the two gateways' credentials; times the server's side."""

    def __init__(self, url: str, data_dir: pathlib.Path, profile: cProfile.Profile | None):
        self.engine = tables.create_engine(url)
        tables.create_tables(self.engine)
        settings = config.ServerSettings(data_dir=data_dir)
        keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
        self.push = app.PushServer(settings, self.engine, keys.new_master_key(), keyring)
        self.creds = {
            name: self.push.accounts.add(name, "gateway")[1] for name in (SENDER, RECEIVER)
        }
        self.spent: dict[str, float] = {}
        self.profile = profile

    def timed(self, op: str, work: Callable[[], _T]) -> _T:
        """Run the server's ``work`` for ``op`` on the clock (and in the profile)."""
        start = time.thread_time()
        if self.profile is not None:
            self.profile.enable()
        try:
            return work()
        finally:
            if self.profile is not None:
                self.profile.disable()
            self.spent[op] = self.spent.get(op, 0.0) + time.thread_time() - start

    def request(
        self, account: str, op: str, payload: bytes, fetch: tuple[int, list[str]] = (0, [])
    ) -> bytes:
        """Post ``payload`` as ``account`` to the server's ``op``; the opened answer.

        ``fetch``: what the fetch payload asks for (max, entries acknowledged), given to
        the store as the server's handler takes them from the payload.
        """
        cred = self.creds[account]
        header = envelope.request_header(account, cred.key_id, op, {})
        body = envelope.seal(cred.secret, header, payload)
        q = self.push.queues

        opener = self.push.opener
        # The nonce rides on the operation's transaction, as the server's handler has it
        # (checkouts before that write it in a transaction of its own).
        rides = "nonce_rides" in inspect.signature(opener.open).parameters
        # Older checkouts acknowledge in the lease's own transaction, whatever it finds.
        acks_left = getattr(queues, "acks_left", None)
        older: Any = q  # the store of an older checkout, called as it was then

        def serve() -> bytes:
            req = opener.open(op, body, nonce_rides=True) if rides else opener.open(op, body)
            nonce = (req.nonce,) if rides else ()
            if op == "submit":
                answer = payloads.build_submitted(
                    q.submit(req.account, payloads.parse_submit(req.payload), *nonce)
                )
            elif op == "ack":
                answer = payloads.build_acked(
                    q.ack(req.account, payloads.parse_ack(req.payload), *nonce)
                )
            else:
                size, acked = fetch
                if rides:
                    batch = q.fetch(req.account, size, 60.0, acked or (), req.nonce)
                else:  # older checkouts: without acknowledgements (no ``acked``)
                    batch = older.fetch(req.account, size, 60.0, *([acked] if acked else []))
                answer = payloads.build_deliveries(batch)
                if acks_left is not None and acks_left(batch, acked or ()):
                    # Left by the lease to the server, which applies them once the
                    # answer is out (the same request's work).
                    q.acknowledge(req.account, acked)
            if rides:
                opener.settle(req.nonce)
            return auth.seal_response(req, answer, {})

        sealed = self.timed(op, serve)
        _, plain = envelope.open_sealed(cred.secret, sealed)
        return plain

    def receive(self, account: str, size: int, fold: bool, acked: list[str]) -> list[str]:
        """One fetch as ``account``'s gateway makes it; the entries to acknowledge.

        Unfolded, ``acked`` (the last batch's entries) get their own ack first.
        """
        if acked and not fold:
            self.request(account, "ack", payloads.build_ack(acked))
            acked = []
        payload = payloads.build_fetch(size, 0, acked) if acked else payloads.build_fetch(size, 0)
        plain = self.request(account, "fetch", payload, (size, acked))
        batch = payloads.parse_deliveries(plain)
        return [d.rx_message_id for d in batch.deliveries] + [r.entry_id for r in batch.receipts]

    def run(self, messages: int, size: int, fold: bool) -> None:
        """The burst, batch by batch (see the module docstring)."""
        pending = {SENDER: [], RECEIVER: []}  # type: dict[str, list[str]]
        for first in range(0, messages, size):
            count = min(size, messages - first)
            submit = payloads.build_submit([outgoing(str(uuid.uuid4())) for _ in range(count)])
            results = payloads.parse_submitted(self.request(SENDER, "submit", submit))
            if not all(r.accepted for r in results):
                raise SystemExit(f"bench_queue: refused: {results[0].reason}")
            pending[RECEIVER] = self.receive(RECEIVER, size, fold, pending[RECEIVER])
            pending[SENDER] = self.receive(SENDER, size, fold, pending[SENDER])
        for account, left in pending.items():
            self.request(account, "ack", payloads.build_ack(left))


def beside_requests(engine: Any) -> list[Any]:
    """Start what ``mpg server`` runs beside its requests for this database (SQLite's
    checkpointer, PostgreSQL's analyzer), as far as the checkout under test has them."""
    started: list[Any] = []
    try:
        from mpg.db import checkpoints

        started.append(checkpoints.start(engine))
    except ImportError:
        pass
    try:
        from mpg.db import statistics

        started.append(statistics.start(engine, list(tables.metadata.tables)))
    except ImportError:
        pass
    return [helper for helper in started if helper is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--db",
        help="database URL, or 'postgresql' for a throwaway PostgreSQL started as "
        "tests/dbservers.py starts it (default: a fresh SQLite file)",
    )
    parser.add_argument("--fold", action="store_true", help="acks travel in the next fetch")
    parser.add_argument("--profile", type=pathlib.Path, help="write a cProfile of the server")
    args = parser.parse_args()
    # As the benchmark's servers run (scripts/bench.py): warnings only, as JSON.
    logs.configure(config.LogSettings(level="warning", format="json"), "server")
    profile = cProfile.Profile() if args.profile else None
    pg = dbservers.start_postgres() if args.db == "postgresql" else None
    with tempfile.TemporaryDirectory() as tmp:
        if pg is not None:
            url = dbservers.fresh_database(pg.url, "mpg_bench_queue")
        else:
            url = args.db or f"sqlite:///{tmp}/server.db"
        bench = Bench(url, pathlib.Path(tmp), profile)
        helpers = beside_requests(bench.engine)
        try:
            wall = time.perf_counter()
            bench.run(args.messages, args.batch, args.fold)
            wall = time.perf_counter() - wall
        finally:
            for helper in helpers:
                helper.stop()
            bench.engine.dispose()
            if pg is not None:
                pg.stop()
    if profile is not None:
        profile.dump_stats(args.profile)
    total = sum(bench.spent.values())
    per = {op: 1000 * s / args.messages for op, s in bench.spent.items()}
    shown: dict[str, Any] = {op: f"{ms:.3f}" for op, ms in per.items()}
    print(
        f"{args.messages} messages, batch {args.batch}, {'folded' if args.fold else 'separate'}"
        f" acks, {bench.engine.dialect.name}: server CPU {1000 * total / args.messages:.3f} ms"
        f" per message ({shown}); wall {wall:.2f} s; load {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
