"""An ERP inserting into a SQLite Outbox while the gateway runs is never refused."""

from __future__ import annotations

import subprocess
import sys

from harness import Gateway, World, wait_for

#: The ERP: 1,000 single-row INSERTs, each its own transaction, with a 1 s busy timeout
#: (what docs/schema.md tells an ERP writing to SQLite to set). Prints the failures.
ERP_LOOP = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=1.0, isolation_level=None)
failed = 0
for i in range(1000):
    try:
        conn.execute(
            'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","Sender","ReceiverType","ReceiverList",'
            '"Subject","Content","ContentType","AlertFlag","State","Priority")'
            " VALUES (?, 'example.com', 'erp', 'U', 'erp-b', 'loop', '<content/>', 'MSG', 0, 10, 'N')",
            (f"loop-{i:04d}",),
        )
    except sqlite3.OperationalError as exc:
        failed += 1
        print(i, exc, file=sys.stderr)
print(failed)
"""


def sent(gw: Gateway, tx: str) -> bool:
    """Whether the row was handed to the server (State 20, or 29 once served)."""
    row = gw.outbox_row(tx)
    return row is not None and row["State"] in (20, 29)


def test_a_thousand_erp_inserts_with_a_busy_timeout_all_succeed(world: World) -> None:
    """The gateway picks the rows up as they come, and none of the ERP's INSERTs fails."""
    world.start_server()
    a = world.gateway("erp-a")
    world.gateway("erp-b")
    a.run()
    a.sql(
        'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","Sender","ReceiverType","ReceiverList","Subject",'
        '"Content","ContentType","AlertFlag","State","Priority")'
        " VALUES ('first', 'example.com', 'erp', 'U', 'erp-b', 'first', '<content/>', 'MSG', 0, 10, 'N')"
    )
    wait_for("the gateway to send a first row", lambda: sent(a, "first"))
    done = subprocess.run(
        [sys.executable, "-c", ERP_LOOP, str(a.db)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert done.stdout.strip() == "0", done.stderr[-2000:]
    wait_for("the gateway to send the last row", lambda: sent(a, "loop-0999"))
