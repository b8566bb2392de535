"""The directory's stores on every database: groups, categories, domains proven by a
mail read from a real SMTP server on loopback, registration codes, and which devices
each removal takes."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from devicerows import add_device, devices, disabled_accounts, subscriptions
from smtp_sink import Sink, mail_settings, smtp_sink

from mpg import errors
from mpg.server import audit, mail, tables, verification
from mpg.server.directory import categories, codestore, domains, groups, regcodes, roster
from mpg.server.directory import devices as device_records
from mpg.wire import atrest, keys

ACTOR = "cli:test"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = tables.create_engine(db_url)
    tables.create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def keyring() -> atrest.Keyring:
    return atrest.Keyring({"k1": keys.new_master_key()}, "k1")


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as served:
        yield served


@pytest.fixture
def domain_store(
    engine: sa.Engine, keyring: atrest.Keyring, sink: tuple[Sink, int]
) -> domains.DomainStore:
    settings = mail_settings(sink[1])
    codes = codestore.CodeStore(codestore.code_key(keys.new_master_key()), keyring)
    mailer = mail.Mailer(mail.SmtpSettings.from_server(settings))
    return domains.DomainStore(engine, keyring, codes, mailer, settings.mail_from)


def _two_groups(engine: sa.Engine) -> groups.GroupStore:
    store = groups.GroupStore(engine)
    store.add("north", "North", "Nord", "https://files.example/north.xml", ACTOR)
    store.add("south", "South", "Süd", "", ACTOR)
    return store


def _verified(store: domains.DomainStore, sink: Sink, domain: str, group: str) -> None:
    address = f"it@{domain}"
    store.register(domain, group, address, ACTOR)
    store.verify(domain, group, sink.code(), ACTOR)


def test_groups_are_created_listed_changed_and_each_change_is_audited(engine: sa.Engine) -> None:
    store = _two_groups(engine)
    changed = store.change("south", ACTOR, name="South coast", file_url="https://f.example/s")
    assert (changed.name, changed.region, changed.file_url) == (
        "South coast",
        "Süd",
        "https://f.example/s",
    )
    assert [g.group_id for g in store.all()] == ["north", "south"]
    assert store.get("north").file_url == "https://files.example/north.xml"
    with pytest.raises(errors.Conflict, match="group north already exists"):
        store.add("north", "Again", "", "", ACTOR)
    assert [(e.action, e.target) for e in audit.entries(engine)] == [
        ("group.change", "south"),
        ("group.create", "south"),
        ("group.create", "north"),
    ]


def test_removing_a_group_with_devices_domains_or_codes_is_refused_naming_them(
    engine: sa.Engine, keyring: atrest.Keyring
) -> None:
    store = _two_groups(engine)
    add_device(engine, keyring, group="north", via="email", via_ref="firma.example")
    add_device(engine, keyring, group="north", via="email", via_ref="firma.example")
    regcodes.RegCodeStore(engine, b"k" * 32).create("Site A", "north", ACTOR)
    with pytest.raises(errors.Conflict, match="still has 2 devices, 1 registration code"):
        store.remove("north", ACTOR)
    assert store.get("north").group_id == "north"


def test_removing_an_empty_group_takes_its_categories_and_leaves_deleted_codes_blocked(
    engine: sa.Engine,
) -> None:
    store = _two_groups(engine)
    cats = categories.CategoryStore(engine)
    cats.add("south", "storm", "Storm", True, ACTOR)
    codes = regcodes.RegCodeStore(engine, b"k" * 32)
    made, _ = codes.create("Old", "south", ACTOR)
    codes.delete(made.code_id, ACTOR)

    store.remove("south", ACTOR)

    assert [g.group_id for g in store.all()] == ["north"]
    with pytest.raises(errors.NotFound, match="no group south"):
        cats.of_group("south")
    assert codes.get(made.code_id).status is regcodes.Status.DELETED


def test_categories_keep_their_creation_time_and_removing_one_drops_its_subscriptions(
    engine: sa.Engine, keyring: atrest.Keyring
) -> None:
    _two_groups(engine)
    cats = categories.CategoryStore(engine)
    storm = cats.add("north", "storm", "Storm warnings", True, ACTOR)
    cats.add("north", "flood", "Floods", False, ACTOR)
    device = add_device(
        engine, keyring, group="north", via="code", via_ref="x", subscriptions=("storm", "flood")
    )
    assert storm.created_at > 0
    assert [(c.category_id, c.preselected) for c in cats.of_group("north")] == [
        ("flood", False),
        ("storm", True),
    ]
    assert cats.change("north", "flood", ACTOR, preselected=True).preselected is True
    with pytest.raises(errors.Conflict):
        cats.add("north", "storm", "Again", False, ACTOR)

    assert cats.remove("north", "storm", ACTOR) == 1

    assert subscriptions(engine) == {(device, "flood")}
    with pytest.raises(errors.NotFound, match="group north has no category storm"):
        cats.get("north", "storm")


def test_a_domain_is_active_only_after_the_mailed_code_is_confirmed(
    engine: sa.Engine, domain_store: domains.DomainStore, sink: tuple[Sink, int]
) -> None:
    _two_groups(engine)
    pending = domain_store.register("Firma.Example", "north", "it@firma.example", ACTOR)
    assert (pending.domain, pending.verified, pending.region) == ("firma.example", False, "Nord")
    with engine.connect() as conn:
        assert device_records.verified_groups(conn, "firma.example") == []

    done = domain_store.verify("firma.example", "north", sink[0].code(), ACTOR)

    assert done.verified
    assert done.verified_at
    with engine.connect() as conn:
        assert device_records.verified_groups(conn, "firma.example") == ["north"]
    assert [e.action for e in audit.entries(engine)][:2] == ["domain.verify", "domain.register"]


def test_a_wrong_domain_code_is_refused_and_counted_until_the_code_is_spent(
    engine: sa.Engine, domain_store: domains.DomainStore, sink: tuple[Sink, int]
) -> None:
    _two_groups(engine)
    domain_store.register("firma.example", "north", "it@firma.example", ACTOR)
    right = sink[0].code()
    wrong = "000000" if right != "000000" else "111111"
    for left in (4, 3, 2, 1):
        with pytest.raises(errors.Refused, match=f"{left} tr") as refused:
            domain_store.verify("firma.example", "north", wrong, ACTOR)
        assert (refused.value.status, refused.value.code) == (403, "code_wrong")
    with pytest.raises(errors.Refused):
        domain_store.verify("firma.example", "north", wrong, ACTOR)
    with pytest.raises(errors.Refused) as spent:
        domain_store.verify("firma.example", "north", right, ACTOR)
    assert (spent.value.status, spent.value.code) == (403, "code_attempts_exhausted")

    domain_store.resend("firma.example", "north", ACTOR)
    fresh = sink[0].code()
    assert domain_store.verify("firma.example", "north", fresh, ACTOR).verified


def test_a_domain_address_must_be_at_that_domain_and_a_verified_one_is_not_registered_again(
    engine: sa.Engine, domain_store: domains.DomainStore, sink: tuple[Sink, int]
) -> None:
    _two_groups(engine)
    with pytest.raises(errors.ValidationError, match=r"must be one at firma\.example"):
        domain_store.register("firma.example", "north", "it@other.example", ACTOR)
    _verified(domain_store, sink[0], "firma.example", "north")
    with pytest.raises(errors.Conflict, match="already a verified domain of group north"):
        domain_store.register("firma.example", "north", "it@firma.example", ACTOR)


def test_removing_a_domain_removes_only_its_devices_in_that_group(
    engine: sa.Engine,
    keyring: atrest.Keyring,
    domain_store: domains.DomainStore,
    sink: tuple[Sink, int],
) -> None:
    _two_groups(engine)
    _verified(domain_store, sink[0], "firma.example", "north")
    _verified(domain_store, sink[0], "firma.example", "south")
    by_mail = add_device(
        engine, keyring, group="north", via="email", via_ref="firma.example", subscriptions=("any",)
    )
    by_token = add_device(engine, keyring, group="north", via="idtoken", via_ref="firma.example")
    other_group = add_device(engine, keyring, group="south", via="email", via_ref="firma.example")
    other_domain = add_device(engine, keyring, group="north", via="email", via_ref="else.example")
    by_code = add_device(engine, keyring, group="north", via="code", via_ref="firma.example")

    assert domain_store.impact("firma.example", "north") == domains.Impact(
        "firma.example", "north", 2
    )
    removed = domain_store.remove("firma.example", "north", ACTOR)

    assert removed.devices == 2
    assert devices(engine) == {other_group, other_domain, by_code}
    assert disabled_accounts(engine) == {by_mail, by_token}
    assert subscriptions(engine) == set()
    assert [(d.domain, d.group_id) for d in domain_store.all()] == [("firma.example", "south")]
    [entry, *_] = audit.entries(engine)
    assert (entry.action, entry.target, entry.detail) == (
        "domain.remove",
        "firma.example/north",
        "2 devices removed",
    )


def test_deleting_a_code_removes_its_devices_and_blocks_it_for_ever(
    engine: sa.Engine, keyring: atrest.Keyring
) -> None:
    _two_groups(engine)
    drawn = iter([verification.new_registration_code() for _ in range(3)])
    first = next(drawn)
    # The maker hands out the deleted code again: its digest stays taken, so a new one is drawn.
    replay = iter([first, first, next(drawn)])
    store = regcodes.RegCodeStore(engine, b"k" * 32, make=lambda: next(replay))
    made, code = store.create("Site A", "north", ACTOR, note="gate 2")
    assert code == first
    mine = [
        add_device(engine, keyring, group="north", via="code", via_ref=made.code_id)
        for _ in range(3)
    ]
    other = add_device(engine, keyring, group="north", via="email", via_ref=made.code_id)
    assert store.impact(made.code_id) == regcodes.Impact(made.code_id, "north", 3)
    assert store.get(made.code_id).devices == 3

    assert store.delete(made.code_id, ACTOR).devices == 3

    assert devices(engine) == {other}
    assert disabled_accounts(engine) == set(mine)
    gone = store.get(made.code_id)
    assert (gone.status, gone.devices) == (regcodes.Status.DELETED, 0)
    for again in (
        lambda: store.delete(made.code_id, ACTOR),
        lambda: store.change(made.code_id, ACTOR, name="revived"),
    ):
        with pytest.raises(errors.Refused) as refused:
            again()
        assert (refused.value.status, refused.value.code) == (410, "registration_code_deleted")
    second, second_code = store.create("Site B", "north", ACTOR)
    assert second_code != first
    assert {c.code_id for c in store.all()} == {made.code_id, second.code_id}


def test_codes_show_valid_expired_and_deleted_and_validity_can_be_changed(
    engine: sa.Engine,
) -> None:
    _two_groups(engine)
    now = [1_000_000.0]
    store = regcodes.RegCodeStore(engine, b"k" * 32, clock=lambda: now[0])
    lasting, _ = store.create("No end", "north", ACTOR)
    short, _ = store.create("Short", "south", ACTOR, valid_until=now[0] + 60)
    with pytest.raises(errors.ValidationError, match="valid_until"):
        store.create("Past", "north", ACTOR, valid_until=now[0] - 1)
    with pytest.raises(errors.NotFound, match="no group west"):
        store.create("Nowhere", "west", ACTOR)
    now[0] += 61
    assert {c.name: c.status for c in store.all()} == {
        "No end": regcodes.Status.VALID,
        "Short": regcodes.Status.EXPIRED,
    }
    assert [c.name for c in store.all("south")] == ["Short"]
    assert store.change(short.code_id, ACTOR, no_end=True).status is regcodes.Status.VALID
    assert store.change(lasting.code_id, ACTOR, valid_until=now[0] + 5).valid_until == now[0] + 5


def test_a_code_index_is_unique_in_the_table_itself(engine: sa.Engine) -> None:
    _two_groups(engine)
    code = verification.new_registration_code()
    store = regcodes.RegCodeStore(engine, b"k" * 32, make=lambda: code)
    store.create("One", "north", ACTOR)
    with pytest.raises(errors.Conflict, match="no unused registration code after 5 draws"):
        store.create("Two", "north", ACTOR)
    row = {
        "CodeId": "x",
        "CodeIndex": store.index(code),
        "Name": "n",
        "Note": "",
        "GroupId": "north",
        "Deleted": False,
        "CreatedAt": "now",
    }
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(tables.registration_code.insert().values(row))


def test_no_mail_server_means_a_domain_cannot_be_registered(
    engine: sa.Engine, keyring: atrest.Keyring, tmp_path: pathlib.Path
) -> None:
    _two_groups(engine)
    codes = codestore.CodeStore(codestore.code_key(keys.new_master_key()), keyring)
    store = domains.DomainStore(engine, keyring, codes, None, "")
    with pytest.raises(errors.Refused) as refused:
        store.register("firma.example", "north", "it@firma.example", ACTOR)
    assert (refused.value.status, refused.value.code) == (404, "mail_off")
    assert store.all() == []


def test_a_unix_time_is_stored_to_the_millisecond_on_every_database(engine: sa.Engine) -> None:
    # sa.Float was a 4-byte FLOAT on MariaDB: 1764528000.123 came back as 1764530000.0,
    # so the newest of two codes mailed a minute apart could not be told apart.
    when = 1_764_528_000.123
    with engine.begin() as conn:
        conn.execute(tables.seen_nonce.insert().values(NonceKey="n", ExpiresAt=when))
        stored = conn.execute(sa.select(tables.seen_nonce.c.ExpiresAt)).scalar_one()
    assert stored == pytest.approx(when, abs=0.001)


def test_two_admins_adding_one_group_at_once_get_a_conflict_not_a_fault(
    postgresql_url: str,
) -> None:
    engine = tables.create_engine(postgresql_url)
    tables.create_tables(engine)
    store = groups.GroupStore(engine)
    outcome: list[BaseException] = []

    def second() -> None:
        try:
            store.add("north", "North", "", "", "cli:two")
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    try:
        with engine.connect() as first, first.begin():
            # The first admin's row, not yet committed: the second insert waits on its key.
            first.execute(
                tables.message_group.insert().values(GroupId="north", Name="N", CreatedAt="t")
            )
            worker = threading.Thread(target=second)
            worker.start()
            with engine.connect() as watcher:
                waiting = sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                while watcher.execute(waiting).scalar_one() == 0 and worker.is_alive():
                    watcher.rollback()
                    time.sleep(0.01)
        worker.join()
    finally:
        engine.dispose()
    [refused] = outcome
    assert isinstance(refused, errors.Conflict), repr(refused)


def test_an_expired_code_keeps_its_devices_and_says_how_many(
    engine: sa.Engine, keyring: atrest.Keyring
) -> None:
    _two_groups(engine)
    now = [1_000_000.0]
    store = regcodes.RegCodeStore(engine, b"k" * 32, clock=lambda: now[0])
    made, _ = store.create("Short", "north", ACTOR, valid_until=now[0] + 60)
    device = add_device(engine, keyring, group="north", via="code", via_ref=made.code_id)
    now[0] += 3600
    expired = store.get(made.code_id)
    assert (expired.status, expired.devices) == (regcodes.Status.EXPIRED, 1)
    assert devices(engine) == {device}
    assert disabled_accounts(engine) == set()


def test_a_device_no_data_key_opens_is_listed_without_its_id_and_hides_no_other(
    engine: sa.Engine, keyring: atrest.Keyring
) -> None:
    _two_groups(engine)
    lost = atrest.Keyring({"gone": keys.new_master_key()}, "gone")
    unreadable = add_device(engine, lost, group="north", via="code", via_ref="c")
    readable = add_device(engine, keyring, group="north", via="code", via_ref="c", device_id="D-1")
    views = {v.account: v.device_id for v in roster.Roster(engine, keyring).all("north")}
    assert views == {unreadable: None, readable: "D-1"}
