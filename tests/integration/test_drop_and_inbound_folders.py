"""The drop folder and the folder writers in-process, on a real SQLite database."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg import config
from mpg.gateway import dropfolder, folders
from mpg.storage import database, exports, history, inbox, outbox, states
from mpg.wire import content, dropfile, model

GATEWAY = "erp-a@example.com"


@pytest.fixture
def engine(tmp_path: pathlib.Path) -> Iterator[sa.Engine]:
    eng = database.create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    database.init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def repo(engine: sa.Engine) -> outbox.OutboxRepository:
    return outbox.OutboxRepository(engine, GATEWAY, "utc")


def make_folder(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, **settings: object
) -> dropfolder.DropFolder:
    values: dict[str, object] = {"drop_settle": 0, **settings}
    gw = config.GatewaySettings(account=GATEWAY, drop_dir=tmp_path / "drop", **values)
    folder = dropfolder.DropFolder(gw, repo, stop=threading.Event())
    folder.prepare()
    return folder


def put(folder: dropfolder.DropFolder, name: str, document: bytes) -> pathlib.Path:
    path = folder.folder / name
    path.write_bytes(document)
    return path


def message(**fields: object) -> bytes:
    return dropfile.build_message({"ReceiverList": "erp-b", "Subject": "hello", **fields})


def outbox_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text('SELECT "TxMessageId" FROM "Outbox"')).scalars())


# -- drop folder -------------------------------------------------------------------------


def test_drop_file_becomes_a_ready_outbox_row_with_send_defaults(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """A minimal file gives a State 10 row (domain, sender, U, MSG, alert as `mpg send`),
    the file moves to processed/ and the history says where the row came from."""
    folder = make_folder(tmp_path, repo)
    put(folder, "one.xml", message())
    assert folder.scan() == dropfolder.ScanResult(inserted=1)
    [tx] = outbox_ids(engine)
    row = repo.get(tx)
    assert row is not None
    assert (row.state, row.source_domain, row.sender, row.receiver_type) == (
        10,
        "example.com",
        GATEWAY,
        "U",
    )
    assert (row.content_type, row.alert_flag, row.receiver_list) == ("MSG", True, "erp-b")
    assert (folder.processed / "one.xml").exists()
    assert not (folder.folder / "one.xml").exists()
    [step] = history.timeline(engine, tx)
    assert step.reason == "inserted from drop file one.xml"


def test_same_file_met_again_is_not_sent_twice(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """The file found again (a crash before its move, or dropped twice) is recognised by
    name and digest, moved to processed/ and inserts nothing."""
    folder = make_folder(tmp_path, repo)
    document = message()
    put(folder, "again.xml", document)
    folder.scan()
    put(folder, "again.xml", document)
    assert folder.scan() == dropfolder.ScanResult(already_done=1)
    assert len(outbox_ids(engine)) == 1
    # Same bytes under another name: another message.
    put(folder, "copy.xml", document)
    assert folder.scan() == dropfolder.ScanResult(inserted=1)
    assert len(outbox_ids(engine)) == 2


def test_given_tx_id_taken_by_the_erp_fails_the_file(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository
) -> None:
    """A TxMessageId already in Outbox sends the file to failed/ naming its line."""
    repo.insert({"TxMessageId": "tx-1", "ReceiverList": "x", "SourceDomain": "example.com"})
    folder = make_folder(tmp_path, repo)
    put(
        folder,
        "dup.xml",
        b"<message>\n<TxMessageId>tx-1</TxMessageId>\n<ReceiverList>b</ReceiverList>\n</message>",
    )
    assert folder.scan() == dropfolder.ScanResult(failed=1)
    reason = (folder.failed / "dup.xml.error.txt").read_text(encoding="utf-8")
    assert reason == "dup.xml: line 2: TxMessageId: 'tx-1' is already in Outbox\n"


def test_row_rules_apply_to_drop_files_with_lines(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """What would send a row to 99 rejects the file instead, naming line and reason."""
    folder = make_folder(tmp_path, repo)
    put(folder, "a.xml", b"<message>\n<ReceiverList> ; </ReceiverList>\n</message>")
    put(
        folder,
        "b.xml",
        b'<message><ReceiverList>b</ReceiverList>\n<attachments>\n<attachment path="/nope/x.pdf"/>\n</attachments></message>',
    )
    put(
        folder,
        "c.xml",
        b"<message>\n<ReceiverList>b</ReceiverList><Priority>Z</Priority></message>",
    )
    assert folder.scan() == dropfolder.ScanResult(failed=3)
    text = {p.name: p.read_text(encoding="utf-8") for p in folder.failed.glob("*.txt")}
    assert text["a.xml.error.txt"] == "a.xml: line 2: ReceiverList: names no recipient\n"
    assert (
        "line 2: AttachmentList: file 1 '/nope/x.pdf' is outside the attachment roots"
        in text["b.xml.error.txt"]
    )
    assert "line 2: Priority: must be E, H, N or L" in text["c.xml.error.txt"]
    assert outbox_ids(engine) == []


def test_drop_file_paths_obey_attachment_roots(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """A path= attachment is taken only inside attachment_roots; a link in a root that
    points out is refused like the file it leads to."""
    outgoing = tmp_path / "outgoing"
    outgoing.mkdir()
    (outgoing / "form.pdf").write_bytes(b"%PDF")
    (outgoing / "innocent.pdf").symlink_to("/etc/passwd")
    folder = make_folder(tmp_path, repo, attachment_roots=(outgoing,))
    for name, target in (("ok.xml", "form.pdf"), ("evil.xml", "innocent.pdf")):
        put(
            folder,
            name,
            b"<message><ReceiverList>b</ReceiverList>\n<attachments>\n"
            + f'<attachment path="{outgoing / target}"/>'.encode()
            + b"\n</attachments></message>",
        )
    assert folder.scan() == dropfolder.ScanResult(inserted=1, failed=1)
    error = (folder.failed / "evil.xml.error.txt").read_text(encoding="utf-8")
    assert "innocent.pdf' is outside the attachment roots (it leads to /etc/passwd)" in error
    assert len(outbox_ids(engine)) == 1


def test_embedded_attachment_is_written_and_sent_by_path(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """base64 bytes land in the gateway's attachment folder under their own name; the
    row's AttachmentList names that file with its DownloadFlag."""
    folder = make_folder(tmp_path, repo)
    att = dropfile.Attachment(name="附件.txt", data=b"bytes", download_flag=1)
    put(folder, "att.xml", dropfile.build_message({"ReceiverList": "b"}, [att]))
    folder.scan()
    [tx] = outbox_ids(engine)
    row = repo.get(tx)
    assert row is not None
    assert row.attachment_list is not None
    path, flag = row.attachment_list.split("|")
    assert flag == "1"
    assert pathlib.Path(path).name == "附件.txt"
    assert pathlib.Path(path).read_bytes() == b"bytes"
    assert pathlib.Path(path).is_relative_to(folder.attachments)


def test_unsettled_and_temporary_files_are_left_alone(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """*.tmp is never taken; an .xml modified within drop_settle waits for a later scan."""
    folder = make_folder(tmp_path, repo, drop_settle=3600)
    put(folder, "half.tmp", b"<message><Recei")
    fresh = put(folder, "slow.xml", message())
    assert folder.scan() == dropfolder.ScanResult(waiting=1)
    past = time.time() - 7200
    os.utime(fresh, (past, past))
    assert folder.scan() == dropfolder.ScanResult(inserted=1)
    assert (folder.folder / "half.tmp").exists()
    assert len(outbox_ids(engine)) == 1


def test_opted_in_channel_refuses_content_that_breaks_the_xsd(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository
) -> None:
    """With validate_content = ["BPM"] a BPM file with free-text Content fails."""
    folder = make_folder(tmp_path, repo, validate_content=("BPM",))
    put(folder, "free.xml", message(AppCode="BPM", Content="not xml"))
    put(folder, "ok.xml", message(AppCode="BPM", Content=content.build_recall("m")))
    assert folder.scan() == dropfolder.ScanResult(inserted=1, failed=1)
    assert "Content: does not match mpg-content.xsd" in (
        folder.failed / "free.xml.error.txt"
    ).read_text(encoding="utf-8")


def test_derived_tx_id_depends_on_name_and_bytes() -> None:
    """Same account, name and digest give the same id; any difference another."""
    a = dropfolder.derived_tx_id(GATEWAY, "a.xml", "00")
    assert a == dropfolder.derived_tx_id(GATEWAY, "a.xml", "00")
    assert a != dropfolder.derived_tx_id(GATEWAY, "b.xml", "00")
    assert a != dropfolder.derived_tx_id(GATEWAY, "a.xml", "01")


# -- folder writers ----------------------------------------------------------------------


def delivery(rx: str, *, attachments: tuple[model.AttachmentInfo, ...] = ()) -> model.Delivery:
    return model.Delivery(
        rx_message_id=rx,
        message_id="m-" + rx,
        app_code="BPM",
        source_domain="example.com",
        agent_sender="erp-a@example.com",
        sender="alvin@example.com",
        owner=GATEWAY,
        receiver_type="U",
        receiver_list=GATEWAY,
        bcc_list="",
        subject="subject " + rx,
        content=content.build_reply({"sheetno": "1"}, [content.Result("result", "R", "approve")]),
        content_type="REPLY",
        alert_flag=True,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 06:00:00",
        attachments=attachments,
    )


def test_inbound_folder_writes_each_stored_message_once_with_its_attachments(
    tmp_path: pathlib.Path, engine: sa.Engine
) -> None:
    """Stored messages get one file each, in arrival order, attachments beside them;
    exporting again after a crash before the position moved rewrites the same files."""
    repo = inbox.InboxRepository(engine, GATEWAY, "utc")
    writer = folders.InboundFolder(engine, tmp_path / "in", repo)
    writer.prepare()
    info = model.AttachmentInfo(1, "a.pdf", "pdf", 3, 1, "")
    lazy = model.AttachmentInfo(2, "big.iso", "iso", 9, 0, "")
    repo.store(
        [delivery("rx-1", attachments=(info, lazy))],
        {("rx-1", 1): b"abc"},
        {("rx-1", 2): "https://s/2"},
    )
    repo.store([delivery("rx-2")], {}, {})
    assert writer.export() == 2
    files = sorted((tmp_path / "in").glob("*.xml"))
    assert [f.name.split("-", 2)[2] for f in files] == ["rx-1.xml", "rx-2.xml"]
    first = dropfile.parse_message(files[0].read_bytes())
    assert first.fields["RxMessageId"] == "rx-1"
    assert first.fields["State"] == "0"
    assert content.parse_content(first.fields["Content"]).result_values == {"result": "approve"}
    got, pending = first.attachments
    assert (tmp_path / "in" / got.file).read_bytes() == b"abc"
    assert (pending.file, pending.source_uri, pending.download_flag) == ("", "https://s/2", 0)

    # A crash after writing and before the position moved: the same files again.
    with engine.begin() as conn:
        conn.execute(sa.text('UPDATE "MpgExport" SET "LastId" = 0'))
    assert writer.export() == 2
    assert sorted((tmp_path / "in").glob("*.xml")) == files
    assert writer.export() == 0


def test_inbound_folder_starts_with_what_arrives_after_it_is_configured(
    tmp_path: pathlib.Path, engine: sa.Engine
) -> None:
    """Messages stored before the folder was first configured are not written."""
    repo = inbox.InboxRepository(engine, GATEWAY, "utc")
    repo.store([delivery("old")], {}, {})
    writer = folders.InboundFolder(engine, tmp_path / "in", repo)
    writer.prepare()
    repo.store([delivery("new")], {}, {})
    writer.export()
    assert [f.name.endswith("-new.xml") for f in (tmp_path / "in").glob("*.xml")] == [True]
    assert exports.position(engine, writer.name) == history.latest_id(engine)


def test_receipt_folder_writes_the_configured_state_changes(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """A row that fails (99) gets a receipt file with its reason; other steps none."""
    writer = folders.ReceiptFolder(engine, tmp_path / "receipts", repo, (29, 99))
    writer.prepare()
    tx = repo.insert({"ReceiverList": "b", "SourceDomain": "example.com"})
    repo.fail(tx, states.OutboxState.READY, "invalid ReceiverList: names no recipient")
    assert writer.export() == 1
    [file] = (tmp_path / "receipts").glob("*.xml")
    receipt = dropfile.parse_receipt(file.read_bytes())
    assert (receipt.tx_message_id, receipt.from_state, receipt.state) == (tx, 10, 99)
    assert receipt.status_log == "invalid ReceiverList: names no recipient"


def test_refused_file_leaves_no_attachment_and_spares_another_files(
    tmp_path: pathlib.Path, repo: outbox.OutboxRepository, engine: sa.Engine
) -> None:
    """A file reusing another drop file's TxMessageId is refused naming that file; its
    embedded bytes are removed and the first file's attachment stays as it was."""
    folder = make_folder(tmp_path, repo)
    first = dropfile.Attachment(name="a.txt", data=b"first")
    put(
        folder,
        "1.xml",
        dropfile.build_message({"TxMessageId": "tx-9", "ReceiverList": "b"}, [first]),
    )
    folder.scan()
    row = repo.get("tx-9")
    assert row is not None
    assert row.attachment_list is not None
    kept = pathlib.Path(row.attachment_list)
    second = dropfile.Attachment(name="a.txt", data=b"second")
    put(
        folder,
        "2.xml",
        dropfile.build_message({"TxMessageId": "tx-9", "ReceiverList": "c"}, [second]),
    )
    assert folder.scan() == dropfolder.ScanResult(failed=1)
    assert "'tx-9' was already used by drop file 1.xml" in (
        folder.failed / "2.xml.error.txt"
    ).read_text(encoding="utf-8")
    assert kept.read_bytes() == b"first"
    assert [p.name for p in folder.attachments.iterdir()] == [kept.parents[1].name]


def test_a_row_xml_cannot_carry_is_logged_and_the_next_file_still_written(
    tmp_path: pathlib.Path, engine: sa.Engine
) -> None:
    """An Inbox row the ERP filled with a control character gets no file, and does not
    stop the files of the messages after it."""
    repo = inbox.InboxRepository(engine, GATEWAY, "utc")
    writer = folders.InboundFolder(engine, tmp_path / "in", repo)
    writer.prepare()
    repo.store([delivery("rx-bad")], {}, {})
    with engine.begin() as conn:
        conn.execute(sa.text('UPDATE "Inbox" SET "Subject" = :s'), {"s": "bell \x07"})
    repo.store([delivery("rx-good")], {}, {})
    assert writer.export() == 1
    [file] = (tmp_path / "in").glob("*.xml")
    assert file.name.endswith("-rx-good.xml")
