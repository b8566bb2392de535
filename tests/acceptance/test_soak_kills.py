"""Gateways and server as services, killed at random moments: nothing lost or doubled.

The bounded run (300 messages, 8 kills) is part of the default suite and of CI; the
full run (2,000 messages, 20 kills; ``MPG_SOAK_MESSAGES`` / ``MPG_SOAK_KILLS`` change
it) runs under ``-m slow``. The random seed is printed and can be replayed with
``MPG_SOAK_SEED``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
from harness import DEADLINE, Gateway, World, wait_for

SIZES = [
    pytest.param(300, 8, id="bounded"),
    pytest.param(
        int(os.environ.get("MPG_SOAK_MESSAGES", "2000")),
        int(os.environ.get("MPG_SOAK_KILLS", "20")),
        id="full",
        marks=pytest.mark.slow,
    ),
]
INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","Sender","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","State","StatusTime","Priority") '
    "VALUES (?,'BPM','example.com',?,'U','bob@example.com',?,'x','MSG',10,datetime('now'),'N')"
)


class Service:
    """One MPG process started the way systemd starts it, with its own NOTIFY_SOCKET."""

    def __init__(self, world: World, name: str, config: object, verb: str) -> None:
        self.world, self.name, self.config, self.verb = world, name, config, verb
        self.folder = tempfile.mkdtemp(prefix="mpg-soak-", dir="/tmp")
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(DEADLINE)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the process and wait for its READY=1."""
        self.starts += 1
        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "10000000"}
        self.proc = self.world.start(self.config, self.verb, env=env, name=self.name)  # type: ignore[arg-type]
        while "READY=1" not in self.sock.recv(4096).decode().splitlines():
            pass

    def kill(self, how: signal.Signals) -> None:
        """Stop it with SIGTERM (graceful) or SIGKILL (a crash) and wait for the exit."""
        assert self.proc is not None
        self.proc.send_signal(how)
        self.proc.wait(timeout=DEADLINE)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder)


@pytest.fixture
def services(world: World) -> Iterator[tuple[Service, Gateway, Service, Gateway, Service]]:
    """A server, a sending gateway (erp) and a receiving gateway (bob), as services."""
    world.mpg(world.server_config, "server", "init")
    server = Service(world, "server", world.server_config, "server")
    erp = world.gateway("erp")
    bob = world.gateway("bob", kind="user")
    sender = Service(world, "erp", erp.config, "run")
    receiver = Service(world, "bob", bob.config, "run")
    try:
        yield server, erp, sender, bob, receiver
    finally:
        for service in (server, sender, receiver):
            service.close()


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("messages", "kills"), SIZES)
def test_random_kills_lose_and_duplicate_nothing(
    world: World,
    services: tuple[Service, Gateway, Service, Gateway, Service],
    messages: int,
    kills: int,
) -> None:
    """Every row ends 29 with its history; bob's Inbox has each message exactly once."""
    server, erp, sender, bob, receiver = services
    seed = int(os.environ.get("MPG_SOAK_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"MPG_SOAK_SEED={seed}")
    rng = random.Random(seed)
    for service in (server, sender, receiver):
        service.start()

    sent = [str(uuid.uuid4()) for _ in range(messages)]
    for start in range(0, messages, 100):
        for tx in sent[start : start + 100]:
            erp.sql(INSERT, (tx, erp.account, tx))
        if kills and rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, 0.5))
    for _ in range(kills):
        time.sleep(rng.uniform(0.1, 1.0))  # a random moment of the run
        victim = rng.choice([server, sender, receiver])
        victim.kill(rng.choice([signal.SIGTERM, signal.SIGKILL]))
        time.sleep(rng.uniform(0.0, 0.5))
        victim.start()

    def all_sent() -> bool:
        rows = erp.sql('SELECT COUNT(*) AS n FROM "Outbox" WHERE "State" = 29')
        return int(rows[0]["n"]) == messages

    try:
        # A bound to catch a hang, not a speed check: with the other xdist worker busy
        # with heavy tests, the run after the last kill can take several times its
        # usual 15-50 s.
        wait_for("every Outbox row to reach 29", all_sent, timeout=4 * DEADLINE + messages * 0.2)
    except BaseException:
        stuck = erp.sql(
            'SELECT "State", COUNT(*) AS n, MIN("StatusLog") AS log FROM "Outbox" '
            'WHERE "State" <> 29 GROUP BY "State"'
        )
        print("not at 29:", [dict(row) for row in stuck])
        raise
    wait_for(
        "every message in bob's Inbox",
        lambda: int(bob.sql('SELECT COUNT(*) AS n FROM "Inbox"')[0]["n"]) >= messages,
    )

    inbox = bob.sql('SELECT "MessageId", "Subject" FROM "Inbox"')
    assert len(inbox) == messages  # nothing duplicated
    assert len({row["MessageId"] for row in inbox}) == messages
    assert sorted(row["Subject"] for row in inbox) == sorted(sent)  # nothing lost
    finals = erp.sql(
        'SELECT o."TxMessageId", o."StatusLog", MAX(t."Id") AS last FROM "Outbox" o '
        'JOIN "MpgTransition" t ON t."MessageKey" = o."TxMessageId" GROUP BY o."TxMessageId"'
    )
    assert len(finals) == messages
    for row in finals:
        assert row["StatusLog"]
        [last] = erp.sql('SELECT "ToState" FROM "MpgTransition" WHERE "Id" = ?', (row["last"],))
        assert last["ToState"] == 29
