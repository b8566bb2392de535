"""The storage layer on every database (SQLite, PostgreSQL, MariaDB; SQL Server when
configured): init_db, Outbox, Inbox and the history. SQLite-only behaviour (WAL, the
ERP's file lock) is tested on SQLite alone."""

from __future__ import annotations

import contextlib
import datetime as dt
import pathlib
import re
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

from mpg import errors, timefmt
from mpg.db import engine as engines
from mpg.db import transactions
from mpg.storage import database, history, inbox, outbox, states, tables
from mpg.wire import model

S = states.OutboxState
GATEWAY = "mpg-a@example.com"


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(db_url)
    database.init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def repo(engine: sa.Engine) -> outbox.OutboxRepository:
    return outbox.OutboxRepository(engine, GATEWAY, "utc")


@pytest.fixture
def inbox_repo(engine: sa.Engine) -> inbox.InboxRepository:
    return inbox.InboxRepository(engine, GATEWAY, "utc")


@contextlib.contextmanager
def erp(url: str) -> Iterator[sa.Connection]:
    """A connection of its own in autocommit, as an ERP writing its own SQL would have."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            yield conn
    finally:
        eng.dispose()


def erp_sql(conn: sa.Connection, statement: str, **params: Any) -> sa.CursorResult[Any]:
    """Run the ERP's SQL; ``[Name]`` is quoted as the database quotes identifiers.

    On PostgreSQL the mixed-case names must be quoted (docs/databases.md).
    """
    quote = conn.dialect.identifier_preparer.quote_identifier
    text = re.sub(r"\[(\w+)\]", lambda m: quote(m.group(1)), statement)
    return conn.execute(sa.text(text), params)


def outbox_row(url: str, tx: str) -> tuple[Any, ...]:
    with erp(url) as conn:
        row = erp_sql(
            conn,
            "SELECT [State], [StatusLog], [MessageId], [TransmitTime] FROM [Outbox] "
            "WHERE [TxMessageId] = :tx",
            tx=tx,
        ).first()
    assert row is not None
    return tuple(row)


def delivery(rx: str, **changes: Any) -> model.Delivery:
    base = model.Delivery(
        rx_message_id=rx,
        message_id=f"m-{rx}",
        app_code="BPM",
        source_domain="example.com",
        agent_sender="mpg-b@example.com",
        sender="alice@example.com",
        owner=GATEWAY,
        receiver_type="U",
        receiver_list=GATEWAY,
        bcc_list="",
        subject="approval",
        content="<content/>",
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords="",
        transmit_time="2024-05-10 15:07:00",
    )
    return model.Delivery(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def info(seq: int, flag: int, size: int = 3) -> model.AttachmentInfo:
    return model.AttachmentInfo(seq, f"f{seq}.png", "png", size, flag, "0" * 64)


# -- init_db ---------------------------------------------------------------------------


def test_init_db_creates_every_table_then_nothing(db_url: str) -> None:
    """The first init_db creates every table and their indexes; the second nothing."""
    eng = database.create_engine(db_url)
    try:
        assert database.init_db(eng) == [
            "Outbox",
            "OutboxAttachment",
            "Inbox",
            "InboxAttachment",
            "MpgTransition",
            "MpgClaim",
            "MpgDropFile",
            "MpgExport",
        ]
        assert database.init_db(eng) == []
        indexes = {ix["name"] for ix in sa.inspect(eng).get_indexes("Outbox")}
        assert "IX_Outbox_State" in indexes
    finally:
        eng.dispose()


def test_init_db_never_alters_an_existing_table(db_url: str) -> None:
    """An ERP's Outbox with an extra column is used as it is: no error, column kept."""
    with erp(db_url) as conn:
        erp_table = sa.Table(
            "Outbox",
            sa.MetaData(),
            *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in tables.outbox.columns),
            sa.Column("ErpNote", sa.Unicode(50)),
        )
        erp_table.create(conn)
        erp_sql(
            conn,
            "INSERT INTO [Outbox] ([TxMessageId], [State], [ErpNote]) VALUES ('erp-1', 10, 'kept')",
        )
    eng = database.create_engine(db_url)
    try:
        created = database.init_db(eng)
        assert "Outbox" not in created
        assert "OutboxAttachment" in created
        names = [c["name"] for c in sa.inspect(eng).get_columns("Outbox")]
        assert names[-1] == "ErpNote"
        assert "IX_Outbox_State" not in {ix["name"] for ix in sa.inspect(eng).get_indexes("Outbox")}
        picked = outbox.OutboxRepository(eng, GATEWAY, "utc").claim(10)
        assert [r.tx_message_id for r in picked] == ["erp-1"]
    finally:
        eng.dispose()
    with erp(db_url) as conn:
        assert erp_sql(conn, "SELECT [ErpNote] FROM [Outbox]").first() == ("kept",)


def test_init_db_refuses_a_table_lacking_a_contract_column(db_url: str) -> None:
    """An existing Outbox without StatusLog raises SchemaMismatch naming the column."""
    with erp(db_url) as conn:
        erp_sql(conn, "CREATE TABLE [Outbox] ([TxMessageId] VARCHAR(50) PRIMARY KEY, [State] INT)")
    eng = database.create_engine(db_url)
    try:
        with pytest.raises(errors.SchemaMismatch, match="StatusLog"):
            database.init_db(eng)
    finally:
        eng.dispose()


def test_sqlite_connections_use_wal_and_a_busy_timeout(db_path: pathlib.Path) -> None:
    """Every pooled SQLite connection runs in WAL mode with a 5 s busy timeout."""
    engine = database.create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        engine.dispose()


def test_locked_database_becomes_a_transient_storage_error(
    db_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lock held by the ERP surfaces as StorageError 'database is locked', transient."""
    monkeypatch.setattr(engines, "SQLITE_BUSY_TIMEOUT_MS", 50)
    eng = database.create_engine(f"sqlite:///{db_path}")
    try:
        database.init_db(eng)
        repo = outbox.OutboxRepository(eng, GATEWAY, "utc")
        with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            with pytest.raises(errors.StorageError, match="database is locked") as caught:
                repo.insert({"Subject": "blocked"})
            conn.execute("ROLLBACK")
        assert transactions.is_transient(caught.value)
        assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    finally:
        eng.dispose()


def test_missing_table_is_a_permanent_storage_error(db_url: str) -> None:
    """A query on a database without the tables is a StorageError that is not transient."""
    eng = database.create_engine(db_url)
    try:
        with pytest.raises(errors.StorageError, match=r"(?i)outbox") as caught:
            outbox.OutboxRepository(eng, GATEWAY, "utc").claim(1)
        assert not transactions.is_transient(caught.value)
    finally:
        eng.dispose()


# -- Outbox ----------------------------------------------------------------------------


def test_claim_orders_by_priority_then_status_time(
    repo: outbox.OutboxRepository,
) -> None:
    """State-10 rows come E, H, N (NULL, '' and unknown count as N), L, then oldest."""
    rows = [
        ("low", "L", "2024-01-01 00:00:00", 10),
        ("normal-late", "N", "2024-01-03 00:00:00", 10),
        ("blank-prio", "", "2024-01-02 00:00:00", 10),
        ("null-prio", None, "2024-01-02 00:00:00", 10),
        ("odd-prio", "X", "2024-01-01 00:00:00", 10),
        ("high", "h", "2024-01-05 00:00:00", 10),
        ("urgent", "E", "2024-01-09 00:00:00", 10),
        ("draft", "E", "2024-01-01 00:00:00", 0),
        ("claimed", "E", "2024-01-01 00:00:00", 11),
    ]
    for tx, prio, when, state in rows:
        repo.insert({"TxMessageId": tx, "Priority": prio, "StatusTime": when, "State": state})
    # insert() fills a missing Priority with N, so write the NULL/'' ones as the ERP would.
    with transactions.begin(repo.engine, "test") as conn:
        conn.execute(
            sa.update(tables.outbox)
            .where(tables.outbox.c.TxMessageId.in_(["null-prio", "blank-prio"]))
            .values(Priority=sa.case((tables.outbox.c.TxMessageId == "blank-prio", ""), else_=None))
        )
    assert [r.tx_message_id for r in repo.claim(2)] == ["urgent", "high"]
    other = outbox.OutboxRepository(repo.engine, GATEWAY, "utc", instance="other")
    picked = [r.tx_message_id for r in other.claim(100)]
    assert picked == ["odd-prio", "blank-prio", "null-prio", "normal-late", "low"]


def _erp_ready_rows(url: str, txs: list[str]) -> None:
    """Rows written as an ERP writes them: same priority, no StatusTime, State 10."""
    with erp(url) as conn:
        for tx in txs:
            erp_sql(conn, "INSERT INTO [Outbox] ([TxMessageId], [State]) VALUES (:tx, 10)", tx=tx)


def test_ties_are_picked_in_the_order_the_table_keeps_its_rows(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """Rows of one priority and StatusTime go on SQLite in the order they were written
    (rowid), elsewhere by TxMessageId, the key MariaDB and SQL Server keep rows by."""
    _erp_ready_rows(db_url, ["c", "a", "d", "b"])
    picked = [r.tx_message_id for r in repo.claim(3)]
    sqlite = repo.engine.dialect.name == "sqlite"
    assert picked == (["c", "a", "d"] if sqlite else ["a", "b", "c"])


def test_a_without_rowid_outbox_picks_ties_by_tx_message_id(tmp_path: pathlib.Path) -> None:
    """An ERP's Outbox made WITHOUT ROWID keeps rows by TxMessageId: ties go in that order."""
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    eng = database.create_engine(url)
    try:
        ddl = str(sa.schema.CreateTable(tables.outbox).compile(dialect=eng.dialect))
        with eng.begin() as conn:
            conn.exec_driver_sql(ddl.rstrip() + " WITHOUT ROWID")
        database.init_db(eng)
        _erp_ready_rows(url, ["c", "a", "d", "b"])
        repo = outbox.OutboxRepository(eng, GATEWAY, "utc")
        assert [r.tx_message_id for r in repo.claim(3)] == ["a", "b", "c"]
    finally:
        eng.dispose()


def test_compare_and_set_loses_to_a_concurrent_void(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """A row the ERP voids (98) between pickup and transition does not move; others do."""
    for tx in ("a", "b", "c"):
        repo.insert({"TxMessageId": tx})
    picked = repo.claim(10)
    with erp(db_url) as conn:
        erp_sql(
            conn,
            "UPDATE [Outbox] SET [State] = 98, [StatusLog] = 'voided by ERP' "
            "WHERE [TxMessageId] = 'b'",
        )
    moved = repo.transition(
        [(r.tx_message_id, "claimed") for r in picked], S.READY, S.ATTACHMENTS_UPLOADED
    )
    assert moved == ["a", "c"]
    assert outbox_row(db_url, "b")[:2] == (98, "voided by ERP")
    assert outbox_row(db_url, "a")[:2] == (12, "claimed")
    assert [t.to_state for t in history.timeline(repo.engine, "b")] == [10]


def test_status_log_is_cut_to_200_characters_with_an_ellipsis(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """A long log fits nvarchar(200): 199 characters and '…'."""
    tx = repo.insert({})
    repo.fail(tx, S.READY, "x" * 500)
    state, log, _, _ = outbox_row(db_url, tx)
    assert state == 99
    assert len(log) == 200
    assert log.endswith("x…")


def test_multi_step_move_records_one_history_row_and_event_per_step(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """12 -> 20 in one call writes 12->19 and 19->20 to history and logs two events."""
    tx = repo.insert({})
    repo.transition([(tx, "claimed")], S.READY, S.ATTACHMENTS_UPLOADED)
    with structlog.testing.capture_logs() as logs:
        moved = repo.transition(
            [(tx, "queued for 3 recipients")],
            S.ATTACHMENTS_UPLOADED,
            S.WAITING,
            message_ids={tx: "srv-1"},
            set_transmit_time=True,
        )
    assert moved == [tx]
    steps = [(t.from_state, t.to_state, t.reason) for t in history.timeline(repo.engine, tx)]
    assert steps == [
        (None, 10, "inserted by mpg send"),
        (10, 12, "claimed"),
        (12, 19, states.OUTBOX_TRANSITIONS[(S.ATTACHMENTS_UPLOADED, S.UPLOADED)]),
        (19, 20, "queued for 3 recipients"),
    ]
    assert [(e["event"], e["from_state"], e["to_state"], e["box"]) for e in logs] == [
        ("state_changed", 12, 19, "out"),
        ("state_changed", 19, 20, "out"),
    ]
    assert all(e["tx_message_id"] == tx for e in logs)
    state, log, message_id, transmit_time = outbox_row(db_url, tx)
    assert (state, log, message_id) == (20, "queued for 3 recipients", "srv-1")
    assert transmit_time is not None


def test_a_batch_move_gives_each_row_its_own_log_and_message_id(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """One move of three rows (one statement on PostgreSQL): each row gets its own log
    (cut to 200 characters), a MessageId where one is given and keeps its stored one
    where none is; a row no longer in the expected state is left alone."""
    a = repo.insert({"MessageId": "earlier"})
    b = repo.insert({})
    c = repo.insert({})
    gone = repo.insert({})
    repo.transition([(gone, "voided")], S.READY, S.VOIDED)
    moved = repo.transition(
        [(a, "für Ä"), (b, "x" * 300), (c, ""), (gone, "never")],
        S.READY,
        S.ATTACHMENTS_UPLOADED,
        message_ids={b: "srv-b", c: "srv-c"},
    )
    assert moved == [a, b, c]
    assert outbox_row(db_url, a)[:3] == (12, "für Ä", "earlier")
    state, log, message_id, _ = outbox_row(db_url, b)
    assert (state, len(log), log[-1], message_id) == (12, 200, "…", "srv-b")
    assert outbox_row(db_url, c)[:3] == (
        12,
        states.OUTBOX_TRANSITIONS[(S.READY, S.ATTACHMENTS_UPLOADED)],
        "srv-c",
    )
    assert outbox_row(db_url, gone)[:3] == (98, "voided", None)


def test_transition_keeps_message_id_when_none_is_given(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """Rows missing from message_ids keep their MessageId; TransmitTime stays unset."""
    tx = repo.insert({"MessageId": "earlier"})
    repo.transition([(tx, "")], S.READY, S.ATTACHMENTS_UPLOADED, message_ids={})
    state, log, message_id, transmit_time = outbox_row(db_url, tx)
    assert (state, message_id, transmit_time) == (12, "earlier", None)
    assert log == states.OUTBOX_TRANSITIONS[(S.READY, S.ATTACHMENTS_UPLOADED)]


def test_transition_refuses_a_step_outside_the_table(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """29 -> 10 is not in the table: TransitionError and the row is untouched."""
    tx = repo.insert({"State": 29})
    with pytest.raises(errors.TransitionError):
        repo.transition([(tx, "again")], S.SENT, S.READY)
    assert outbox_row(db_url, tx)[0] == 29


def test_transition_in_the_callers_transaction_rolls_back_with_it(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """With conn=, the move and its attachments commit or roll back with the caller."""
    tx = repo.insert({})

    def claim_then_crash() -> None:
        with transactions.begin(repo.engine, "claim") as conn:
            repo.transition([(tx, "uploading")], S.READY, S.ATTACHMENTS_UPLOADING, conn=conn)
            repo.add_attachments(conn, tx, [info(1, 0)], ["/data/a.png"])
            raise RuntimeError("crash mid-claim")

    with pytest.raises(RuntimeError):
        claim_then_crash()
    assert outbox_row(db_url, tx)[0] == 10
    assert repo.attachments(tx) == []


def test_a_rider_commits_with_the_first_transaction_that_commits_and_only_once(
    repo: outbox.OutboxRepository,
) -> None:
    """Rolled back with a failed transaction it rides again in the next; once that has
    committed, later transactions leave it out (its key would collide)."""
    claims = tables.claim

    def held() -> list[str]:
        with repo.engine.connect() as conn:
            return list(conn.execute(sa.select(claims.c.TxMessageId)).scalars())

    rider = transactions.Rider(
        lambda conn: conn.execute(
            claims.insert().values(TxMessageId="t1", Gateway="g", LeaseUntil="2030-01-01")
        )
    )
    with pytest.raises(RuntimeError), transactions.begin(repo.engine, "failing", rider):
        raise RuntimeError("the transaction fails")
    assert (rider.done, held()) == (False, [])
    for _ in range(2):
        with transactions.begin(repo.engine, "committing", rider):
            pass
        assert (rider.done, held()) == (True, ["t1"])


def test_claim_and_start_moves_and_writes_attachments_in_one_transaction(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """Claim, 10 -> 11 and the OutboxAttachment rows commit together, or none does."""
    good = repo.insert({})
    moved = repo.claim_and_start(
        10, lambda rows: [outbox.Start(good, S.ATTACHMENTS_UPLOADING, "up", [info(1, 0)], ["/a"])]
    )
    assert moved == {good: S.ATTACHMENTS_UPLOADING}
    assert outbox_row(db_url, good)[0] == 11
    assert [p for _, p in repo.attachments(good)] == ["/a"]
    assert repo.claims()[good][0] == repo.instance

    bad = repo.insert({})
    with pytest.raises(ValueError, match="1 attachment infos but 0 paths"):
        repo.claim_and_start(
            10, lambda rows: [outbox.Start(bad, S.ATTACHMENTS_UPLOADING, "up", [info(1, 0)], [])]
        )
    assert outbox_row(db_url, bad)[0] == 10
    assert repo.attachments(bad) == []
    assert bad not in repo.claims()


def test_claim_and_start_claims_only_the_rows_left_in_flight(
    repo: outbox.OutboxRepository, db_url: str
) -> None:
    """Rows sent on to 12 are claimed and recorded; rows failed to 99 keep no claim;
    rows the plan leaves out stay at 10 unclaimed."""
    plain, broken, later = repo.insert({}), repo.insert({}), repo.insert({})
    moved = repo.claim_and_start(
        10,
        lambda rows: [
            outbox.Start(plain, S.ATTACHMENTS_UPLOADED, "claimed; no attachments"),
            outbox.Start(broken, S.FAILED, "invalid Subject: too long"),
        ],
    )
    assert moved == {plain: S.ATTACHMENTS_UPLOADED, broken: S.FAILED}
    assert [outbox_row(db_url, t)[0] for t in (plain, broken, later)] == [12, 99, 10]
    assert set(repo.claims()) == {plain}
    steps = [(t.from_state, t.to_state, t.reason) for t in history.timeline(repo.engine, plain)]
    assert steps[-1] == (10, 12, "claimed; no attachments")


def test_add_attachments_replaces_earlier_rows(repo: outbox.OutboxRepository) -> None:
    """Redoing a claim after a crash leaves one set of OutboxAttachment rows, by SeqNo."""
    tx = repo.insert({"AttachmentList": "/d/a.png;/d/b.pdf"})
    repo.add_attachments(None, tx, [info(1, 0)], ["/d/old.png"])
    repo.add_attachments(None, tx, [info(2, 1, 9), info(1, 0, 5)], ["/d/b.pdf", "/d/a.png"])
    got = repo.attachments(tx)
    assert [(i.seq_no, i.file_size, i.download_flag, p) for i, p in got] == [
        (1, 5, 0, "/d/a.png"),
        (2, 9, 1, "/d/b.pdf"),
    ]
    assert all(i.sha256 == "" for i, _ in got)


def test_insert_fills_defaults(repo: outbox.OutboxRepository) -> None:
    """A bare insert gets a uuid TxMessageId, State 10, StatusTime now, Priority N."""
    tx = repo.insert({"subject": "hello", "ContentType": "MSG"})
    uuid.UUID(tx)
    row = repo.get(tx)
    assert row is not None
    assert (row.state, row.priority, row.subject, row.agent_sender) == (10, "N", "hello", GATEWAY)
    assert row.status_time is not None
    age = timefmt.now("utc") - timefmt.parse_text(row.status_time)
    assert age < dt.timedelta(minutes=1)
    with pytest.raises(errors.ValidationError, match="Colour"):
        repo.insert({"Colour": "red"})


def test_counts_oldest_pending_and_in_flight(repo: outbox.OutboxRepository) -> None:
    """counts() groups by State; oldest_pending() skips final rows; take_over() is 11/12/19."""
    repo.insert({"TxMessageId": "done", "State": 29, "StatusTime": "2020-01-01 00:00:00"})
    repo.insert({"TxMessageId": "old", "State": 19, "StatusTime": "2021-01-01 00:00:00"})
    repo.insert({"TxMessageId": "new", "State": 10, "StatusTime": "2022-01-01 00:00:00"})
    repo.insert({"TxMessageId": "wait", "State": 20, "StatusTime": "2020-06-01 00:00:00"})
    assert repo.counts() == {29: 1, 19: 1, 10: 1, 20: 1}
    assert repo.oldest_pending() == ("wait", "2020-06-01 00:00:00")
    assert [r.tx_message_id for r in repo.take_over(10)] == ["old"]


def test_timed_out_finds_rows_older_than_the_timeout(repo: outbox.OutboxRepository) -> None:
    """Rows in 10/11/12 older than the timeout are found; fresh, waiting and odd ones not."""
    now = timefmt.now("utc")
    stale = timefmt.to_text(now - dt.timedelta(hours=2))
    repo.insert({"TxMessageId": "stale", "StatusTime": stale})
    repo.insert({"TxMessageId": "stale-doc-format", "StatusTime": stale.replace("-", "/")})
    repo.insert({"TxMessageId": "fresh", "StatusTime": timefmt.to_text(now)})
    repo.insert({"TxMessageId": "waiting", "State": 20, "StatusTime": stale})
    repo.insert({"TxMessageId": "garbled", "StatusTime": "yesterday"})
    found = sorted(r.tx_message_id for r in repo.timed_out(3600))
    assert found == ["stale", "stale-doc-format"]
    moved = repo.transition([(tx, "timed out") for tx in found], S.READY, S.TIMED_OUT)
    assert sorted(moved) == found


def test_chinese_text_round_trips_through_outbox(repo: outbox.OutboxRepository) -> None:
    """Subject and Content in Chinese come back unchanged."""
    tx = repo.insert({"Subject": "請假單審核", "Content": "<content>同意 ✓</content>"})
    row = repo.get(tx)
    assert row is not None
    assert (row.subject, row.content) == ("請假單審核", "<content>同意 ✓</content>")


def test_a_batch_of_thousands_moves_in_one_claim(repo: outbox.OutboxRepository) -> None:
    """2000 rows are picked up and moved 10 -> 12 -> 20 as whole batches, each step
    recorded (how fast is scripts/bench_db.py's business, not a test's)."""
    n = 2000
    with transactions.begin(repo.engine, "seed") as conn:
        conn.execute(
            tables.outbox.insert(),
            [{"TxMessageId": f"tx-{i:05d}", "State": 10, "Priority": "N"} for i in range(n)],
        )
    picked = repo.claim(n)
    ids = [(r.tx_message_id, "claimed") for r in picked]
    assert len(repo.transition(ids, S.READY, S.ATTACHMENTS_UPLOADED)) == n
    assert len(repo.transition(ids, S.ATTACHMENTS_UPLOADED, S.WAITING)) == n
    assert repo.counts() == {20: n}
    assert history.latest_id(repo.engine) == 3 * n


# -- Inbox -----------------------------------------------------------------------------


def test_store_is_exactly_once(inbox_repo: inbox.InboxRepository) -> None:
    """Storing the same delivery twice inserts one row, one attachment set, one history row."""
    d = delivery("rx-1", attachments=(info(1, 1),))
    files = {("rx-1", 1): b"png"}
    assert inbox_repo.store([d], files, {}) == ["rx-1"]
    assert inbox_repo.store([d, d], files, {}) == []
    rows = inbox_repo.list(None, 10)
    assert [r["RxMessageId"] for r in rows] == ["rx-1"]
    got = inbox_repo.get("rx-1")
    assert got is not None
    assert len(got["attachments"]) == 1
    assert [(t.from_state, t.to_state) for t in history.timeline(inbox_repo.engine, "rx-1")] == [
        (None, 0)
    ]


def test_store_maps_every_delivery_field(inbox_repo: inbox.InboxRepository) -> None:
    """Inbox columns carry the delivery; State 0, StatusLog 'received', times set."""
    d = delivery("rx-2", bcc_list="bob@example.com", priority="H", keywords="hr;leave")
    inbox_repo.store([d], {}, {})
    row = inbox_repo.get("rx-2")
    assert row is not None
    assert row["State"] == 0
    assert row["StatusLog"] == "received"
    assert row["AttachmentFlag"] is False
    assert row["AlertFlag"] is True
    assert (row["MessageId"], row["Owner"], row["BccList"]) == (
        "m-rx-2",
        GATEWAY,
        "bob@example.com",
    )
    assert (row["Priority"], row["Keywords"], row["TransmitTime"]) == (
        "H",
        "hr;leave",
        d.transmit_time,
    )
    assert row["ReceiveTime"] == row["StatusTime"]


def test_store_keeps_inline_bytes_and_defers_the_others(
    inbox_repo: inbox.InboxRepository,
) -> None:
    """DownloadFlag 1 stores FileData; DownloadFlag 0 stores NULL and a SourceUri to fetch later."""
    d = delivery("rx-3", attachments=(info(1, 1), info(2, 0, 7)))
    uris = {("rx-3", 1): "https://push/a/1", ("rx-3", 2): "https://push/a/2"}
    inbox_repo.store([d], {("rx-3", 1): b"img", ("rx-3", 2): b"ignored"}, uris)
    row = inbox_repo.get("rx-3")
    assert row is not None
    assert row["AttachmentFlag"] is True
    meta = row["attachments"]
    assert [(m["SeqNo"], m["HasFileData"], m["SourceUri"]) for m in meta] == [
        (1, True, "https://push/a/1"),
        (2, False, "https://push/a/2"),
    ]
    deferred = meta[1]["AttachmentId"]
    got = inbox_repo.attachment(deferred)
    assert got is not None
    assert (got["FileData"], got["MessageId"]) == (None, "rx-3")
    inbox_repo.save_attachment_data(deferred, b"1234567")
    again = inbox_repo.attachment(deferred)
    assert again is not None
    assert again["FileData"] == b"1234567"
    with pytest.raises(errors.StorageError):
        inbox_repo.save_attachment_data(str(uuid.uuid4()), b"x")


def test_chinese_text_round_trips_through_inbox(inbox_repo: inbox.InboxRepository) -> None:
    """A delivery in Chinese is stored and read back unchanged."""
    d = delivery("rx-zh", subject="公告：系統維護", content="<content>明天停機兩小時</content>")
    inbox_repo.store([d], {}, {})
    row = inbox_repo.get("rx-zh")
    assert row is not None
    assert (row["Subject"], row["Content"]) == (d.subject, d.content)


def test_chinese_file_names_and_padded_times_round_trip(
    inbox_repo: inbox.InboxRepository, repo: outbox.OutboxRepository
) -> None:
    """Chinese file names come back exactly; nchar(20) times come back without padding."""
    zh = model.AttachmentInfo(1, "會議紀錄（定稿）.docx", "docx", 4, 1, "0" * 64)
    inbox_repo.store([delivery("rx-f", attachments=(zh,))], {("rx-f", 1): "資料".encode()}, {})
    row = inbox_repo.get("rx-f")
    assert row is not None
    assert [a["FileName"] for a in row["attachments"]] == ["會議紀錄（定稿）.docx"]
    stored = inbox_repo.attachment(str(row["attachments"][0]["AttachmentId"]))
    assert stored is not None
    assert stored["FileData"] == "資料".encode()
    assert row["TransmitTime"] == "2024-05-10 15:07:00"
    tx = repo.insert({"AttachmentList": "/srv/附件/報價單.pdf"})
    repo.add_attachments(None, tx, [zh], ["/srv/附件/報價單.pdf"])
    assert [(i.file_name, p) for i, p in repo.attachments(tx)] == [
        ("會議紀錄（定稿）.docx", "/srv/附件/報價單.pdf")
    ]
    out = repo.get(tx)
    assert out is not None
    assert out.status_time is not None
    assert len(out.status_time) == 19


def test_mark_read_moves_only_new_rows(inbox_repo: inbox.InboxRepository, db_url: str) -> None:
    """0 -> 29 for new rows; rows already read (e.g. by the ERP's SQL) are not counted."""
    inbox_repo.store([delivery("r1"), delivery("r2"), delivery("r3")], {}, {})
    with erp(db_url) as conn:
        erp_sql(conn, "UPDATE [Inbox] SET [State] = 29 WHERE [RxMessageId] = 'r2' AND [State] = 0")
    assert inbox_repo.mark_read(["r1", "r2", "unknown", "r1"]) == 1
    assert [r["RxMessageId"] for r in inbox_repo.list(0, 10)] == ["r3"]
    assert {r["RxMessageId"] for r in inbox_repo.list(29, 10)} == {"r1", "r2"}
    assert [t.to_state for t in history.timeline(inbox_repo.engine, "r1")] == [0, 29]


def test_mark_recalled_moves_unread_copies_of_the_message(
    inbox_repo: inbox.InboxRepository,
) -> None:
    """0 -> 98 for still-new rows of that MessageId; read copies stay read."""
    inbox_repo.store(
        [
            delivery("c1", message_id="srv-9"),
            delivery("c2", message_id="srv-9"),
            delivery("c3", message_id="srv-other"),
        ],
        {},
        {},
    )
    inbox_repo.mark_read(["c2"])
    assert inbox_repo.mark_recalled("srv-9") == 1
    states_by_rx = {r["RxMessageId"]: r["State"] for r in inbox_repo.list(None, 10)}
    assert states_by_rx == {"c1": 98, "c2": 29, "c3": 0}


def test_list_filters_by_app_code(inbox_repo: inbox.InboxRepository) -> None:
    """list(app_code=...) returns only that channel's rows."""
    inbox_repo.store([delivery("b1", app_code="BPM"), delivery("n1", app_code="BULLTIN")], {}, {})
    assert [r["RxMessageId"] for r in inbox_repo.list(0, 10, app_code="BULLTIN")] == ["n1"]


# -- history ---------------------------------------------------------------------------


def test_follow_returns_rows_after_an_id_with_filters(repo: outbox.OutboxRepository) -> None:
    """follow() pages through the history by Id and filters by message and target state."""
    start = history.latest_id(repo.engine)
    a = repo.insert({"TxMessageId": "fa"})
    b = repo.insert({"TxMessageId": "fb"})
    repo.transition([(a, "claimed"), (b, "claimed")], S.READY, S.ATTACHMENTS_UPLOADED)
    rows = history.follow(repo.engine, start)
    assert [(r.message_key, r.to_state) for r in rows] == [
        ("fa", 10),
        ("fb", 10),
        ("fa", 12),
        ("fb", 12),
    ]
    assert all(r.box == "out" and r.gateway == GATEWAY for r in rows)
    assert [r.id for r in history.follow(repo.engine, rows[1].id)] == [rows[2].id, rows[3].id]
    assert [r.message_key for r in history.follow(repo.engine, start, tx="fb")] == ["fb", "fb"]
    assert len(history.follow(repo.engine, start, state=12, limit=1)) == 1
    assert history.latest_id(repo.engine) == rows[-1].id
