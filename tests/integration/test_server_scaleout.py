"""Two ``mpg server`` processes on one PostgreSQL, gateways spread across them.

A and C talk to server 1, B to server 2; nothing connects the servers but the
database. A fans out to B and C, B answers A, C writes to A and B, and A recalls one
message at the end. Every message must arrive exactly once, every Outbox row must
reach State 29, and the recall must reach both recipients. The gateways long-poll
for 20 s, so B (on server 2) is woken by server 2's LISTEN hearing server 1's
commits; its log must show it heard them. The assertions are on what arrived, never
on how fast; a bigger run is under ``-m slow``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import pathlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Gateway, World, wait_for

from mpg.wire import content

#: Long enough that a wake-up comes from a notification or the server's safety poll.
LONG_POLL = 20

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","Sender","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","AttachmentList","AlertFlag","State",'
    '"Priority") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)'
)


def send(gw: Gateway, prefix: str, to: str, count: int) -> list[str]:
    """The ERP of ``gw`` inserts ``count`` ready rows to ``to``; their TxMessageIds."""
    txs = [f"{prefix}-{n:04d}" for n in range(count)]
    rows = [
        (tx, "BPM", "example.com", "alvin", "U", to, f"{prefix} {n}", "<c/>", "MSG", "", 1, 10, "N")
        for n, tx in enumerate(txs)
    ]
    with contextlib.closing(sqlite3.connect(gw.db, timeout=10)) as conn:
        conn.executemany(INSERT, rows)
        conn.commit()
    return txs


def states(gw: Gateway) -> dict[str, tuple[int, str]]:
    """``TxMessageId -> (State, MessageId)`` of every Outbox row of ``gw``."""
    rows = gw.sql('SELECT "TxMessageId", "State", "MessageId" FROM "Outbox"')
    return {r["TxMessageId"]: (r["State"], r["MessageId"] or "") for r in rows}


def inbox(gw: Gateway) -> collections.Counter[tuple[str, str]]:
    """How often each (MessageId, ContentType) is in the Inbox of ``gw``."""
    rows = gw.sql('SELECT "MessageId", "ContentType" FROM "Inbox"')
    return collections.Counter((r["MessageId"], r["ContentType"]) for r in rows)


def events(log: pathlib.Path) -> Iterator[dict[str, Any]]:
    """The JSON events of a log (read as a stream: two threads may share a line)."""
    text = log.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at != -1:
        event, end = decoder.raw_decode(text, at)
        yield event
        at = text.find("{", end)


def all_at_29(gateways: list[Gateway], expected: int) -> bool:
    found = [s for gw in gateways for s, _ in states(gw).values()]
    return len(found) == expected and set(found) == {29}


def run_scaleout(world: World, database_url: str, per_sender: int) -> None:
    server_1, server_2 = world.start_servers(database_url, 2, max_long_poll=LONG_POLL)
    a = world.gateway("erp-a", port=server_1, long_poll_wait=LONG_POLL)
    b = world.gateway("erp-b", port=server_2, long_poll_wait=LONG_POLL)
    c = world.gateway("erp-c", port=server_1, long_poll_wait=LONG_POLL)
    for gw in (a, b, c):
        gw.run()
    sent = {
        "a": send(a, "a", "erp-b;erp-c", per_sender),
        "b": send(b, "b", "erp-a", per_sender),
        "c": send(c, "c", "erp-a;erp-b", per_sender),
    }
    wait_for(
        "every Outbox row at State 29",
        lambda: all_at_29([a, b, c], 3 * per_sender),
        timeout=300,
    )
    gateways = {"a": a, "b": b, "c": c}
    ids = {name: [states(gw)[tx][1] for tx in sent[name]] for name, gw in gateways.items()}

    recalled = ids["a"][0]
    a.sql(
        'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","AgentSender",'
        '"ReceiverType","ReceiverList","Subject","Content","ContentType","AlertFlag","State")'
        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            "tx-recall",
            "SYS",
            "example.com",
            a.account,  # AgentSender: the gateway's own account
            "U",
            "psereceiver",
            f"[Recall]: {recalled}",
            content.build_recall(recalled),
            "RECALL",
            0,
            10,
        ),
    )
    assert "notified 2" in a.wait_state("tx-recall", 29)["StatusLog"]

    def recall_arrived(gw: Gateway) -> bool:
        return sum(n for (_, kind), n in inbox(gw).items() if kind == "RECALL") >= 1

    for gw in (b, c):
        wait_for(f"the RECALL in {gw.name}'s Inbox", lambda g=gw: recall_arrived(g))
    world.stop_all()

    def expected(*senders: str) -> collections.Counter[tuple[str, str]]:
        return collections.Counter((mid, "MSG") for s in senders for mid in ids[s])

    assert inbox(a) == expected("b", "c")
    [(recall_id, _)] = [key for key in inbox(b) if key[1] == "RECALL"]
    assert inbox(b) == expected("a", "c") + collections.Counter({(recall_id, "RECALL"): 1})
    assert inbox(c) == expected("a") + collections.Counter({(recall_id, "RECALL"): 1})
    assert all_at_29([a, b, c], 3 * per_sender + 1)

    heard = {
        e.get("account")
        for e in events(world.root / "server-2.log")
        if e.get("event") == "queue_notified"
    }
    # Everything B receives is queued by server 1 (A's and C's submits, their acks
    # completing B's messages): server 2 knew of it through the database alone.
    assert world.account_id(b.account) in heard  # NOTIFY names the pseudonym


def test_two_server_processes_deliver_each_message_exactly_once(
    world: World, postgresql_url: str
) -> None:
    """60 messages per gateway over two servers on one PostgreSQL: each arrives once."""
    run_scaleout(world, postgresql_url, 60)


@pytest.mark.slow
def test_two_server_processes_deliver_1500_messages_exactly_once(
    world: World, postgresql_url: str
) -> None:
    """500 messages per gateway over two servers on one PostgreSQL: each arrives once."""
    run_scaleout(world, postgresql_url, 500)
