"""End to end through the XML document interface: an ERP that cannot use a database
drops files, the other side reads files. Server and gateways are real processes."""

from __future__ import annotations

import base64
import pathlib
import signal
import threading

from harness import Gateway, World, wait_for

from mpg.wire import content, dropfile

APPROVAL = content.build_approval(
    {"sheetno": "AF1", "sheettype": "absentform"},
    [content.Page("page1", "摘要", "王小明 請假一天")],
    [content.Input("result", type="submit", options=(content.Option("b1", "同意", "approve"),))],
)


def folders(gw: Gateway, *, drop: bool = False, inbound: bool = False) -> dict[str, str]:
    """The environment that turns a gateway's folders on (fast scans for tests)."""
    env = {"MPG_GATEWAY__DROP_SETTLE": "0", "MPG_GATEWAY__DROP_SCAN_INTERVAL": "0.5"}
    if drop:
        env["MPG_GATEWAY__DROP_DIR"] = str(drop_dir(gw))
        env["MPG_GATEWAY__RECEIPT_DIR"] = str(gw.world.root / f"{gw.name}-receipts")
    if inbound:
        env["MPG_GATEWAY__INBOUND_DIR"] = str(inbound_dir(gw))
    return env


def drop_dir(gw: Gateway) -> pathlib.Path:
    return gw.world.root / f"{gw.name}-drop"


def inbound_dir(gw: Gateway) -> pathlib.Path:
    return gw.world.root / f"{gw.name}-inbound"


def drop(folder: pathlib.Path, name: str, document: bytes) -> None:
    """The documented convention: write NAME.tmp, then rename it to NAME.xml."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (name + ".tmp")
    tmp.write_bytes(document)
    tmp.rename(folder / (name + ".xml"))


def message(subject: str, to: str = "erp-b", **extra: object) -> bytes:
    fields: dict[str, object] = {
        "AppCode": "BPM",
        "ReceiverList": to,
        "Subject": subject,
        "ContentType": "MSG",
        "Content": APPROVAL,
        **extra,
    }
    return dropfile.build_message(fields)


def inbox_count(gw: Gateway) -> int:
    return int(gw.sql('SELECT COUNT(*) AS n FROM "Inbox"')[0]["n"])


def inbound_files(gw: Gateway) -> list[pathlib.Path]:
    folder = inbound_dir(gw)
    return sorted(folder.glob("*.xml")) if folder.exists() else []


def test_dropped_file_reaches_the_other_gateways_inbound_folder_and_inbox(world: World) -> None:
    """A file with an embedded and a by-path attachment arrives as an Inbox row and as
    an inbound file with its attachments beside it; the sender gets a receipt file."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    a.run(env=folders(a, drop=True))
    b.run(env=folders(b, inbound=True))
    by_path = world.root / "form.pdf"
    by_path.write_bytes(b"%PDF by path")
    document = f"""<?xml version="1.0" encoding="utf-8"?>
<message version="1">
  <AppCode>BPM</AppCode>
  <ReceiverList>erp-b</ReceiverList>
  <Subject>請假單 AF1</Subject>
  <ContentType>MSG</ContentType>
  <Content>{APPROVAL.split("?>", 1)[1].strip()}</Content>
  <attachments>
    <attachment name="note.txt" encoding="base64" downloadflag="1">{base64.b64encode("附件".encode()).decode()}</attachment>
    <attachment path="{by_path}" downloadflag="1"/>
  </attachments>
</message>
""".encode()
    drop(drop_dir(a), "approval-1", document)

    [file] = wait_for("B's inbound file", lambda: inbound_files(b))
    got = dropfile.parse_message(file.read_bytes())
    assert got.fields["Subject"] == "請假單 AF1"
    assert content.parse_content(got.fields["Content"]).params["sheetno"] == "AF1"
    assert [att.name for att in got.attachments] == ["note.txt", "form.pdf"]
    assert (inbound_dir(b) / got.attachments[0].file).read_bytes() == "附件".encode()
    assert (inbound_dir(b) / got.attachments[1].file).read_bytes() == b"%PDF by path"
    [row] = b.inbox()
    assert row["RxMessageId"] == got.fields["RxMessageId"]
    assert file.name.endswith(f"-{row['RxMessageId']}.xml")

    assert (drop_dir(a) / "processed" / "approval-1.xml").exists()
    [outbox] = a.sql('SELECT * FROM "Outbox"')
    a.wait_state(outbox["TxMessageId"], 29)
    receipts = wait_for(
        "A's receipt file", lambda: sorted((world.root / "erp-a-receipts").glob("*.xml"))
    )
    receipt = dropfile.parse_receipt(receipts[-1].read_bytes())
    assert (receipt.tx_message_id, receipt.state) == (outbox["TxMessageId"], 29)
    assert receipt.message_id == row["MessageId"]


def test_malformed_file_lands_in_failed_with_its_reason_and_the_next_is_delivered(
    world: World,
) -> None:
    """A bad file is moved to failed/ with NAME.xml.error.txt naming line and reason;
    the file dropped after it still reaches B."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    a.run(env=folders(a, drop=True))
    b.run()
    bad = b'<?xml version="1.0"?>\n<message>\n  <ReceiverList>erp-b</ReceiverList>\n  <Subjekt>typo</Subjekt>\n</message>\n'
    drop(drop_dir(a), "01-bad", bad)
    drop(drop_dir(a), "02-good", message("after the bad one"))

    [row] = wait_for("the good message in B's Inbox", b.inbox)
    assert row["Subject"] == "after the bad one"
    failed = drop_dir(a) / "failed"
    error = wait_for("the error file", lambda: (failed / "01-bad.xml.error.txt").exists())
    assert error
    text = (failed / "01-bad.xml.error.txt").read_text(encoding="utf-8")
    assert text.startswith("01-bad.xml: line 4: Subjekt:")
    assert "not expected" in text
    assert (failed / "01-bad.xml").read_bytes() == bad
    assert len(a.sql('SELECT * FROM "Outbox"')) == 1


def test_many_files_dropped_at_once_are_all_delivered_exactly_once(world: World) -> None:
    """N files dropped at once: N Outbox rows, N Inbox rows, N inbound files, each once."""
    count = 1000
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    for i in range(count):
        drop(drop_dir(a), f"bulk-{i:04d}", message(f"bulk {i}"))
    a.run(env=folders(a, drop=True))
    b.run(env=folders(b, inbound=True))

    wait_for(f"{count} inbound files", lambda: len(inbound_files(b)) >= count, timeout=120)
    subjects = sorted(
        dropfile.parse_message(f.read_bytes()).fields["Subject"] for f in inbound_files(b)
    )
    assert subjects == sorted(f"bulk {i}" for i in range(count))
    rows = b.sql('SELECT "Subject" FROM "Inbox"')
    assert sorted(r["Subject"] for r in rows) == subjects
    assert len(list((drop_dir(a) / "processed").glob("*.xml"))) == count
    assert not list(drop_dir(a).glob("*.xml"))


def test_gateway_killed_while_files_arrive_loses_and_duplicates_none(world: World) -> None:
    """SIGKILL right after a drop file's row was committed (before its move), and again
    while files keep arriving; after restart every file is delivered exactly once."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    b.run(env=folders(b, inbound=True))
    for i in range(20):
        drop(drop_dir(a), f"early-{i:03d}", message(f"early {i}"))
    crashing = a.run(env={**folders(a, drop=True), "MPG_FAILPOINTS": "dropfolder.after_insert"})
    assert crashing.wait(timeout=60) == -signal.SIGKILL
    # The file whose row was committed is still in the drop folder.
    assert len(a.sql('SELECT * FROM "Outbox"')) == 1
    assert len(list(drop_dir(a).glob("*.xml"))) == 20

    late = 200
    writer = threading.Thread(
        target=lambda: [
            drop(drop_dir(a), f"late-{i:03d}", message(f"late {i}")) for i in range(late)
        ]
    )
    proc = a.run(env=folders(a, drop=True))
    writer.start()
    wait_for(
        "some late files to be taken",
        lambda: len(list((drop_dir(a) / "processed").glob("late-*.xml"))) >= 10,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    writer.join(timeout=60)
    a.run(env=folders(a, drop=True))

    expected = sorted([f"early {i}" for i in range(20)] + [f"late {i}" for i in range(late)])
    wait_for("every message in B's Inbox", lambda: inbox_count(b) >= len(expected), timeout=120)
    assert sorted(r["Subject"] for r in b.sql('SELECT "Subject" FROM "Inbox"')) == expected
    outbox = a.sql('SELECT "TxMessageId" FROM "Outbox"')
    assert len(outbox) == len(expected)
    wait_for("every inbound file", lambda: len(inbound_files(b)) >= len(expected))
    assert len(inbound_files(b)) == len(expected)
    assert not list(drop_dir(a).glob("*.xml"))


def test_receiving_gateway_killed_between_store_and_file_writes_the_file_once(
    world: World,
) -> None:
    """B dies after storing and before writing the inbound file (and acknowledging);
    after restart the file is there exactly once, and the redelivery adds none."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    a.run()
    a.mpg("send", "--to", "erp-b", "--subject", "crash once", "--tx-id", "tx-crash")
    # Queued for B before B starts: the failpoint is reached after every fetch, so an
    # empty first long poll (a slow machine) would kill B before the message came.
    a.wait_state("tx-crash", 20)
    crashing = b.run(env={**folders(b, inbound=True), "MPG_FAILPOINTS": "inbound.after_store"})
    assert crashing.wait(timeout=60) == -signal.SIGKILL
    assert inbox_count(b) == 1
    assert inbound_files(b) == []

    b.run(env=folders(b, inbound=True))
    a.wait_state("tx-crash", 29)  # B acknowledged the redelivery
    [file] = wait_for("B's inbound file", lambda: inbound_files(b))
    assert dropfile.parse_message(file.read_bytes()).fields["Subject"] == "crash once"
    assert inbox_count(b) == 1
    assert len(inbound_files(b)) == 1


def test_channel_opted_into_content_validation_fails_free_text_others_send_it(
    world: World,
) -> None:
    """validate_content = ["BPM"]: a BPM row whose Content breaks mpg-content.xsd goes
    to 99 naming the reason; the same Content on another channel is sent."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    a.run(env={"MPG_GATEWAY__VALIDATE_CONTENT": '["BPM"]'})
    b.run()
    for tx, channel in (("tx-bpm", "BPM"), ("tx-news", "BULLTIN")):
        a.mpg(
            "send", "--to", "erp-b", "--app-code", channel, "--content", "free text", "--tx-id", tx
        )
    failed = a.wait_state("tx-bpm", 99)
    assert failed["StatusLog"].startswith("invalid Content: does not match mpg-content.xsd:")
    a.wait_state("tx-news", 29)
