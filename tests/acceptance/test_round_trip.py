"""End to end, as users run it: server and gateways are processes started by the CLI."""

from __future__ import annotations

import json
import os
import signal

from harness import World, wait_for

from mpg.wire import content

APPROVAL = """<?xml version="1.0" encoding="utf-8"?>
<content contenttype="msg">
  <params>
    <param name="sheetno" value="AF20261123001"/>
    <param name="sheettype" value="absentform"/>
  </params>
  <view>
    <page id="page1" name="摘要">王小明 申請 2026/11/24 病假一天</page>
    <page id="page2" name="表單資訊">&lt;table&gt;&lt;tr&gt;&lt;td&gt;假別&lt;/td&gt;&lt;td&gt;病假&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;</page>
    <page id="page3" name="簽核歷程">申請人 → 主管</page>
  </view>
  <replyinfo>
    <input id="comment" name="簽核意見" isnullable="true" type="textbox" defaultvalue="無意見"/>
    <input id="result" type="submit" defaultvalue="Approve">
      <option id="btn1" name="同意" value="approve"/>
      <option id="btn2" name="不同意" value="disapprove"/>
      <option id="btn3" name="退回" value="reject"/>
      <option id="btn4" name="放棄" value="drop"/>
    </input>
  </replyinfo>
</content>
"""

REPLY = """<?xml version="1.0" encoding="utf-8"?>
<content contenttype="reply">
  <params>
    <param name="sheetno" value="AF20261123001"/>
    <param name="sheettype" value="absentform"/>
  </params>
  <submitinfo>
    <result id="result" name="簽核結果" value="approve"/>
    <result id="comment" name="簽核意見" value="no problem"/>
  </submitinfo>
</content>
"""

SUBJECT = "請假單簽核：王小明 AF20261123001"
INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","Sender","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","AttachmentList","AlertFlag","State",'
    '"Priority") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)'
)


def erp_sends_approval(gw: object, tx: str, to: str, attachment: str) -> None:
    gw.sql(
        INSERT,
        (
            tx,
            "BPM",
            "example.com",
            "alvin",
            "U",
            to,
            SUBJECT,
            APPROVAL,
            "MSG",  # type: ignore[attr-defined]
            attachment,
            1,
            10,
            "H",
        ),
    )


def test_approval_reaches_b_and_the_reply_comes_back_to_a(world: World) -> None:
    """The whole loop of the document: Outbox A -> Inbox B, reply -> Inbox A, A at 29."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    a.run()
    b.run()
    blob = os.urandom(300_000) + "附件".encode()
    path = world.root / "假單附件.bin"
    path.write_bytes(blob)

    erp_sends_approval(a, "tx-approval-1", "erp-b", f"{path}|1")

    [msg] = wait_for("the approval in B's Inbox", b.inbox)
    shown = json.loads(b.mpg("inbox", "show", msg["RxMessageId"], "--json").stdout)
    assert shown["Subject"] == SUBJECT
    assert shown["Content"] == APPROVAL
    assert shown["AppCode"] == "BPM"
    assert shown["ContentType"] == "MSG"
    assert shown["Owner"] == b.account
    [att] = b.sql('SELECT * FROM "InboxAttachment" WHERE "MessageId" = ?', (msg["RxMessageId"],))
    assert att["FileName"] == "假單附件.bin"
    assert att["DownloadFlag"] == 1
    assert bytes(att["FileData"]) == blob

    sent = a.wait_state("tx-approval-1", 29)
    assert sent["MessageId"] == shown["MessageId"]
    assert sent["StatusTime"].strip()
    assert sent["TransmitTime"].strip()
    [oatt] = a.sql('SELECT * FROM "OutboxAttachment" WHERE "MessageId" = ?', ("tx-approval-1",))
    assert (oatt["SeqNo"], oatt["FileSize"], oatt["SourceUri"]) == (1, len(blob), str(path))

    reply_file = world.root / "reply.xml"
    reply_file.write_text(REPLY, encoding="utf-8")
    b.mpg(
        "send",
        "--to",
        "erp-a",
        "--source-domain",
        "example.com",
        "--app-code",
        "BPM",
        "--content-type",
        "REPLY",
        "--subject",
        "Re: " + SUBJECT,
        "--content-file",
        str(reply_file),
        "--tx-id",
        "tx-reply-1",
    )

    [reply] = wait_for("the reply in A's Inbox", a.inbox)
    stored = json.loads(a.mpg("inbox", "show", reply["RxMessageId"], "--json").stdout)
    parsed = content.parse_content(stored["Content"])
    assert stored["ContentType"] == "REPLY"
    assert parsed.params == {"sheetno": "AF20261123001", "sheettype": "absentform"}
    assert {r.id: r.value for r in parsed.results} == {"result": "approve", "comment": "no problem"}
    b.wait_state("tx-reply-1", 29)


def test_recall_withdraws_from_unfetched_and_notifies_fetched(world: World) -> None:
    """B already has the message and gets a RECALL; C never sees it."""
    world.start_server()
    a, b, c = world.gateway("erp-a"), world.gateway("erp-b"), world.gateway("erp-c")
    a.run()
    b.run()
    path = world.root / "doc.txt"
    path.write_text("attachment")
    erp_sends_approval(a, "tx-to-recall", "erp-b;erp-c", str(path))
    wait_for("the message in B's Inbox", b.inbox)
    message_id = wait_for(
        "A's MessageId", lambda: (a.outbox_row("tx-to-recall") or {"MessageId": None})["MessageId"]
    )

    recall = content.build_recall(message_id)
    a.sql(
        'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","AgentSender",'
        '"ReceiverType","ReceiverList","Subject","Content","ContentType","AlertFlag","State",'
        '"TransmitTime","StatusTime","StatusLog") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
        (
            "c7cd8812-8c0f-4c5e-a8e6-402aa6f44534",
            "SYS",
            "example.com",
            a.account,  # AgentSender: the gateway's own account (docs/security.md)
            "U",
            "psereceiver",
            f"[Recall]: {message_id}",
            recall,
            "RECALL",
            0,
            10,
            "2011/05/10 15:07:00",
            "2011/05/10 15:07:00",
            "recall message",
        ),
    )
    done = a.wait_state("c7cd8812-8c0f-4c5e-a8e6-402aa6f44534", 29)
    assert "withdrawn from 1" in done["StatusLog"]
    assert "notified 1" in done["StatusLog"]

    def b_has_recall() -> list[dict[str, object]]:
        return [m for m in b.inbox() if m["ContentType"] == "RECALL"]

    [notice] = wait_for("the RECALL in B's Inbox", b_has_recall)
    shown = json.loads(b.mpg("inbox", "show", notice["RxMessageId"], "--json").stdout)
    assert content.parse_recall(shown["Content"]) == message_id
    original = b.sql(
        'SELECT "State" FROM "Inbox" WHERE "MessageId" = ? AND "ContentType" = ?',
        (message_id, "MSG"),
    )
    assert [r["State"] for r in original] == [98]  # unread when recalled

    final = a.wait_state("tx-to-recall", 29)
    assert "recalled from 1" in final["StatusLog"]
    # C comes online later: a message sent after the recall is all it finds.
    c.run()
    erp_sends_approval(a, "tx-after-recall", "erp-c", str(path))
    [only] = wait_for("the later message in C's Inbox", c.inbox)
    assert only["MessageId"] == a.wait_state("tx-after-recall", 29)["MessageId"]


def test_receiving_gateway_killed_between_store_and_ack_keeps_the_message_once(
    world: World,
) -> None:
    """B dies after committing the Inbox row and before acknowledging; after restart the
    server redelivers and B recognises the RxMessageId: one row, and A still reaches 29."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    a.run()
    path = world.root / "a.bin"
    path.write_bytes(b"\x00\x01" * 1000)
    erp_sends_approval(a, "tx-crash", "erp-b", f"{path}|1")
    # Queued for B before B starts: the failpoint is reached after every fetch, so an
    # empty first long poll (a slow machine) would kill B before the message came.
    a.wait_state("tx-crash", 20)
    crashing = b.run(env={"MPG_FAILPOINTS": "inbound.after_store"})

    assert crashing.wait(timeout=60) == -signal.SIGKILL
    assert len(b.inbox()) == 1

    b.run()
    a.wait_state("tx-crash", 29)  # only after B acknowledged the redelivery
    rows = b.inbox()
    assert len(rows) == 1
    assert len(b.sql('SELECT * FROM "InboxAttachment"')) == 1


def test_sigterm_finishes_the_batch_in_hand_and_exits_cleanly(world: World) -> None:
    """`mpg run` stops on SIGTERM with exit 0 and leaves no row half-way (11/12/19)."""
    world.start_server()
    a, _ = world.gateway("erp-a"), world.gateway("erp-b")
    proc = a.run()
    wait_for(
        "the gateway to start",
        lambda: "outbound_started" in (world.root / "erp-a.log").read_text(errors="replace"),
    )
    for i in range(300):
        erp_sends_approval(a, f"tx-term-{i}", "erp-b", "")
    wait_for(
        "the first rows to be claimed",
        lambda: a.sql('SELECT COUNT(*) AS n FROM "Outbox" WHERE "State" <> 10')[0]["n"],
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    states = {r["State"] for r in a.sql('SELECT DISTINCT "State" FROM "Outbox"')}
    assert states <= {10, 20, 29}
    assert "gateway_stopped" in (world.root / "erp-a.log").read_text(errors="replace")
