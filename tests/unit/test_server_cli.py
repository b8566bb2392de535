"""``mpg server init`` and ``mpg server account ...`` through click, on a temporary folder."""

from __future__ import annotations

import json
import pathlib
import stat
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from mpg import errors, exitcodes
from mpg.cli import context
from mpg.cli import server as server_cli
from mpg.wire import keys


@pytest.fixture
def config_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A server configuration whose files all live in ``tmp_path``."""
    for name in ("MPG_CONFIG", "MPG_SERVER__MASTER_KEY", "MPG_SERVER__DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "server.toml"
    path.write_text(
        "[server]\n"
        'database_url = "sqlite:///server.db"\n'
        'data_dir = "data"\n'
        "allow_plain_http = true\n"
    )
    return path


@pytest.fixture
def obj(config_file: pathlib.Path) -> Iterator[context.CliContext]:
    """The context object the main command would pass down."""
    ctx = context.CliContext(str(config_file))
    yield ctx
    ctx.close()


def run(obj: context.CliContext, *args: str) -> Result:
    """Invoke ``mpg server ARGS`` with ``obj`` as the context object."""
    return CliRunner().invoke(server_cli.server, list(args), obj=obj)


def test_init_creates_tables_and_private_master_and_data_keys(
    obj: context.CliContext, tmp_path: pathlib.Path
) -> None:
    """init makes every table and 0600 master and data key files; a second changes nothing."""
    first = run(obj, "init", "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert "TransmitQueue" in data["created"]
    assert "ReceiveQueue" in data["created"]
    assert data["master_key"] == "created"
    key_file = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert data["data_keys"] == "created"
    data_file = tmp_path / "data" / "data.keys"
    assert stat.S_IMODE(data_file.stat().st_mode) == 0o600
    before = key_file.read_text(), data_file.read_text()
    again = json.loads(run(obj, "init", "--json").output)
    assert again == {**data, "created": [], "master_key": "present", "data_keys": "present"}
    assert (key_file.read_text(), data_file.read_text()) == before


def test_account_add_prints_a_token_that_parses(obj: context.CliContext) -> None:
    """The token printed once is a valid credential; names are stored lower-cased."""
    run(obj, "init")
    result = run(obj, "account", "add", "ERP-A@Example.com", "--kind", "gateway", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["account"] == "erp-a@example.com"
    assert keys.parse_credential(data["credential"]).key_id == data["key_id"]


def test_account_add_writes_the_credential_file_with_mode_0600(
    obj: context.CliContext, tmp_path: pathlib.Path
) -> None:
    """With --credential-file the token goes only to the file, readable by its owner."""
    run(obj, "init")
    cred = tmp_path / "bob.cred"
    result = run(
        obj, "account", "add", "bob@example.com", "--kind", "user", "--credential-file", str(cred)
    )
    assert result.exit_code == 0, result.output
    token = cred.read_text().strip()
    keys.parse_credential(token)
    assert token not in result.output
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600


def test_list_disable_and_rotate_show_in_the_listing(obj: context.CliContext) -> None:
    """rotate-key adds a key, disable marks the account, list shows both (no secrets)."""
    run(obj, "init")
    run(obj, "account", "add", "SN-0001", "--kind", "device")
    rotated = json.loads(run(obj, "account", "rotate-key", "SN-0001", "--json").output)
    assert run(obj, "account", "disable", "SN-0001").exit_code == 0
    [listed] = json.loads(run(obj, "account", "list", "--json").output)
    assert listed["account"] == "SN-0001"
    assert listed["disabled"] is True
    assert rotated["key_id"] in [k["key_id"] for k in listed["keys"]]
    assert len(listed["keys"]) == 2
    assert "credential" not in json.dumps(listed)


def test_adding_an_existing_account_fails(obj: context.CliContext) -> None:
    """A second add of the same name is refused with a readable error (exit 1)."""
    run(obj, "init")
    run(obj, "account", "add", "bob@example.com", "--kind", "user")
    result = run(obj, "account", "add", "BOB@example.com", "--kind", "user")
    assert isinstance(result.exception, errors.ValidationError)
    assert exitcodes.for_exception(result.exception) == exitcodes.FAILURE
    assert "already exists" in str(result.exception)


def test_account_commands_without_master_key_are_a_config_error(
    obj: context.CliContext,
) -> None:
    """Before init there is no master key: exit code 3 naming the key to set."""
    result = run(obj, "account", "list")
    assert isinstance(result.exception, errors.ConfigError)
    assert exitcodes.for_exception(result.exception) == exitcodes.CONFIG
    assert "server init" in str(result.exception)


def test_unreachable_database_is_a_database_error(
    obj: context.CliContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that cannot be opened gives exit code 4."""
    monkeypatch.setenv("MPG_SERVER__DATABASE_URL", "sqlite:////nonexistent/dir/server.db")
    result = run(obj, "init")
    assert isinstance(result.exception, errors.StorageError)
    assert exitcodes.for_exception(result.exception) == exitcodes.DATABASE


def test_admin_add_sets_a_console_password_from_stdin(obj: context.CliContext) -> None:
    """--password-stdin: the admin gets its token and a console password that signs in."""
    from mpg.server import tables
    from mpg.server.console import users

    done = CliRunner().invoke(
        server_cli.server,
        ["admin", "add", "alice", "--role", "operator", "--password-stdin", "--json"],
        obj=obj,
        input="a long and varied passphrase\n",
    )
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["token"].startswith("mpga.")
    assert data["console"] is True
    engine = tables.create_engine(obj.settings.server.database_url)
    try:
        found = users.ConsoleUsers(engine).check("alice", "a long and varied passphrase")
        wrong = users.ConsoleUsers(engine).check("alice", "a long and varied passphrasE")
    finally:
        engine.dispose()
    assert found == users.ConsoleUser("alice", "operator")
    assert wrong is None


def test_admin_add_refuses_a_weak_console_password_and_creates_nothing(
    obj: context.CliContext,
) -> None:
    """A weak password is refused with its reason before the admin is created."""
    done = CliRunner().invoke(
        server_cli.server,
        ["admin", "add", "bob", "--password-stdin"],
        obj=obj,
        input="short\n",
    )
    assert done.exit_code != 0
    assert "at least 12 characters" in done.output
    listed = run(obj, "admin", "list", "--json")
    assert json.loads(listed.output) == []


def test_admin_add_without_a_terminal_gives_a_token_only(obj: context.CliContext) -> None:
    """Not on a terminal and no --password-stdin: the token, and a note how to set one."""
    done = run(obj, "admin", "add", "carol", "--role", "viewer", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["console"] is False


def test_admin_password_sets_a_new_console_password(obj: context.CliContext) -> None:
    """`admin password NAME --password-stdin` replaces the console password (audited)."""
    from mpg.server import audit, tables
    from mpg.server.console import users

    assert run(obj, "admin", "add", "dora", "--no-password").exit_code == 0
    done = CliRunner().invoke(
        server_cli.server,
        ["admin", "password", "dora", "--password-stdin"],
        obj=obj,
        input="a brand new passphrase\n",
    )
    assert done.exit_code == 0, done.output
    missing = CliRunner().invoke(
        server_cli.server,
        ["admin", "password", "nobody", "--password-stdin"],
        obj=obj,
        input="a brand new passphrase\n",
    )
    # main() turns the error into its message and exit code (docs/cli.md).
    assert isinstance(missing.exception, errors.NotFound)
    assert str(missing.exception) == "no admin nobody"
    engine = tables.create_engine(obj.settings.server.database_url)
    try:
        assert users.ConsoleUsers(engine).check("dora", "a brand new passphrase") is not None
        assert audit.entries(engine, target="dora")[0].action == "admin.password"
    finally:
        engine.dispose()
