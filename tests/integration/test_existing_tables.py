"""Tables the gateway finds: the original product's DDL works as it is, never altered,
and unsuitable tables are refused naming every problem (every database)."""

from __future__ import annotations

from collections.abc import Iterator

import original_ddl
import pytest
import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.storage import database, inbox, outbox, schema, states, tables
from mpg.wire import model

S = states.OutboxState
GATEWAY = "mpg-a@example.com"
LONG_PATH = "/srv/erp/attachments/2024/請假單/證明文件.pdf"


@pytest.fixture
def original(db_url: str) -> Iterator[sa.Engine]:
    """A database holding the original product's four tables (SourceUri nvarchar(10))."""
    engine = database.create_engine(db_url)
    original_ddl.metadata.create_all(engine)
    yield engine
    engine.dispose()


def columns(engine: sa.Engine, table: str) -> list[tuple[str, str]]:
    inspector = sa.inspect(engine)
    return [(c["name"], repr(c["type"])) for c in inspector.get_columns(table)]


def test_original_tables_are_used_as_they_are(original: sa.Engine) -> None:
    """init_db adds only MPG's own tables and leaves the four original ones unchanged."""
    before = {t: columns(original, t) for t in original_ddl.metadata.tables}
    assert database.init_db(original) == [t.name for t in tables.OWN_TABLES]
    after = {t: columns(original, t) for t in original_ddl.metadata.tables}
    assert after == before
    with transactions.connect(original, "check") as conn:
        report = schema.check(conn)
    assert report.missing_tables == ()
    assert report.uri_width(tables.outbox_attachment) == 10


def test_gateway_works_on_original_tables_with_a_narrow_source_uri(original: sa.Engine) -> None:
    """Rows flow; a path or URI longer than SourceUri is stored as NULL, a short one kept."""
    database.init_db(original)
    with transactions.connect(original, "check") as conn:
        report = schema.check(conn)
    repo = outbox.OutboxRepository(
        original,
        GATEWAY,
        "utc",
        instance="a",
        source_uri_width=report.uri_width(tables.outbox_attachment),
    )
    tx = repo.insert({"Subject": "請假單審核", "AttachmentList": LONG_PATH})
    assert [r.tx_message_id for r in repo.claim(5)] == [tx]
    assert repo.transition([(tx, "uploading")], S.READY, S.ATTACHMENTS_UPLOADING) == [tx]
    info = model.AttachmentInfo(1, "證明文件.pdf", "pdf", 3, 0, "")
    repo.add_attachments(
        None, tx, [info, model.AttachmentInfo(2, "a", "txt", 1, 0, "")], [LONG_PATH, "/a.txt"]
    )
    assert [(i.file_name, uri) for i, uri in repo.attachments(tx)] == [
        ("證明文件.pdf", ""),
        ("a", "/a.txt"),
    ]
    row = repo.get(tx)
    assert row is not None
    assert row.subject == "請假單審核"
    assert row.state == S.ATTACHMENTS_UPLOADING

    inbound = inbox.InboxRepository(
        original, GATEWAY, "utc", source_uri_width=report.uri_width(tables.inbox_attachment)
    )
    delivery = model.Delivery(
        rx_message_id="rx-1",
        message_id="m-1",
        app_code="BPM",
        source_domain="example.com",
        agent_sender="mpg-b@example.com",
        sender="alice@example.com",
        owner=GATEWAY,
        receiver_type="U",
        receiver_list=GATEWAY,
        bcc_list="",
        subject="附件",
        content="<c/>",
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords="",
        transmit_time="2024-05-10 15:07:00",
        attachments=(info,),
    )
    uri = "https://push.example.com/v1/attachments/m-1/1"
    assert inbound.store([delivery], {}, {("rx-1", 1): uri}) == ["rx-1"]
    with transactions.connect(original, "read") as conn:
        stored = conn.execute(
            sa.select(tables.inbox_attachment.c.FileName, tables.inbox_attachment.c.SourceUri)
        ).all()
    assert [tuple(r) for r in stored] == [("證明文件.pdf", None)]


def test_unsuitable_tables_are_refused_naming_every_problem(db_url: str) -> None:
    """A narrower Subject, a text State and a missing StatusLog are all named at once."""
    engine = database.create_engine(db_url)
    try:
        erp = sa.MetaData()
        kept = [
            c
            for c in original_ddl.outbox.columns
            if c.name not in ("Subject", "State", "StatusLog")
        ]
        sa.Table(
            "Outbox",
            erp,
            *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in kept),
            sa.Column("Subject", sa.Unicode(100)),
            sa.Column("State", sa.Unicode(5)),
        )
        erp.create_all(engine)
        with pytest.raises(errors.SchemaMismatch) as caught:
            database.init_db(engine)
        text = str(caught.value)
        assert "Outbox.StatusLog missing" in text
        assert "Outbox.Subject is VARCHAR(100)" in text or "Outbox.Subject is NVARCHAR(100)" in text
        assert "needs text of at least 200 characters" in text
        assert "Outbox.State is" in text
        assert "needs an integer" in text
        assert "Inbox" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
