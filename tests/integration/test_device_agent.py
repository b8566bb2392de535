"""The reference phone agent (``mpg device``) against a real server process and a real
gateway: it fetches over the sealed protocol into its own Inbox, exactly once, and its
answer to an approval lands in the sending gateway's Inbox.

The device's account is made by hand (``mpg server account add --kind device``) and
adopted with ``mpg device use-account``; registration through the JSON API is tested
in ``test_device_api_contract.py`` and end to end in
``tests/acceptance/test_device_registration.py``.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import device_world
import pytest
from click.testing import CliRunner
from harness import Gateway, World, wait_for

from mpg import exitcodes, faults
from mpg.cli import device as device_cli
from mpg.wire import content

DEVICE = "dev-0001"


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    yield from device_world.restore_logging()


def device(state: pathlib.Path, *args: str, code: int = 0) -> Any:
    """``mpg device --state STATE ARGS`` in this process; its JSON output when it printed one."""
    result = CliRunner().invoke(device_cli.device, ["--state", str(state), *args])
    assert result.exit_code == code, (result.output, result.exception)
    text = result.stdout.strip()
    return json.loads(text) if text.startswith(("{", "[")) else text


@pytest.fixture
def phone(world: World) -> tuple[Gateway, pathlib.Path]:
    """A server process, a running gateway ``erp`` and a device state folder using the
    hand-made device account DEVICE."""
    world.start_server()
    gw = world.gateway("erp")
    gw.run()
    cred = world.root / "device.cred"
    world.mpg(
        world.server_config,
        "server", "account", "add", DEVICE, "--kind", "device", "--credential-file", str(cred),
    )  # fmt: skip
    state = world.root / "phone"
    device(
        state, "use-account", DEVICE, "--credential-file", str(cred),
        "--server", f"https://127.0.0.1:{world.port}", "--ca", str(world.ca_file),
    )  # fmt: skip
    return gw, state


def send_approval(gw: Gateway) -> str:
    """The gateway sends reference §3's approval to the device; its TxMessageId."""
    out = gw.mpg(
        "send", "--to", DEVICE, "--receiver-type", "D", "--approval-demo", "--app-code", "BPM"
    )
    return out.stdout.strip()


def fetch_until_new(state: pathlib.Path) -> list[str]:
    def probe() -> list[str]:
        got = device(state, "fetch", "--wait", "2", "--json")
        return list(got["new"])

    new: list[str] = wait_for("the approval to reach the device", probe)
    return new


def test_the_state_folder_keeps_the_credential_private(
    phone: tuple[Gateway, pathlib.Path],
) -> None:
    _, state = phone
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("credential", "device.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    info = device(state, "info", "--json")
    assert info["account"] == DEVICE
    secret = (state / "credential").read_text().strip().split(".", 1)[1]
    assert secret not in json.dumps(info)


def test_an_approval_is_fetched_once_and_the_reply_lands_in_the_senders_inbox(
    phone: tuple[Gateway, pathlib.Path],
) -> None:
    gw, state = phone
    send_approval(gw)
    [rx] = fetch_until_new(state)

    # Acknowledged: the next fetch finds nothing, and the Inbox holds the row once.
    assert device(state, "fetch", "--json") == {"new": [], "repeated": 0, "receipts": 0}
    [row] = device(state, "inbox", "--json")
    assert (row["RxMessageId"], row["State"], row["ContentType"]) == (rx, 0, "MSG")
    assert row["AgentSender"] == gw.account
    shown = device(state, "show", rx, "--json")
    assert shown["parsed"]["params"]["sheetno"] == "AF20261123001"

    sent = device(state, "reply", rx, "--approve", "--comment", "同意", "--json")
    assert sent["to"] == [gw.account]

    def reply_arrived() -> dict[str, Any] | None:
        return next((m for m in gw.inbox() if m["ContentType"] == "REPLY"), None)

    arrived = wait_for("the reply in the gateway's Inbox", reply_arrived)
    assert arrived["Sender"] == DEVICE
    assert arrived["MessageId"] == sent["message_id"]
    full = json.loads(gw.mpg("inbox", "show", arrived["RxMessageId"], "--json").stdout)
    parsed = content.parse_content(full["Content"])
    assert parsed.result_values == {"result": "approve", "comment": "同意"}
    assert parsed.params["sheetno"] == "AF20261123001"


def test_the_same_answer_again_is_the_same_message_and_another_answer_is_refused(
    phone: tuple[Gateway, pathlib.Path],
) -> None:
    gw, state = phone
    send_approval(gw)
    [rx] = fetch_until_new(state)
    first = device(state, "reply", rx, "--reject", "--json")
    again = device(state, "reply", rx, "--reject", "--json")
    assert again["message_id"] == first["message_id"]
    assert again["tx_message_id"] == first["tx_message_id"]
    other = CliRunner().invoke(device_cli.device, ["--state", str(state), "reply", rx, "--approve"])
    assert other.exit_code != 0
    assert exitcodes.for_exception(other.exception) == exitcodes.SERVER  # type: ignore[arg-type]


def test_an_answer_the_approval_does_not_offer_is_refused_before_sending(
    phone: tuple[Gateway, pathlib.Path],
) -> None:
    gw, state = phone
    send_approval(gw)
    [rx] = fetch_until_new(state)
    result = CliRunner().invoke(
        device_cli.device, ["--state", str(state), "reply", rx, "--answer", "maybe"]
    )
    assert "'maybe' is not offered; choose one of approve, disapprove, reject, drop" in str(
        result.exception
    )


def test_a_crash_between_storing_and_acknowledging_stores_the_message_once(
    phone: tuple[Gateway, pathlib.Path],
) -> None:
    """Killed after the Inbox commit, before the ack: the server delivers it again once
    the lease ends, and the agent only acknowledges the repeat."""
    gw, state = phone
    send_approval(gw)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
    env[faults.ENV_VAR] = faults.INBOUND_AFTER_STORE

    def crashed() -> bool:
        proc = subprocess.run(
            [sys.executable, "-m", "mpg.cli.main", "device", "--state", str(state),
             "fetch", "--wait", "2"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return proc.returncode == -signal.SIGKILL

    wait_for("the agent to die after storing", crashed)
    [stored] = device(state, "inbox", "--json")

    def repeated() -> bool:
        got = device(state, "fetch", "--wait", "2", "--json")
        assert got["new"] == []
        return bool(got["repeated"] == 1)

    wait_for("the unacknowledged delivery to come again", repeated)
    assert [r["RxMessageId"] for r in device(state, "inbox", "--json")] == [stored["RxMessageId"]]
    assert device(state, "fetch", "--json")["repeated"] == 0
