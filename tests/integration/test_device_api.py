"""The device's own API (push token, start, subscriptions, read reports) and messages
addressed to device ids, groups and categories, resolved by the directory at submit."""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from directory_rows import add_category, add_code, add_group
from test_registration import call, make_push, token_of

from mpg.db import transactions
from mpg.server import app, tables
from mpg.server.directory import devices
from mpg.wire import model

GATEWAY = "erp@example.com"


@pytest.fixture
def push(tmp_path: pathlib.Path) -> Iterator[app.PushServer]:
    server = make_push(tmp_path)
    for group in ("north", "south"):
        add_group(server.engine, group)
    add_category(server.engine, "north", "floods", preselected=True)
    add_category(server.engine, "north", "roads")
    add_category(server.engine, "south", "storms", preselected=True)
    server.accounts.add(GATEWAY, "gateway")
    yield server
    server.engine.dispose()


def register(push: app.PushServer, device_id: str, group: str = "north") -> dict[str, Any]:
    code, _ = add_code(push.engine, push.codes.key, group)
    answer = call(push, "POST", "/registrations/code", json={"code": code, "device_id": device_id})
    assert answer.status_code == 200, answer.text
    registration: dict[str, Any] = answer.json()["registration"]
    return registration


def message(
    tx: str, receivers: tuple[str, ...], bcc: tuple[str, ...] = ()
) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id=tx,
        app_code="ALERT",
        source_domain="example.com",
        agent_sender=GATEWAY,
        sender=GATEWAY,
        receiver_type="D",
        receivers=receivers,
        bcc=bcc,
        subject="Flood warning",
        content="Rhine at 7.2 m",
        content_type="MSG",
        alert_flag=True,
        priority="H",
        keywords="",
        transmit_time="2026-11-30 18:00:00",
    )


def recipients_of(push: app.PushServer, message_id: str) -> set[str]:
    r = tables.receive_queue.c
    with transactions.connect(push.engine, "test") as conn:
        return set(conn.execute(sa.select(r.Recipient).where(r.MessageId == message_id)).scalars())


def test_the_device_api_refuses_a_caller_without_a_device_token(push: app.PushServer) -> None:
    answer = call(push, "GET", "/device")
    assert (answer.status_code, answer.json()["error"]) == (401, "unauthenticated")


def test_a_push_token_is_stored_encrypted_and_the_platform_updated(push: app.PushServer) -> None:
    token = token_of(register(push, "phone-1"))
    push_token = "fcm:APA91bH-" + "x" * 140
    answer = call(
        push, "PUT", "/device/push-token", token, json={"token": push_token, "platform": "Android"}
    )
    assert answer.status_code == 204, answer.text
    me = call(push, "GET", "/device", token).json()
    assert (me["has_push_token"], me["platform"]) == (True, "android")
    with transactions.connect(push.engine, "test") as conn:
        row = conn.execute(sa.select(tables.device)).one()
    assert push_token.encode() not in row.PushTokenEnc
    assert row.PushTokenAt is not None


def test_a_start_subscribes_only_preselected_categories_added_since_the_last_start(
    push: app.PushServer,
) -> None:
    token = token_of(register(push, "phone-1"))
    assert call(push, "DELETE", "/device/subscriptions/floods", token).status_code == 200
    later = time.time() + 1
    add_category(push.engine, "north", "heat", preselected=True, created_at=later)
    add_category(push.engine, "north", "fog", created_at=later)
    add_category(push.engine, "south", "snow", preselected=True, created_at=later)
    started = call(push, "POST", "/device/start", token, json={"app_version": "2.0"})
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["added"] == ["heat"]
    assert [(c["id"], c["subscribed"]) for c in body["categories"]] == [
        ("floods", False),
        ("fog", False),
        ("heat", True),
        ("roads", False),
    ]
    again = call(push, "POST", "/device/start", token, json={}).json()
    assert again["added"] == []
    assert call(push, "GET", "/device", token).json()["app_version"] == "2.0"


def test_a_device_subscribes_only_to_its_own_groups_categories(push: app.PushServer) -> None:
    token = token_of(register(push, "phone-1"))
    added = call(push, "PUT", "/device/subscriptions/roads", token)
    assert added.status_code == 200, added.text
    assert {c["id"] for c in added.json() if c["subscribed"]} == {"floods", "roads"}
    twice = call(push, "PUT", "/device/subscriptions/roads", token)
    assert twice.json() == added.json()
    other = call(push, "PUT", "/device/subscriptions/storms", token)
    assert (other.status_code, other.json()["error"]) == (404, "not_found")
    assert "north has no category storms" in other.json()["detail"]
    bad = call(push, "PUT", "/device/subscriptions/Not%20A%20Slug", token)
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")
    removed = call(push, "DELETE", "/device/subscriptions/floods", token)
    assert [c["id"] for c in removed.json() if c["subscribed"]] == ["roads"]
    assert call(push, "GET", "/device/subscriptions", token).json() == removed.json()


def test_a_device_id_in_a_receiver_list_reaches_the_registered_device(
    push: app.PushServer,
) -> None:
    phone = register(push, "SERIAL-0042")
    [result] = push.queues.submit(GATEWAY, [message("tx-1", ("SERIAL-0042", "SERIAL-9999"))])
    assert result.accepted
    assert result.unknown == ("SERIAL-9999",)
    assert recipients_of(push, result.message_id) == {phone["account"]}


def test_a_read_report_is_recorded_once_for_a_recipient_only(push: app.PushServer) -> None:
    reader = register(push, "phone-1")
    other = register(push, "phone-2")
    [result] = push.queues.submit(GATEWAY, [message("tx-1", ("phone-1",))])
    body = {"message_id": result.message_id}
    first = call(push, "POST", "/device/read", token_of(reader), json=body)
    assert (first.status_code, first.json()) == (200, {"recorded": True})
    assert call(push, "POST", "/device/read", token_of(reader), json=body).json() == {
        "recorded": False
    }
    refused = call(push, "POST", "/device/read", token_of(other), json=body)
    assert (refused.status_code, refused.json()["error"]) == (404, "not_found")
    _, events = push.queues.history(GATEWAY, "tx-1")
    assert [(e.kind, e.account) for e in events if e.kind == "read"] == [
        ("read", reader["account"])
    ]


def test_last_seen_is_written_at_most_once_a_minute(push: app.PushServer) -> None:
    account = register(push, "phone-1")["account"]
    now = [time.time() + 1000]
    store = devices.DeviceStore(push.engine, push.keyring, push.accounts, clock=lambda: now[0])

    def last_seen() -> float:
        with transactions.connect(push.engine, "test") as conn:
            return float(
                conn.execute(
                    sa.select(tables.device.c.LastSeen).where(tables.device.c.AccountId == account)
                ).scalar_one()
            )

    store.seen(account)
    assert last_seen() == now[0]
    first = now[0]
    now[0] += 30
    store.seen(account)
    assert last_seen() == first
    now[0] += 31
    store.seen(account)
    assert last_seen() == now[0]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_category_address_reaches_only_its_groups_subscribed_devices(
    tmp_path: pathlib.Path, db_url: str
) -> None:
    push = make_push(tmp_path, db_url)
    engine = push.engine
    try:
        add_group(engine, "north")
        add_group(engine, "south")
        add_category(engine, "north", "floods", preselected=True)
        add_category(engine, "south", "floods", preselected=True)
        push.accounts.add(GATEWAY, "gateway")
        subscribed = register(push, "n-1")["account"]
        unsubscribed = register(push, "n-2")
        call(push, "DELETE", "/device/subscriptions/floods", token_of(unsubscribed))
        south = register(push, "s-1", "south")["account"]
        results = push.queues.submit(
            GATEWAY,
            [
                message("tx-cat", ("group:north/floods",)),
                message("tx-group", ("GROUP:North",)),
                message("tx-none", ("group:nowhere",)),
            ],
        )
        by_tx = {r.tx_message_id: r for r in results}
        assert recipients_of(push, by_tx["tx-cat"].message_id) == {subscribed}
        assert recipients_of(push, by_tx["tx-group"].message_id) == {
            subscribed,
            unsubscribed["account"],
        }
        assert south not in recipients_of(push, by_tx["tx-group"].message_id)
        refused = by_tx["tx-none"]
        assert not refused.accepted
        assert refused.reason == "no known recipient: group:nowhere"
        t = tables.transmit_queue.c
        with transactions.connect(engine, "test") as conn:
            row = conn.execute(
                sa.select(t.MessageId, t.ReceiverList, t.ReceiverListEnc).where(
                    t.TxMessageId == "tx-cat"
                )
            ).one()
        # What was written is kept (sealed at rest), not the expansion.
        assert row.ReceiverList is None
        stored = push.vault.unseal(
            row.ReceiverListEnc, "TransmitQueue", "ReceiverListEnc", row.MessageId
        )
        assert stored == "group:north/floods"
    finally:
        engine.dispose()


def test_a_resubmission_after_new_subscribers_keeps_its_first_answer(
    push: app.PushServer,
) -> None:
    first_device = register(push, "n-1")["account"]
    msg = message("tx-1", ("group:north/floods",))
    [first] = push.queues.submit(GATEWAY, [msg])
    register(push, "n-2")
    [again] = push.queues.submit(GATEWAY, [dataclasses.replace(msg)])
    assert again == first
    assert recipients_of(push, first.message_id) == {first_device}


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_device_registers_again_subscribes_and_reports_a_read_on_each_database(
    tmp_path: pathlib.Path, db_url: str
) -> None:
    push = make_push(tmp_path, db_url)
    try:
        add_group(push.engine, "north")
        add_group(push.engine, "south")
        add_category(push.engine, "north", "floods", preselected=True)
        add_category(push.engine, "south", "storms", preselected=True)
        add_category(push.engine, "south", "snow")
        push.accounts.add(GATEWAY, "gateway")
        first = register(push, "SERIAL-7")
        again = register(push, "SERIAL-7", "south")
        assert (again["account"], again["replaced"]) == (first["account"], True)
        token = token_of(again)
        assert call(push, "GET", "/device", token_of(first)).status_code == 403
        assert call(push, "PUT", "/device/subscriptions/snow", token).status_code == 200
        assert call(push, "DELETE", "/device/subscriptions/storms", token).status_code == 200
        assert (
            call(push, "PUT", "/device/push-token", token, json={"token": "t-1"}).status_code == 204
        )
        me = call(push, "GET", "/device", token).json()
        assert [(c["id"], c["subscribed"]) for c in me["categories"]] == [
            ("snow", True),
            ("storms", False),
        ]
        assert me["has_push_token"] is True
        [result] = push.queues.submit(GATEWAY, [message("tx-1", ("group:south/snow",))])
        assert recipients_of(push, result.message_id) == {again["account"]}
        body = {"message_id": result.message_id}
        assert call(push, "POST", "/device/read", token, json=body).json() == {"recorded": True}
    finally:
        push.engine.dispose()


def test_the_openapi_document_describes_registration_and_the_device_api(
    push: app.PushServer,
) -> None:
    document = call(push, "GET", "/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/registrations/email",
        "/registrations/email/confirm",
        "/registrations/email/choose",
        "/registrations/code",
        "/registrations/id-token",
        "/device",
        "/device/push-token",
        "/device/start",
        "/device/subscriptions",
        "/device/subscriptions/{category}",
        "/device/read",
    ):
        assert path in paths, path
    answer = document["components"]["schemas"]["Answer"]["properties"]
    assert set(answer) == {"status", "registration", "groups", "choice_token", "expires_in"}
