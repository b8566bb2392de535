"""The CLI as a user runs it (a subprocess), on a fresh SQLite database, with no server."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
from typing import Any

import click
import pytest

from mpg.cli import demo, main

CONTRACT_TABLES = ("Outbox", "OutboxAttachment", "Inbox", "InboxAttachment")


class Cli:
    """Runs ``mpg --config <file> ...`` in a scratch folder and reads its database."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.db = root / "gw.db"
        self.config = root / "gw.toml"
        self.config.write_text(
            '[gateway]\naccount = "erp-a@example.com"\ndatabase_url = "sqlite:///gw.db"\n'
            'attachment_roots = ["."]\n[log]\nformat = "json"\n',
            encoding="utf-8",
        )

    def run(
        self, *args: str, config: pathlib.Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """One command to completion; never raises on a non-zero exit."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
        argv = [sys.executable, "-m", "mpg.cli.main", "--config", str(config or self.config)]
        return subprocess.run(
            [*argv, *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> str:
        """A command that must succeed; returns its standard output."""
        done = self.run(*args)
        assert done.returncode == 0, f"mpg {' '.join(args)} -> {done.returncode}\n{done.stderr}"
        return done.stdout

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Plain SQL on the gateway database, as the ERP would."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows

    def schema(self) -> list[tuple[str, str]]:
        """Every table and index definition, to compare before and after."""
        return [
            (r["name"], r["sql"])
            for r in self.sql("SELECT name, sql FROM sqlite_master ORDER BY name")
        ]


@pytest.fixture
def cli(tmp_path: pathlib.Path) -> Cli:
    """A scratch folder with a gateway config pointing at gw.db there."""
    return Cli(tmp_path)


def test_version_is_printed(cli: Cli) -> None:
    """``mpg --version`` names the program and its version."""
    assert cli.ok("--version").startswith("mpg, version ")


def test_help_lists_every_command(cli: Cli) -> None:
    """``mpg --help`` lists the gateway, server and ERP-side commands."""
    out = cli.ok("--help")
    for name in ("init-db", "run", "server", "send", "status", "tail", "inbox", "content", "demo"):
        assert name in out


def test_init_db_creates_the_four_contract_tables(cli: Cli) -> None:
    """On a fresh SQLite file init-db creates Outbox, Inbox and both attachment tables."""
    out = cli.ok("init-db")
    names = {r["name"] for r in cli.sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(CONTRACT_TABLES) <= names
    for table in CONTRACT_TABLES:
        assert f"created          {table}" in out


def test_init_db_twice_changes_nothing(cli: Cli) -> None:
    """A second init-db reports the tables as present and leaves the schema as it was."""
    cli.ok("init-db")
    before = cli.schema()
    second = json.loads(cli.ok("init-db", "--json"))
    assert second["created"] == []
    assert set(CONTRACT_TABLES) <= set(second["present"])
    assert cli.schema() == before


def test_init_db_never_alters_an_existing_table(cli: Cli) -> None:
    """An Outbox the ERP made (with an extra column) is used as it is."""
    cli.ok("init-db")
    cli.sql('ALTER TABLE "Outbox" ADD COLUMN "Creator" TEXT')
    before = cli.schema()
    cli.ok("init-db")
    assert cli.schema() == before


def test_send_inserts_a_ready_row_visible_in_status(cli: Cli) -> None:
    """send prints the TxMessageId; the row is State 10 and status --json counts it."""
    cli.ok("init-db")
    tx = cli.ok(
        "send",
        "--to",
        "bob;carol@example.com",
        "--to",
        "dave",
        "--content",
        "hello",
        "--priority",
        "H",
    ).strip()
    (row,) = cli.sql('SELECT * FROM "Outbox" WHERE "TxMessageId" = ?', (tx,))
    assert row["State"] == 10
    assert row["ReceiverList"] == "bob;carol@example.com;dave"
    assert row["SourceDomain"] == "example.com"
    assert row["AgentSender"] == "erp-a@example.com"
    assert row["Priority"] == "H"
    report = json.loads(cli.ok("status", "--json"))
    ready = next(e for e in report["outbox"] if e["state"] == 10)
    assert ready == {"state": 10, "name": "READY", "count": 1}
    assert report["oldest_pending"]["tx_message_id"] == tx
    assert report["inbox"] == {"new": 0, "read": 0, "recalled": 0}


def test_send_approval_demo_with_attachment(cli: Cli) -> None:
    """--approval-demo writes the §3 approval; --attach stores absolute paths and flags."""
    cli.ok("init-db")
    (cli.root / "scan.png").write_bytes(b"\x89PNG fake")
    out = json.loads(
        cli.ok(
            "send",
            "--to",
            "erp-b@example.com",
            "--approval-demo",
            "--attach",
            "scan.png|1",
            "--tx-id",
            "tx-approval",
            "--json",
        )
    )
    assert out == {"tx_message_id": "tx-approval", "state": 10}
    (row,) = cli.sql('SELECT * FROM "Outbox"')
    assert row["ContentType"] == "MSG"
    assert row["AppCode"] == "BPM"
    assert '<content contenttype="msg">' in row["Content"]
    assert "replyinfo" in row["Content"]
    assert row["AttachmentList"] == f"{cli.root / 'scan.png'}|1"


def test_send_refuses_a_missing_attachment(cli: Cli) -> None:
    """A file that does not exist is a usage error, and no row is written."""
    cli.ok("init-db")
    done = cli.run("send", "--to", "bob", "--content", "x", "--attach", "nope.pdf")
    assert done.returncode == 2
    assert cli.sql('SELECT * FROM "Outbox"') == []


def test_send_refuses_an_attachment_the_gateway_would_refuse(cli: Cli) -> None:
    """A file outside attachment_roots, or the gateway's own config inside them, is a
    usage error naming the reason, and no row is written."""
    cli.ok("init-db")
    for path, reason in (
        ("/etc/passwd", "outside the attachment roots"),
        ("gw.toml", "configuration file"),
    ):
        done = cli.run("send", "--to", "bob", "--content", "x", "--attach", path)
        assert done.returncode == 2
        assert reason in done.stderr
    assert cli.sql('SELECT * FROM "Outbox"') == []


def test_bad_config_exits_3_naming_the_key(cli: Cli) -> None:
    """A misspelt key fails with exit 3 and one line naming it."""
    bad = cli.root / "bad.toml"
    bad.write_text("[gateway]\npoll_intervall = 1\n", encoding="utf-8")
    done = cli.run("status", config=bad)
    assert done.returncode == 3
    assert done.stderr.startswith("mpg: error: ")
    assert "gateway.poll_intervall" in done.stderr
    assert "Traceback" not in done.stderr


def test_status_on_a_database_never_initialised_exits_4_and_creates_nothing(cli: Cli) -> None:
    """No database file: exit 4 telling to run init-db, and no file made by a read."""
    for command in (("status",), ("inbox", "list"), ("tail", "--once"), ("history", "tx-1")):
        done = cli.run(*command)
        assert done.returncode == 4, command
        assert done.stderr == (
            f"mpg: error: database {cli.db} does not exist; "
            f"create it with `mpg --config {cli.config} init-db`\n"
        )
    assert not cli.db.exists()


def test_status_on_a_database_without_tables_says_run_init_db(cli: Cli) -> None:
    """An empty database file: exit 4 naming the missing table and the command to run."""
    cli.sql("CREATE TABLE other (x INTEGER)")
    done = cli.run("status")
    assert done.returncode == 4
    assert "no Outbox table in sqlite:///" in done.stderr
    assert "create the tables with `mpg --config" in done.stderr


def test_status_without_any_configuration_exits_3_and_creates_nothing(
    tmp_path: pathlib.Path,
) -> None:
    """No --config, no $MPG_CONFIG, no ./mpg.toml: say so, and leave no mpg.db behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
    done = subprocess.run(
        [sys.executable, "-m", "mpg.cli.main", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3
    assert "no configuration found (looked for --config, $MPG_CONFIG and ./mpg.toml)" in (
        done.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_help_imports_no_command_database_or_settings_library() -> None:
    """`mpg --help` lists every command without importing them (it is the first thing run)."""
    probe = (
        "import sys\n"
        "from mpg.cli import main\n"
        "main.run_cli(['--help'])\n"
        "heavy = [m for m in ('sqlalchemy', 'pydantic', 'structlog', 'mpg.cli.demo') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert "HEAVY []" in done.stdout
    for name in main.COMMANDS:
        assert name in done.stdout


def test_every_listed_command_imports_to_a_click_command() -> None:
    """The table behind `mpg --help` points at real commands."""
    group = main.cli
    for name in main.COMMANDS:
        assert isinstance(group.get_command(click.Context(group), name), click.Command)


def test_unknown_option_is_a_usage_error(cli: Cli) -> None:
    """click's usage errors keep exit code 2."""
    assert cli.run("status", "--bogus").returncode == 2


def test_inbox_list_json_on_an_empty_inbox(cli: Cli) -> None:
    """An empty Inbox lists as an empty JSON array."""
    cli.ok("init-db")
    assert json.loads(cli.ok("inbox", "list", "--json")) == []
    assert json.loads(cli.ok("inbox", "list", "--state", "all", "--json")) == []


def test_inbox_show_and_read_a_stored_message(cli: Cli) -> None:
    """show --json includes Content and attachments; read moves it 0 -> 29 once."""
    cli.ok("init-db")
    cli.sql(
        'INSERT INTO "Inbox" ("RxMessageId","AppCode","Sender","Subject","Content",'
        '"ContentType","State","ReceiveTime") VALUES (?,?,?,?,?,?,?,?)',
        (
            "rx-1",
            "BPM",
            "erp-b@example.com",
            "请假单",
            "<content/>",
            "REPLY",
            0,
            "2026-11-23 10:00:00",
        ),
    )
    listed = json.loads(cli.ok("inbox", "list", "--json"))
    assert [m["RxMessageId"] for m in listed] == ["rx-1"]
    assert "Content" not in listed[0]
    shown = json.loads(cli.ok("inbox", "show", "rx-1", "--json"))
    assert shown["Content"] == "<content/>"
    assert shown["Subject"] == "请假单"
    assert shown["attachments"] == []
    assert "marked 1 of 1 read" in cli.ok("inbox", "read", "rx-1")
    assert cli.sql('SELECT "State" FROM "Inbox"')[0]["State"] == 29
    assert json.loads(cli.ok("inbox", "list", "--json")) == []
    again = cli.run("inbox", "read", "rx-1")
    assert again.returncode == 1


def test_inbox_show_unknown_message_fails(cli: Cli) -> None:
    """Showing an RxMessageId that is not there exits 1 with a readable line."""
    cli.ok("init-db")
    done = cli.run("inbox", "show", "nope")
    assert done.returncode == 1
    assert "no Inbox message nope" in done.stderr


def test_tail_once_prints_the_history(cli: Cli) -> None:
    """tail --once --json prints the recorded transitions and exits."""
    cli.ok("init-db")
    tx = cli.ok("send", "--to", "bob", "--content", "x").strip()
    lines = cli.ok("tail", "--once", "--json", "--tx", tx).splitlines()
    steps = [json.loads(line) for line in lines]
    assert [(s["message_key"], s["to_state"]) for s in steps] == [(tx, 10)]
    assert cli.ok("tail", "--once", "--state", "29") == ""


def test_demo_round_trip_completes(cli: Cli) -> None:
    """`mpg demo --no-wait` runs server and gateways, sends, replies, and stops them all."""
    done = cli.run("demo", "--no-wait", "--dir", str(cli.root / "demo-run"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "bytes identical to the file sent" in out
    assert "submitinfo   Result = approve" in out
    assert "State 29 (SENT)" in out
    assert "stopped server (exit 0)" in out
    a_db = cli.root / "demo-run" / "gateway-a.db"
    with contextlib.closing(sqlite3.connect(a_db)) as conn:
        ((state, message_id),) = conn.execute('SELECT "State", "MessageId" FROM "Outbox"')
        ((content_type,),) = conn.execute('SELECT "ContentType" FROM "Inbox"')
    assert state == 29
    assert message_id
    assert content_type == "REPLY"


def test_attachment_fetch_downloads_an_on_demand_file(cli: Cli) -> None:
    """A DownloadFlag-0 attachment arrives without bytes; attachment fetch stores them."""
    files = demo.prepare_folder(cli.root / "world")
    port = demo.free_port()
    demo.write_configs(files, port)
    cwd = files.root
    demo.run_step(demo.mpg_argv(files.server_config, "server", "init"), cwd)
    for name, account in (("a", demo.ACCOUNT_A), ("b", demo.ACCOUNT_B)):
        demo.run_step(
            demo.mpg_argv(
                files.server_config,
                "server",
                "account",
                "add",
                account,
                "--kind",
                "gateway",
                "--credential-file",
                str(files.credential(name)),
            ),
            cwd,
        )
        demo.run_step(demo.mpg_argv(files.gateway_config(name), "init-db"), cwd)
    payload = bytes(range(256)) * 300
    (cwd / "files" / "report.bin").write_bytes(payload)
    procs = demo.Processes(cwd)
    try:
        procs.start("server", demo.mpg_argv(files.server_config, "server"), files.log("server"))
        for name in ("a", "b"):
            procs.start(name, demo.mpg_argv(files.gateway_config(name), "run"), files.log(name))
        gateway_b = files.gateway_config("b")
        demo.run_step(
            demo.mpg_argv(
                files.gateway_config("a"),
                "send",
                "--to",
                demo.ACCOUNT_B,
                "--content",
                "<content/>",
                "--attach",
                f"{cwd / 'files' / 'report.bin'}|0",
            ),
            cwd,
        )

        def arrived() -> list[dict[str, Any]] | None:
            out = demo.run_step(demo.mpg_argv(gateway_b, "inbox", "list", "--json"), cwd)
            return json.loads(out) or None

        (message,) = demo.wait_for("the message in B's Inbox", arrived, procs)
        shown = json.loads(
            demo.run_step(
                demo.mpg_argv(gateway_b, "inbox", "show", message["RxMessageId"], "--json"), cwd
            )
        )
        (attachment,) = shown["attachments"]
        assert attachment["DownloadFlag"] == 0
        assert attachment["HasFileData"] is False
        out_file = cwd / "fetched.bin"
        demo.run_step(
            demo.mpg_argv(
                gateway_b, "attachment", "fetch", attachment["AttachmentId"], "--out", str(out_file)
            ),
            cwd,
        )
        assert out_file.read_bytes() == payload
        with contextlib.closing(sqlite3.connect(files.gateway_db("b"))) as conn:
            ((stored,),) = conn.execute('SELECT "FileData" FROM "InboxAttachment"')
        assert stored == payload
    finally:
        procs.stop()
        files.release()
