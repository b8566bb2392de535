"""Start the reference pipeline (one server, k sender/receiver pairs) and time a burst."""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable

import trustme

from refpipe.wire import SCHEMA, connect

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(what: str, probe: Callable[[], bool], timeout: float) -> None:
    """Poll probe every 50 ms until it holds; give up after timeout seconds."""
    end = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > end:
            raise TimeoutError(f"refpipe: gave up waiting for {what}")
        time.sleep(0.05)


class RefPipeline:
    """One server process and `pairs` sender/receiver process pairs in `root`."""

    def __init__(self, root: pathlib.Path, pairs: int = 1) -> None:
        self.root, self.pairs, self.port = root, pairs, free_port()
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(root / "server.pem")
        )
        (root / "key").write_bytes(secrets.token_bytes(32))
        (root / "token").write_text(secrets.token_urlsafe(32))
        for i in range(pairs):
            for name in (f"s{i}", f"r{i}"):
                with contextlib.closing(self.db(name)) as db:
                    db.executescript(SCHEMA)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # "server", "s0", "r0", ...

    def db(self, name: str) -> sqlite3.Connection:
        """A connection to the database of process `name` (s0, r0, s1, ...)."""
        return connect(str(self.root / f"{name}.db"))

    def start(self) -> None:
        """Start the server, wait until it listens, then the senders and receivers."""
        root, port = str(self.root), str(self.port)
        self._spawn("server", "server", root, port)
        wait("the server to listen", self._listening, 30)
        for i in range(self.pairs):
            self._spawn(f"s{i}", "sender", root, port, f"s{i}")
            self._spawn(f"r{i}", "receiver", root, port, f"r{i}")

    def _spawn(self, name: str, module: str, *argv: str) -> None:
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"refpipe.{module}", *argv],
                env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _listening(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
        ):
            return True
        return False

    def stop(self) -> None:
        """SIGTERM every process, SIGKILL the ones still alive after 10 s."""
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def count(self, prefix: str, sql: str) -> int:
        """The sum of a COUNT query over the databases of every sender (s) or receiver (r)."""
        total = 0
        for i in range(self.pairs):
            with contextlib.closing(self.db(f"{prefix}{i}")) as db:
                total += int(db.execute(sql).fetchone()[0])
        return total

    def burst(self, txs: list[str], content: str, timeout: float = 600) -> float:
        """Insert txs into the Outboxes (split evenly) at once; seconds until the last is in
        an Inbox. Then wait until every Outbox row is at 29, as scripts/bench.py does."""
        start = time.time()
        for i in range(self.pairs):
            with contextlib.closing(self.db(f"s{i}")) as db, db:
                db.executemany(
                    'INSERT INTO "Outbox" ("TxMessageId", "ReceiverList", "Subject", "Content", '
                    '"State") VALUES (?, ?, ?, ?, 10)',
                    [(tx, f"r{i}", f"bench {tx}", content) for tx in txs[i :: self.pairs]],
                )
        n = len(txs)
        wait("the burst", lambda: self.count("r", 'SELECT COUNT(*) FROM "Inbox"') >= n, timeout)
        elapsed = time.time() - start
        wait(
            "State 29",
            lambda: self.count("s", 'SELECT COUNT(*) FROM "Outbox" WHERE "State"=29') >= n,
            timeout,
        )
        return elapsed
