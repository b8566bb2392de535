"""The reference server: one SQLite queue, submit / fetch / ack / receipts over HTTPS.

Every endpoint handles a whole batch in one transaction. Fetches long-poll: they wait on
an in-process event that a submit (for fetch) or an ack (for receipts) sets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import pathlib

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from refpipe.wire import BATCH, batch_xml, connect, ids_xml, parse_batch, parse_ids

# queue.state: 0 queued for the recipient, 1 delivered (a receipt for the sender), 2 reported
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, tx TEXT NOT NULL, sender TEXT NOT NULL,
  recipient TEXT NOT NULL, body BLOB NOT NULL, state INTEGER NOT NULL, UNIQUE (sender, tx));
CREATE INDEX IF NOT EXISTS queue_recipient ON queue (recipient, state);
CREATE INDEX IF NOT EXISTS queue_sender ON queue (sender, state);
CREATE INDEX IF NOT EXISTS queue_tx ON queue (tx);
"""
LONG_POLL = 20.0
XML = "application/xml"


class Queue:
    """The server's handlers over the queue in root/server.db."""

    def __init__(self, root: pathlib.Path) -> None:
        self.db = connect(str(root / "server.db"))
        self.db.executescript(SCHEMA)
        self.token = (root / "token").read_bytes()
        self.events: dict[str, asyncio.Event] = {}

    def who(self, request: Request) -> str:
        """The caller's name, once its bearer token is checked."""
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, self.token):
            raise PermissionError
        return request.query_params["who"]

    def wake(self, name: str) -> None:
        """End the long poll of `name`, if one is waiting."""
        self.events.setdefault(name, asyncio.Event()).set()

    async def long_poll(self, name: str, query: str) -> list[tuple[str, ...]]:
        """The rows of query for `name`, waiting up to LONG_POLL seconds for some."""
        event = self.events.setdefault(name, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LONG_POLL
        while True:
            event.clear()
            rows = self.db.execute(query, (name, BATCH)).fetchall()
            if rows or loop.time() >= deadline:
                return rows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), deadline - loop.time())

    async def submit(self, request: Request) -> Response:
        """Queue a sender's batch (a resent message is stored once)."""
        sender = self.who(request)
        items = parse_batch(await request.body())
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO queue (tx, sender, recipient, body, state) "
                "VALUES (?, ?, ?, ?, 0)",
                [(tx, sender, peer, sealed) for tx, peer, sealed in items],
            )
        for peer in {peer for _, peer, _ in items}:
            self.wake(peer)
        return Response(ids_xml([tx for tx, _, _ in items]), media_type=XML)

    async def fetch(self, request: Request) -> Response:
        """The recipient's next batch, long-polled; it comes again until acknowledged."""
        rows = await self.long_poll(
            self.who(request),
            "SELECT tx, sender, body FROM queue WHERE recipient=? AND state=0 ORDER BY id LIMIT ?",
        )
        return Response(batch_xml(rows), media_type=XML)  # type: ignore[arg-type]

    async def ack(self, request: Request) -> Response:
        """Mark a recipient's messages delivered, which makes receipts for their senders."""
        recipient = self.who(request)
        txs = parse_ids(await request.body())
        with self.db:
            senders = {
                s
                for tx in txs
                for (s,) in self.db.execute(
                    # without the hint SQLite's planner walks every queued row of the
                    # recipient (queue_recipient) for each tx
                    "UPDATE queue INDEXED BY queue_tx SET state=1 "
                    "WHERE recipient=? AND tx=? AND state=0 "
                    "RETURNING sender",
                    (recipient, tx),
                )
            }
        for sender in senders:
            self.wake(sender)
        return Response(ids_xml(txs), media_type=XML)

    async def receipts(self, request: Request) -> Response:
        """The sender's next receipts, long-polled; they come again until acknowledged."""
        rows = await self.long_poll(
            self.who(request),
            "SELECT tx FROM queue WHERE sender=? AND state=1 ORDER BY id LIMIT ?",
        )
        return Response(ids_xml([tx for (tx,) in rows]), media_type=XML)

    async def receipts_ack(self, request: Request) -> Response:
        """Mark a sender's receipts reported."""
        sender = self.who(request)
        txs = parse_ids(await request.body())
        with self.db:
            self.db.executemany(
                "UPDATE queue SET state=2 WHERE sender=? AND tx=?", [(sender, tx) for tx in txs]
            )
        return Response(ids_xml(txs), media_type=XML)


async def refused(request: Request, exc: Exception) -> Response:
    """A wrong token gets a 403."""
    return Response("refused", status_code=403)


def build(root: pathlib.Path) -> Starlette:
    """The server's application over the queue in root/server.db."""
    q = Queue(root)
    return Starlette(
        routes=[
            Route("/submit", q.submit, methods=["POST"]),
            Route("/fetch", q.fetch),
            Route("/ack", q.ack, methods=["POST"]),
            Route("/receipts", q.receipts),
            Route("/receipts/ack", q.receipts_ack, methods=["POST"]),
        ],
        exception_handlers={PermissionError: refused},
    )


def main() -> None:
    """Serve HTTPS on 127.0.0.1 with root/server.pem."""
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=pathlib.Path)
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    pem = str(args.root / "server.pem")
    uvicorn.run(
        build(args.root),
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=pem,
        ssl_keyfile=pem,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
