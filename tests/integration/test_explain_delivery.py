"""``GET /api/v1/messages/{id}/explain`` of a real server over TLS on loopback.

The server pushes through a webhook stand-in; the devices' fetch, acknowledgement and
read report go through the server's own stores on the same database (what the sealed
protocol and the device API call), so each case reaches the link it is about.
"""

from __future__ import annotations

import pathlib
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme
from harness import World, wait_for
from pushdevices import add_device, add_group
from standins.webhook import WebhookStandIn, provider_entry

from mpg import config
from mpg.server import accounts, admins, datakeys, housekeeping, queues, tables
from mpg.server.directory import devices, regcodes, roster
from mpg.server.vault import Vault
from mpg.wire import model

SENDER = "erp-a@example.com"
SECRET = b"the-webhook-secret-of-the-explain-tests"


class Explaining:
    """A running server pushing to the stand-in, and the stores on its database."""

    def __init__(self, world: World, receiver: WebhookStandIn, ca: trustme.CA) -> None:
        standin = world.root / "standin"
        standin.mkdir()
        entry = provider_entry(receiver, ca, standin)
        world.server_config.write_text(
            world.server_config.read_text()
            + "push_poll_seconds = 0.1\n"
            + "[[server.push_providers]]\n"
            + 'name = "hook"\nkind = "webhook"\ngroups = ["*"]\n'
            + f'url = "{entry.url}"\n'
            + f'secret_file = "{entry.secret_file}"\n'
            + f'ca_bundle = "{entry.ca_bundle}"\n'
        )
        world.start_server()
        settings = config.load(world.server_config).server
        self.engine = tables.create_engine(settings.database_url)
        self.keyring = datakeys.load_keyring(settings)
        self.store = accounts.AccountStore(
            self.engine, accounts.load_master_key(settings), self.keyring
        )
        self.vault: Vault = self.store.vault
        self.store.add(SENDER, "gateway")
        self.devices = devices.DeviceStore(self.engine, self.keyring, self.store)
        self.queues = queues.QueueStore(self.engine, self.vault, addresser=self.devices.addresser)
        add_group(self.engine, "north", "floods", "roads")
        add_group(self.engine, "south")
        _, self.token = admins.AdminStore(self.engine).add("vera", "viewer", "cli:test")
        self.base = f"https://127.0.0.1:{world.port}"
        self.tls = ssl.create_default_context(cafile=str(world.ca_file))

    def device(self, group: str = "north", **kw: Any) -> str:
        """A device with a token of its own (the stand-in refuses a repeated signature)."""
        kw.setdefault("token", f"token-{uuid.uuid4().hex}")
        return add_device(self.engine, self.store, self.keyring, group, **kw)

    def send(self, *to: str, alert: bool = True, receiver_type: str = "D") -> str:
        msg = model.OutgoingMessage(
            tx_message_id=str(uuid.uuid4()),
            app_code="BPM",
            source_domain="example.com",
            agent_sender=SENDER,
            sender="alice@example.com",
            receiver_type=receiver_type,
            receivers=to,
            bcc=(),
            subject="Plant closed tonight",
            content="<c>closed</c>",
            content_type="MSG",
            alert_flag=alert,
            priority="H",
            keywords="",
            transmit_time="2026-11-23 05:41:07",
        )
        [result] = self.queues.submit(SENDER, [msg])
        assert result.accepted, result.reason
        return result.message_id

    def pushed(self, message_id: str = "") -> None:
        """Wait until the server's worker finished every push (at least one of
        ``message_id``, if given)."""
        j = tables.push_job.c

        def done() -> bool:
            with self.engine.connect() as conn:
                states = conn.execute(sa.select(j.MessageId, j.State)).all()
            mine = [s for s in states if s.MessageId == message_id]
            return (bool(mine) or not message_id) and all(
                s.State in ("sent", "failed") for s in states
            )

        wait_for("the pushes to be sent", done)

    def explain(self, message_id: str, recipient: str, token: str | None = None) -> httpx.Response:
        return httpx.get(
            f"{self.base}/api/v1/messages/{message_id}/explain",
            params={"recipient": recipient},
            headers={"Authorization": f"Bearer {token or self.token}"},
            verify=self.tls,
        )

    def broken(self, message_id: str, recipient: str) -> dict[str, Any]:
        """The first broken link of the explanation (asserting there is one)."""
        answer = self.explain(message_id, recipient)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["first_broken"] is not None, body
        [link] = [x for x in body["links"] if not x["ok"]]
        assert link["name"] == body["first_broken"]
        return dict(link)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def receiver(ca: trustme.CA) -> Iterator[WebhookStandIn]:
    yield from WebhookStandIn(SECRET).serve(ca)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookStandIn, ca: trustme.CA
) -> Iterator[Explaining]:
    root: pathlib.Path = tmp_path_factory.mktemp("explain")
    world = World(root, in_process=True)
    try:
        explaining = Explaining(world, receiver, ca)
        yield explaining
        explaining.engine.dispose()
    finally:
        world.stop_all()


def test_a_device_removed_before_the_message_names_when_and_by_whom(server: Explaining) -> None:
    phone = server.device(categories=("floods",), device_id="SERIAL-REMOVED-1")
    roster.Roster(server.engine, server.keyring).remove(phone, "admin:olga")
    message_id = server.send("group:north/floods", server.device(categories=("floods",)))
    link = server.broken(message_id, "SERIAL-REMOVED-1")
    assert link["name"] == "device"
    assert link["detail"].startswith("removed at ")
    assert link["detail"].endswith(": removed by admin:olga")


def test_a_device_removed_with_its_registration_code_names_the_code(server: Explaining) -> None:
    codes = regcodes.RegCodeStore(server.engine, b"k" * 32)
    made, _ = codes.create("North staff", "north", "cli:test")
    phone = server.device()
    with server.engine.begin() as conn:
        d = tables.device.c
        conn.execute(tables.device.update().where(d.AccountId == phone).values(ViaRef=made.code_id))
    codes.delete(made.code_id, "admin:olga")
    message_id = server.send("group:north", server.device())
    link = server.broken(message_id, phone)
    assert link["name"] == "device"
    assert f"its registration code {made.code_id} was deleted by admin:olga" in link["detail"]


def test_a_device_not_subscribed_to_the_category(server: Explaining) -> None:
    phone = server.device(categories=("roads",))
    message_id = server.send("group:north/floods", server.device(categories=("floods",)))
    assert server.broken(message_id, phone) == {
        "name": "subscribed",
        "ok": False,
        "detail": "not subscribed to north/floods",
    }


def test_a_device_of_another_group_is_not_in_the_group(server: Explaining) -> None:
    phone = server.device(group="south")
    message_id = server.send("group:north", server.device())
    link = server.broken(message_id, phone)
    assert link["name"] == "group"
    assert "group south" in link["detail"]


def test_a_token_removed_by_hygiene_says_when_and_why(
    server: Explaining, receiver: WebhookStandIn
) -> None:
    phone = server.device(token="gone-token")
    server.pushed()  # so that the scripted answer goes to this test's push
    receiver.script.then(410)
    message_id = server.send(phone)
    server.pushed(message_id)
    link = server.broken(message_id, phone)
    assert link["name"] == "token"
    assert link["detail"].startswith("push token removed at ")
    assert "token_gone" in link["detail"]


def test_a_push_accepted_but_never_fetched(server: Explaining) -> None:
    phone = server.device()
    message_id = server.send(phone)
    server.pushed(message_id)
    link = server.broken(message_id, phone)
    assert link["name"] == "fetched"
    assert link["detail"].startswith("push accepted at ")


def test_a_message_fetched_and_stored_but_never_read(server: Explaining) -> None:
    phone = server.device()
    message_id = server.send(phone)
    server.pushed(message_id)
    batch = server.queues.fetch(phone, 10, 30)
    server.queues.ack(phone, [d.rx_message_id for d in batch.deliveries])
    assert server.broken(message_id, phone)["name"] == "read"


def test_a_message_fetched_but_never_acknowledged(server: Explaining) -> None:
    phone = server.device()
    message_id = server.send(phone)
    server.pushed(message_id)
    server.queues.fetch(phone, 10, 30)
    assert server.broken(message_id, phone)["name"] == "acknowledged"


def test_a_read_message_has_no_broken_link(server: Explaining) -> None:
    phone = server.device(device_id="SERIAL-READ-1")
    message_id = server.send("SERIAL-READ-1")
    server.pushed(message_id)
    batch = server.queues.fetch(phone, 10, 30)
    server.queues.ack(phone, [d.rx_message_id for d in batch.deliveries])
    server.devices.read(phone, message_id)
    answer = server.explain(message_id, "SERIAL-READ-1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["delivered"], body["first_broken"]) == (True, None)
    names = [link["name"] for link in body["links"]]
    assert names[-4:] == ["push", "fetched", "acknowledged", "read"]
    assert "named in the list" in body["links"][names.index("group")]["detail"]


def test_an_unknown_recipient_is_the_broken_link(server: Explaining) -> None:
    message_id = server.send(server.device())
    link = server.broken(message_id, "nobody-here")
    assert link["name"] == "recipient"


def test_an_unknown_message_is_404_and_a_caller_needs_a_token(server: Explaining) -> None:
    missing = server.explain("no-such-message", "anyone")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    refused = server.explain("no-such-message", "anyone", token="not-a-token")
    assert refused.status_code == 401


def test_a_gateway_written_without_its_domain_is_delivered_once_it_acknowledged(
    server: Explaining,
) -> None:
    server.store.add("erp-b@example.com", "gateway")
    message_id = server.send("erp-b", alert=False, receiver_type="U")
    before = server.broken(message_id, "erp-b")
    assert (before["name"], before["detail"]) == ("fetched", "the message was never fetched")
    batch = server.queues.fetch("erp-b@example.com", 10, 30)
    server.queues.ack("erp-b@example.com", [d.rx_message_id for d in batch.deliveries])
    body = server.explain(message_id, "erp-b").json()
    assert (body["delivered"], body["links"][-1]["name"]) == (True, "acknowledged")
    assert "device" not in [link["name"] for link in body["links"]]


def test_removal_records_go_with_the_retention(tmp_path: pathlib.Path) -> None:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 'server.db'}")
    tables.create_tables(engine)
    now = 1_800_000_000.0
    with engine.begin() as conn:
        conn.execute(
            tables.device_removal.insert(),
            [
                {
                    "AccountId": f"dev-{days}",
                    "DeviceIndex": "0" * 64,
                    "GroupId": "north",
                    "RemovedAt": now - days * 86400,
                    "Reason": "removed by ops",
                }
                for days in (31, 29)
            ],
        )
    housekeeping.purge(engine, 30, clock=lambda: now)
    with engine.connect() as conn:
        left = conn.execute(sa.select(tables.device_removal.c.AccountId)).scalars().all()
    engine.dispose()
    assert left == ["dev-29"]
