"""Forged names and reused TxMessageIds, end to end: server and gateways as processes.

The server refuses per message; the sending gateway moves only that row to 99 with
the server's reason, and every other row of the batch goes on.
"""

from __future__ import annotations

import signal

from harness import Gateway, World, wait_for

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","AgentSender","Sender",'
    '"ReceiverType","ReceiverList","Subject","Content","ContentType","State","Priority") '
    "VALUES (?,'BPM','example.com',?,?,'U','bob',?,'<c/>','MSG',?,'N')"
)


def erp_inserts(
    gw: Gateway, tx: str, subject: str, *, agent: str = "", sender: str = "alvin"
) -> None:
    """An ERP row for bob (AgentSender empty: the gateway fills in its own account)."""
    gw.sql(INSERT, (tx, agent or None, sender, subject, 10))


def release(gw: Gateway, *txs: str) -> None:
    """The ERP hands composed rows (State 0) to the gateway all at once: one batch."""
    gw.sql(
        f'UPDATE "Outbox" SET "State" = 10 WHERE "TxMessageId" IN ({",".join("?" * len(txs))})',
        txs,
    )


def test_forged_names_are_refused_per_row_and_recipients_see_the_account(
    world: World,
) -> None:
    """A forged AgentSender and a Sender of another domain go to 99 with the server's
    reason; the honest row of the same batch arrives showing the authenticated account."""
    world.start_server()
    erp, bob = world.gateway("erp"), world.gateway("bob", kind="user")
    world.gateway("other")  # the gateway the forged row pretends to be
    for tx, agent, sender in (
        ("tx-forged", "other@example.com", "alvin"),
        ("tx-ceo", "", "ceo@other.example"),
        ("tx-honest", "erp", "alvin"),
    ):
        erp.sql(INSERT, (tx, agent or None, sender, tx, 0))
    release(erp, "tx-forged", "tx-ceo", "tx-honest")
    erp.run()
    bob.run()

    forged = erp.wait_state("tx-forged", 99)
    assert forged["StatusLog"] == (
        "refused by server: AgentSender 'other@example.com' is not the authenticated "
        "account 'erp@example.com'"
    )
    ceo = erp.wait_state("tx-ceo", 99)
    assert ceo["StatusLog"] == (
        "refused by server: Sender 'ceo@other.example' is not allowed for account "
        "'erp@example.com': it may name itself or a user of @example.com"
    )
    erp.wait_state("tx-honest", 29)
    [row] = wait_for("bob's message", bob.inbox)
    assert row["Subject"] == "tx-honest"
    assert (row["AgentSender"], row["Sender"]) == ("erp@example.com", "alvin@example.com")


def test_reused_tx_message_id_with_other_content_goes_to_99_saying_so(world: World) -> None:
    """The ERP deletes a sent row and inserts a new message under its id: refused, 99.
    The same message inserted again is the same message: its MessageId, no second copy,
    and 29 at once (its receipt came long ago)."""
    world.start_server()
    erp, bob = world.gateway("erp"), world.gateway("bob", kind="user")
    erp.run()
    bob.run()
    erp_inserts(erp, "tx-reused", "the first message")
    first = erp.wait_state("tx-reused", 29)

    erp.sql('DELETE FROM "Outbox" WHERE "TxMessageId" = ?', ("tx-reused",))
    erp_inserts(erp, "tx-reused", "another message")
    refused = erp.wait_state("tx-reused", 99)
    assert refused["StatusLog"] == (
        f"refused by server: TxMessageId 'tx-reused' was already used for message "
        f"{first['MessageId']} with different content; give the new message a new TxMessageId"
    )

    erp.sql('DELETE FROM "Outbox" WHERE "TxMessageId" = ?', ("tx-reused",))
    erp_inserts(erp, "tx-reused", "the first message")
    again = erp.wait_state("tx-reused", 29)
    assert again["MessageId"] == first["MessageId"]
    assert [r["Subject"] for r in bob.inbox()] == ["the first message"]


def test_retry_after_a_lost_answer_gets_the_first_answer(world: World) -> None:
    """The gateway dies after the server accepted and before it recorded the answer;
    restarted, it submits again (a new TransmitTime) and gets the same MessageId."""
    world.start_server()
    erp, bob = world.gateway("erp"), world.gateway("bob", kind="user")
    bob.run()
    crashing = erp.run(env={"MPG_FAILPOINTS": "outbound.submitted"})
    erp_inserts(erp, "tx-lost", "answer lost")
    assert crashing.wait(timeout=60) == -signal.SIGKILL
    assert erp.outbox_row("tx-lost")["State"] == 12  # type: ignore[index]

    erp.run()
    done = erp.wait_state("tx-lost", 29)
    [row] = bob.inbox()
    assert row["MessageId"] == done["MessageId"]
