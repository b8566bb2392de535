"""The reference sender: Outbox rows in State 10 → sealed batches → State 20; receipts → 29.

Two threads: one sends batches of up to 100, one long-polls for receipts.
"""

from __future__ import annotations

import argparse
import threading
import time

from refpipe.client import POLL, args, client
from refpipe.wire import BATCH, batch_xml, connect, parse_ids, seal


def send_forever(a: argparse.Namespace) -> None:
    """Read a batch in State 10, seal it, POST it, mark the accepted rows 20."""
    root, port, name = a.root, a.port, a.name
    key = (root / "key").read_bytes()
    db = connect(str(root / f"{name}.db"))
    http = client(root, port)
    while True:
        rows = db.execute(
            'SELECT "TxMessageId", "ReceiverList", "Subject", "Content" FROM "Outbox" '
            'WHERE "State"=10 ORDER BY "MessageId" LIMIT ?',
            (BATCH,),
        ).fetchall()
        if not rows:
            time.sleep(POLL)
            continue
        body = batch_xml(
            [(tx, peer, seal(key, tx, subj, content)) for tx, peer, subj, content in rows]
        )
        reply = http.post(f"/submit?who={name}", content=body)
        reply.raise_for_status()
        with db:
            db.executemany(
                'UPDATE "Outbox" SET "State"=20, "Updated"=datetime(\'now\') '
                'WHERE "TxMessageId"=? AND "State"=10',
                [(tx,) for tx in parse_ids(reply.content)],
            )


def receipts_forever(a: argparse.Namespace) -> None:
    """Long-poll for receipts, mark those rows 29, acknowledge them."""
    root, port, name = a.root, a.port, a.name
    db = connect(str(root / f"{name}.db"))
    http = client(root, port)
    while True:
        reply = http.get(f"/receipts?who={name}")
        reply.raise_for_status()
        txs = parse_ids(reply.content)
        if not txs:
            continue
        with db:
            db.executemany(
                'UPDATE "Outbox" SET "State"=29, "Updated"=datetime(\'now\') WHERE "TxMessageId"=?',
                [(tx,) for tx in txs],
            )
        http.post(f"/receipts/ack?who={name}", content=reply.content).raise_for_status()


def main() -> None:
    """Run both loops until killed."""
    a = args()
    threading.Thread(target=receipts_forever, args=(a,), daemon=True).start()
    send_forever(a)


if __name__ == "__main__":
    main()
