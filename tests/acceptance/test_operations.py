"""Operator commands on a gateway database: status warnings, void, retry, history."""

from __future__ import annotations

import json
import sqlite3

import pytest
from harness import Gateway, World, wait_for

OLD = "2000-01-01 00:00:00"


@pytest.fixture
def offline(world: World) -> Gateway:
    """A gateway with its account on a server that is not running."""
    world.mpg(world.server_config, "server", "init")
    return world.gateway("erp")


def put_row(gw: Gateway, tx: str, state: int, status_time: str = OLD) -> None:
    gw.sql(
        'INSERT INTO "Outbox" ("TxMessageId","AppCode","Sender","ReceiverType","ReceiverList",'
        '"Subject","Content","ContentType","State","StatusTime","Priority") '
        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (tx, "BPM", gw.account, "U", "bob@example.com", "s", "c", "MSG", state, status_time, "N"),
    )


def test_status_warns_about_a_stuck_message(offline: Gateway) -> None:
    """A row sitting in 20 past stuck_after is listed as stuck, text and JSON."""
    put_row(offline, "stuck-1", 20)
    put_row(offline, "fresh-1", 10)
    report = json.loads(offline.mpg("status", "--json", check=False).stdout)
    assert [row["tx_message_id"] for row in report["stuck"]] == ["stuck-1"]
    text = offline.mpg("status", check=False).stdout
    assert "WARNING: 1 message(s) stuck" in text
    assert "stuck-1 state 20" in text


def test_status_has_no_warning_when_nothing_is_stuck(offline: Gateway) -> None:
    """Rows waiting in 10 or final are not stuck."""
    put_row(offline, "ready-1", 10)
    put_row(offline, "done-1", 29)
    assert "WARNING" not in offline.mpg("status", check=False).stdout


def history_steps(gw: Gateway, tx: str) -> list[tuple[int | None, int]]:
    rows = gw.sql(
        'SELECT "FromState","ToState" FROM "MpgTransition" WHERE "MessageKey" = ? ORDER BY "Id"',
        (tx,),
    )
    return [(r["FromState"], r["ToState"]) for r in rows]


def test_void_moves_an_unsent_row_to_98_without_a_server(offline: Gateway) -> None:
    """`mpg void` on a row in 10 sets 98 with the reason, recorded in the history."""
    put_row(offline, "v-1", 10)
    out = offline.mpg("void", "v-1", "--reason", "order cancelled").stdout
    assert "v-1: 10 -> 98" in out
    row = offline.outbox_row("v-1")
    assert row is not None
    assert row["State"] == 98
    assert "order cancelled" in row["StatusLog"]
    assert history_steps(offline, "v-1") == [(10, 98)]


def test_void_refuses_a_row_already_final(offline: Gateway) -> None:
    """A sent row cannot be voided: exit code 1 and the row is unchanged."""
    put_row(offline, "s-1", 29)
    done = offline.mpg("void", "s-1", check=False)
    assert done.returncode == 1
    assert "nothing to void" in done.stderr
    row = offline.outbox_row("s-1")
    assert row is not None
    assert row["State"] == 29


def test_retry_requeues_failed_and_timed_out_rows(offline: Gateway) -> None:
    """--all-failed takes every 99, an id takes one 97; other states are refused."""
    put_row(offline, "f-1", 99)
    put_row(offline, "f-2", 99)
    put_row(offline, "t-1", 97)
    put_row(offline, "t-2", 97)
    put_row(offline, "ok-1", 29)
    assert "requeued 3 row(s)" in offline.mpg("retry", "--all-failed", "t-1").stdout
    states = {r["TxMessageId"]: r["State"] for r in offline.sql('SELECT * FROM "Outbox"')}
    assert states == {"f-1": 10, "f-2": 10, "t-1": 10, "t-2": 97, "ok-1": 29}
    assert history_steps(offline, "f-1") == [(99, 10)]
    done = offline.mpg("retry", "ok-1", check=False)
    assert done.returncode == 1
    assert "ok-1 (in State 29)" in done.stderr


def send_waiting(world: World) -> tuple[Gateway, Gateway, str]:
    """A message from erp to bob, accepted and waiting (bob's gateway is not running)."""
    world.start_server()
    sender = world.gateway("erp")
    bob = world.gateway("bob", kind="user")
    sender.run()
    tx = sender.mpg("send", "--to", "bob@example.com", "--content", "x").stdout.strip()
    sender.wait_state(tx, 20)
    return sender, bob, tx


def test_void_recalls_a_message_the_server_accepted(world: World) -> None:
    """`mpg void` on a row in 20 recalls it: 98, and the recipient never gets it."""
    sender, bob, tx = send_waiting(world)
    out = sender.mpg("void", tx).stdout
    assert f"{tx}: 20 -> 98" in out
    assert "recalled: withdrawn from 1, notified 0" in out
    assert history_steps(sender, tx)[-1] == (20, 98)
    later = sender.mpg("send", "--to", "bob@example.com", "--content", "y").stdout.strip()
    sender.wait_state(later, 20)
    bob.run()
    # Once the later message has arrived, the voided one would have too.
    inbox = wait_for("bob to fetch", lambda: bob.inbox())
    voided_id = sender.outbox_row(tx)["MessageId"]  # type: ignore[index]
    assert [m["MessageId"] for m in inbox] != [voided_id]
    assert len(inbox) == 1


def test_erp_writing_98_recalls_an_accepted_message(world: World) -> None:
    """The ERP sets 98 on a row in 20 itself: the gateway recalls it and notes it."""
    sender, _bob, tx = send_waiting(world)
    sender.sql('UPDATE "Outbox" SET "State" = 98 WHERE "TxMessageId" = ?', (tx,))
    wait_for(
        "the gateway to recall the voided row",
        lambda: "recalled" in (((row := sender.outbox_row(tx)) and row["StatusLog"]) or ""),
    )
    assert history_steps(sender, tx)[-1] == (20, 98)


def tail_keys(gw: Gateway, *args: str) -> list[str]:
    out = gw.mpg("tail", "--once", "--json", *args).stdout
    return [json.loads(line)["message_key"] for line in out.splitlines()]


def test_tail_filters_by_app_code_and_time(offline: Gateway) -> None:
    """--app-code keeps that channel's steps; --since keeps steps at or after a time."""
    hr = offline.mpg("send", "--to", "bob", "--content", "x", "--app-code", "HR").stdout.strip()
    bpm = offline.mpg("send", "--to", "bob", "--content", "x", "--app-code", "BPM").stdout.strip()
    offline.mpg("void", hr)
    assert tail_keys(offline, "--app-code", "HR") == [hr, hr]
    assert tail_keys(offline, "--app-code", "BPM") == [bpm]
    assert tail_keys(offline, "--since", "1h") == [hr, bpm, hr]
    assert tail_keys(offline, "--since", "2999-01-01 00:00:00") == []
    done = offline.mpg("tail", "--once", "--since", "yesterday", check=False)
    assert done.returncode == 2


def server_kinds(gw: Gateway, tx: str) -> list[tuple[str, str]]:
    report = json.loads(gw.mpg("history", tx, "--json").stdout)
    assert report["server_note"] == ""
    return [(e["kind"], e["account"]) for e in report["timeline"] if e["source"] == "server"]


def test_history_shows_gateway_steps_and_each_recipients_fetch_and_ack(world: World) -> None:
    """`mpg history` merges the gateway's steps with receipt, fetch, ack and served."""
    sender, bob, tx = send_waiting(world)
    bob.run()
    sender.wait_state(tx, 29)
    report = json.loads(sender.mpg("history", tx, "--json").stdout)
    sources = [e["source"] for e in report["timeline"]]
    assert sources[0] == "gateway"
    kinds = [(e["kind"], e["account"]) for e in report["timeline"] if e["source"] == "server"]
    assert kinds[:4] == [
        ("received", sender.account),
        ("fetched", "bob@example.com"),
        ("acknowledged", "bob@example.com"),
        ("served", sender.account),
    ]
    assert ("receipt_fetched", sender.account) in kinds
    steps = [e["to_state"] for e in report["timeline"] if e["source"] == "gateway"]
    assert steps[-1] == 29
    text = sender.mpg("history", tx).stdout
    assert "server  acknowledged bob@example.com" in text
    assert "-> 29 SENT" in text


def test_history_shows_a_recall(world: World) -> None:
    """After `mpg void` of an accepted message, the server side shows the withdrawal."""
    sender, _bob, tx = send_waiting(world)
    sender.mpg("void", tx)
    kinds = server_kinds(sender, tx)
    assert ("withdrawn", "bob@example.com") in kinds
    assert ("recalled", sender.account) in kinds


def test_status_reports_an_unreachable_server_and_a_locked_database(offline: Gateway) -> None:
    """`mpg status` runs the readiness checks: server down (exit 5), database locked (exit 4)."""
    done = offline.mpg("status", "--json", check=False)
    assert done.returncode == 5
    report = json.loads(done.stdout)
    assert report["ready"]["database"] == "ok"
    assert "unreachable" in report["ready"]["server"]
    conn = sqlite3.connect(str(offline.db), timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        # Reading still works in WAL mode, so the counts are there; writing would not.
        done = offline.mpg("status", check=False)
    finally:
        conn.close()
    assert done.returncode == 4
    assert "database: database not writable" in done.stdout


def test_status_says_ready_when_the_server_answers(world: World) -> None:
    """With the server up and the database free both checks read ok."""
    world.start_server()
    gw = world.gateway("erp")
    # mpg() fails the test on a non-zero exit: ready means exit 0.
    assert json.loads(gw.mpg("status", "--json").stdout)["ready"] == {
        "database": "ok",
        "server": "ok",
    }
