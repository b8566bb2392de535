"""Durable push jobs: triggers, the worker's outcomes against a webhook stand-in, leases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
import trustme
from clocks import ManualClock
from pushdevices import add_device, add_group
from standins.webhook import WebhookStandIn, provider_entry

from mpg import config
from mpg.server import accounts, app, housekeeping, queues, tables
from mpg.server.push import jobs, registry, worker
from mpg.server.push.outcome import delivered as outcome_delivered
from mpg.server.push.outcome import token_flagged
from mpg.wire import atrest, content, keys, model
from mpg.wire.push import NoticeKind

SECRET = b"a-long-shared-secret-of-the-receiver"
SENDER = "erp-a@example.com"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[WebhookStandIn]:
    yield from WebhookStandIn(SECRET).serve(ca)


class World:
    """A server database with group ``acme``, a sender, a clock and a worker (no threads)."""

    def __init__(
        self, engine: sa.Engine, folder: pathlib.Path, receiver: WebhookStandIn, ca: trustme.CA
    ) -> None:
        entry = provider_entry(receiver, ca, folder, name="acme-hook", groups=("acme",))
        self.settings = config.ServerSettings(push_providers=(entry,), push_workers=0)
        self.engine = engine
        self.clock = ManualClock(NOW)
        self.keyring = atrest.Keyring({"k1": keys.new_master_key()}, "k1")
        self.store = accounts.AccountStore(engine, keys.new_master_key(), self.keyring)
        self.store.add(SENDER, "gateway")
        self.queues = queues.QueueStore(engine, self.store.vault, clock=self.clock)
        self.worker = worker.PushWorker(
            engine, self.keyring, registry.Registry(self.settings), self.settings, clock=self.clock
        )
        add_group(engine, "acme")

    def device(self, token: str | None, **kw: object) -> str:
        return add_device(self.engine, self.store, self.keyring, "acme", token, **kw)  # type: ignore[arg-type]

    def send(self, *to: str, alert: bool = True, priority: str = "H") -> str:
        """Submit a message to devices (ReceiverType D); its MessageId."""
        [result] = self.queues.submit(SENDER, [message(to, alert=alert, priority=priority)])
        assert result.accepted, result.reason
        return result.message_id

    def recall(self, message_id: str) -> None:
        """The sender's RECALL of ``message_id`` (reference §3)."""
        recall = message(
            ("psereceiver",),
            body=content.build_recall(message_id),
            content_type="RECALL",
            receiver_type="U",
        )
        [result] = self.queues.submit(SENDER, [recall])
        assert result.accepted, result.reason

    def job_rows(self) -> list[tables.Row]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(sa.select(tables.push_job).order_by(tables.push_job.c.CreatedAt))
            )

    def device_row(self, account: str) -> tables.Row:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tables.device).where(tables.device.c.AccountId == account)
            ).one()
        return row

    def events(self, message_id: str) -> list[tuple[str, str, str]]:
        e = tables.message_event.c
        with self.engine.connect() as conn:
            return [
                (r.Kind, r.Account, r.Detail)
                for r in conn.execute(
                    sa.select(e.Kind, e.Account, e.Detail)
                    .where(e.MessageId == message_id)
                    .order_by(e.Id)
                )
                if r.Kind in ("notified", "push_failed")
            ]


def message(
    to: tuple[str, ...],
    *,
    alert: bool = True,
    priority: str = "H",
    body: str = "<c>secret text</c>",
    content_type: str = "MSG",
    receiver_type: str = "D",
) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=SENDER,
        sender="alice@example.com",
        receiver_type=receiver_type,
        receivers=to,
        bcc=(),
        subject="Plant closed tonight",
        content=body,
        content_type=content_type,
        alert_flag=alert,
        priority=priority,
        keywords="",
        transmit_time="2026-11-23 05:41:07",
    )


@pytest.fixture
def world(tmp_path: pathlib.Path, receiver: WebhookStandIn, ca: trustme.CA) -> Iterator[World]:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 'server.db'}")
    tables.create_tables(engine)
    w = World(engine, tmp_path, receiver, ca)
    yield w
    w.worker.stop()
    engine.dispose()


def test_an_alert_message_gives_exactly_one_push_per_device_and_nothing_personal(
    world: World, receiver: WebhookStandIn
) -> None:
    phone = world.device("token-phone")
    tablet = world.device("token-tablet", platform="ios")
    tokenless = world.device(None)
    message_id = world.send(phone, tablet, tokenless)
    assert len(world.job_rows()) == 2
    assert world.worker.run_once() == 2
    assert world.worker.run_once() == 0
    assert sorted(r["token"] for r in receiver.received) == ["token-phone", "token-tablet"]
    for body in receiver.received:
        assert body == {
            "kind": "message",
            "group": "acme",
            "priority": "H",
            "message_id": message_id,
            "collapse_id": f"m:{message_id}",
            "token": body["token"],
        }
    raw = json.dumps(receiver.received)
    for personal in ("Plant closed", "secret text", "alice", SENDER, phone, tablet):
        assert personal not in raw
    assert {(kind, account) for kind, account, _ in world.events(message_id)} == {
        ("notified", phone),
        ("notified", tablet),
    }
    assert {r.State for r in world.job_rows()} == {"sent"}


def test_the_admin_api_shows_each_device_s_pushes_and_events(world: World) -> None:
    phone, dead = world.device("token-ok"), world.device("token-dead")
    message_id = world.send(phone, dead)
    with world.engine.begin() as conn:  # the token removed after the push was queued
        d = tables.device.c
        conn.execute(tables.device.update().where(d.AccountId == dead).values(PushTokenEnc=None))
    world.worker.run_once()
    server = app.PushServer(world.settings, world.engine, keys.new_master_key(), world.keyring)
    _, token = server.admins.add("vera", "viewer", "cli:test")

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app.create_app(server))
        async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as client:
            return await client.get(path, headers={"Authorization": f"Bearer {token}"})

    answer = asyncio.run(get(f"/api/v1/messages/{message_id}/deliveries"))
    assert answer.status_code == 200, answer.text
    per = {r["account"]: r for r in answer.json()["recipients"]}
    pushed = {a: [(p["kind"], p["state"]) for p in per[a]["pushes"]] for a in (phone, dead)}
    assert {a: sorted(states) for a, states in pushed.items()} == {
        phone: [("message", "sent")],
        dead: [("message", "failed")],
    }
    assert "no push token" in per[dead]["pushes"][0]["last_error"]
    assert [e["kind"] for e in per[phone]["events"]] == ["notified"]
    assert [e["kind"] for e in per[dead]["events"]] == ["push_failed"]
    assert [e["kind"] for e in per[SENDER]["events"]] == ["received"]
    missing = asyncio.run(get("/api/v1/messages/no-such-message/deliveries"))
    assert missing.status_code == 404


def test_a_message_without_alert_flag_pushes_nobody(world: World) -> None:
    world.send(world.device("token-1"), alert=False)
    assert world.job_rows() == []


def test_a_dead_token_is_removed_with_its_reason_and_time_and_gets_no_more_pushes(
    world: World, receiver: WebhookStandIn
) -> None:
    phone = world.device("token-dead")
    receiver.script.then(410)
    message_id = world.send(phone)
    world.clock.now += 5
    world.worker.run_once()
    row = world.device_row(phone)
    assert row.PushTokenEnc is None
    assert (row.PushTokenState, row.PushTokenStateAt) == ("removed", NOW + 5)
    assert "token_gone" in row.PushTokenStateReason
    [(kind, account, detail)] = world.events(message_id)
    assert (kind, account) == ("push_failed", phone)
    assert "token_gone" in detail
    world.send(phone)
    assert [r.State for r in world.job_rows()] == ["failed"]


def test_a_retry_waits_for_retry_after_then_sends_once(
    world: World, receiver: WebhookStandIn
) -> None:
    receiver.script.then(503, retry_after="120")
    world.send(world.device("token-busy"))
    assert world.worker.run_once() == 1
    [job] = world.job_rows()
    assert job.State == "pending"
    assert job.NotBefore >= NOW + 120
    world.clock.now += 119
    assert world.worker.run_once() == 0
    world.clock.now += 2
    receiver.forget_signatures()
    assert world.worker.run_once() == 1
    assert [r["token"] for r in receiver.received] == ["token-busy"]
    [job] = world.job_rows()
    assert (job.State, job.Attempts) == ("sent", 2)


def test_a_message_error_is_never_retried(world: World, receiver: WebhookStandIn) -> None:
    receiver.script.then(400)
    world.send(world.device("token-x"))
    world.worker.run_once()
    world.clock.now += 86400
    assert world.worker.run_once() == 0
    [job] = world.job_rows()
    assert job.State == "failed"
    assert "message_error" in job.LastError
    assert receiver.received == []


def test_a_configuration_alarm_parks_its_provider_until_the_next_start(
    world: World, receiver: WebhookStandIn
) -> None:
    """The first 401 parks its job and the provider entry: the next job is parked unsent."""
    receiver.script.then(401)
    world.send(world.device("token-y"), world.device("token-z"))
    assert world.worker.run_once() == 2
    assert receiver.received == []
    world.clock.now += 86400
    assert world.worker.run_once() == 0
    rows = world.job_rows()
    assert [r.State for r in rows] == ["parked", "parked"]
    assert sorted("in alarm" in r.LastError for r in rows) == [False, True]
    world.worker.start()  # push_workers = 0: only the unparking
    receiver.forget_signatures()
    assert world.worker.run_once() == 2
    assert sorted(r["token"] for r in receiver.received) == ["token-y", "token-z"]


def test_recalling_a_notified_message_pushes_the_same_collapse_id(
    world: World, receiver: WebhookStandIn
) -> None:
    phone = world.device("token-r")
    message_id = world.send(phone)
    world.worker.run_once()
    world.recall(message_id)
    world.worker.run_once()
    assert [(r["kind"], r["collapse_id"]) for r in receiver.received] == [
        ("message", f"m:{message_id}"),
        ("recall", f"m:{message_id}"),
    ]


def test_recalling_before_the_push_went_out_cancels_it(
    world: World, receiver: WebhookStandIn
) -> None:
    message_id = world.send(world.device("token-c"))
    world.recall(message_id)
    assert world.worker.run_once() == 0
    assert [r.State for r in world.job_rows()] == ["cancelled"]
    assert receiver.received == []


def test_a_recall_of_a_push_being_sent_is_due_when_its_lease_ends(world: World) -> None:
    message_id = world.send(world.device("token-l"))
    [leased] = jobs.claim(world.engine, 10, 60, NOW)
    world.recall(message_id)
    recall = [r for r in world.job_rows() if r.Kind == "recall"]
    assert [(r.NotBefore, r.State) for r in recall] == [(leased.lease_until, "pending")]


def test_a_flagged_token_gets_no_pushes_until_the_device_sets_a_new_one(world: World) -> None:
    phone = world.device("token-f", token_at=NOW - 10)
    world.send(phone)
    [job] = jobs.claim(world.engine, 10, 60, NOW)
    result = token_flagged("BadDeviceToken")
    decision = jobs.decide(result, job.attempts, NOW, max_attempts=3, backoff=1)
    assert jobs.finish(world.engine, job, result, decision, NOW, token_at=NOW - 10, provider="apns")
    row = world.device_row(phone)
    assert (row.PushTokenState, row.PushTokenEnc is not None) == ("flagged", True)
    with world.engine.connect() as conn:
        assert jobs.pushable_devices(conn, [phone]) == {}
    with world.engine.begin() as conn:
        conn.execute(
            tables.device.update()
            .where(tables.device.c.AccountId == phone)
            .values(PushTokenAt=NOW + 1)
        )
    with world.engine.connect() as conn:
        assert jobs.pushable_devices(conn, [phone]) == {phone: "acme"}


def test_a_token_not_refreshed_for_the_configured_days_expires_with_its_reason(
    world: World,
) -> None:
    old = world.device("token-old", token_at=NOW - 31 * 86400)
    fresh = world.device("token-new", token_at=NOW - 29 * 86400)
    assert jobs.expire_tokens(world.engine, 30, NOW) == 1
    row = world.device_row(old)
    assert (row.PushTokenEnc, row.PushTokenState) == (None, "removed")
    assert row.PushTokenStateReason == "expired: not refreshed for 30 days"
    assert world.device_row(fresh).PushTokenEnc is not None


def test_a_token_the_keyring_cannot_decrypt_parks_the_job(
    world: World, receiver: WebhookStandIn
) -> None:
    stranger = atrest.Keyring({"k9": keys.new_master_key()}, "k9")
    phone = add_device(world.engine, world.store, stranger, "acme", "token-z")
    world.send(phone)
    assert world.worker.run_once() == 1
    [job] = world.job_rows()
    assert job.State == "parked"
    assert "cannot be decrypted" in job.LastError
    assert receiver.received == []


def test_retention_takes_ended_publication_jobs_and_keeps_waiting_ones(world: World) -> None:
    with world.engine.begin() as conn:
        jobs.enqueue(
            conn,
            [
                jobs.job_row(f"dev-{n}", "acme", NoticeKind.FILE, "N", NOW, version='"v"')
                for n in range(2)
            ],
        )
    [claimed] = jobs.claim(world.engine, 1, 60, NOW)
    sent = outcome_delivered()
    decision = jobs.decide(sent, 1, NOW, max_attempts=3, backoff=1)
    assert jobs.finish(world.engine, claimed, sent, decision, NOW, token_at=None, provider="p")
    housekeeping.purge(world.engine, 30, clock=lambda: NOW + 31 * 86400)
    assert [r.State for r in world.job_rows()] == ["pending"]


# ---------------------------------------------------------------- leases, every database


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = tables.create_engine(db_url)
    tables.create_tables(eng)
    yield eng
    eng.dispose()


def _pending(engine: sa.Engine, count: int) -> None:
    with engine.begin() as conn:
        jobs.enqueue(
            conn,
            [
                jobs.job_row(f"dev-{n}", "acme", NoticeKind.MESSAGE, "N", NOW, message_id=f"m-{n}")
                for n in range(count)
            ],
        )


def test_a_leased_job_is_claimed_again_only_after_its_lease_ran_out(engine: sa.Engine) -> None:
    _pending(engine, 1)
    [first] = jobs.claim(engine, 10, 60, NOW)
    assert jobs.claim(engine, 10, 60, NOW + 59) == []
    [again] = jobs.claim(engine, 10, 60, NOW + 61)  # the first worker died
    assert again.job_id == first.job_id
    result = token_flagged("x")
    late = jobs.decide(result, 1, NOW + 70, max_attempts=3, backoff=1)
    assert not jobs.finish(engine, first, result, late, NOW + 70, token_at=None, provider="p")


def test_workers_claiming_at_once_never_get_the_same_job(engine: sa.Engine) -> None:
    _pending(engine, 200)
    start = threading.Barrier(4)

    def take() -> list[str]:
        start.wait()
        got: list[str] = []
        while batch := jobs.claim(engine, 7, 60, NOW):
            got += [j.job_id for j in batch]
        return got

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        claimed = [job for part in pool.map(lambda _: take(), range(4)) for job in part]
    assert len(claimed) == 200
    assert len(set(claimed)) == 200


def test_a_poll_with_no_job_due_takes_no_write_lock_on_sqlite(tmp_path: pathlib.Path) -> None:
    """The workers' empty polls only read: they go on while a request holds the lock."""
    path = tmp_path / "server.db"
    engine = tables.create_engine(f"sqlite:///{path}")
    tables.create_tables(engine)
    _pending(engine, 1)
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            # Not due for another minute: a write transaction would wait out the busy
            # timeout and fail with "database is locked".
            assert jobs.claim(engine, 10, 60, NOW - 60) == []
            other.execute("ROLLBACK")
        [job] = jobs.claim(engine, 10, 60, NOW)
        assert job.message_id == "m-0"
    finally:
        engine.dispose()
