"""PostgreSQL's statistics retaken while a table grows (mpg.db.statistics), and only there."""

from __future__ import annotations

import pathlib
import threading
import time

import sqlalchemy as sa
from harness import World

from mpg import config
from mpg.db import statistics
from mpg.gateway import runner
from mpg.server import tables


def _fill(engine: sa.Engine, count: int, start: int = 0) -> None:
    with engine.begin() as conn:
        conn.execute(
            tables.message_event.insert(),
            [
                {"MessageId": f"m{n}", "At": 1.0, "Kind": "received", "Account": "a"}
                for n in range(start, start + count)
            ],
        )


def _analysed(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables"
                    " WHERE relname = 'MessageEvent'"
                )
            ).scalar_one()
        )


def _look_until_found(analyzer: statistics.Analyzer) -> list[str]:
    """The analyzer's looks until one analyses something (or 10 s passed): a backend's
    counters reach pg_stat_user_tables when its transaction ends, about a second later."""
    deadline = time.monotonic() + 10
    found = analyzer.look()
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = analyzer.look()
    return found


def test_a_table_that_grew_is_analysed_and_then_left_alone_until_it_grows_again(
    postgresql_url: str,
) -> None:
    engine = tables.create_engine(postgresql_url)
    tables.create_tables(engine)
    analyzer = statistics.Analyzer(engine, list(tables.metadata.tables))
    try:
        _fill(engine, statistics.MIN_ROWS // 2)
        assert analyzer.look() == []
        _fill(engine, statistics.MIN_ROWS, start=statistics.MIN_ROWS)
        assert _look_until_found(analyzer) == ["MessageEvent"]
        assert _analysed(engine)
        assert analyzer.look() == []
    finally:
        engine.dispose()


def test_updates_alone_never_make_a_table_due_and_an_analysis_is_a_small_one(
    postgresql_url: str,
) -> None:
    """A queue whose entries are only updated keeps its statistics; an analysis takes
    the columns statements filter on, not the bytea and text payloads, at the small
    statistics target (a histogram of SAMPLE_TARGET buckets, not the default 100)."""
    engine = tables.create_engine(postgresql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "Queue" ("Id" INTEGER PRIMARY KEY, "State" VARCHAR(10),'
            ' "Body" TEXT, "Sealed" BYTEA)'
        )
        conn.exec_driver_sql(
            "INSERT INTO \"Queue\" SELECT n, 'queued', repeat('x', 100), '\\x00'"
            f" FROM generate_series(1, {statistics.MIN_ROWS * 2}) n"
        )
    analyzer = statistics.Analyzer(engine, ["Queue"])
    try:
        assert _look_until_found(analyzer) == ["Queue"]
        with engine.connect() as conn:
            sampled = conn.exec_driver_sql(
                "SELECT attname FROM pg_stats WHERE tablename = 'Queue' ORDER BY attname"
            ).scalars()
            assert list(sampled) == ["Id", "State"]
            bounds = conn.exec_driver_sql(
                "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats"
                " WHERE tablename = 'Queue' AND attname = 'Id'"
            ).scalar_one()
            assert bounds == statistics.SAMPLE_TARGET + 1
            # The target was the analysis's own: the connection's is the default again.
            assert conn.exec_driver_sql("SHOW default_statistics_target").scalar_one() == "100"
        for state in ("leased", "acked", "queued"):
            with engine.begin() as conn:
                conn.exec_driver_sql(f'UPDATE "Queue" SET "State" = \'{state}\'')
        time.sleep(1.0)  # the updates' counters reach pg_stat_user_tables
        assert analyzer.look() == []
    finally:
        engine.dispose()


def test_only_postgresql_gets_an_analyzer(tmp_path: pathlib.Path) -> None:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 'server.db'}")
    try:
        assert statistics.start(engine, ["MessageEvent"]) is None
    finally:
        engine.dispose()


def test_a_gateway_on_postgresql_runs_an_analyzer_and_stops_it_with_itself(
    local_world: World, postgresql_url: str
) -> None:
    local_world.init_server()
    gateway = runner.Gateway(
        config.load(local_world.gateway("erp-a", database_url=postgresql_url).config)
    )
    before = _analyzers()
    gateway.start()
    try:
        [started] = _analyzers() - before
    finally:
        gateway.stop()
    assert not started.is_alive()


def _analyzers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "mpg-analyze"}
