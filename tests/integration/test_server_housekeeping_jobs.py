"""The server schedules its housekeeping: stage purge always, token expiry and
retention when configured; each job runs against the database as scheduled."""

from __future__ import annotations

import pathlib

from mpg import config
from mpg.server import app, main, tables
from mpg.wire import atrest, keys


def test_the_configured_housekeeping_jobs_are_scheduled_and_each_runs(
    tmp_path: pathlib.Path,
) -> None:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    settings = config.ServerSettings(
        data_dir=tmp_path, retention_days=30, push_token_max_age_days=90
    )
    push = app.PushServer(
        settings, engine, keys.new_master_key(), atrest.Keyring({"k": keys.new_master_key()}, "k")
    )
    scheduler = main._housekeeping(settings, push)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"purge_stages", "expire_push_tokens", "purge"}
        for job in jobs.values():
            job.func(*job.args, **job.kwargs)
    finally:
        scheduler.shutdown(wait=False)
        engine.dispose()


def test_retention_zero_keeps_everything(tmp_path: pathlib.Path) -> None:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    settings = config.ServerSettings(data_dir=tmp_path, retention_days=0, push_token_max_age_days=0)
    push = app.PushServer(
        settings, engine, keys.new_master_key(), atrest.Keyring({"k": keys.new_master_key()}, "k")
    )
    scheduler = main._housekeeping(settings, push)
    try:
        assert [job.id for job in scheduler.get_jobs()] == ["purge_stages"]
    finally:
        scheduler.shutdown(wait=False)
        engine.dispose()
