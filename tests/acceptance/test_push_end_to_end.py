"""Issue 12's "Done when", end to end with real processes: a push server (``mpg server``,
TLS on loopback) that pushes through the FCM stand-in (its OAuth token endpoint and its
FCM v1 endpoint), a gateway (``mpg run``), and phones played by the reference agent
(``mpg device …`` processes) that registered, set their push tokens and subscribed.

* A gateway's AlertFlag row to a category gives exactly one push, to the one device
  subscribed to it, with no subject, content, address or account in any request the
  provider gets; the agent then fetches the message over the sealed channel.
* A gateway's row with ``Keywords`` ``mpg:publish`` to a group is published to the
  group's message file; the stand-in, on each push, fetches the file and finds the
  version the push announced, holding the row.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme
from directory_rows import add_category, add_code, add_group
from harness import Gateway, World, wait_for
from standins.common import ca_file
from standins.fcm import FcmStandIn

from mpg import config
from mpg.server import accounts, tables
from mpg.server.directory import codestore
from mpg.wire import messagefile

pytestmark = pytest.mark.xdist_group("push_end_to_end")

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","Sender","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","AlertFlag","State","Priority",'
    "\"Keywords\") VALUES (?,'BPM','example.com','alvin','D',?,?,?,'MSG',?,10,'H',?)"
)


@dataclasses.dataclass
class Setup:
    """The module's running world: three phones, one gateway, the FCM stand-in."""

    world: World
    fcm: FcmStandIn
    gateway: Gateway
    phones: dict[str, pathlib.Path]
    accounts: dict[str, str]
    engine: sa.Engine

    def jobs(self) -> list[tables.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(tables.push_job)))


def device(state: pathlib.Path, *args: str) -> Any:
    """``mpg device --state STATE ARGS --json`` as a process, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "mpg.cli.main", "device", "--state", str(state), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def configure(world: World, fcm: FcmStandIn, ca: trustme.CA) -> None:
    """Push every group's Android devices through the FCM stand-in."""
    folder = world.root / "fcm"
    folder.mkdir()
    key_file = folder / "firebase.json"
    key_file.write_text(json.dumps(fcm.service_account()), encoding="utf-8")
    key_file.chmod(0o600)
    with world.server_config.open("a") as extra:
        extra.write(
            "push_poll_seconds = 0.2\n"
            "[[server.push_providers]]\n"
            'name = "android"\nkind = "fcm"\ngroups = ["*"]\n'
            f'service_account_file = "{key_file}"\n'
            f'endpoint = "{fcm.base}"\n'
            f'ca_bundle = "{ca_file(ca, folder)}"\n'
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("push")
    world = World(root)
    ca = trustme.CA()
    try:
        for fcm in FcmStandIn().serve(ca):
            configure(world, fcm, ca)
            world.start_server()
            settings = config.load(world.server_config).server
            engine = tables.create_engine(settings.database_url)
            code_key = codestore.code_key(accounts.load_master_key(settings))
            for group in ("north", "south"):
                add_group(engine, group)
                add_category(engine, group, "floods")
            codes = {g: add_code(engine, code_key, g)[0] for g in ("north", "south")}
            server = ["--server", f"https://127.0.0.1:{world.port}", "--ca", str(world.ca_file)]
            phones, names = {}, {}
            for name, group in (("anna", "north"), ("bert", "north"), ("cleo", "south")):
                state = root / name
                joined = device(state, "register", *server, "--code", codes[group])
                device(state, "push-token", f"fcm-token-{name}")
                phones[name], names[name] = state, joined["account"]
            for name in ("anna", "cleo"):
                device(phones[name], "subscribe", "floods")
            gateway = world.gateway("erp")
            gateway.run()
            yield Setup(world, fcm, gateway, phones, names, engine)
            engine.dispose()
    finally:
        world.stop_all()


def test_an_alert_row_to_a_category_pushes_its_one_device_once_with_nothing_personal(
    setup: Setup,
) -> None:
    setup.gateway.sql(
        INSERT,
        ("tx-flood", "group:north/floods", "Hochwasser am Pegel", "Pegel 7,2 m", 1, ""),
    )
    row = setup.gateway.wait_state("tx-flood", 20)
    message_id = row["MessageId"]
    wait_for(
        "the push job to be sent",
        lambda: [j.State for j in setup.jobs() if j.MessageId == message_id] == ["sent"],
    )
    [push] = [p for p in setup.fcm.pushes if p["data"].get("message_id") == message_id]
    assert push["token"] == "fcm-token-anna"
    assert push["data"] == {
        "kind": "message",
        "group": "north",
        "priority": "H",
        "message_id": message_id,
    }
    assert push["android"]["notification"] == {
        "tag": f"m:{message_id}",
        "title_loc_key": "mpg_new_message",
    }
    everything = repr(setup.fcm.requests)
    personal = ["Hochwasser", "Pegel", "alvin", "erp@example.com", "group:north/floods"]
    for name, state in setup.phones.items():
        personal += [setup.accounts[name], device(state, "info")["device_id"]]
    for word in personal:
        assert word not in everything, word

    [rx] = wait_for(
        "the message to reach anna",
        lambda: device(setup.phones["anna"], "fetch", "--wait", "2")["new"],
    )
    got = device(setup.phones["anna"], "show", rx)
    assert (got["Subject"], got["Content"]) == ("Hochwasser am Pegel", "Pegel 7,2 m")
    for nobody in ("bert", "cleo"):
        assert device(setup.phones[nobody], "fetch")["new"] == []


def test_a_publishing_row_reaches_the_file_the_pushed_phones_then_fetch(setup: Setup) -> None:
    file_url = f"https://127.0.0.1:{setup.world.port}/files/north.ibi"
    tls = ssl.create_default_context(cafile=str(setup.world.ca_file))
    followed: list[tuple[dict[str, Any], httpx.Response]] = []

    def follow(push: dict[str, Any]) -> None:
        got = httpx.get(file_url, headers={"Accept-Encoding": "identity"}, verify=tls)
        followed.append((push, got))

    setup.fcm.on_push = follow
    before = len(setup.fcm.pushes)
    setup.gateway.sql(
        INSERT,
        ("tx-publish", "group:north", "Werk geschlossen", "bis Montag", 1, "alarm;mpg:publish"),
    )
    message_id = setup.gateway.wait_state("tx-publish", 20)["MessageId"]
    wait_for("both phones of north to follow their push", lambda: len(followed) == 2)
    tokens = sorted(push["token"] for push, _ in followed)
    assert tokens == ["fcm-token-anna", "fcm-token-bert"]
    for push, got in followed:
        assert push["data"]["kind"] == "file"
        assert push["data"]["message_id"] == message_id
        assert got.status_code == 200
        assert got.headers["etag"] == push["data"]["version"]
        [published] = messagefile.parse(got.content).messages
        assert (published.message_id, published.title) == (message_id, "Werk geschlossen")
    # The file pushes only: the row's message pushes went with its submit's transaction.
    assert len(setup.fcm.pushes) == before + 2
    assert [j.Kind for j in setup.jobs() if j.MessageId == message_id] == ["file", "file"]
    [rx] = wait_for(
        "the row to reach bert as well",
        lambda: device(setup.phones["bert"], "fetch", "--wait", "2")["new"],
    )
    assert rx
