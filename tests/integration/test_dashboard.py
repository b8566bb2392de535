"""The console dashboard's figures on each database (mpg.server.dashboard)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from clocks import ManualClock
from pushdevices import add_device, add_group

from mpg.server import accounts, dashboard, queues, tables
from mpg.server.push import jobs
from mpg.wire import atrest, keys, model

SENDER = "erp-a@example.com"
KEYRING = atrest.Keyring({"k1": bytes(range(32))}, "k1")
#: Half past an hour (1_800_000_000 is a whole hour in UTC).
NOW = 1_800_000_000.0 + 1800
HOUR = 3600.0


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A fresh server database of each kind, with its tables."""
    eng = tables.create_engine(db_url)
    tables.create_tables(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> accounts.AccountStore:
    """A gateway that sends and two users that receive."""
    s = accounts.AccountStore(engine, keys.new_master_key(), KEYRING)
    s.add(SENDER, "gateway")
    s.add("bob@example.com", "user")
    s.add("carol@example.com", "user")
    return s


def message(*to: str) -> model.OutgoingMessage:
    """A message from ``SENDER``'s gateway to users ``to``."""
    return model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=SENDER,
        sender="alice@example.com",
        receiver_type="U",
        receivers=to,
        bcc=(),
        subject="subject",
        content="<content/>",
        content_type="MSG",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 05:41:07",
    )


def submit_at(q: queues.QueueStore, clock: ManualClock, at: float, *to: str) -> model.SubmitResult:
    clock.now = at
    [result] = q.submit(SENDER, [message(*to)])
    return result


def job(engine: sa.Engine, account: str, state: jobs.JobState, error: str | None) -> None:
    """A push job that ended in ``state`` with ``error`` as the worker records it."""
    with engine.begin() as conn:
        conn.execute(
            tables.push_job.insert(),
            {
                "JobId": str(uuid.uuid4()),
                "AccountId": account,
                "GroupId": "acme",
                "Kind": "message",
                "Priority": "N",
                "State": state,
                "NotBefore": NOW,
                "Attempts": 1,
                "LastError": error,
                "CreatedAt": NOW,
                "DoneAt": NOW,
            },
        )


@pytest.fixture
def board(engine: sa.Engine, store: accounts.AccountStore) -> dashboard.Dashboard:
    """Messages of several ages and states, devices with push failures, then the dashboard.

    Stuck after two hours: the message of 30 hours ago and one of 3 hours ago wait for
    bob; carol's of 3 hours ago was acknowledged (served); the recent one is not stuck.
    """
    clock = ManualClock(NOW)
    q = queues.QueueStore(engine, store.vault, clock=clock)
    old = submit_at(q, clock, NOW - 30 * HOUR, "bob@example.com")
    waiting = submit_at(q, clock, NOW - 3 * HOUR, "bob@example.com")
    submit_at(q, clock, NOW - 3 * HOUR + 60, "carol@example.com")
    submit_at(q, clock, NOW - 60, "bob@example.com")
    refused = submit_at(q, clock, NOW - 60, "nobody@example.com")
    assert not refused.accepted
    assert old.accepted
    assert waiting.accepted
    clock.now = NOW
    batch = q.fetch("carol@example.com", 10, 60)
    assert q.ack("carol@example.com", [d.rx_message_id for d in batch.deliveries]) == 1

    add_group(engine, "acme")
    add_group(engine, "empty")
    phone = add_device(engine, store, KEYRING, "acme", "token-1")
    tablet = add_device(engine, store, KEYRING, "acme", "token-2")
    add_device(engine, store, KEYRING, "acme", "token-3")
    job(engine, phone, jobs.JobState.FAILED, "hook: token_gone Unregistered")
    job(engine, tablet, jobs.JobState.FAILED, "hook: token_gone Unregistered")
    job(engine, tablet, jobs.JobState.PARKED, "hook: config_alarm wrong topic")
    job(engine, phone, jobs.JobState.SENT, None)
    d = tables.device.c
    with engine.begin() as conn:
        token_at = conn.execute(sa.select(d.PushTokenAt).where(d.AccountId == phone)).scalar()
        jobs.mark_token(conn, phone, jobs.TOKEN_REMOVED, "hook: token_gone", NOW, token_at=token_at)
    with engine.begin() as conn:
        conn.execute(
            tables.device.update()
            .where(d.AccountId == tablet)
            .values(PushTokenState=jobs.TOKEN_FLAGGED, PushTokenStateReason="hook: BadTopic")
        )
    board = dashboard.collect(engine, q, store.vault, stuck_after=2 * HOUR, now=NOW)
    board_ids = [m.message_id for m in board.stuck]
    assert board_ids == [old.message_id, waiting.message_id]
    return board


def counts(items: tuple[dashboard.Count, ...]) -> dict[str, int]:
    return {c.label: c.count for c in items}


def test_messages_are_counted_per_state_with_every_state_listed(
    board: dashboard.Dashboard,
) -> None:
    assert counts(board.messages) == {"queued": 3, "served": 1, "refused": 1}


def test_each_of_the_last_24_hours_counts_the_messages_accepted_in_it(
    board: dashboard.Dashboard,
) -> None:
    """The 30-hour-old message is outside; the current hour is last."""
    hours = board.per_hour
    assert len(hours) == dashboard.HOURS
    assert hours[-1].start == NOW - 1800
    assert all(b.start - a.start == HOUR for a, b in itertools.pairwise(hours))
    by_start = {h.start: h.count for h in hours}
    assert by_start[NOW - 1800] == 2  # the recent one and the refused one
    assert by_start[NOW - 1800 - 3 * HOUR] == 2
    assert sum(by_start.values()) == 4


def test_stuck_messages_are_those_queued_longer_than_stuck_after_oldest_first(
    board: dashboard.Dashboard,
) -> None:
    """The served one and the one a minute old are not stuck; senders are named."""
    assert board.stuck_count == 2
    assert [m.received_at for m in board.stuck] == [NOW - 30 * HOUR, NOW - 3 * HOUR]
    assert {m.sender for m in board.stuck} == {SENDER}
    assert all(m.recipients == 1 and m.served == 0 for m in board.stuck)


def test_queue_depth_is_shown_per_recipient_deepest_first(board: dashboard.Dashboard) -> None:
    """Bob has three messages waiting; the sender carol's receipt."""
    assert board.depths[0] == dashboard.Count("bob@example.com", 3)
    assert counts(board.depths) == {"bob@example.com": 3, SENDER: 1}


def test_push_failures_are_counted_by_state_and_reason_most_first(
    board: dashboard.Dashboard,
) -> None:
    """Sent jobs are not failures."""
    assert board.push_failures == (
        dashboard.Count("failed: hook: token_gone Unregistered", 2),
        dashboard.Count("parked: hook: config_alarm wrong topic", 1),
    )


def test_removed_and_flagged_tokens_are_counted_by_reason(board: dashboard.Dashboard) -> None:
    assert counts(board.token_problems) == {
        "token removed: hook: token_gone": 1,
        "token flagged: hook: BadTopic": 1,
    }


def test_devices_are_counted_per_group_groups_without_devices_included(
    board: dashboard.Dashboard,
) -> None:
    assert board.devices == (dashboard.Count("acme", 3), dashboard.Count("empty", 0))


def test_an_empty_server_shows_zeros(engine: sa.Engine, store: accounts.AccountStore) -> None:
    q = queues.QueueStore(engine, store.vault, clock=ManualClock(NOW))
    board = dashboard.collect(engine, q, store.vault, stuck_after=HOUR, now=NOW)
    assert counts(board.messages) == {"queued": 0, "served": 0, "refused": 0}
    assert [h.count for h in board.per_hour] == [0] * dashboard.HOURS
    assert (board.stuck_count, board.stuck, board.depths) == (0, (), ())
    assert (board.push_failures, board.token_problems, board.devices) == ((), (), ())
