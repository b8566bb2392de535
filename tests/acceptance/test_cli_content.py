"""``mpg content``, ``mpg send --recall`` and ``inbox show --json`` as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from mpg.wire import content


class Cli:
    """``mpg --config gw.toml ...`` in a scratch folder, and SQL on its database."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.db = root / "gw.db"
        self.config = root / "gw.toml"
        self.config.write_text(
            '[gateway]\naccount = "erp-a@example.com"\ndatabase_url = "sqlite:///gw.db"\n'
            '[log]\nformat = "json"\n',
            encoding="utf-8",
        )

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
        return subprocess.run(
            [sys.executable, "-m", "mpg.cli.main", "--config", str(self.config), *args],
            cwd=self.root,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"mpg {' '.join(args)} -> {done.returncode}\n{done.stderr}"
        return done.stdout

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows


@pytest.fixture
def cli(tmp_path: pathlib.Path) -> Cli:
    return Cli(tmp_path)


def test_approval_built_by_options_parses_back_as_data(cli: Cli) -> None:
    """content approval prints a document that content parse --json reads back."""
    (cli.root / "form.html").write_text("<p>假別：事假</p>", encoding="utf-8")
    document = cli.ok(
        "content",
        "approval",
        "--param",
        "sheetno=AF1",
        "--param",
        "sheettype=absentform",
        "--page",
        "page1|摘要|王小明 請假 | 一天",
        "--page-file",
        f"page2|表單|{cli.root / 'form.html'}",
        "--textbox",
        "comment|Comment|No comment",
        "--submit",
        "result|Approve",
        "--option",
        "btn1|Approve|approve",
        "--option",
        "btn2|Reject|reject",
    )
    (cli.root / "approval.xml").write_text(document, encoding="utf-8")
    data = json.loads(cli.ok("content", "parse", "approval.xml", "--json"))
    assert data["content_type"] == "msg"
    assert data["params"] == {"sheetno": "AF1", "sheettype": "absentform"}
    assert [p["text"] for p in data["pages"]] == ["王小明 請假 | 一天", "<p>假別：事假</p>"]
    assert [o["value"] for o in data["inputs"][1]["options"]] == ["approve", "reject"]
    # The data builds the same document again.
    (cli.root / "approval.json").write_text(json.dumps(data), encoding="utf-8")
    assert cli.ok("content", "approval", "--from-json", "approval.json") == document


def test_reply_piped_into_send_becomes_a_reply_row(cli: Cli) -> None:
    """content reply --in-reply-to copies the params; send --content-file - takes it from
    stdin and sets ContentType REPLY from the document."""
    cli.ok("init-db")
    approval = content.build_approval({"sheetno": "AF1"}, [], [])
    (cli.root / "approval.xml").write_text(approval, encoding="utf-8")
    reply = cli.ok(
        "content", "reply", "--in-reply-to", "approval.xml", "--result", "result|Result|approve"
    )
    tx = cli.ok("send", "--to", "erp-b", "--content-file", "-", stdin=reply).strip()
    [row] = cli.sql('SELECT * FROM "Outbox" WHERE "TxMessageId" = ?', (tx,))
    assert row["ContentType"] == "REPLY"
    parsed = content.parse_content(row["Content"])
    assert parsed.params == {"sheetno": "AF1"}
    assert parsed.result_values == {"result": "approve"}


def test_send_recall_writes_the_documents_recall_row(cli: Cli) -> None:
    """send --recall ID: SYS, U, psereceiver, '[Recall]: ID', AlertFlag 0, RECALL, 10."""
    cli.ok("init-db")
    tx = cli.ok("send", "--recall", "02b2ae73-aaaa").strip()
    [row] = cli.sql('SELECT * FROM "Outbox" WHERE "TxMessageId" = ?', (tx,))
    assert (row["AppCode"], row["ReceiverType"], row["ReceiverList"]) == ("SYS", "U", "psereceiver")
    assert (row["Subject"], row["AlertFlag"], row["ContentType"], row["State"]) == (
        "[Recall]: 02b2ae73-aaaa",
        0,
        "RECALL",
        10,
    )
    assert content.parse_recall(row["Content"]) == "02b2ae73-aaaa"
    assert cli.ok("content", "recall", "02b2ae73-aaaa") == row["Content"]


def test_inbox_show_json_gives_a_replys_results_and_never_fails_on_free_text(cli: Cli) -> None:
    """A reply's params and results come as data under "parsed"; free text gives
    parsed null and the reason."""
    cli.ok("init-db")
    reply = content.build_reply({"sheetno": "AF1"}, [content.Result("result", "R", "approve")])
    for rx, body in (("rx-reply", reply), ("rx-text", "just text")):
        cli.sql(
            'INSERT INTO "Inbox" ("RxMessageId","Content","ContentType","State") VALUES (?,?,?,0)',
            (rx, body, "REPLY"),
        )
    shown = json.loads(cli.ok("inbox", "show", "rx-reply", "--json"))
    assert shown["parsed"]["results"] == {"result": "approve"}
    assert shown["parsed"]["params"] == {"sheetno": "AF1"}
    assert shown["parse_error"] is None
    text = json.loads(cli.ok("inbox", "show", "rx-text", "--json"))
    assert text["parsed"] is None
    assert "malformed XML" in text["parse_error"]


def test_content_parse_of_a_bad_file_names_it(cli: Cli) -> None:
    """A file that is not a Content document fails with exit 1 naming the file."""
    (cli.root / "bad.xml").write_text("<nope/>", encoding="utf-8")
    done = cli.run("content", "parse", "bad.xml")
    assert done.returncode == 1
    assert "bad.xml: expected a <content> document, got <nope>" in done.stderr


UNSAFE = '<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x "boom">]><content>&x;</content>'


@pytest.mark.parametrize(
    "command",
    [("content", "parse", "unsafe.xml"), ("content", "reply", "--in-reply-to", "unsafe.xml")],
)
def test_an_unsafe_file_gets_the_same_exit_from_parse_and_reply(
    cli: Cli, command: tuple[str, ...]
) -> None:
    """A DTD in the file is refused with exit 1 naming the file, whichever command reads it."""
    (cli.root / "unsafe.xml").write_text(UNSAFE, encoding="utf-8")
    done = cli.run(*command)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("mpg: error: unsafe.xml: ")
