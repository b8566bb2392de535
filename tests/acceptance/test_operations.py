"""Operator commands on a gateway database: status warnings, void, retry, history."""

from __future__ import annotations

import json

import pytest
from harness import Gateway, World

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
    report = json.loads(offline.mpg("status", "--json").stdout)
    assert [row["tx_message_id"] for row in report["stuck"]] == ["stuck-1"]
    text = offline.mpg("status").stdout
    assert "WARNING: 1 message(s) stuck" in text
    assert "stuck-1 state 20" in text


def test_status_has_no_warning_when_nothing_is_stuck(offline: Gateway) -> None:
    """Rows waiting in 10 or final are not stuck."""
    put_row(offline, "ready-1", 10)
    put_row(offline, "done-1", 29)
    assert "WARNING" not in offline.mpg("status").stdout
