"""End to end with real processes: phones register over the server's HTTPS API (one by
e-mail, the code read out of a real SMTP server on loopback, choosing one of its
domain's two groups), an ERP's Outbox row addressed to a category of a group reaches
only that group's subscribed device, which fetches and acknowledges it with the sealed
protocol, and its REPLY lands in the gateway's Inbox."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
from directory_rows import add_category, add_code, add_domain, add_group
from harness import World, wait_for
from smtp_sink import Sink, smtp_sink

from mpg import config
from mpg.gateway import client
from mpg.server import accounts, datakeys, tables
from mpg.server.api import deps
from mpg.server.directory import codestore
from mpg.wire import keys, model

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","AttachmentList","State","Priority")'
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def api(world: World) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(world.ca_file))
    return httpx.Client(
        base_url=f"https://127.0.0.1:{world.port}/api/v1", verify=context, timeout=30
    )


def sealed(world: World, registration: dict[str, Any]) -> client.PushClient:
    """The device's sealed-protocol client, with the credential its registration issued."""
    settings = config.GatewaySettings(
        account=registration["account"],
        server_url=f"https://127.0.0.1:{world.port}",
        ca_bundle=world.ca_file,
    )
    return client.PushClient(settings, keys.parse_credential(registration["credential"]))


def bearer(registration: dict[str, Any]) -> dict[str, str]:
    """The device API's Authorization header for a registered device."""
    credential = keys.parse_credential(registration["credential"])
    token = deps.device_token(registration["account"], credential.key_id, credential.secret)
    return {"Authorization": f"Bearer {token}"}


def register_by_email(http: httpx.Client, inbox: Sink, group: str) -> dict[str, Any]:
    """Register by e-mail, reading the code from the mail, choosing ``group``."""
    who = {"email": "anna.meier@firma.example", "device_id": "phone-mail"}
    asked = http.post("/registrations/email", json={**who, "platform": "ios"})
    assert asked.status_code == 200, asked.text
    code = wait_for("the verification mail", lambda: inbox.received and inbox.code())
    offered = http.post("/registrations/email/confirm", json={**who, "code": code}).json()
    assert offered["status"] == "choose_group", offered
    assert [g["id"] for g in offered["groups"]] == ["north", "south"]
    choice = {**who, "choice_token": offered["choice_token"], "group": group}
    chosen = http.post("/registrations/email/choose", json=choice)
    assert chosen.status_code == 200, chosen.text
    done: dict[str, Any] = chosen.json()["registration"]
    return done


def test_a_category_row_reaches_only_the_subscribed_device_of_that_group(world: World) -> None:
    with smtp_sink() as (inbox, smtp_port):
        with world.server_config.open("a") as extra:
            extra.write(
                f'mail_host = "127.0.0.1"\nmail_port = {smtp_port}\nmail_security = "plain"\n'
                'mail_from = "noreply@mpg.example"\n'
            )
        world.start_server()
        settings = config.load(world.server_config).server
        engine = tables.create_engine(settings.database_url)
        code_key = codestore.code_key(accounts.load_master_key(settings))
        for group in ("north", "south"):
            add_group(engine, group)
            add_category(engine, group, "floods", preselected=True)
            add_category(engine, group, "roads")
            add_domain(engine, datakeys.load_keyring(settings), "firma.example", group)
        codes = {group: add_code(engine, code_key, group)[0] for group in ("north", "south")}
        engine.dispose()
        gateway = world.gateway("erp-a")
        gateway.run()

        with api(world) as http:

            def register(device_id: str, group: str) -> dict[str, Any]:
                body = {"code": codes[group], "device_id": device_id, "platform": "android"}
                answer = http.post("/registrations/code", json=body)
                assert answer.status_code == 200, answer.text
                done: dict[str, Any] = answer.json()["registration"]
                return done

            subscribed = register_by_email(http, inbox, "north")
            unsubscribed = register("phone-unsubscribed", "north")
            other_group = register("phone-south", "south")
            for device in (subscribed, other_group):
                joined = http.put("/device/subscriptions/roads", headers=bearer(device))
                assert joined.status_code == 200, joined.text

    gateway.sql(
        INSERT,
        (
            "tx-flood-1",
            "ALERT",
            "example.com",
            "D",
            "group:north/roads",
            "Hochwasser",
            "Pegel 7,2 m",
            "MSG",
            "",
            10,
            "H",
        ),
    )
    row = gateway.wait_state("tx-flood-1", 20)
    assert row["StatusLog"] == "queued for 1 recipient(s)"

    phone = sealed(world, subscribed)
    try:
        batch = phone.fetch(10, wait=10)
        [delivery] = batch.deliveries
        assert (delivery.subject, delivery.receiver_list) == ("Hochwasser", "group:north/roads")
        assert delivery.sender == "erp-a@example.com"
        assert phone.ack([delivery.rx_message_id]) == 1
        reply = model.OutgoingMessage(
            tx_message_id="reply-1",
            app_code="ALERT",
            source_domain="example.com",
            agent_sender=subscribed["account"],
            sender=subscribed["account"],
            receiver_type="U",
            receivers=("erp-a@example.com",),
            bcc=(),
            subject="Re: Hochwasser",
            content="gesehen",
            content_type="REPLY",
            alert_flag=False,
            priority="N",
            keywords="",
            transmit_time="2026-11-30 19:00:00",
        )
        [answered] = phone.submit([reply])
        assert answered.accepted, answered.reason
    finally:
        phone.close()
    for other in (unsubscribed, other_group):
        nobody = sealed(world, other)
        try:
            empty = nobody.fetch(10, wait=0)
        finally:
            nobody.close()
        assert (empty.deliveries, empty.receipts) == ((), ())

    gateway.wait_state("tx-flood-1", 29)
    found = wait_for(
        "the device's reply in the gateway's Inbox",
        lambda: [m for m in gateway.inbox() if m["Subject"] == "Re: Hochwasser"],
    )
    assert found[0]["Sender"] == subscribed["account"]
