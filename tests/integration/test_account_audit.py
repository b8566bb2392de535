"""Account changes made by an admin (the console) are audited in their transaction."""

from __future__ import annotations

import pathlib

import sqlalchemy as sa

from mpg.server import accounts, audit, tables
from mpg.wire import atrest, keys

KEYRING = atrest.Keyring({"k1": bytes(range(32))}, "k1")


def store(tmp_path: pathlib.Path) -> tuple[sa.Engine, accounts.AccountStore]:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 'server.db'}")
    tables.create_tables(engine)
    return engine, accounts.AccountStore(engine, keys.new_master_key(), KEYRING)


def test_an_admin_s_add_and_disable_are_audited_by_pseudonym_never_by_name(
    tmp_path: pathlib.Path,
) -> None:
    engine, s = store(tmp_path)
    s.add("Bob@Example.com", "user", actor="console:root")
    s.disable("bob@example.com", actor="console:root")
    row_id = s.vault.account_id("bob@example.com")
    found = [(e.actor, e.action, e.target, e.detail) for e in audit.entries(engine)]
    assert found == [
        ("console:root", "account.disable", row_id, "kind user"),
        ("console:root", "account.create", row_id, "kind user"),
    ]
    assert all("bob" not in e.target.lower() for e in audit.entries(engine))


def test_changes_without_an_actor_write_no_audit_entry(tmp_path: pathlib.Path) -> None:
    """The CLI's account commands keep their behaviour (no actor, no entry)."""
    engine, s = store(tmp_path)
    s.add("erp-a@example.com", "gateway")
    s.disable("erp-a@example.com")
    assert audit.entries(engine) == []
