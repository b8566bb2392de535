"""Verification codes in the database: hashed, newest wins, single use, tries counted."""

from __future__ import annotations

import pathlib

import pytest
import sqlalchemy as sa

from mpg.db import transactions
from mpg.server import tables, verification
from mpg.server.directory import codestore
from mpg.wire import atrest, keys


@pytest.fixture
def engine(tmp_path: pathlib.Path) -> sa.Engine:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store() -> codestore.CodeStore:
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    return codestore.CodeStore(codestore.code_key(keys.new_master_key()), keyring)


def test_the_code_is_accepted_once_and_never_stored(
    engine: sa.Engine, store: codestore.CodeStore
) -> None:
    with transactions.begin(engine, "t") as conn:
        code = store.issue(conn, "device", "anna@example.com\0phone-1", now=100.0)
        dump = "\n".join(str(tuple(r)) for r in conn.execute(sa.select(tables.verification_code)))
    assert code not in dump
    assert "anna" not in dump
    with transactions.begin(engine, "t") as conn:
        first = store.check(conn, "device", "anna@example.com\0phone-1", code, now=101.0)
        second = store.check(conn, "device", "anna@example.com\0phone-1", code, now=102.0)
    assert first.ok
    assert second.outcome is verification.Outcome.USED


def test_a_new_code_retires_the_older_one(engine: sa.Engine, store: codestore.CodeStore) -> None:
    with transactions.begin(engine, "t") as conn:
        old = store.issue(conn, "device", "s", now=100.0)
        new = store.issue(conn, "device", "s", now=101.0)
        if old == new:
            pytest.skip("the two random codes are equal (1 in a million)")
        assert not store.check(conn, "device", "s", old, now=102.0).ok
        assert store.check(conn, "device", "s", new, now=102.0).ok


def test_wrong_tries_are_counted_across_transactions(
    engine: sa.Engine, store: codestore.CodeStore
) -> None:
    with transactions.begin(engine, "t") as conn:
        code = store.issue(conn, "domain", "example.com", now=0.0)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        with transactions.begin(engine, "t") as conn:
            assert store.check(conn, "domain", "example.com", wrong, now=1.0).outcome is (
                verification.Outcome.WRONG
            )
    with transactions.begin(engine, "t") as conn:
        verdict = store.check(conn, "domain", "example.com", code, now=1.0)
    assert verdict.outcome is verification.Outcome.EXHAUSTED


def test_a_code_for_another_purpose_or_subject_or_none_at_all_is_refused(
    engine: sa.Engine, store: codestore.CodeStore
) -> None:
    with transactions.begin(engine, "t") as conn:
        code = store.issue(conn, "domain", "example.com", now=0.0)
        assert not store.check(conn, "device", "example.com", code, now=1.0).ok
        assert not store.check(conn, "domain", "example.org", code, now=1.0).ok
        assert store.check(conn, "domain", "never", "123456", now=1.0).outcome is (
            verification.Outcome.EXPIRED
        )


def test_expired_codes_are_purged(engine: sa.Engine, store: codestore.CodeStore) -> None:
    with transactions.begin(engine, "t") as conn:
        store.issue(conn, "domain", "example.com", now=0.0)
        assert store.purge(conn, now=10_000.0) == 1
