"""``mpg server group|category|code|device …`` through click, on a temporary folder
(domains, which mail, are in tests/integration/test_directory_cli_mail.py)."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from devicerows import add_device, devices

from mpg import errors
from mpg.cli import context, directory
from mpg.cli import server as server_cli
from mpg.server import audit, datakeys, tables


@pytest.fixture
def obj(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[context.CliContext]:
    for name in (
        "MPG_CONFIG",
        "MPG_SERVER__MASTER_KEY",
        "MPG_SERVER__DATABASE_URL",
        "MPG_SERVER__DATA_KEYS",
    ):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndatabase_url = "sqlite:///{tmp_path / "server.db"}"\n'
        f'data_dir = "{tmp_path / "data"}"\nallow_plain_http = true\n'
    )
    ctx = context.CliContext(str(path))
    assert run(ctx, "init").exit_code == 0
    yield ctx
    ctx.close()


def run(obj: context.CliContext, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(server_cli.server, list(args), obj=obj, input=input)


def ok(obj: context.CliContext, *args: str, input: str | None = None) -> str:
    result = run(obj, *args, input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _device(obj: context.CliContext, **kw: Any) -> str:
    settings = obj.settings.server
    engine = tables.create_engine(settings.database_url)
    try:
        return add_device(engine, datakeys.load_keyring(settings), **kw)
    finally:
        engine.dispose()


def _devices(obj: context.CliContext) -> set[str]:
    engine = tables.create_engine(obj.settings.server.database_url)
    try:
        return devices(engine)
    finally:
        engine.dispose()


def test_groups_are_added_shown_changed_listed_and_removed(obj: context.CliContext) -> None:
    added = json.loads(
        ok(
            obj,
            "group",
            "add",
            "north",
            "--name",
            "North",
            "--region",
            "Nord",
            "--file-url",
            "https://files.example/n.xml",
            "--json",
        )
    )
    assert added["file_url"] == "https://files.example/n.xml"
    ok(obj, "category", "add", "north", "storm", "--name", "Storm", "--preselected")
    shown = json.loads(ok(obj, "group", "show", "north", "--json"))
    assert [(c["category"], c["preselected"]) for c in shown["categories"]] == [("storm", True)]
    assert "Nord" in ok(obj, "group", "change", "north", "--name", "Far North")
    assert "Far North" in ok(obj, "group", "list")
    assert "removed group north" in ok(obj, "group", "remove", "north")
    assert json.loads(ok(obj, "group", "list", "--json")) == []


def test_a_bad_group_id_is_refused_naming_the_field(obj: context.CliContext) -> None:
    result = run(obj, "group", "add", "North Pole", "--name", "x")
    assert isinstance(result.exception, errors.ValidationError)
    assert result.exception.field == "group"


def test_a_group_with_devices_is_kept_and_the_refusal_names_them(obj: context.CliContext) -> None:
    ok(obj, "group", "add", "north", "--name", "North")
    _device(obj, group="north", via="code", via_ref="c")
    result = run(obj, "group", "remove", "north")
    assert isinstance(result.exception, errors.Conflict)
    assert "still has 1 device" in str(result.exception)


def test_categories_change_and_their_removal_counts_subscriptions(obj: context.CliContext) -> None:
    ok(obj, "group", "add", "north", "--name", "North")
    ok(obj, "category", "add", "north", "storm", "--name", "Storm")
    assert "(preselected)" in ok(obj, "category", "change", "north", "storm", "--preselected")
    _device(obj, group="north", via="code", via_ref="c", subscriptions=("storm",))
    [listed] = json.loads(ok(obj, "category", "list", "north", "--json"))
    assert listed["preselected"] is True
    assert "(1 subscriptions)" in ok(obj, "category", "remove", "north", "storm")


def test_a_code_is_shown_once_and_deleting_it_asks_then_removes_its_devices(
    obj: context.CliContext,
) -> None:
    ok(obj, "group", "add", "north", "--name", "North")
    made = json.loads(
        ok(
            obj,
            "code",
            "add",
            "--name",
            "Site A",
            "--group",
            "north",
            "--valid-until",
            "2999-12-31",
            "--json",
        )
    )
    code_id = made["code_id"]
    assert len(made["code"]) == 24
    assert made["code"] not in ok(obj, "code", "show", code_id)
    mine = _device(obj, group="north", via="code", via_ref=code_id)

    declined = run(obj, "code", "delete", code_id, input="n\n")
    assert "removes 1 device(s) registered with it" in declined.output
    assert isinstance(declined.exception, errors.CommandError)
    assert mine in _devices(obj)

    assert "and 1 device(s)" in ok(obj, "code", "delete", code_id, input="y\n")
    assert _devices(obj) == set()
    [listed] = json.loads(ok(obj, "code", "list", "--json"))
    assert (listed["status"], listed["deleted_at"] is not None) == ("deleted", True)
    again = run(obj, "code", "delete", code_id, "--yes")
    assert isinstance(again.exception, errors.Refused)
    assert again.exception.code == "registration_code_deleted"


def test_a_code_list_tells_valid_from_expired(obj: context.CliContext) -> None:
    ok(obj, "group", "add", "north", "--name", "North")
    made = json.loads(ok(obj, "code", "add", "--name", "Short", "--group", "north", "--json"))
    engine = tables.create_engine(obj.settings.server.database_url)
    try:
        with engine.begin() as conn:  # as if its end had passed
            conn.execute(tables.registration_code.update().values(ValidUntil=1.0))
    finally:
        engine.dispose()
    assert "expired" in ok(obj, "code", "list")
    changed = json.loads(ok(obj, "code", "change", made["code_id"], "--no-end", "--json"))
    assert changed["status"] == "valid"


def test_devices_are_listed_shown_decrypted_and_removed_with_yes(obj: context.CliContext) -> None:
    ok(obj, "group", "add", "north", "--name", "North")
    account = _device(
        obj, group="north", via="email", via_ref="firma.example", device_id="PIXEL-7-0042"
    )
    assert "PIXEL-7-0042" in ok(obj, "device", "list", "--group", "north")
    shown = json.loads(ok(obj, "device", "show", account, "--json"))
    assert (shown["device_id"], shown["via_ref"]) == ("PIXEL-7-0042", "firma.example")
    assert f"removed device {account}" in ok(obj, "device", "remove", account, "--yes")
    assert _devices(obj) == set()
    engine = tables.create_engine(obj.settings.server.database_url)
    try:
        actors = {(e.actor.startswith("cli"), e.action) for e in audit.entries(engine)}
    finally:
        engine.dispose()
    assert (True, "device.remove") in actors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-31", dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        ("2026-12-31 18:30", dt.datetime(2026, 12, 31, 18, 30, tzinfo=dt.UTC)),
        ("2026-12-31T18:30:15", dt.datetime(2026, 12, 31, 18, 30, 15, tzinfo=dt.UTC)),
        ("2026-12-31T18:30:15+01:00", dt.datetime(2026, 12, 31, 17, 30, 15, tzinfo=dt.UTC)),
    ],
)
def test_valid_until_is_utc_and_a_date_means_through_that_day(
    text: str, expected: dt.datetime
) -> None:
    assert directory.parse_valid_until(text) == expected.timestamp()


def test_a_valid_until_that_is_no_time_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match="expected YYYY-MM-DD"):
        directory.parse_valid_until("next tuesday")
