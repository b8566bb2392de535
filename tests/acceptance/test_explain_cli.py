"""`mpg server explain`, `mpg history` and the StatusLog summary, with real processes.

An ERP row (ReceiverType D, AlertFlag 1) to two registered devices goes out through
`mpg run`; the `mpg server` process pushes both (its log provider). Phone A then
fetches, stores and reads the message (through the server's stores, as its agent's
requests would); phone B does nothing. The commands then tell the two apart.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from harness import World, wait_for
from pushdevices import add_device, add_group

from mpg import config, exitcodes
from mpg.server import accounts, datakeys, queues, tables
from mpg.server.directory import devices


def test_explain_history_and_status_log_tell_a_read_device_from_a_silent_one(
    world: World,
) -> None:
    world.init_server()
    settings = config.load(world.server_config).server
    engine = tables.create_engine(settings.database_url)
    keyring = datakeys.load_keyring(settings)
    store = accounts.AccountStore(engine, accounts.load_master_key(settings), keyring)
    add_group(engine, "acme")
    phone_a = add_device(engine, store, keyring, "acme", "token-a", device_id="PHONE-A")
    phone_b = add_device(engine, store, keyring, "acme", "token-b", device_id="PHONE-B")
    world.start_server()
    erp = world.gateway("erp")
    erp.config.write_text(
        erp.config.read_text().replace("[log]\n", "delivery_summary_interval = 0.5\n[log]\n")
    )
    erp.run()
    erp.sql(
        'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","ReceiverType","ReceiverList",'
        '"Subject","Content","ContentType","AlertFlag","State","Priority") '
        "VALUES ('tx-alert','example.com','D','PHONE-A;PHONE-B','Closed','<c/>','MSG',1,10,'H')"
    )
    message_id = erp.wait_state("tx-alert", 20)["MessageId"]

    def pushed() -> bool:
        with engine.connect() as conn:
            states = [r.State for r in conn.execute(sa.select(tables.push_job.c.State))]
        return states == ["sent", "sent"]

    wait_for("both pushes to be sent", pushed)

    def explain(*args: str) -> tuple[int, str]:
        done = world.mpg(world.server_config, "server", "explain", *args, check=False)
        return done.returncode, done.stdout

    code, text = explain(message_id, "PHONE-A")
    assert code == exitcodes.NOT_DELIVERED
    assert "BROKEN fetched" in text
    assert "push accepted at" in text

    pending = queues.QueueStore(engine, store.vault)
    batch = pending.fetch(phone_a, 10, 30)
    pending.ack(phone_a, [d.rx_message_id for d in batch.deliveries])
    devices.DeviceStore(engine, keyring, store).read(phone_a, message_id)

    code, text = explain(message_id, "PHONE-A")
    assert code == exitcodes.OK, text
    assert "no broken link (read at" in text
    code, text = explain(message_id, "PHONE-B", "--json")
    assert code == exitcodes.NOT_DELIVERED
    assert json.loads(text)["first_broken"] == "fetched"
    assert explain("no-such-message", "PHONE-A")[0] == exitcodes.NOT_FOUND
    assert explain(message_id, "PHONE-NEVER-SEEN")[0] == exitcodes.NOT_FOUND

    summary = "sent: 2 devices, 2 notified, 1 fetched, 1 read"
    wait_for(
        "the summary in StatusLog",
        lambda: str((erp.outbox_row("tx-alert") or {"StatusLog": ""})["StatusLog"]).endswith(
            summary
        ),
    )
    history = erp.mpg("history", "tx-alert").stdout
    assert "per recipient:" in history
    [line_a] = [line for line in history.splitlines() if line.startswith(f"  {phone_a}")]
    assert "notified" in line_a
    assert "read" in line_a
    [line_b] = [line for line in history.splitlines() if line.startswith(f"  {phone_b}")]
    assert "fetched" not in line_b
    assert history.splitlines()[-1] == summary
    engine.dispose()
