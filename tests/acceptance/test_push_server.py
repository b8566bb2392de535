"""Pushes from a real ``mpg server`` process to a webhook stand-in: a publication the
stand-in follows to the new file version, and crashes between the commit and the send."""

from __future__ import annotations

import signal
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme
from harness import World, free_port, wait_for
from pushdevices import add_device, add_group
from standins.webhook import WebhookStandIn, provider_entry

from mpg import config, faults
from mpg.server import accounts, admins, datakeys, tables

SECRET = b"the-webhook-secret-of-this-test"


class PushWorld:
    """The world's server configured to push group ``acme`` through the stand-in."""

    def __init__(self, world: World, receiver: WebhookStandIn, ca: trustme.CA) -> None:
        self.world = world
        standin = world.root / "standin"  # not the world's ca.pem: the server's CA
        standin.mkdir()
        entry = provider_entry(receiver, ca, standin)
        world.server_config.write_text(
            world.server_config.read_text()
            + "push_lease_seconds = 2\n"
            + "push_poll_seconds = 0.2\n"
            + "[[server.push_providers]]\n"
            + 'name = "hook"\nkind = "webhook"\ngroups = ["*"]\n'
            + f'url = "{entry.url}"\n'
            + f'secret_file = "{entry.secret_file}"\n'
            + f'ca_bundle = "{entry.ca_bundle}"\n'
        )
        world.init_server()
        settings = config.load(world.server_config).server
        self.engine = tables.create_engine(settings.database_url)
        store = accounts.AccountStore(
            self.engine, accounts.load_master_key(settings), datakeys.load_keyring(settings)
        )
        add_group(self.engine, "acme")
        self.device = add_device(
            self.engine, store, datakeys.load_keyring(settings), "acme", "phone-token"
        )
        self.base = f"https://127.0.0.1:{world.port}"
        self.tls = ssl.create_default_context(cafile=str(world.ca_file))

    def start(self, failpoint: str = "") -> subprocess.Popen[bytes]:
        env = {faults.ENV_VAR: failpoint} if failpoint else None
        proc = self.world.start(self.world.server_config, "server", env=env, name="server")
        wait_for("the server to listen", self.world.listening)
        return proc

    def jobs(self) -> list[tables.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(tables.push_job)))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[WebhookStandIn]:
    yield from WebhookStandIn(SECRET).serve(ca)


@pytest.fixture
def pushing(world: World, receiver: WebhookStandIn, ca: trustme.CA) -> Iterator[PushWorld]:
    p = PushWorld(world, receiver, ca)
    yield p
    p.engine.dispose()


def test_the_stand_in_told_of_a_publication_fetches_the_new_version(
    pushing: PushWorld, receiver: WebhookStandIn
) -> None:
    """Admin API publish -> push at the stand-in -> its GET finds the announced ETag."""
    seen: list[dict[str, Any]] = []
    file_url = pushing.base + "/files/acme.ibi"

    def follow(push: dict[str, Any]) -> None:
        plain = {"Accept-Encoding": "identity"}
        got = httpx.get(file_url, headers=plain, verify=pushing.tls)
        held = {**plain, "If-None-Match": push["version"]}
        again = httpx.head(file_url, headers=held, verify=pushing.tls)
        seen.append(
            {
                "push": push,
                "status": got.status_code,
                "etag": got.headers.get("etag"),
                "body": got.content,
                "again": again.status_code,
            }
        )

    receiver.on_push = follow
    pushing.start()
    _, token = admins.AdminStore(pushing.engine).add("alice", "admin", "cli:test")
    answer = httpx.post(
        pushing.base + "/api/v1/groups/acme/publish",
        json={"messages": [{"title": "Plant closed tonight", "priority": "H"}]},
        headers={"Authorization": f"Bearer {token}"},
        verify=pushing.tls,
    )
    assert answer.status_code == 200, answer.text
    version = answer.json()["version"]
    wait_for("the stand-in to follow the push", lambda: seen)
    [followed] = seen
    assert followed["push"] == {
        "kind": "file",
        "group": "acme",
        "priority": "H",
        "version": version,
        "collapse_id": "f:acme",
        "token": "phone-token",
    }
    assert (followed["status"], followed["etag"]) == (200, version)
    assert b"Plant closed tonight" in followed["body"]
    assert followed["again"] == 304
    wait_for(
        "the job to be recorded as sent", lambda: [j.State for j in pushing.jobs()] == ["sent"]
    )


@pytest.mark.parametrize("point", faults.PUSH_POINTS)
def test_a_server_killed_between_commit_and_send_loses_no_push(
    pushing: PushWorld, receiver: WebhookStandIn, point: str
) -> None:
    """Killed after the claim: the restarted server sends it once. Killed after the
    provider took it: sent once more, under the same collapse id (the phone shows one)."""
    proc = pushing.start(point)
    pushing.world.mpg(
        pushing.world.server_config, "server", "publish", "acme", "--message", "Closed"
    )
    wait_for(f"the server to die at {point}", lambda: proc.poll() is not None)
    assert proc.returncode == -signal.SIGKILL
    before = len(receiver.received)
    pushing.start()
    wait_for("the push job to be sent", lambda: [j.State for j in pushing.jobs()] == ["sent"])
    expected = {faults.PUSH_CLAIMED: (0, 1), faults.PUSH_SENT: (1, 2)}[point]
    assert (before, len(receiver.received)) == expected
    assert {r["collapse_id"] for r in receiver.received} == {"f:acme"}
    [job] = pushing.jobs()
    assert job.Attempts == 2


def test_a_gateway_alert_row_to_a_device_gives_one_push_with_nothing_personal(
    pushing: PushWorld, receiver: WebhookStandIn
) -> None:
    """An ERP's Outbox row (ReceiverType D, AlertFlag 1) -> exactly one push, content-free."""
    pushing.start()
    erp = pushing.world.gateway("erp")
    erp.run()
    erp.sql(
        'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","Sender","ReceiverType",'
        '"ReceiverList","Subject","Content","ContentType","AlertFlag","State","Priority") '
        "VALUES ('tx-alert','BPM','example.com','alvin','D',?,'Plant closed tonight',"
        "'<c>the secret plan</c>','MSG',1,10,'E')",
        (pushing.device,),
    )
    row = erp.wait_state("tx-alert", 20)
    wait_for("the push at the stand-in", lambda: receiver.received)
    wait_for("the push job to be sent", lambda: [j.State for j in pushing.jobs()] == ["sent"])
    assert receiver.received == [
        {
            "kind": "message",
            "group": "acme",
            "priority": "E",
            "message_id": row["MessageId"],
            "collapse_id": f"m:{row['MessageId']}",
            "token": "phone-token",
        }
    ]
    history = erp.mpg("history", "tx-alert").stdout
    assert "notified" in history
    assert pushing.device in history


def test_two_server_processes_on_postgresql_send_each_push_once(
    world: World, postgresql_url: str, receiver: WebhookStandIn, ca: trustme.CA
) -> None:
    """300 publication pushes claimed by the workers of two servers sharing one
    PostgreSQL: every device is pushed exactly once."""
    standin = world.root / "standin"
    standin.mkdir()
    entry = provider_entry(receiver, ca, standin)
    push = (
        "push_poll_seconds = 0.2\n"
        "[[server.push_providers]]\n"
        'name = "hook"\nkind = "webhook"\ngroups = ["*"]\n'
        f'url = "{entry.url}"\nsecret_file = "{entry.secret_file}"\n'
        f'ca_bundle = "{entry.ca_bundle}"\n'
        '[log]\nformat = "json"\nlevel = "debug"\n'
    )
    ports = [world.port, free_port()]
    configs = [
        world._server_config(f"server-{n}", port, postgresql_url, max_long_poll=2, extra=push)
        for n, port in enumerate(ports)
    ]
    world.mpg(configs[0], "server", "init")
    settings = config.load(configs[0]).server
    engine = tables.create_engine(settings.database_url)
    store = accounts.AccountStore(
        engine, accounts.load_master_key(settings), datakeys.load_keyring(settings)
    )
    keyring = datakeys.load_keyring(settings)
    add_group(engine, "acme")
    for n in range(300):
        add_device(engine, store, keyring, "acme", f"token-{n:03d}")
    for n, (cfg, port) in enumerate(zip(configs, ports, strict=True)):
        world.start(cfg, "server", name=f"server-{n}")
        wait_for(f"server {n} to listen", lambda p=port: world.listening(p))
    world.mpg(configs[0], "server", "publish", "acme", "--message", "Closed")

    def all_sent() -> bool:
        with engine.connect() as conn:
            states = conn.execute(sa.select(tables.push_job.c.State)).scalars().all()
        return len(states) == 300 and set(states) == {"sent"}

    wait_for("every push to be sent", all_sent, timeout=300)
    tokens = sorted(r["token"] for r in receiver.received)
    assert tokens == [f"token-{n:03d}" for n in range(300)]
    sent_by = [(world.root / f"server-{n}.log").read_text().count('"push_sent"') for n in (0, 1)]
    assert sum(sent_by) == 300
    assert min(sent_by) > 0, sent_by  # both processes took part
    engine.dispose()
