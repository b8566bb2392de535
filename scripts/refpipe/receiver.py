"""The reference receiver: long-poll a batch, open it, write the Inbox rows, acknowledge."""

from __future__ import annotations

from refpipe.client import args, client
from refpipe.wire import connect, ids_xml, open_sealed, parse_batch


def main() -> None:
    """Receive until killed; a batch redelivered after a crash is ignored by RxMessageId."""
    a = args()
    key = (a.root / "key").read_bytes()
    db = connect(str(a.root / f"{a.name}.db"))
    http = client(a.root, a.port)
    while True:
        reply = http.get(f"/fetch?who={a.name}")
        reply.raise_for_status()
        items = parse_batch(reply.content)
        if not items:
            continue
        rows = []
        for tx, sender, sealed in items:
            subject, content = open_sealed(key, tx, sealed)
            rows.append((tx, sender, subject, content))
        with db:
            db.executemany(
                'INSERT OR IGNORE INTO "Inbox" ("RxMessageId", "Sender", "Subject", "Content", '
                '"State", "Received") VALUES (?, ?, ?, ?, 0, datetime(\'now\'))',
                rows,
            )
        http.post(
            f"/ack?who={a.name}", content=ids_xml([tx for tx, _, _ in items])
        ).raise_for_status()


if __name__ == "__main__":
    main()
