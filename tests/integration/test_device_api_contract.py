"""The phone agent's JSON API client (``mpg device``) against the server's real
registration and device routes: the push server runs in this process over TLS on
loopback (``local_world``), with a real SMTP server and an Entra-style identity
provider on loopback (``device_world``). The agent's commands run through click in
this process; ``tests/acceptance/test_device_registration.py`` runs them as processes.
Messages (fetch, read, reply) are tested in ``test_device_agent.py``.
"""

from __future__ import annotations

import json
import pathlib
import re
import stat
from collections.abc import Iterator
from typing import Any

import device_world
import pytest
import trustme
from click.testing import CliRunner
from device_world import TWO_GROUP_TENANT, Directory, configure, populate
from harness import World, wait_for
from oidc_issuer import Issuer, claims, sign
from smtp_sink import Sink, smtp_sink

from mpg import errors, exitcodes
from mpg.cli import device as device_cli
from mpg.server import verification
from mpg.wire import keys

ADDRESS = "anna.meier@firma.example"


class Setup:
    """The running server, the mails it sent and its directory."""

    def __init__(self, world: World, mails: Sink, directory: Directory) -> None:
        self.world = world
        self.mails = mails
        self.directory = directory
        self.issuer: Issuer | None = None

    def server_args(self) -> list[str]:
        return ["--server", f"https://127.0.0.1:{self.world.port}", "--ca", str(self.world.ca_file)]

    def mailed_code(self, count: int) -> str:
        """The code of the ``count``-th mail, once it has arrived."""
        wait_for(f"mail {count}", lambda: len(self.mails.received) >= count)
        return self.mails.code()


@pytest.fixture
def setup(local_world: World, tmp_path: pathlib.Path) -> Iterator[Setup]:
    ca = trustme.CA()
    idp_ca = tmp_path / "idp-ca.pem"
    ca.cert_pem.write_to_path(str(idp_ca))
    with smtp_sink() as (mails, smtp_port):
        for issuer in Issuer().serve(ca):
            configure(local_world, smtp_port, issuer, str(idp_ca))
            local_world.start_server()
            made = Setup(local_world, mails, populate(local_world))
            made.issuer = issuer
            yield made


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    yield from device_world.restore_logging()


def run(state: pathlib.Path, *args: str, stdin: str | None = None) -> Any:
    """``mpg device --state STATE ARGS``, which must succeed; its JSON output."""
    result = CliRunner().invoke(device_cli.device, ["--state", str(state), *args], input=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def failing(state: pathlib.Path, *args: str, stdin: str | None = None) -> BaseException:
    """``mpg device --state STATE ARGS``, which must fail; the error it ended with."""
    result = CliRunner().invoke(device_cli.device, ["--state", str(state), *args], input=stdin)
    assert result.exit_code != 0, result.output
    assert result.exception is not None
    return result.exception


def refused(exc: BaseException) -> errors.RefusedByServer:
    assert isinstance(exc, errors.RefusedByServer), repr(exc)
    assert exitcodes.for_exception(exc) == exitcodes.SERVER
    return exc


def test_email_registration_with_two_groups_offers_them_then_joins_the_chosen_one(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    started = run(
        state, "register", *setup.server_args(), "--email", ADDRESS,
        "--device-id", "serial-1", "--platform", "ios", "--app-version", "2.1", "--json",
    )  # fmt: skip
    assert started == {
        "registered": False,
        "pending_email": ADDRESS,
        "device_id": "serial-1",
        "expires_in": started["expires_in"],
    }
    assert started["expires_in"] > 0
    offered = run(state, "confirm", setup.mailed_code(1), "--json")
    assert offered["registered"] is False
    assert offered["groups"] == [
        {"id": "north", "name": "North", "region": "Nord"},
        {"id": "south", "name": "South", "region": "Sued"},
    ]
    joined = run(state, "choose", "south", "--json")
    assert (joined["registered"], joined["group"]["id"], joined["replaced"]) == (
        True,
        "south",
        False,
    )
    assert [(c["id"], c["subscribed"]) for c in joined["categories"]] == [("storms", True)]
    credential = keys.parse_credential((state / "credential").read_text())
    assert credential.key_id == joined["key_id"]
    assert stat.S_IMODE((state / "credential").stat().st_mode) == 0o600
    info = run(state, "info", "--from-server", "--json")
    assert (
        info["account"],
        info["group"]["id"],
        info["pending_email"],
        info["pending_choice"],
    ) == (
        joined["account"],
        "south",
        "",
        "",
    )
    server = info["server"]
    assert (server["device_id"], server["via"], server["platform"], server["app_version"]) == (
        "serial-1",
        "email",
        "ios",
        "2.1",
    )


def test_a_group_named_at_confirmation_registers_at_once(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *setup.server_args(), "--email", ADDRESS, "--json")
    joined = run(state, "confirm", setup.mailed_code(1), "--group", "north", "--json")
    assert joined["group"]["id"] == "north"


def test_the_mailed_code_is_used_up_by_the_confirmation_that_offered_groups(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *setup.server_args(), "--email", ADDRESS, "--json")
    code = setup.mailed_code(1)
    run(state, "confirm", code, "--json")
    again = refused(failing(state, "confirm", code, "--group", "north"))
    assert (again.status, again.code) == (403, "code_used")
    unknown = refused(failing(state, "choose", "east"))
    assert (unknown.status, unknown.code) == (404, "group_not_offered")
    assert run(state, "choose", "north", "--json")["group"]["id"] == "north"
    used = failing(state, "choose", "south")
    assert "no e-mail registration is waiting" in str(used)


def test_a_refusal_shows_the_servers_detail_and_exits_with_the_server_code(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *setup.server_args(), "--email", "anna@nord.example", "--json")
    wrong = refused(failing(state, "confirm", "000000"))
    assert (wrong.status, wrong.code) == (403, "code_wrong")
    assert "wrong" in str(wrong)
    stranger = refused(failing(state, "register", "--email", "eve@elsewhere.example"))
    assert (stranger.status, stranger.code) == (404, "domain_not_registered")
    assert "elsewhere.example is not a registered domain" in str(stranger)


def test_confirming_without_an_email_registration_waiting_says_what_to_do(
    tmp_path: pathlib.Path,
) -> None:
    refusal = failing(tmp_path / "phone", "confirm", "123456")
    assert "no e-mail registration is waiting; run `mpg device register --email`" in str(refusal)


def test_an_agent_not_yet_registered_says_so_and_exits_with_the_configuration_code(
    tmp_path: pathlib.Path,
) -> None:
    refusal = failing(tmp_path / "phone", "fetch")
    assert isinstance(refusal, errors.ConfigError)
    assert "not registered; run `mpg device register` first" in str(refusal)
    assert exitcodes.for_exception(refusal) == exitcodes.CONFIG


def test_a_managed_address_starts_an_email_registration_and_a_managed_code_registers(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    managed = tmp_path / "managed.json"
    managed.write_text(json.dumps({"email": "anna@nord.example"}))
    started = run(
        tmp_path / "a", "register", *setup.server_args(), "--managed", str(managed), "--json"
    )
    assert started["pending_email"] == "anna@nord.example"
    one_group = run(tmp_path / "a", "confirm", setup.mailed_code(1), "--json")
    assert one_group["group"]["id"] == "north"
    preset = tmp_path / "preset.json"
    preset.write_text(
        json.dumps(
            {"server_url": f"https://127.0.0.1:{setup.world.port}",
             "ca_file": str(setup.world.ca_file),
             "registration_code": setup.directory.codes["south"]}
        )
    )  # fmt: skip
    assert run(tmp_path / "b", "register", "--managed", str(preset), "--json")["group"]["id"] == (
        "south"
    )
    (tmp_path / "bad.json").write_text(json.dumps({"emial": "x"}))
    refusal = failing(tmp_path / "c", "register", "--managed", str(tmp_path / "bad.json"))
    assert "unknown keys ['emial']" in str(refusal)


def test_registering_again_by_code_keeps_the_account_and_replaces_the_key(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    code = setup.directory.codes["north"]
    first = run(state, "register", *setup.server_args(), "--code", code, "--json")
    assert (first["group"]["id"], first["replaced"]) == ("north", False)
    old_credential = (state / "credential").read_text()
    again = run(state, "register", "--code", code, "--json")
    assert (again["account"], again["replaced"]) == (first["account"], True)
    assert again["key_id"] != first["key_id"]
    (state / "credential").write_text(old_credential)
    old = refused(failing(state, "start"))
    assert (old.status, old.code) == (403, "forbidden")
    assert f"key {first['key_id']} of {first['account']} is disabled" in str(old)


def test_an_unknown_or_malformed_registration_code_is_refused(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    made_up = verification.new_registration_code()
    unknown = refused(
        failing(tmp_path / "phone", "register", *setup.server_args(), "--code", made_up)
    )
    assert (unknown.status, unknown.code) == (404, "not_found")
    malformed = refused(failing(tmp_path / "phone", "register", "--code", "X" * 20))
    assert (malformed.status, malformed.code) == (400, "bad_request")


def test_registering_by_an_id_token_read_from_stdin_with_its_nonce(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    assert setup.issuer is not None
    token = sign(claims(setup.issuer, nonce="n-1"))
    reg = run(
        tmp_path / "phone", "register", *setup.server_args(), "--id-token", "-",
        "--nonce", "n-1", "--device-id", "serial-2", "--json", stdin=token + "\n",
    )  # fmt: skip
    assert reg["group"]["id"] == "north"
    wrong_nonce = refused(
        failing(
            tmp_path / "other",
            "register",
            *setup.server_args(),
            "--id-token",
            "-",
            "--nonce",
            "n-2",
            stdin=token,
        )
    )
    assert (wrong_nonce.status, wrong_nonce.code) == (403, "nonce_mismatch")


def test_an_id_token_mapping_two_groups_is_sent_again_naming_one(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    assert setup.issuer is not None
    token_file = tmp_path / "token.jwt"
    token_file.write_text(sign(claims(setup.issuer, tid=TWO_GROUP_TENANT)))
    state = tmp_path / "phone"
    args = ["register", *setup.server_args(), "--id-token", str(token_file), "--json"]
    offered = run(state, *args)
    assert (offered["registered"], [g["id"] for g in offered["groups"]]) == (
        False,
        ["north", "south"],
    )
    assert run(state, *args, "--group", "south")["group"]["id"] == "south"


def test_the_devices_own_calls_keep_its_categories(setup: Setup, tmp_path: pathlib.Path) -> None:
    state = tmp_path / "phone"
    run(state, "register", *setup.server_args(), "--code", setup.directory.codes["north"], "--json")
    assert run(state, "push-token", "fcm-token-1", "--json") == {}
    started = run(state, "start", "--json")
    assert started["added"] == []
    after = run(state, "subscribe", "roads", "--json")
    assert {c["id"]: c["subscribed"] for c in after} == {"floods": True, "roads": True}
    run(state, "unsubscribe", "floods", "--json")
    listed = run(state, "subscriptions", "--json")
    assert {c["id"]: c["subscribed"] for c in listed} == {"floods": False, "roads": True}
    info = run(state, "info", "--from-server", "--json")
    assert {c["id"]: c["subscribed"] for c in info["categories"]} == {
        "floods": False,
        "roads": True,
    }
    assert info["push_token"] == "fcm-token-1"
    assert info["server"]["has_push_token"] is True
    missing = refused(failing(state, "subscribe", "storms"))
    assert missing.status == 404
    assert "storms" in str(missing)


def test_a_credential_that_does_not_match_is_refused_as_unauthenticated(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    run(state, "register", *setup.server_args(), "--code", setup.directory.codes["north"], "--json")
    (state / "credential").write_text(keys.format_credential(keys.new_credential()))
    refusal = refused(failing(state, "start"))
    assert (refusal.status, refusal.code) == (401, "unauthenticated")


def test_asking_too_many_codes_for_one_address_is_refused_with_the_servers_wait(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    state = tmp_path / "phone"
    args = ["register", *setup.server_args(), "--email", "anna@nord.example", "--json"]
    for _ in range(5):  # the server's burst of mails per address
        run(state, *args)
    limited = failing(state, *args)
    assert isinstance(limited, errors.TransientServerError), repr(limited)
    assert "server answered 429 rate_limited" in str(limited)
    assert re.search(r"\(retry after \d+ s\)", str(limited)), str(limited)
    assert exitcodes.for_exception(limited) == exitcodes.SERVER
