"""The console's stores on every database: sessions, lockout counts, passwords, and
the audit log's filters (LIKE with its wildcards escaped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from clocks import ManualClock

from mpg import errors
from mpg.server import admins, audit, tables
from mpg.server.console import lockout, sessions, users


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = tables.create_engine(db_url)
    tables.create_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def test_session_lives_while_used_and_ends_when_idle(engine: sa.Engine) -> None:
    clock = ManualClock(1_000_000.0)
    store = sessions.SessionStore(engine, sessions.Policy(idle=600.0, lifetime=3600.0), clock)
    session_id, made = store.create("ada", "admin", "password")
    clock.now += 500
    found = store.get(session_id)
    assert found is not None
    assert found.csrf == made.csrf
    assert found.last_seen == clock.now  # touched: the idle time starts again
    clock.now += 500
    assert store.get(session_id) is not None
    clock.now += 600
    assert store.get(session_id) is None
    assert store.live() == []


def test_session_ends_at_its_lifetime_however_busy(engine: sa.Engine) -> None:
    clock = ManualClock(1_000_000.0)
    store = sessions.SessionStore(engine, sessions.Policy(idle=600.0, lifetime=1000.0), clock)
    session_id, _ = store.create("ada", "admin", "password")
    for _ in range(3):
        clock.now += 300
        assert store.get(session_id) is not None
    clock.now += 100
    assert store.get(session_id) is None


def test_stored_session_key_is_not_the_cookie_value(engine: sa.Engine) -> None:
    store = sessions.SessionStore(engine, sessions.Policy(idle=600.0, lifetime=3600.0))
    session_id, _ = store.create("ada", "admin", "password")
    with engine.connect() as conn:
        keys = conn.execute(sa.select(tables.console_session.c.SessionHash)).scalars().all()
    assert keys == [sessions.digest(session_id)]
    assert session_id not in keys
    assert store.get("x" * (sessions.MAX_ID_CHARS + 1)) is None


def test_admin_ends_a_listed_session_and_it_is_audited(engine: sa.Engine) -> None:
    store = sessions.SessionStore(engine, sessions.Policy(idle=600.0, lifetime=3600.0))
    session_id, _ = store.create("otto", "operator", "oidc")
    (listed,) = store.live()
    assert (listed.name, listed.source) == ("otto", "oidc")
    assert store.end_listed(listed.key, "console:ada") == "otto"
    assert store.get(session_id) is None
    assert store.end_listed(listed.key, "console:ada") is None
    (entry,) = audit.entries(engine, action="console.session")
    assert (entry.actor, entry.target) == ("console:ada", "otto")


def test_lockout_counts_names_and_addresses_and_forgets_old_counts(engine: sa.Engine) -> None:
    clock = ManualClock(1_000_000.0)
    store = lockout.LockoutStore(engine, lockout.Policy(3, 5, 900.0), clock)
    assert store.failed("Ada", "192.0.2.1") is None
    assert store.failed("ada", "192.0.2.2") is None
    until = store.failed("ADA", "192.0.2.3")
    assert until == clock.now + 900
    assert store.locked_until("ada", "198.51.100.9") == until
    assert store.locked_until("otto", "192.0.2.1") is None
    clock.now += 901
    assert store.locked_until("ada", "192.0.2.1") is None
    store.failed("otto", "192.0.2.9")  # removes the counts whose time is over
    with engine.connect() as conn:
        subjects = set(conn.execute(sa.select(tables.console_lockout.c.Subject)).scalars())
    assert subjects == {"user:otto", "addr:192.0.2.9"}


def test_address_is_locked_after_its_own_limit(engine: sa.Engine) -> None:
    store = lockout.LockoutStore(engine, lockout.Policy(100, 3, 900.0), ManualClock(1_000_000.0))
    results = [store.failed(f"name{n}", "192.0.2.7") for n in range(3)]
    assert results[:2] == [None, None]
    assert results[2] is not None
    assert store.locked_until("someone-else", "192.0.2.7") == results[2]


def test_good_sign_in_clears_the_name_count(engine: sa.Engine) -> None:
    store = lockout.LockoutStore(engine, lockout.Policy(2, 100, 900.0), ManualClock(1_000_000.0))
    store.failed("ada", "192.0.2.1")
    store.succeeded("ada")
    assert store.failed("ada", "192.0.2.1") is None


def test_password_check_refuses_wrong_unknown_and_disabled(engine: sa.Engine) -> None:
    admins.AdminStore(engine).add("ada", "admin", "test")
    admins.AdminStore(engine).add("bob", "viewer", "test")
    console = users.ConsoleUsers(engine)
    console.set_password("ada", "correct horse battery staple", "test")
    assert console.check("ada", "correct horse battery staple") == users.ConsoleUser("ada", "admin")
    assert console.check("ada", "correct horse battery stapler") is None
    assert console.check("nobody", "correct horse battery staple") is None
    assert console.check("bob", "any password at all") is None  # no console password
    assert console.current("bob") is None
    admins.AdminStore(engine).disable("ada", "test")
    assert console.check("ada", "correct horse battery staple") is None
    assert console.current("ada") is None
    with pytest.raises(errors.NotFound):
        console.set_password("nobody", "correct horse battery staple", "test")
    with pytest.raises(errors.ValidationError, match="at least 12"):
        console.set_password("bob", "short", "test")


def test_password_hashing_waits_its_turn_then_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "HASH_WAIT_SECONDS", 0.01)
    held = 0
    try:
        while users._hashing.acquire(blocking=False):
            held += 1
        assert held == users.MAX_CONCURRENT_HASHES
        with pytest.raises(errors.Unavailable, match="too many sign-ins"):
            users.hash_password("correct horse battery staple")
    finally:
        for _ in range(held):
            users._hashing.release()


@pytest.mark.parametrize(
    ("text", "count"), [("50%", 1), ("a_b", 1), ("[x]", 1), ("!", 1), ("%", 1)]
)
def test_audit_filters_match_wildcards_as_written(engine: sa.Engine, text: str, count: int) -> None:
    with engine.begin() as conn:
        for target in ("50% off", "a_b", "axb", "[x]", "x", "bang!"):
            audit.record(conn, "cli:test", "thing.change", target)
    assert len(audit.entries(engine, target=text)) == count
    assert len(audit.entries(engine, action="thing.")) == 6
    assert audit.entries(engine, action="hing") == []
