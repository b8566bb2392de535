"""The delivery summary in the sender's StatusLog, from a real server over TLS.

A gateway sends an AlertFlag row to two registered devices; the server pushes them
(the log provider); the devices fetch, acknowledge and report reads through the
server's own stores. Each round of the gateway's summary rewrites the row's StatusLog
only when the counts changed, and stops once every device read the message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from harness import Gateway as GatewayFiles
from harness import World, wait_for
from pushdevices import add_device, add_group

from mpg import config
from mpg.gateway import runner
from mpg.server import accounts, datakeys, queues, tables
from mpg.server.directory import devices
from mpg.storage.states import OutboxState as S


class Devices:
    """Two registered devices of group ``acme`` acting through the server's stores."""

    def __init__(self, world: World) -> None:
        settings = config.load(world.server_config).server
        self.engine = tables.create_engine(settings.database_url)
        keyring = datakeys.load_keyring(settings)
        store = accounts.AccountStore(self.engine, accounts.load_master_key(settings), keyring)
        add_group(self.engine, "acme")
        self.a = add_device(self.engine, store, keyring, "acme", "token-a")
        self.b = add_device(self.engine, store, keyring, "acme", "token-b")
        self.queues = queues.QueueStore(self.engine, store.vault)
        self.directory = devices.DeviceStore(self.engine, keyring, store)

    def pushed(self) -> None:
        j = tables.push_job.c

        def sent() -> bool:
            with self.engine.connect() as conn:
                states = [r.State for r in conn.execute(sa.select(j.State))]
            return len(states) == 2 and set(states) == {"sent"}

        wait_for("both pushes to be sent", sent)

    def receive(self, account: str) -> None:
        batch = self.queues.fetch(account, 10, 30)
        self.queues.ack(account, [d.rx_message_id for d in batch.deliveries])


@pytest.fixture
def setup(local_world: World) -> Iterator[tuple[GatewayFiles, Devices, runner.Gateway]]:
    local_world.start_server()
    files = local_world.gateway("erp-a")
    phones = Devices(local_world)
    gateway = runner.Gateway(config.load(files.config))
    try:
        yield files, phones, gateway
    finally:
        gateway.stop()
        phones.engine.dispose()


def row(files: GatewayFiles) -> dict[str, Any]:
    found = files.outbox_row("tx-alert")
    assert found is not None
    return dict(found)


def test_the_status_log_ends_with_the_delivery_summary_as_it_grows(
    setup: tuple[GatewayFiles, Devices, runner.Gateway],
) -> None:
    files, phones, gateway = setup
    files.sql(
        'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","ReceiverType","ReceiverList",'
        '"Subject","Content","ContentType","AlertFlag","State","Priority") '
        "VALUES ('tx-alert','example.com','D',?,'Closed','<c/>','MSG',1,10,'H')",
        (f"{phones.a};{phones.b}",),
    )
    gateway.outbound.run_once()
    waiting = row(files)
    assert waiting["State"] == S.WAITING
    phones.pushed()
    phones.receive(phones.a)
    phones.directory.read(phones.a, waiting["MessageId"])

    assert gateway.summaries.run_once() == 1
    summed = row(files)
    assert summed["StatusLog"] == (
        "queued for 2 recipient(s); sent: 2 devices, 2 notified, 1 fetched, 1 read"
    )
    assert (summed["State"], summed["StatusTime"]) == (S.WAITING, waiting["StatusTime"])
    assert gateway.summaries.run_once() == 0  # nothing changed: nothing written

    phones.receive(phones.b)  # every recipient served: the receipt moves the row to 29
    gateway.inbound.handle(gateway.push.fetch(10, 1))
    assert row(files)["State"] == S.SENT
    assert gateway.summaries.run_once() == 1
    assert row(files)["StatusLog"] == "sent: 2 devices, 2 notified, 2 fetched, 1 read"

    phones.directory.read(phones.b, waiting["MessageId"])
    assert gateway.summaries.run_once() == 1
    done = row(files)["StatusLog"]
    assert done == "sent: 2 devices, 2 notified, 2 fetched, 2 read"
    phones.directory.read(phones.b, waiting["MessageId"])
    assert gateway.summaries.run_once() == 0  # every device read it: no longer asked


def test_rows_to_users_get_no_summary(
    setup: tuple[GatewayFiles, Devices, runner.Gateway], local_world: World
) -> None:
    files, _, gateway = setup
    local_world.gateway("erp-b")
    files.sql(
        'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","ReceiverType","ReceiverList",'
        '"Subject","Content","ContentType","State","Priority") '
        "VALUES ('tx-user','example.com','U','erp-b','Closed','<c/>','MSG',10,'N')"
    )
    gateway.outbound.run_once()
    assert gateway.summaries.run_once() == 0
    user_row = files.outbox_row("tx-user")
    assert user_row is not None
    assert user_row["StatusLog"] == "queued for 1 recipient(s)"
