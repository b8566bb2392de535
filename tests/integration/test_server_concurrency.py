"""Several server processes on one database: each races the others only through it.

Each "process" here is a store with an engine (and so a connection pool) of its own,
driven from threads that start together, which is what two ``mpg server`` processes
do to the database. The proofs are counts in the database, never timings.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import pytest
import sqlalchemy as sa
from test_server_queues import KEYRING, SENDER, message, recall_of

from mpg import errors
from mpg.db import notify
from mpg.server import accounts, auth, queues, replay, states, tables, vault
from mpg.wire import envelope, keys, payloads

RECIPIENTS = ("bob@example.com", "carol@example.com", "dave@example.com")
PROCESSES = 2
THREADS_PER_PROCESS = 3

_T = TypeVar("_T")
MASTER_KEY = keys.new_master_key()
VAULT = vault.Vault(MASTER_KEY, KEYRING)


@pytest.fixture
def engines(db_url: str) -> Iterator[list[sa.Engine]]:
    """One engine per simulated server process on the same fresh database."""
    made = [tables.create_engine(db_url) for _ in range(PROCESSES)]
    tables.create_tables(made[0])
    store = accounts.AccountStore(made[0], MASTER_KEY, KEYRING)
    store.add(SENDER, "gateway")
    for name in RECIPIENTS:
        store.add(name, "user")
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def stores(engines: list[sa.Engine]) -> list[queues.QueueStore]:
    """A queue store per simulated process."""
    return [queues.QueueStore(engine, VAULT) for engine in engines]


def together(work: Sequence[Callable[[], _T]]) -> list[_T]:
    """Run each callable on its own thread, all released at once; their results in order."""
    gate = threading.Barrier(len(work))
    results: list[_T | None] = [None] * len(work)
    failures: list[BaseException] = []

    def run(n: int) -> None:
        gate.wait()
        try:
            results[n] = work[n]()
        except BaseException as exc:  # re-raised below on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [r for r in results if r is not None]


def spread(stores: list[queues.QueueStore], count: int) -> list[queues.QueueStore]:
    """``count`` stores taken round-robin: the work spread over the processes."""
    return [stores[n % len(stores)] for n in range(count)]


def message_row(engine: sa.Engine, message_id: str) -> tables.Row:
    t = tables.transmit_queue.c
    with engine.connect() as conn:
        return conn.execute(sa.select(tables.transmit_queue).where(t.MessageId == message_id)).one()


def times_served(engine: sa.Engine, message_id: str) -> int:
    """How often the message was recorded served with its receipt queued (both must
    happen once)."""
    e, q = tables.message_event.c, tables.receipt_queue.c
    events = sa.select(sa.func.count()).where(e.MessageId == message_id, e.Kind == "served")
    queued = sa.select(sa.func.count()).where(q.MessageId == message_id)
    with engine.connect() as conn:
        count = int(conn.execute(events).scalar_one())
        assert int(conn.execute(queued).scalar_one()) == count
        return count


def test_one_tx_submitted_to_every_process_at_once_is_accepted_once(
    stores: list[queues.QueueStore], engines: list[sa.Engine]
) -> None:
    """Racing submits of one TxMessageId all get the one stored answer."""
    msg = message(RECIPIENTS, tx="tx-race")
    workers = spread(stores, PROCESSES * THREADS_PER_PROCESS)
    answers = together([lambda s=s: s.submit(SENDER, [msg])[0] for s in workers])
    assert len({a.message_id for a in answers}) == 1
    assert all(a.accepted for a in answers)
    t = tables.transmit_queue.c
    with engines[0].connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).where(t.TxMessageId == "tx-race"))
        assert rows.scalar_one() == 1


def test_processes_fetching_one_queue_never_lease_the_same_entry(
    stores: list[queues.QueueStore],
) -> None:
    """Concurrent fetches for one account from every process split its entries."""
    total = 200
    stores[0].submit(SENDER, [message(("bob",)) for _ in range(total)])

    def drain(store: queues.QueueStore) -> list[str]:
        got: list[str] = []
        while batch := store.fetch("bob@example.com", 7, 600).deliveries:
            got.extend(d.rx_message_id for d in batch)
        return got

    workers = spread(stores, PROCESSES * THREADS_PER_PROCESS)
    leased = [entry for got in together([lambda s=s: drain(s) for s in workers]) for entry in got]
    assert len(leased) == total
    assert len(set(leased)) == total


def test_racing_acks_and_a_recall_count_each_entry_once_and_queue_one_receipt(
    stores: list[queues.QueueStore], engines: list[sa.Engine]
) -> None:
    """Acks from every process racing a recall: served + recalled = recipients, one receipt."""
    sent = stores[0].submit(SENDER, [message(RECIPIENTS) for _ in range(20)])
    leased = {name: stores[1].fetch(name, 100, 600).deliveries for name in RECIPIENTS}
    recalled = sent[0].message_id
    work: list[Callable[[], object]] = [
        lambda: stores[1].submit(SENDER, [recall_of(recalled)]),
    ]
    for n, (name, batch) in enumerate(leased.items()):
        ids = [d.rx_message_id for d in batch]
        # Every entry is acked twice, from both processes: a repeat counts nothing.
        work.append(lambda s=stores[n % PROCESSES], nm=name, i=ids: s.ack(nm, i))
        work.append(lambda s=stores[(n + 1) % PROCESSES], nm=name, i=ids: s.ack(nm, i))
    together(work)
    for result in sent:
        row = message_row(engines[0], result.message_id)
        assert row.State == states.MessageState.SERVED
        assert row.ServedCount + row.RecalledCount == len(RECIPIENTS)
        assert times_served(engines[0], result.message_id) == 1
    others = [message_row(engines[0], r.message_id) for r in sent[1:]]
    assert collections.Counter(row.ServedCount for row in others) == {len(RECIPIENTS): 19}


def test_an_envelope_accepted_by_one_process_is_refused_by_another(
    engines: list[sa.Engine],
) -> None:
    """The nonce table makes a replay to another process a replay."""
    first, second = (replay.SharedReplayGuard(engine, 300) for engine in engines)
    header = envelope.request_header(SENDER, "k1", "fetch")
    first.record(first.admit(header))
    with pytest.raises(errors.ReplayedEnvelope):
        second.record(second.admit(header))
    second.record(second.admit(envelope.request_header(SENDER, "k1", "fetch")))


def test_a_replay_whose_nonce_rides_on_a_submit_stores_nothing_in_another_process(
    engines: list[sa.Engine], stores: list[queues.QueueStore]
) -> None:
    """The nonce written in the submit's own transaction: the replay's batch is rolled
    back with it, and the first submit stands."""
    first, second = (replay.SharedReplayGuard(engine, 300) for engine in engines)
    header = envelope.request_header(SENDER, "k1", "submit")
    [accepted] = stores[0].submit(SENDER, [message()], first.admit(header))
    with pytest.raises(errors.ReplayedEnvelope):
        stores[1].submit(SENDER, [message(tx="another")], second.admit(header))
    with engines[0].connect() as conn:
        stored = conn.execute(sa.select(tables.transmit_queue.c.TxMessageId)).scalars().all()
    assert stored == [accepted.tx_message_id]


def test_a_nonce_that_rode_on_a_fetch_is_written_once_and_refuses_a_replay(
    engines: list[sa.Engine], stores: list[queues.QueueStore]
) -> None:
    """A long poll looks again and again with the same nonce: only its first committed
    look writes it, and a replay to the other process is refused at its own look."""
    first, second = (replay.SharedReplayGuard(engine, 300) for engine in engines)
    header = envelope.request_header(RECIPIENTS[0], "k1", "fetch")
    nonce = first.admit(header)
    for _ in range(3):
        stores[0].fetch(RECIPIENTS[0], 10, 60.0, (), nonce)
    assert nonce.done
    with pytest.raises(errors.ReplayedEnvelope):
        stores[1].fetch(RECIPIENTS[0], 10, 60.0, (), second.admit(header))
    with engines[0].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.seen_nonce)).scalar() == 1


def test_a_riding_nonce_no_transaction_carried_is_settled_on_its_own(
    engines: list[sa.Engine],
) -> None:
    """An operation that wrote nothing (here: none ran) leaves the nonce to
    ``settle``, after which a replay to the other process is refused all the same."""
    store = accounts.AccountStore(engines[0], MASTER_KEY, KEYRING)
    name, credential = store.add("erin@example.com", "user")
    openers = [
        auth.RequestOpener(
            accounts.AccountStore(engine, MASTER_KEY, KEYRING),
            replay.SharedReplayGuard(engine, 300),
        )
        for engine in engines
    ]
    header = envelope.request_header(name, credential.key_id, "fetch")
    body = envelope.seal(credential.secret, header, payloads.build_fetch(1, 0))
    opened = openers[0].open("fetch", body, nonce_rides=True)
    assert opened.nonce is not None
    assert not opened.nonce.done
    openers[0].settle(opened.nonce)
    assert opened.nonce.done
    with pytest.raises(errors.ReplayedEnvelope):
        openers[1].open("fetch", body)


def test_expired_nonces_are_pruned_from_the_shared_table(engines: list[sa.Engine]) -> None:
    """Nonces whose timestamp left the window are deleted by the next check."""
    now = [time.time()]
    guard = replay.SharedReplayGuard(engines[0], 300, clock=lambda: now[0])
    guard.record(guard.admit(envelope.request_header(SENDER, "k1", "fetch", now=now[0])))
    now[0] += 300 + replay.PRUNE_EVERY_SECONDS + 1
    guard.record(guard.admit(envelope.request_header(SENDER, "k1", "fetch", now=now[0])))
    with engines[0].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.seen_nonce)).scalar() == 1


class Heard:
    """What a listener on the queued channel heard, on a database with bob and SENDER."""

    def __init__(self, engine: sa.Engine, until: Callable[[str], bool]) -> None:
        self.engine = engine
        self.payloads: list[str] = []
        self.done = threading.Event()
        self._until = until

    def deliver(self, payload: str) -> None:
        self.payloads.append(payload)
        if self._until(payload):
            self.done.set()


@contextlib.contextmanager
def listening(postgresql_url: str, until: Callable[[str], bool]) -> Iterator[Heard]:
    """A listener on the queued channel of a fresh server database, until it is done."""
    engine = tables.create_engine(postgresql_url)
    tables.create_tables(engine)
    store = accounts.AccountStore(engine, MASTER_KEY, KEYRING)
    store.add(SENDER, "gateway")
    store.add("bob@example.com", "user")
    heard = Heard(engine, until)
    listener = notify.ChannelListener(engine, tables.QUEUED_CHANNEL, heard.deliver, lambda: None)
    listener.start()
    try:
        assert listener.listening.wait(30)
        yield heard
        assert heard.done.wait(30)
    finally:
        listener.stop()
        engine.dispose()


def test_a_commit_in_one_process_notifies_listeners_of_every_process(
    postgresql_url: str,
) -> None:
    """On PostgreSQL, a submit through one store is heard on the queued channel."""
    with listening(postgresql_url, lambda payload: True) as heard:
        other = tables.create_engine(postgresql_url)
        queues.QueueStore(other, VAULT).submit(SENDER, [message(("bob",))])
        other.dispose()
    assert heard.payloads == [VAULT.account_id("bob@example.com")]  # the pseudonym, not the name


def test_receipts_are_announced_apart_from_entries_on_postgresql(postgresql_url: str) -> None:
    """The ack that serves a message announces its sender's receipt with the receipts
    prefix (paced by mpg.server.receiptwakes), the recipient's entry without it."""
    with listening(postgresql_url, lambda p: p.startswith(tables.RECEIPTS_PREFIX)) as heard:
        q = queues.QueueStore(heard.engine, VAULT)
        q.submit(SENDER, [message(("bob",))])
        [delivery] = q.fetch("bob@example.com", 10, 60).deliveries
        q.ack("bob@example.com", [delivery.rx_message_id])
    assert heard.payloads == [
        VAULT.account_id("bob@example.com"),
        tables.RECEIPTS_PREFIX + VAULT.account_id(SENDER),
    ]
