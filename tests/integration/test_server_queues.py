"""The server's queues on each database: fan-out, leases, receipts, recall."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from clocks import ManualClock

from mpg import errors
from mpg.server import accounts, blobs, housekeeping, queues, tables
from mpg.wire import atrest, content, keys, model

SENDER = "erp-a@example.com"
KEYRING = atrest.Keyring({"k1": bytes(range(32))}, "k1")
OTHER_SENDER = "erp-b@example.com"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A fresh server database of each kind, with its tables."""
    eng = tables.create_engine(db_url)
    tables.create_tables(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> accounts.AccountStore:
    """Accounts: two gateways, three users, one device, one disabled user."""
    s = accounts.AccountStore(engine, keys.new_master_key(), KEYRING)
    for name in (SENDER, OTHER_SENDER):
        s.add(name, "gateway")
    for name in ("bob@example.com", "carol@example.com", "dave@example.com", "gone@example.com"):
        s.add(name, "user")
    s.add("SN-0001", "device")
    s.disable("gone@example.com")
    return s


@pytest.fixture
def clock() -> ManualClock:
    """The hand-moved clock."""
    return ManualClock(1_800_000_000.0)


@pytest.fixture
def woken() -> list[frozenset[str]]:
    """AccountIds the queue store woke, in order."""
    return []


@pytest.fixture
def q(
    engine: sa.Engine, store: accounts.AccountStore, clock: ManualClock, woken: list[frozenset[str]]
) -> queues.QueueStore:
    """The queue store under test."""
    return queues.QueueStore(engine, store.vault, clock=clock, listener=woken.append)


def message(
    to: tuple[str, ...] = ("bob@example.com",),
    bcc: tuple[str, ...] = (),
    *,
    tx: str | None = None,
    receiver_type: str = "U",
    content_type: str = "MSG",
    body: str = "<content/>",
    priority: str = "N",
    agent: str = SENDER,
    sender: str = "alice@example.com",
) -> model.OutgoingMessage:
    """An outgoing message as the gateway of ``agent`` would submit it."""
    return model.OutgoingMessage(
        tx_message_id=tx or str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=agent,
        sender=sender,
        receiver_type=receiver_type,
        receivers=to,
        bcc=bcc,
        subject="subject",
        content=body,
        content_type=content_type,
        alert_flag=True,
        priority=priority,
        keywords="",
        transmit_time="2026-11-23 05:41:07",
    )


def recall_of(message_id: str, agent: str = SENDER) -> model.OutgoingMessage:
    """The RECALL row of reference §3 for ``message_id``, sent by ``agent``."""
    return message(
        ("psereceiver",),
        content_type="RECALL",
        body=content.build_recall(message_id),
        agent=agent,
    )


def test_fan_out_gives_each_bcc_recipient_only_itself(q: queues.QueueStore) -> None:
    """To recipients see an empty BccList; each Bcc recipient sees only its own name."""
    [result] = q.submit(SENDER, [message(("bob",), ("carol@example.com", "dave@example.com"))])
    assert result.accepted
    assert result.recipients == 3
    assert result.unknown == ()
    seen = {}
    for owner in ("bob@example.com", "carol@example.com", "dave@example.com"):
        [delivery] = q.fetch(owner, 10, 60).deliveries
        seen[owner] = delivery
        assert delivery.owner == owner
        assert delivery.message_id == result.message_id
        assert delivery.receiver_list == "bob@example.com"
    assert seen["bob@example.com"].bcc_list == ""
    assert seen["carol@example.com"].bcc_list == "carol@example.com"
    assert seen["dave@example.com"].bcc_list == "dave@example.com"
    assert len({d.rx_message_id for d in seen.values()}) == 3


def test_unknown_and_disabled_recipients_are_reported_not_dropped(
    q: queues.QueueStore,
) -> None:
    """Recipients without an enabled account come back in ``unknown``."""
    [result] = q.submit(SENDER, [message(("bob", "nobody", "gone@example.com"))])
    assert result.accepted
    assert result.recipients == 1
    assert result.unknown == ("nobody@example.com", "gone@example.com")


def test_message_without_any_known_recipient_is_refused_naming_them(
    q: queues.QueueStore,
) -> None:
    """No known recipient: refused, and the reason names who was unknown."""
    [result] = q.submit(SENDER, [message(("nobody",))])
    assert not result.accepted
    assert "nobody@example.com" in result.reason


def test_device_recipients_must_be_device_accounts(q: queues.QueueStore) -> None:
    """ReceiverType D reaches devices only; a user name in a D list is unknown."""
    [result] = q.submit(SENDER, [message(("SN-0001", "bob@example.com"), receiver_type="D")])
    assert result.recipients == 1
    assert result.unknown == ("bob@example.com",)
    assert len(q.fetch("SN-0001", 10, 60).deliveries) == 1


def test_resubmitting_returns_the_first_result(q: queues.QueueStore) -> None:
    """Submit is idempotent per (account, tx): same MessageId, no second fan-out."""
    msg = message(("bob",))
    [first] = q.submit(SENDER, [msg])
    [again, twin] = q.submit(SENDER, [msg, msg])
    assert again == first == twin
    assert len(q.fetch("bob@example.com", 10, 60).deliveries) == 1


def test_an_answer_the_row_says_is_not_kept_twice_and_every_answer_comes_back(
    q: queues.QueueStore, engine: sa.Engine
) -> None:
    """A plain acceptance is rebuilt from the row; one naming unknowns is kept whole."""
    plain, partly = message(("bob",), tx="plain"), message(("bob", "nobody"), tx="partly")
    first = q.submit(SENDER, [plain, partly])
    assert first[1].unknown == ("nobody@example.com",)
    t = tables.transmit_queue.c
    with engine.connect() as conn:
        kept = dict(conn.execute(sa.select(t.TxMessageId, t.SubmitResultEnc)).all())
    assert kept["plain"] is None
    assert kept["partly"] is not None
    assert q.submit(SENDER, [plain, partly]) == first


def test_same_tx_from_another_account_is_another_message(q: queues.QueueStore) -> None:
    """Idempotency is per sending account, not global."""
    [a] = q.submit(SENDER, [message(("bob",), tx="same")])
    [b] = q.submit(OTHER_SENDER, [message(("bob",), tx="same", agent=OTHER_SENDER)])
    assert a.message_id != b.message_id


def test_fetch_orders_by_priority_then_arrival(q: queues.QueueStore) -> None:
    """Urgent before high before normal before low; equal priority in arrival order."""
    order = ["L", "N", "E", "N", "H"]
    results = q.submit(SENDER, [message(("bob",), priority=p) for p in order])
    ids = [r.message_id for r in results]
    batch = q.fetch("bob@example.com", 10, 60)
    assert [d.message_id for d in batch.deliveries] == [ids[2], ids[4], ids[1], ids[3], ids[0]]


def test_fetch_leases_and_redelivers_after_the_lease_expires(
    q: queues.QueueStore, clock: ManualClock
) -> None:
    """A leased entry is not fetched again until its lease runs out unacknowledged."""
    q.submit(SENDER, [message(("bob",))])
    [first] = q.fetch("bob@example.com", 10, 30).deliveries
    assert q.fetch("bob@example.com", 10, 30) == model.FetchBatch()
    clock.now += 31
    [again] = q.fetch("bob@example.com", 10, 30).deliveries
    assert again.rx_message_id == first.rx_message_id


def test_a_message_handed_out_from_memory_is_the_one_the_database_holds(
    engine: sa.Engine, store: accounts.AccountStore, clock: ManualClock, files: blobs.BlobStore
) -> None:
    """The process that accepted a message hands it out without reading it again;
    another process reads it from the database: the recipient gets the same delivery,
    attachments included."""
    accepting = queues.QueueStore(engine, store.vault, clock=clock)
    other = queues.QueueStore(engine, store.vault, clock=clock)
    data = b"attached " * 100
    assert upload(files, "tx-files", data, 300).complete
    sent = [
        message(("bob", "carol"), bcc=("bob",), body='<c a="1">請假 &amp; "x"</c>'),
        dataclasses.replace(message(("bob",)), subject="", keywords="k1;k2"),
        attachment_message(data, "tx-files"),
    ]
    accepting.submit(SENDER, sent)
    reads: list[str] = []

    def note(conn: object, cursor: object, statement: str, *args: object) -> None:
        if re.search(r"FROM\W+TransmitQueue\b", statement):
            reads.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        from_memory = accepting.fetch("bob@example.com", 10, 30).deliveries
        assert reads == []
        clock.now += 31  # the lease runs out: the same entries again, elsewhere
        from_database = other.fetch("bob@example.com", 10, 30).deliveries
        assert len(reads) == 1
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    assert len(from_memory) == 3
    assert [len(d.attachments) for d in from_memory] == [0, 0, 1]
    assert from_database == from_memory


def test_fetch_respects_max_items(q: queues.QueueStore) -> None:
    """At most ``max_items`` entries are leased per fetch; the rest wait."""
    q.submit(SENDER, [message(("bob",)) for _ in range(5)])
    assert len(q.fetch("bob@example.com", 3, 60).deliveries) == 3
    assert len(q.fetch("bob@example.com", 3, 60).deliveries) == 2


def test_ack_of_every_recipient_queues_a_receipt_for_the_sender(
    q: queues.QueueStore, store: accounts.AccountStore, woken: list[frozenset[str]]
) -> None:
    """When the last recipient acks, the sender's queue gets one receipt."""
    msg = message(("bob", "carol"))
    [result] = q.submit(SENDER, [msg])
    [bob] = q.fetch("bob@example.com", 10, 60).deliveries
    [carol] = q.fetch("carol@example.com", 10, 60).deliveries
    assert q.ack("bob@example.com", [bob.rx_message_id]) == 1
    assert q.fetch(SENDER, 10, 60) == model.FetchBatch()
    assert q.ack("carol@example.com", [carol.rx_message_id]) == 1
    assert woken[-1] == frozenset({store.vault.account_id(SENDER)})
    [receipt] = q.fetch(SENDER, 10, 60).receipts
    assert (receipt.tx_message_id, receipt.message_id) == (msg.tx_message_id, result.message_id)
    assert (receipt.served, receipt.recalled) == (2, 0)
    assert q.ack(SENDER, [receipt.entry_id]) == 1
    assert q.fetch(SENDER, 10, 60) == model.FetchBatch()


def served(q: queues.QueueStore, messages: list[model.OutgoingMessage]) -> list[str]:
    """Submit ``messages`` (to bob), have bob store them; their MessageIds."""
    results = q.submit(SENDER, messages)
    delivered = q.fetch("bob@example.com", 100, 60).deliveries
    q.ack("bob@example.com", [d.rx_message_id for d in delivered])
    return [str(r.message_id) for r in results]


def test_a_receipt_not_acknowledged_within_its_lease_is_fetched_again(
    q: queues.QueueStore, clock: ManualClock
) -> None:
    """A leased receipt goes out again, the same, once its lease runs out; another
    sender, or an id that only looks like a receipt's, cannot acknowledge it; once
    stored it never comes back."""
    msg = message(("bob",))
    served(q, [msg])
    [first] = q.fetch(SENDER, 10, 60).receipts
    assert q.fetch(SENDER, 10, 60) == model.FetchBatch()  # leased
    clock.now += 61
    [again] = q.fetch(SENDER, 10, 60).receipts
    assert again == first
    assert q.ack(OTHER_SENDER, [again.entry_id]) == 0
    assert q.ack(SENDER, ["receipt:", "receipt:no-such", "receipt:" + again.entry_id]) == 0
    assert q.ack(SENDER, [again.entry_id]) == 1
    assert q.ack(SENDER, [again.entry_id]) == 1  # done; stored once
    clock.now += 61
    assert q.fetch(SENDER, 10, 60) == model.FetchBatch()
    kinds = [e.kind for e in q.history(SENDER, msg.tx_message_id)[1]]
    assert kinds[-3:] == ["receipt_fetched", "receipt_fetched", "receipt_acknowledged"]


def test_a_receipt_goes_out_by_its_message_s_priority_among_the_deliveries(
    q: queues.QueueStore,
) -> None:
    """The sender's fetch ranks its receipts with its own deliveries: an urgent
    message's receipt before a normal delivery, a low one's after."""
    urgent, low = served(q, [message(("bob",), priority="E"), message(("bob",), priority="L")])
    [normal] = q.submit(OTHER_SENDER, [message((SENDER,), agent=OTHER_SENDER)])
    order = []
    for _ in range(3):
        batch = q.fetch(SENDER, 1, 60)
        order += [r.message_id for r in batch.receipts] + [d.message_id for d in batch.deliveries]
    assert order == [urgent, normal.message_id, low]


def test_receipt_entries_of_an_earlier_version_move_to_the_receipt_queue(
    engine: sa.Engine, store: accounts.AccountStore, q: queues.QueueStore
) -> None:
    """A database whose receipts are ReceiveQueue entries (before ReceiptQueue) gets
    them moved at start: a stored one stays stored, a leased or queued one is fetched
    under its new id, in the order the entries had; no receipt entry is left."""
    stored, leased, waiting = messages = [message(("bob",)) for _ in range(3)]
    ids = served(q, messages)
    r = tables.receive_queue.c
    sender_id = store.vault.account_id(SENDER)
    with engine.begin() as conn:
        tables.receipt_queue.drop(conn)
        conn.execute(
            tables.receive_queue.insert(),
            [
                {
                    "EntryId": str(uuid.uuid4()),
                    "MessageId": message_id,
                    "Recipient": sender_id,
                    "Kind": "receipt",
                    "PriorityRank": 2,
                    "State": state,
                    "LeaseUntil": None,
                    "CreatedSeq": seq,
                    "TxMessageId": msg.tx_message_id,
                    "Served": 1,
                    "Recalled": 0,
                }
                for message_id, msg, state, seq in zip(
                    ids, messages, ["acked", "leased", "queued"], [3, 2, 1], strict=True
                )
            ],
        )
    assert tables.create_tables(engine) == ["ReceiptQueue"]
    got = q.fetch(SENDER, 10, 60).receipts
    assert [x.tx_message_id for x in got] == [waiting.tx_message_id, leased.tx_message_id]
    assert [(x.served, x.recalled) for x in got] == [(1, 0), (1, 0)]
    assert q.ack(SENDER, [x.entry_id for x in got]) == 2
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(r.Kind == "receipt")).scalar() == 0
    assert q.submit(SENDER, [stored])[0].served_at_once


def test_a_fetch_that_leases_leaves_a_large_acknowledgement_to_the_caller(
    q: queues.QueueStore,
) -> None:
    """A backlog's batch is not acknowledged in the transaction that leases the next:
    the server answers first and acknowledges after; a few entries ride along."""
    q.submit(SENDER, [message(("bob",)) for _ in range(queues.ACKS_WITH_LEASE + 1)])
    delivered = [d.rx_message_id for d in q.fetch("bob@example.com", 100, 60).deliveries]
    [second] = q.submit(SENDER, [message(("bob",))])
    batch = q.fetch("bob@example.com", 100, 60, acked=delivered)
    assert [d.message_id for d in batch.deliveries] == [second.message_id]
    assert queues.acks_left(batch, delivered)
    assert q.fetch(SENDER, 100, 60) == model.FetchBatch()  # no receipt yet
    q.acknowledge("bob@example.com", delivered)
    assert len(q.fetch(SENDER, 100, 60).receipts) == len(delivered)
    assert q.ack("bob@example.com", delivered) == len(delivered)  # done, once each
    few = [d.rx_message_id for d in batch.deliveries]  # the second message's entry
    [third] = q.submit(SENDER, [message(("bob",))])
    batch = q.fetch("bob@example.com", 100, 60, acked=few)
    assert [d.message_id for d in batch.deliveries] == [third.message_id]
    assert not queues.acks_left(batch, few)
    [receipt] = q.fetch(SENDER, 100, 60).receipts  # acknowledged with the lease
    assert receipt.message_id == second.message_id


def test_a_fetch_that_finds_nothing_acknowledges_in_its_own_transaction(
    q: queues.QueueStore, store: accounts.AccountStore, woken: list[frozenset[str]]
) -> None:
    """About to wait, the fetch acknowledges at once: the sender's receipt is queued and
    the sender woken; others' entries are ignored, a repeated acknowledgement is no-op."""
    msg = message(("bob",))
    [first] = q.submit(SENDER, [msg])
    [delivered] = q.fetch("bob@example.com", 10, 60).deliveries
    assert q.fetch("bob@example.com", 10, 60, acked=[delivered.rx_message_id, "no-such"]) == (
        model.FetchBatch()
    )
    assert woken[-1] == frozenset({store.vault.account_id(SENDER)})
    [receipt] = q.fetch(SENDER, 10, 60).receipts
    assert receipt.message_id == first.message_id
    assert q.fetch("carol@example.com", 10, 60, acked=[receipt.entry_id]) == model.FetchBatch()
    assert q.fetch("bob@example.com", 10, 60, acked=[delivered.rx_message_id]) == (
        model.FetchBatch()
    )
    assert q.fetch(SENDER, 10, 60, acked=[receipt.entry_id]) == model.FetchBatch()
    # The receipt is stored (acknowledged): the same message again is served at once.
    assert q.submit(SENDER, [msg])[0].served_at_once


def test_ack_is_idempotent_and_ignores_other_accounts_entries(q: queues.QueueStore) -> None:
    """Acking twice counts once; acking someone else's entry does nothing."""
    q.submit(SENDER, [message(("bob", "carol"))])
    [bob] = q.fetch("bob@example.com", 10, 60).deliveries
    assert q.ack("carol@example.com", [bob.rx_message_id]) == 0
    assert q.ack("bob@example.com", [bob.rx_message_id]) == 1
    assert q.ack("bob@example.com", [bob.rx_message_id, "no-such-entry"]) == 1
    assert q.fetch(SENDER, 10, 60) == model.FetchBatch()  # carol has not acked


def test_submit_wakes_the_recipients(
    q: queues.QueueStore, store: accounts.AccountStore, woken: list[frozenset[str]]
) -> None:
    """The listener hears which accounts got new entries."""
    q.submit(SENDER, [message(("bob",), ("carol",))])
    assert woken == [
        frozenset(map(store.vault.account_id, ["bob@example.com", "carol@example.com"]))
    ]


def test_recall_withdraws_unfetched_and_notifies_fetched(
    q: queues.QueueStore,
) -> None:
    """Unfetched copies vanish; recipients that fetched it get the RECALL message."""
    [sent] = q.submit(SENDER, [message(("bob", "carol", "dave"))])
    [bob] = q.fetch("bob@example.com", 10, 60).deliveries
    q.ack("bob@example.com", [bob.rx_message_id])
    q.fetch("carol@example.com", 10, 60)  # leased, not acked
    recall = recall_of(sent.message_id)
    [result] = q.submit(SENDER, [recall])
    assert result.accepted
    assert result.served_at_once
    assert result.recall == model.RecallOutcome(sent.message_id, withdrawn=1, notified=2)
    assert q.fetch("dave@example.com", 10, 60) == model.FetchBatch()
    for owner in ("bob@example.com", "carol@example.com"):
        [note] = q.fetch(owner, 10, 60).deliveries
        assert note.content_type == "RECALL"
        assert content.parse_recall(note.content) == sent.message_id
    # dave withdrawn, carol withdrawn while leased, bob served: the message is complete.
    [receipt] = q.fetch(SENDER, 10, 60).receipts
    assert (receipt.served, receipt.recalled) == (1, 2)


def test_recall_of_another_accounts_message_is_refused(q: queues.QueueStore) -> None:
    """Only the account that sent a message may recall it."""
    [sent] = q.submit(SENDER, [message(("bob",))])
    [result] = q.submit(OTHER_SENDER, [recall_of(sent.message_id, agent=OTHER_SENDER)])
    assert not result.accepted
    assert "not sent by" in result.reason
    assert len(q.fetch("bob@example.com", 10, 60).deliveries) == 1


def test_recall_of_unknown_message_is_refused(q: queues.QueueStore) -> None:
    """A RECALL naming no existing message is refused with a reason."""
    [result] = q.submit(SENDER, [recall_of(str(uuid.uuid4()))])
    assert not result.accepted
    assert "no message" in result.reason


def test_non_recall_to_the_server_agent_is_refused(q: queues.QueueStore) -> None:
    """``psereceiver`` only takes RECALLs."""
    [result] = q.submit(SENDER, [message(("psereceiver",))])
    assert not result.accepted
    assert "RECALL" in result.reason


def test_attachment_must_be_a_complete_upload(q: queues.QueueStore) -> None:
    """A message naming an attachment that was never uploaded is refused."""
    info = model.AttachmentInfo(1, "a.pdf", "pdf", 10, 1, "0" * 64)
    msg = dataclasses.replace(message(("bob",)), attachments=(info,))
    [result] = q.submit(SENDER, [msg])
    assert not result.accepted
    assert "attachment 1" in result.reason


def test_large_batch_is_accepted_in_one_call(q: queues.QueueStore) -> None:
    """A thousand messages with fan-out go in one submit and are all fetchable."""
    results = q.submit(SENDER, [message(("bob", "carol")) for _ in range(1000)])
    assert all(r.accepted for r in results)
    assert len(q.fetch("carol@example.com", 2000, 60).deliveries) == 1000


@pytest.fixture
def files(
    engine: sa.Engine, store: accounts.AccountStore, tmp_path: pathlib.Path
) -> blobs.BlobStore:
    """The blob store under test, on a temporary folder."""
    return blobs.BlobStore(engine, tmp_path / "blobs", store.vault)


def upload(files: blobs.BlobStore, tx: str, data: bytes, chunk: int) -> blobs.UploadStatus:
    """Send ``data`` in chunks as the gateway does; the last one carries size and digest."""
    status = blobs.UploadStatus(0, False)
    for offset in range(0, max(len(data), 1), chunk):
        part = data[offset : offset + chunk]
        final = offset + chunk >= len(data)
        status = files.upload(
            SENDER,
            tx,
            1,
            offset,
            part,
            final=final,
            size=len(data) if final else None,
            sha256=hashlib.sha256(data).hexdigest() if final else None,
        )
    return status


def attachment_message(data: bytes, tx: str) -> model.OutgoingMessage:
    """A message to bob carrying ``data`` as attachment 1."""
    info = model.AttachmentInfo(1, "a.bin", "bin", len(data), 0, hashlib.sha256(data).hexdigest())
    return dataclasses.replace(message(("bob",), tx=tx), attachments=(info,))


def test_uploaded_attachment_downloads_identically_by_range(
    q: queues.QueueStore, files: blobs.BlobStore
) -> None:
    """Chunked upload, submit, then ranged download by the recipient gives the same bytes."""
    data = bytes(range(256)) * 1000
    assert upload(files, "tx-1", data, 7000) == blobs.UploadStatus(len(data), True)
    [result] = q.submit(SENDER, [attachment_message(data, "tx-1")])
    assert result.accepted
    [delivery] = q.fetch("bob@example.com", 10, 60).deliveries
    assert delivery.attachments[0].file_size == len(data)
    got = b""
    while len(got) < len(data):
        part = files.download("bob@example.com", result.message_id, 1, len(got), 10_000)
        assert part.size == len(data)
        got += part.data
    assert got == data


def test_repeated_upload_from_the_start_is_harmless(files: blobs.BlobStore) -> None:
    """Chunks the server already has are skipped: a restarted upload completes."""
    data = b"x" * 5000
    files.upload(SENDER, "tx-2", 1, 0, data[:2000], final=False)
    assert upload(files, "tx-2", data, 1500) == blobs.UploadStatus(5000, True)


def test_wrong_digest_on_final_chunk_is_refused(files: blobs.BlobStore) -> None:
    """The final chunk's sha256 must match what was stored."""
    with pytest.raises(errors.ValidationError, match="sha256"):
        files.upload(SENDER, "tx-3", 1, 0, b"abc", final=True, size=3, sha256="0" * 64)


def test_upload_with_a_gap_is_refused(files: blobs.BlobStore) -> None:
    """A chunk starting beyond the stored bytes is refused, naming what is held."""
    with pytest.raises(errors.ValidationError, match="holds 0 bytes"):
        files.upload(SENDER, "tx-4", 1, 10, b"abc", final=False)


def test_download_by_a_stranger_is_forbidden_and_unknown_is_not_found(
    q: queues.QueueStore, files: blobs.BlobStore
) -> None:
    """Only the sender and recipients may read an attachment."""
    data = b"secret report"
    upload(files, "tx-5", data, 100)
    [result] = q.submit(SENDER, [attachment_message(data, "tx-5")])
    assert files.download(SENDER, result.message_id, 1, 0, 100).data == data
    with pytest.raises(errors.Forbidden):
        files.download("carol@example.com", result.message_id, 1, 0, 100)
    with pytest.raises(errors.NotFound):
        files.download(SENDER, result.message_id, 2, 0, 100)
    with pytest.raises(errors.NotFound):
        files.download(SENDER, str(uuid.uuid4()), 1, 0, 100)


# ------------------------------------------------------------------ housekeeping


def table_count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def test_housekeeping_forgets_served_messages_past_retention_only(
    q: queues.QueueStore, engine: sa.Engine, clock: ManualClock
) -> None:
    """Served, receipt-acked and old: gone with entries and events; the rest stays."""
    [old] = q.submit(SENDER, [message()])
    [entry] = q.fetch("bob@example.com", 10, 60).deliveries
    q.ack("bob@example.com", [entry.rx_message_id])
    clock.now += 10 * 86400
    [young] = q.submit(SENDER, [message()])
    later = clock.now + 1

    # The old message's receipt still waits for the sender: nothing may go yet.
    assert housekeeping.purge(engine, 5, clock=lambda: later).messages == 0
    [receipt] = q.fetch(SENDER, 10, 60).receipts
    q.ack(SENDER, [receipt.entry_id])

    assert housekeeping.purge(engine, 5, clock=lambda: later).messages == 1
    with pytest.raises(errors.NotFound):
        q.history(SENDER, old.tx_message_id)
    assert q.history(SENDER, young.tx_message_id)[1][0].kind == "received"
    assert table_count(engine, tables.transmit_queue) == 1
    assert table_count(engine, tables.receive_queue) == 1  # the young message's entry


def test_housekeeping_deletes_attachment_files_with_their_message(
    q: queues.QueueStore,
    engine: sa.Engine,
    store: accounts.AccountStore,
    clock: ManualClock,
    tmp_path: pathlib.Path,
) -> None:
    """An attachment file of a purged message is removed from the disk."""
    blob_store = blobs.BlobStore(engine, tmp_path / "blobs", store.vault)
    data = b"%PDF-1.4 housekeeping"
    digest = hashlib.sha256(data).hexdigest()
    tx = str(uuid.uuid4())
    blob_store.upload(SENDER, tx, 1, 0, data, final=True, size=len(data), sha256=digest)
    info = model.AttachmentInfo(1, "a.pdf", "pdf", len(data), 1, digest)
    [result] = q.submit(SENDER, [dataclasses.replace(message(tx=tx), attachments=(info,))])
    assert result.accepted
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert files
    [entry] = q.fetch("bob@example.com", 10, 60).deliveries
    q.ack("bob@example.com", [entry.rx_message_id])
    [receipt] = q.fetch(SENDER, 10, 60).receipts
    q.ack(SENDER, [receipt.entry_id])
    purged = housekeeping.purge(engine, 1, clock=lambda: clock.now + 2 * 86400)
    assert (purged.messages, purged.files) == (1, 1)
    assert not [p for p in files if p.exists()]
    assert table_count(engine, tables.transmit_attachment) == 0


def test_history_lists_the_server_side_events_of_a_message(q: queues.QueueStore) -> None:
    """received, fetched, acknowledged, served in order; only for the sender."""
    [result] = q.submit(SENDER, [message()])
    [entry] = q.fetch("bob@example.com", 10, 60).deliveries
    q.ack("bob@example.com", [entry.rx_message_id])
    message_id, events = q.history(SENDER, result.tx_message_id)
    assert message_id == result.message_id
    assert [(e.kind, e.account) for e in events] == [
        ("received", SENDER),
        ("fetched", "bob@example.com"),
        ("acknowledged", "bob@example.com"),
        ("served", SENDER),
    ]
    with pytest.raises(errors.NotFound):
        q.history(OTHER_SENDER, result.tx_message_id)


def test_forged_agent_sender_is_refused_alone_in_its_batch(q: queues.QueueStore) -> None:
    """An AgentSender naming another account is refused; the rest of the batch goes on."""
    forged, good = message(("bob",), agent=OTHER_SENDER), message(("bob",))
    refused, accepted = q.submit(SENDER, [forged, good])
    assert not refused.accepted
    assert refused.reason == (
        f"AgentSender '{OTHER_SENDER}' is not the authenticated account '{SENDER}'"
    )
    assert accepted.accepted
    [delivery] = q.fetch("bob@example.com", 10, 60).deliveries
    assert delivery.message_id == accepted.message_id


def test_sender_outside_the_gateways_domain_is_refused(q: queues.QueueStore) -> None:
    """A gateway may name users of its own domain as Sender, no one elsewhere."""
    [outside] = q.submit(SENDER, [message(("bob",), sender="ceo@other.example")])
    assert not outside.accepted
    assert "Sender 'ceo@other.example' is not allowed" in outside.reason
    assert "itself or a user of @example.com" in outside.reason
    [inside] = q.submit(SENDER, [message(("bob",), sender="Carol@Example.com")])
    assert inside.accepted


def test_user_account_may_name_only_itself_as_sender(q: queues.QueueStore) -> None:
    """A user account acts for no one else, even in its own domain."""
    bob = "bob@example.com"
    [other] = q.submit(bob, [message(("carol",), agent=bob, sender="dave@example.com")])
    assert not other.accepted
    assert "it may name only itself" in other.reason
    [itself] = q.submit(bob, [message(("carol",), agent=bob, sender=bob)])
    assert itself.accepted


def test_recipients_see_the_authenticated_account(q: queues.QueueStore) -> None:
    """AgentSender and an empty Sender show the account as stored, not as written."""
    [result] = q.submit(SENDER, [message(("bob",), agent=SENDER.upper(), sender="")])
    assert result.accepted
    [delivery] = q.fetch("bob@example.com", 10, 60).deliveries
    assert (delivery.agent_sender, delivery.sender) == (SENDER, SENDER)


def test_reused_tx_with_other_content_is_refused_same_content_is_idempotent(
    q: queues.QueueStore,
) -> None:
    """The same TxMessageId with other content is refused naming the earlier message;
    the same message again (a retry, with a new TransmitTime) gets the first answer."""
    original = message(("bob",), tx="tx-1")
    [first] = q.submit(SENDER, [original])
    [reused] = q.submit(SENDER, [dataclasses.replace(original, subject="another message")])
    assert not reused.accepted
    assert reused.reason == (
        f"TxMessageId 'tx-1' was already used for message {first.message_id} with different "
        "content; give the new message a new TxMessageId"
    )
    retry = dataclasses.replace(original, transmit_time="2026-11-23 06:00:00")
    assert q.submit(SENDER, [retry]) == [first]
    assert len(q.fetch("bob@example.com", 10, 60).deliveries) == 1


def test_reused_tx_within_one_batch_refuses_only_the_second(q: queues.QueueStore) -> None:
    """Two different messages with one TxMessageId in a batch: the first is decided."""
    a = message(("bob",), tx="twice")
    same, other, again = q.submit(SENDER, [a, dataclasses.replace(a, content="<other/>"), a])
    assert same.accepted
    assert again == same
    assert not other.accepted
    assert "already used for message" in other.reason


def test_corrected_message_after_a_refusal_is_decided_afresh(q: queues.QueueStore) -> None:
    """A refused message holds nothing: the corrected row under its id is accepted."""
    [refused] = q.submit(SENDER, [message(("nobody",), tx="fixed")])
    assert not refused.accepted
    assert q.submit(SENDER, [message(("nobody",), tx="fixed")]) == [refused]
    [accepted] = q.submit(SENDER, [message(("bob",), tx="fixed")])
    assert accepted.accepted
    assert len(q.fetch("bob@example.com", 10, 60).deliveries) == 1


def test_existing_transmit_queue_gets_the_digest_column(
    engine: sa.Engine, q: queues.QueueStore
) -> None:
    """A database from before ContentDigest gets the column; its rows stay idempotent."""
    [old] = q.submit(SENDER, [message(("bob",), tx="old")])
    with engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(
            f"ALTER TABLE {quote('TransmitQueue')} DROP COLUMN {quote('ContentDigest')}"
        )
    assert tables.create_tables(engine) == []
    assert "ContentDigest" in {c["name"] for c in sa.inspect(engine).get_columns("TransmitQueue")}
    assert q.submit(SENDER, [message(("bob",), tx="old", body="<changed/>")]) == [old]


def test_a_missing_column_that_may_not_be_null_is_refused_by_name(engine: sa.Engine) -> None:
    """Rows already there cannot get a NOT NULL column: the start says which one."""
    tables.create_tables(engine)
    with engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(
            f"ALTER TABLE {quote('TransmitQueue')} DROP COLUMN {quote('SubmitResult')}"
        )
    with pytest.raises(errors.SchemaMismatch, match=r"TransmitQueue\.SubmitResult is missing"):
        tables.create_tables(engine)


def test_same_message_again_after_its_receipt_was_stored_is_served_at_once(
    q: queues.QueueStore,
) -> None:
    """Resubmitted once its sender stored the receipt, the message is answered served at
    once: the re-inserted Outbox row goes to 29 instead of waiting for a second receipt."""
    original = message(("bob",), tx="done")
    [first] = q.submit(SENDER, [original])
    assert q.submit(SENDER, [original]) == [first]  # receipt not yet stored: as first
    [delivery] = q.fetch("bob@example.com", 10, 60).deliveries
    q.ack("bob@example.com", [delivery.rx_message_id])
    [receipt] = q.fetch(SENDER, 10, 60).receipts
    assert q.submit(SENDER, [original]) == [first]  # receipt leased, not stored
    q.ack(SENDER, [receipt.entry_id])
    [again] = q.submit(SENDER, [original])
    assert again == dataclasses.replace(first, served_at_once=True)
    assert q.fetch("bob@example.com", 10, 60) == model.FetchBatch()
