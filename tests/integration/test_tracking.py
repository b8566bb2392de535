"""Message tracking on each database: search, keyset pages, timelines, recall, push again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pushdevices
import pytest
import sqlalchemy as sa
from clocks import ManualClock

from mpg import errors
from mpg.server import accounts, audit, housekeeping, messageops, queues, tables, tracking
from mpg.server.push import jobs as push_jobs
from mpg.wire import atrest, keys, model

SENDER = "erp-a@example.com"
OTHER = "erp-b@example.com"
KEYRING = atrest.Keyring({"k1": bytes(range(32))}, "k1")
ACTOR = "console:olga"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = tables.create_engine(db_url)
    tables.create_tables(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> accounts.AccountStore:
    s = accounts.AccountStore(engine, keys.new_master_key(), KEYRING)
    for name in (SENDER, OTHER):
        s.add(name, "gateway")
    for name in ("bob@example.com", "carol@example.com"):
        s.add(name, "user")
    return s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture
def q(engine: sa.Engine, store: accounts.AccountStore, clock: ManualClock) -> queues.QueueStore:
    return queues.QueueStore(engine, store.vault, clock=clock)


def message(
    to: tuple[str, ...] = ("bob@example.com",),
    *,
    tx: str | None = None,
    app_code: str = "BPM",
    keywords: str = "",
    agent: str = SENDER,
    subject: str = "subject",
    receiver_type: str = "U",
) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id=tx or str(uuid.uuid4()),
        app_code=app_code,
        source_domain="example.com",
        agent_sender=agent,
        sender="",
        receiver_type=receiver_type,
        receivers=to,
        bcc=(),
        subject=subject,
        content="<content/>",
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords=keywords,
        transmit_time="2026-11-23 05:41:07",
    )


def send(
    q: queues.QueueStore, clock: ManualClock, msg: model.OutgoingMessage, sender: str = SENDER
) -> str:
    clock.now += 10
    [result] = q.submit(sender, [msg])
    assert result.accepted, result.reason
    return result.message_id


def ids(engine: sa.Engine, store: accounts.AccountStore, **query: object) -> list[str]:
    page = tracking.search(engine, store.vault, tracking.Query(**query))  # type: ignore[arg-type]
    return [found.message_id for found in page.items]


def test_each_filter_finds_its_messages_newest_first(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    flood = send(q, clock, message(keywords="Flood; North", tx="tx-flood", subject="River"))
    fire = send(q, clock, message(("carol@example.com",), keywords="fire", app_code="ALR"))
    other = send(q, clock, message(keywords="flood", agent=OTHER), sender=OTHER)
    assert ids(engine, store) == [other, fire, flood]
    assert ids(engine, store, keywords="FLOOD") == [other, flood]
    assert ids(engine, store, keywords="flood;north") == [flood]
    assert ids(engine, store, keywords="drought") == []
    assert ids(engine, store, sender=" ERP-B@example.com ") == [other]
    assert ids(engine, store, recipient="carol@example.com") == [fire]
    assert ids(engine, store, app_code="ALR") == [fire]
    assert ids(engine, store, tx_message_id="tx-flood") == [flood]
    assert ids(engine, store, message_id=fire) == [fire]
    assert ids(engine, store, state="queued", sender=SENDER) == [fire, flood]
    assert ids(engine, store, since=1_800_000_020.0) == [other, fire]
    assert ids(engine, store, until=1_800_000_020.0) == [flood]
    [found] = tracking.search(engine, store.vault, tracking.Query(message_id=flood)).items
    assert (found.subject, found.sender, found.recipients) == ("River", SENDER, 1)


def test_pages_continue_after_the_last_row_without_gaps_or_repeats(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    # One batch: every message shares its ReceivedAt, so MessageId orders them.
    clock.now += 1
    results = q.submit(SENDER, [message(keywords="batch") for _ in range(5)])
    everything = set()
    for query in (tracking.Query(), tracking.Query(keywords="batch")):
        seen: list[str] = []
        after = ""
        while True:
            page = tracking.search(engine, store.vault, query, limit=2, after=after)
            seen += [f.message_id for f in page.items]
            if page.after is None:
                break
            after = page.after
        assert sorted(seen) == sorted(r.message_id for r in results)
        assert len(seen) == 5
        everything.add(tuple(seen))
    assert len(everything) == 1  # the same order through both indexes


def test_a_busy_recipient_s_messages_are_found_by_walking_the_messages(
    engine: sa.Engine,
    store: accounts.AccountStore,
    q: queues.QueueStore,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = [send(q, clock, message(("bob@example.com",))) for _ in range(4)]
    send(q, clock, message(("carol@example.com",)))
    few = ids(engine, store, recipient="bob@example.com")
    monkeypatch.setattr(tracking, "BUSY", 3)
    assert ids(engine, store, recipient="bob@example.com") == few == sent[::-1]
    page = tracking.search(
        engine, store.vault, tracking.Query(recipient="bob@example.com"), limit=3
    )
    assert page.after is not None
    rest = tracking.search(
        engine, store.vault, tracking.Query(recipient="bob@example.com"), after=page.after
    )
    assert [f.message_id for f in page.items + rest.items] == sent[::-1]


@pytest.mark.parametrize(
    ("query", "after", "field"),
    [
        (tracking.Query(state="lost"), "", "state"),
        (tracking.Query(), "yesterday", "after"),
        (tracking.Query(), "nan~x", "after"),
        (tracking.Query(keywords=";".join("abcdef")), "", "keywords"),
        (tracking.Query(sender="x" * 101), "", "sender"),
    ],
)
def test_a_search_no_message_could_match_is_refused_naming_the_field(
    engine: sa.Engine, store: accounts.AccountStore, query: tracking.Query, after: str, field: str
) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        tracking.search(engine, store.vault, query, after=after)
    assert caught.value.field == field


def test_keywords_are_kept_only_as_blind_indexes(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    send(q, clock, message(keywords="secret-project"))
    with engine.connect() as conn:
        stored = conn.execute(sa.select(tables.message_keyword)).all()
    assert len(stored) == 1
    assert stored[0].KeywordIndex == store.vault.keyword_index(" Secret-Project ")
    assert "secret" not in stored[0].KeywordIndex


def test_retention_takes_a_message_s_keywords_with_it(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    send(q, clock, message(keywords="old"))
    batch = q.fetch("bob@example.com", 10, 60)
    q.ack("bob@example.com", [d.rx_message_id for d in batch.deliveries])
    receipt = q.fetch(SENDER, 10, 60)
    q.ack(SENDER, [r.entry_id for r in receipt.receipts])
    housekeeping.purge(engine, 1, clock=lambda: clock.now + 2 * 86400)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(tables.message_keyword)).scalar()
            == 0
        )


def test_the_timeline_follows_each_recipient_and_the_recall_to_them(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    vault = store.vault
    mid = send(q, clock, message(("bob@example.com", "carol@example.com")))
    start = tracking.timeline(engine, vault, mid)
    assert {r.name: r.status for r in start.recipients} == {
        "bob@example.com": "queued",
        "carol@example.com": "queued",
    }
    assert [s.kind for s in start.sender_steps] == ["received"]
    assert not start.final
    [bob_copy] = q.fetch("bob@example.com", 10, 60).deliveries
    assert tracking.timeline(engine, vault, mid).recipients[0].status == "fetched"
    q.ack("bob@example.com", [bob_copy.rx_message_id])

    outcome = messageops.recall(engine, vault, q, mid, ACTOR)
    assert (outcome.withdrawn, outcome.notified) == (1, 1)
    after = tracking.timeline(engine, vault, mid)
    bob, carol = after.recipients
    assert (bob.status, bob.recall_state) == ("acknowledged", "queued")
    assert (carol.status, carol.recall_state) == ("withdrawn", "")
    assert after.recalled
    assert len(after.recall_ids) == 1
    assert not after.final  # the RECALL and the receipt are on their way

    [the_recall] = q.fetch("bob@example.com", 10, 60).deliveries
    assert the_recall.content_type == "RECALL"
    q.ack("bob@example.com", [the_recall.rx_message_id])
    receipts = q.fetch(SENDER, 10, 60).receipts
    q.ack(SENDER, [r.entry_id for r in receipts])
    done = tracking.timeline(engine, vault, mid)
    assert done.recipients[0].recall_state == "acked"
    assert [s.kind for s in done.recipients[0].steps] == [
        "fetched",
        "acknowledged",
        "recall fetched",
        "recall acknowledged",
    ]
    assert done.final
    [entry] = audit.entries(engine)
    assert (entry.actor, entry.action, entry.target) == (ACTOR, "message.recall", mid)


def test_a_message_is_recalled_once_and_a_refused_one_not_at_all(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    mid = send(q, clock, message())
    messageops.recall(engine, store.vault, q, mid, ACTOR)
    with pytest.raises(errors.Conflict, match="recalled already"):
        messageops.recall(engine, store.vault, q, mid, ACTOR)
    [refused] = q.submit(SENDER, [message(("nobody@example.com",))])
    assert not refused.accepted
    with engine.connect() as conn:
        refused_id = conn.execute(
            sa.select(tables.transmit_queue.c.MessageId).where(
                tables.transmit_queue.c.State == "refused"
            )
        ).scalar_one()
    with pytest.raises(errors.Conflict, match="refused"):
        messageops.recall(engine, store.vault, q, refused_id, ACTOR)
    with pytest.raises(errors.NotFound):
        messageops.recall(engine, store.vault, q, "no-such-message", ACTOR)


def test_push_again_queues_one_push_for_a_device_still_waiting(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    pushdevices.add_group(engine, "north")
    device = pushdevices.add_device(engine, store, KEYRING, "north", "token-1")
    mid = send(q, clock, message((device,), receiver_type="D"))
    with pytest.raises(errors.Conflict, match="waiting to be sent already"):
        messageops.push_again(engine, mid, device, ACTOR)
    j = tables.push_job.c
    with engine.begin() as conn:
        conn.execute(tables.push_job.update().values(State=push_jobs.JobState.FAILED))
    clock.now += 5  # the operator pushes again after the first push failed
    messageops.push_again(engine, mid, device, ACTOR, clock=clock)
    with engine.connect() as conn:
        states = conn.execute(sa.select(j.State).where(j.MessageId == mid)).scalars().all()
    assert sorted(states) == ["failed", "pending"]
    assert audit.entries(engine)[0].action == "message.push_again"
    timeline = tracking.timeline(engine, store.vault, mid)
    assert [p.state for p in timeline.recipients[0].pushes] == ["failed", "pending"]
    with pytest.raises(errors.NotFound):
        messageops.push_again(engine, mid, store.vault.account_id("bob@example.com"), ACTOR)


def test_push_again_is_refused_for_a_recipient_that_is_no_device_or_has_it(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore, clock: ManualClock
) -> None:
    mid = send(q, clock, message(("bob@example.com", "carol@example.com")))
    with pytest.raises(errors.Conflict, match="not a device"):
        messageops.push_again(engine, mid, store.vault.account_id("carol@example.com"), ACTOR)
    [copy] = q.fetch("bob@example.com", 10, 60).deliveries
    q.ack("bob@example.com", [copy.rx_message_id])
    with pytest.raises(errors.Conflict, match="has the message already"):
        messageops.push_again(engine, mid, store.vault.account_id("bob@example.com"), ACTOR)


def test_an_unknown_message_has_no_timeline(
    engine: sa.Engine, store: accounts.AccountStore
) -> None:
    with pytest.raises(errors.NotFound):
        tracking.timeline(engine, store.vault, "no-such-message")


def test_a_deployed_database_gets_the_search_indexes_at_start(engine: sa.Engine) -> None:
    [index] = [i for i in tables.transmit_queue.indexes if i.name == "IX_TransmitQueue_Sender"]
    with engine.begin() as conn:
        index.drop(conn)
    tables.create_tables(engine)
    names = {i["name"] for i in sa.inspect(engine).get_indexes("TransmitQueue")}
    assert "IX_TransmitQueue_Sender" in names
