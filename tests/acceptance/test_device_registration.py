"""Issue 11's "Done when", end to end with real processes: a push server process
(``mpg server``, TLS on loopback), a gateway process (``mpg run`` on SQLite), a real
SMTP server (aiosmtpd) and an Entra-style identity provider on loopback, and phones
played by the reference agent run as a user runs it (``mpg device …`` processes).

One server serves the whole module (its tests run on one worker, one after another);
each test registers its own devices and checks only those.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from device_world import Directory, configure, expire_code, populate
from harness import Gateway, World, wait_for
from oidc_issuer import OTHER_TENANT, Issuer, claims, sign
from smtp_sink import Sink, smtp_sink

from mpg import exitcodes

pytestmark = pytest.mark.xdist_group("device_registration")


@dataclasses.dataclass
class Setup:
    """The module's running world."""

    world: World
    mails: Sink
    issuer: Issuer
    directory: Directory
    gateway: Gateway
    root: pathlib.Path

    def server_args(self) -> list[str]:
        return ["--server", f"https://127.0.0.1:{self.world.port}", "--ca", str(self.world.ca_file)]

    def admin(self, *args: str) -> Any:
        """``mpg server …`` (the admin CLI) with ``--json``; its output."""
        out = self.world.mpg(self.world.server_config, "server", *args, "--json").stdout
        return json.loads(out)

    def devices(self) -> dict[str, dict[str, Any]]:
        """``mpg server device list --json`` by account."""
        return {d["account"]: d for d in self.admin("device", "list")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("devices")
    world = World(root)
    ca = trustme.CA()
    idp_ca = root / "idp-ca.pem"
    ca.cert_pem.write_to_path(str(idp_ca))
    try:
        with smtp_sink() as (mails, smtp_port):
            for issuer in Issuer().serve(ca):
                configure(world, smtp_port, issuer, str(idp_ca))
                world.start_server()
                directory = populate(world)
                gateway = world.gateway("erp")
                gateway.run()
                yield Setup(world, mails, issuer, directory, gateway, root)
    finally:
        world.stop_all()


def agent(
    state: pathlib.Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``mpg device --state STATE ARGS`` as a process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mpg.cli.main", "device", "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


def device(state: pathlib.Path, *args: str, stdin: str | None = None) -> Any:
    """``mpg device --state STATE ARGS --json``, which must succeed; its JSON output."""
    done = agent(state, *args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(state: pathlib.Path, *args: str, stdin: str | None = None) -> str:
    """``mpg device --state STATE ARGS``, which the server must refuse; its message."""
    done = agent(state, *args, stdin=stdin)
    assert done.returncode == exitcodes.SERVER, (done.returncode, done.stdout, done.stderr)
    return done.stderr


def by_email(setup: Setup, state: pathlib.Path, address: str, group: str) -> dict[str, Any]:
    """Register by e-mail: the code read from the mail, ``group`` chosen of the two."""
    mails = len(setup.mails.received)
    device(state, "register", *setup.server_args(), "--email", address)
    wait_for("the verification mail", lambda: len(setup.mails.received) > mails)
    offered = device(state, "confirm", setup.mails.code())
    assert [g["id"] for g in offered["groups"]] == ["north", "south"]
    joined: dict[str, Any] = device(state, "choose", group)
    assert joined["group"]["id"] == group
    return joined


def by_code(setup: Setup, state: pathlib.Path, code: str) -> dict[str, Any]:
    joined: dict[str, Any] = device(state, "register", *setup.server_args(), "--code", code)
    return joined


def fetch_new(state: pathlib.Path) -> list[str]:
    """Fetch until something new arrives; its RxMessageIds."""
    got: list[str] = wait_for(
        "a message to reach the device", lambda: device(state, "fetch", "--wait", "2")["new"]
    )
    return got


def test_a_category_row_reaches_only_the_subscribed_device_which_reads_and_answers_it(
    setup: Setup,
) -> None:
    phones = setup.root / "category"
    anna = by_email(setup, phones / "anna", "anna.meier@firma.example", "north")
    assert {c["id"]: c["subscribed"] for c in anna["categories"]} == {
        "floods": True,
        "roads": False,
    }
    subscribed = device(phones / "anna", "subscribe", "roads")
    assert {c["id"]: c["subscribed"] for c in subscribed} == {"floods": True, "roads": True}
    by_code(setup, phones / "same-group", setup.directory.codes["north"])
    other = by_code(setup, phones / "other-group", setup.directory.codes["south"])
    device(phones / "other-group", "subscribe", "storms")
    assert other["group"]["id"] == "south"

    tx = setup.gateway.mpg(
        "send", "--to", "group:north/roads", "--receiver-type", "D", "--approval-demo",
        "--app-code", "BPM",
    ).stdout.strip()  # fmt: skip
    setup.gateway.wait_state(tx, 20)

    [rx] = fetch_new(phones / "anna")
    [row] = device(phones / "anna", "inbox")
    assert (row["RxMessageId"], row["ReceiverList"], row["State"]) == (rx, "group:north/roads", 0)
    assert row["AgentSender"] == setup.gateway.account
    for nobody in ("same-group", "other-group"):
        assert device(phones / nobody, "fetch")["new"] == []
        assert device(phones / nobody, "inbox") == []

    read = device(phones / "anna", "read", rx)
    assert (read["changed"], read["server"]) == (True, {"recorded": True})
    again = device(phones / "anna", "read", rx)
    assert (again["changed"], again["server"]) == (False, {"recorded": False})

    answered = device(phones / "anna", "reply", rx, "--approve", "--comment", "gesehen")
    assert answered["to"] == [setup.gateway.account]
    found = wait_for(
        "the device's reply in the gateway's Inbox",
        lambda: [m for m in setup.gateway.inbox() if m["ContentType"] == "REPLY"],
    )
    assert (found[0]["Sender"], found[0]["Subject"]) == (anna["account"], "Re: " + row["Subject"])

    def read_in_history() -> list[dict[str, Any]]:
        timeline = json.loads(setup.gateway.mpg("history", tx, "--json").stdout)
        return [e for e in timeline["timeline"] if e["source"] == "server" and e["kind"] == "read"]

    [event] = wait_for("the read in the message's history", read_in_history)
    assert event["account"] == anna["account"]


def test_registration_by_code_and_by_id_token_and_the_tokens_refused_with_their_reason(
    setup: Setup,
) -> None:
    phones = setup.root / "ways"
    coded = by_code(setup, phones / "coded", setup.directory.codes["south"])
    assert coded["group"]["id"] == "south"
    token = sign(claims(setup.issuer, nonce="n-1"))
    managed = device(
        phones / "managed", "register", *setup.server_args(), "--id-token", "-",
        "--nonce", "n-1", stdin=token,
    )  # fmt: skip
    assert managed["group"]["id"] == "north"
    listed = setup.devices()
    assert (listed[coded["account"]]["via"], listed[managed["account"]]["via"]) == (
        "code",
        "idtoken",
    )
    now = int(time.time())
    for overrides, reason in (
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"iss": "https://login.example/other/v2.0"}, "wrong_issuer"),
        ({"exp": now - 3600, "iat": now - 7200}, "expired"),
        ({"tid": OTHER_TENANT}, "unmapped_tenant"),
    ):
        message = refused(
            phones / reason, "register", *setup.server_args(), "--id-token", "-",
            stdin=sign(claims(setup.issuer, **overrides)),
        )  # fmt: skip
        assert f"server refused (403 {reason})" in message, message
        assert not (phones / reason / "credential").exists()


def test_removing_a_domain_removes_its_devices_in_that_group_only(setup: Setup) -> None:
    phones = setup.root / "domain"
    north = by_email(setup, phones / "north", "nora@firma.example", "north")
    south = by_email(setup, phones / "south", "sven@firma.example", "south")
    coded = by_code(setup, phones / "coded", setup.directory.codes["north"])
    removal = setup.world.mpg(
        setup.world.server_config, "server", "domain", "remove", "firma.example",
        "--group", "north", "--yes",
    ).stdout  # fmt: skip
    assert "removed firma.example from group north" in removal
    listed = setup.devices()
    assert north["account"] not in listed
    assert {south["account"], coded["account"]} <= set(listed)
    message = refused(phones / "north", "start")
    assert f"account {north['account']} is disabled" in message
    assert f"account {north['account']} is disabled" in refused(phones / "north", "fetch")
    assert device(phones / "south", "start")["categories"][0]["id"] == "storms"


def test_a_deleted_code_removes_its_devices_and_is_refused_for_ever_an_expired_one_keeps_them(
    setup: Setup,
) -> None:
    phones = setup.root / "codes"
    made = {
        name: setup.admin("code", "add", "--name", name, "--group", "north")
        for name in ("doomed", "lapsing")
    }
    doomed = by_code(setup, phones / "doomed", made["doomed"]["code"])
    lapsing = by_code(setup, phones / "lapsing", made["lapsing"]["code"])
    bystander = by_code(setup, phones / "bystander", setup.directory.codes["north"])

    deleted = setup.world.mpg(
        setup.world.server_config, "server", "code", "delete", made["doomed"]["code_id"], "--yes"
    ).stdout
    assert "removes 1 device(s)" in deleted
    listed = setup.devices()
    assert doomed["account"] not in listed
    assert {lapsing["account"], bystander["account"]} <= set(listed)
    assert f"account {doomed['account']} is disabled" in refused(phones / "doomed", "start")
    for attempt in ("doomed", "newcomer"):
        message = refused(phones / attempt, "register", "--code", made["doomed"]["code"],
                          *setup.server_args())  # fmt: skip
        assert "server refused (410 registration_code_deleted)" in message, message

    expire_code(setup.world, made["lapsing"]["code_id"])
    message = refused(
        phones / "late", "register", *setup.server_args(), "--code", made["lapsing"]["code"]
    )
    assert "server refused (410 registration_code_expired)" in message, message
    assert lapsing["account"] in setup.devices()
    assert device(phones / "lapsing", "start")["categories"]
