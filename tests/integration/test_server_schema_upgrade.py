"""A deployed server database is brought up to date by create_tables."""

from __future__ import annotations

import concurrent.futures
import pathlib
import threading
from collections.abc import Iterator

import dbservers
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from mpg import errors
from mpg.server import tables


@pytest.fixture
def mariadb_url(mariadb_server: dbservers.Server | str) -> str:
    if isinstance(mariadb_server, str):
        if dbservers.in_ci():
            pytest.fail(f"mariadb is required under CI: {mariadb_server}")
        pytest.skip(mariadb_server)
    return dbservers.fresh_database(mariadb_server.url, dbservers.database_name())


@pytest.fixture
def engine(mariadb_url: str) -> Iterator[sa.Engine]:
    engine = tables.create_engine(mariadb_url)
    yield engine
    engine.dispose()


def test_single_precision_unix_times_of_an_older_mariadb_database_become_double(
    engine: sa.Engine,
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE SeenNonce (NonceKey VARCHAR(64) PRIMARY KEY, ExpiresAt FLOAT NOT NULL)"
        )
    tables.create_tables(engine)
    with engine.begin() as conn:
        conn.execute(tables.seen_nonce.insert().values(NonceKey="k", ExpiresAt=1764528000.25))
        value = conn.execute(sa.select(tables.seen_nonce.c.ExpiresAt)).scalar_one()
        column = next(
            c for c in sa.inspect(conn).get_columns("SeenNonce") if c["name"] == "ExpiresAt"
        )
    assert value == 1764528000.25
    assert type(column["type"]).__name__.upper() == "DOUBLE"
    assert column["nullable"] is False


def _earlier_transmit_queue() -> sa.Table:
    """TransmitQueue as versions before the one key made it: unique on (SenderAccount,
    TxMessageId) and a second index on TxMessageId, without the state index."""
    return sa.Table(
        "TransmitQueue",
        sa.MetaData(),
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in tables.transmit_queue.columns
        ),
        sa.UniqueConstraint("SenderAccount", "TxMessageId", name="UQ_TransmitQueue_SenderTx"),
        sa.Index("IX_TransmitQueue_Tx", "TxMessageId"),
        sa.Index("IX_TransmitQueue_Received", "ReceivedAt", "MessageId"),
    )


def _queued_row(message_id: str, tx: str) -> dict[str, object]:
    return {
        "MessageId": message_id,
        "SenderAccount": "acct-a",
        "TxMessageId": tx,
        "ReceivedAt": 1_800_000_000.5,
        "RecipientCount": 1,
        "ServedCount": 0,
        "RecalledCount": 0,
        "State": "queued",
        "SubmitResult": "",
        "ContentEnc": b"\x00sealed",
    }


def _deploy_earlier_layout(engine: sa.Engine, messages: list[tuple[str, str]]) -> None:
    """TransmitQueue of the earlier layout holding ``messages`` (MessageId, TxMessageId)."""
    with engine.begin() as conn:
        _earlier_transmit_queue().create(conn)
        conn.execute(tables.transmit_queue.insert(), [_queued_row(m, tx) for m, tx in messages])


def _keys(engine: sa.Engine) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(engine)
    unique = {str(c["name"]) for c in inspector.get_unique_constraints("TransmitQueue")}
    indexes = {str(i["name"]) for i in inspector.get_indexes("TransmitQueue")}
    return unique, indexes - unique


def test_a_deployed_transmit_queue_gets_the_one_key_and_keeps_its_rows(db_url: str) -> None:
    engine = tables.create_engine(db_url)
    try:
        _deploy_earlier_layout(engine, [("m-1", "tx-1"), ("m-2", "tx-2")])
        with capture_logs() as logs:
            tables.create_tables(engine)
        copies = [e["rows"] for e in logs if e["event"].startswith("copying a table")]
        # Only SQLite copies the table, and says so with its size before it starts.
        assert copies == ([2] if engine.dialect.name == "sqlite" else [])
        unique, indexes = _keys(engine)
        assert unique == {"UQ_TransmitQueue_TxSender"}
        assert indexes == {i.name for i in tables.transmit_queue.indexes}
        with engine.connect() as conn:
            kept = conn.execute(
                sa.select(tables.transmit_queue).order_by(tables.transmit_queue.c.MessageId)
            ).all()
        assert [dict(r._mapping) for r in kept] == [
            {**dict.fromkeys(tables.transmit_queue.columns.keys()), **_queued_row(m, tx)}
            for m, tx in (("m-1", "tx-1"), ("m-2", "tx-2"))
        ]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(tables.transmit_queue.insert(), _queued_row("m-3", "tx-1"))
        tables.create_tables(engine)  # nothing left to change: a second start is quiet
        assert _keys(engine) == (unique, indexes)
        # The shared definition is untouched: a new database still gets the key inline.
        made = str(sa.schema.CreateTable(tables.transmit_queue).compile(dialect=engine.dialect))
        assert "UQ_TransmitQueue_TxSender" in made
    finally:
        engine.dispose()


def test_a_sqlite_transmit_queue_with_columns_unknown_here_is_not_rebuilt(
    tmp_path: pathlib.Path,
) -> None:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 'server.db'}")
    try:
        earlier = _earlier_transmit_queue()
        earlier.append_column(sa.Column("Obsolete", sa.Unicode(10)))
        with engine.begin() as conn:
            earlier.create(conn)
        with pytest.raises(errors.SchemaMismatch, match=r"TransmitQueue .*\(Obsolete\)"):
            tables.create_tables(engine)
        unique, indexes = _keys(engine)
        assert unique == {"UQ_TransmitQueue_SenderTx"}
        assert "IX_TransmitQueue_Tx" in indexes
    finally:
        engine.dispose()


def test_server_processes_starting_together_upgrade_a_postgresql_database_once(
    postgresql_url: str,
) -> None:
    engine = tables.create_engine(postgresql_url)
    try:
        # Enough rows that adding the key takes a while: every start looks first.
        _deploy_earlier_layout(engine, [(f"m-{n}", f"tx-{n}") for n in range(20_000)])
        starting = threading.Barrier(3)

        def start() -> list[str]:
            starting.wait()
            return tables.create_tables(engine)

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            starts = [pool.submit(start) for _ in range(3)]
        # Each start returns (or raises what failed it); one made the missing tables.
        made = [f.result() for f in starts]
        assert sorted(len(names) for names in made)[:2] == [0, 0]
        assert _keys(engine)[0] == {"UQ_TransmitQueue_TxSender"}
    finally:
        engine.dispose()
