"""Hostile Outbox rows against real processes: files outside the attachment roots,
poisoned and oversized rows. Each goes to 99 saying why; a good row behind them
still reaches 29 (docs/security.md, "The gateway's files and rows")."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
from typing import Any

from harness import Gateway, World, wait_for

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","ReceiverType","ReceiverList",'
    '"Subject","Content","ContentType","AttachmentList","State","Priority") '
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def add(
    gw: Gateway,
    tx: Any,
    *,
    to: Any = "erp-b",
    content: Any = "<c/>",
    attachments: str = "",
    state: Any = 10,
    priority: str = "N",
) -> None:
    gw.sql(
        INSERT,
        (
            tx,
            "example.com",
            "U",
            to,
            f"subject {tx!r}",
            content,
            "MSG",
            attachments,
            state,
            priority,
        ),
    )


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): the state letter in /proc/PID/stat."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "T"


def failed_with(gw: Gateway, tx: Any, *needles: str) -> str:
    """Wait for ``tx`` at 99 and check its StatusLog names each of ``needles``."""
    row = gw.wait_state(tx, 99)
    log = str(row["StatusLog"])
    for needle in needles:
        assert needle in log, f"{tx!r}: {needle!r} not in StatusLog {log!r}"
    return log


def test_attachment_paths_out_of_the_roots_fail_their_row_only(world: World) -> None:
    """/etc/passwd, '..', a link outside, a link inside pointing out, the credential and
    config files inside the root, and a file swapped for a link between the check and
    the open (the gateway is stopped there by a failpoint): each row -> 99 naming the
    file and the reason, nothing of them reaches B, the good row reaches 29."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    root = world.root  # the harness's attachment root for every gateway
    (root / "swap.txt").write_bytes(b"harmless")
    (root / "good.txt").write_bytes(b"the good attachment")
    elsewhere = root.parent / f"{root.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shadow-link").symlink_to("/etc/shadow")
    (root / "innocent.pdf").symlink_to("/etc/shadow")
    dotdot = str(root) + "/.." * (len(root.parts) - 1) + "/etc/passwd"
    add(a, "swap", attachments=str(root / "swap.txt"), priority="E")
    add(a, "absolute", attachments="/etc/passwd")
    add(a, "dotdot", attachments=dotdot)
    add(a, "link-outside", attachments=str(elsewhere / "shadow-link"))
    add(a, "link-inside", attachments=str(root / "innocent.pdf"))
    add(a, "credential", attachments=str(root / "erp-a.cred"))
    add(a, "config", attachments=str(root / "erp-a.toml"))
    add(a, "good", attachments=f"{root / 'good.txt'}|1", priority="L")
    b.run()
    proc = a.run(env={"MPG_FAILPOINTS": "attachment.before_open:stop"})
    wait_for("gateway A to stop between check and open", lambda: stopped(proc.pid))
    (root / "swap-link").symlink_to("/etc/passwd")
    os.replace(root / "swap-link", root / "swap.txt")
    os.kill(proc.pid, signal.SIGCONT)

    failed_with(a, "swap", "swap.txt'", "is a symbolic link")
    failed_with(a, "absolute", "'/etc/passwd'", "outside the attachment roots")
    failed_with(a, "dotdot", "outside the attachment roots (it leads to /etc/passwd)")
    failed_with(a, "link-outside", "shadow-link'", "leads to /etc/shadow")
    failed_with(a, "link-inside", "innocent.pdf'", "leads to /etc/shadow")
    failed_with(a, "credential", "erp-a.cred'", "the gateway's credential file")
    failed_with(a, "config", "erp-a.toml'", "the configuration file")
    a.wait_state("good", 29)
    [msg] = b.inbox()
    [att] = b.sql(
        'SELECT "FileData" FROM "InboxAttachment" WHERE "MessageId" = ?', (msg["RxMessageId"],)
    )
    assert bytes(att["FileData"]) == b"the good attachment"


def test_poisoned_and_oversized_rows_fail_alone_and_big_rows_go_in_separate_requests(
    world: World,
) -> None:
    """A 10 MB Content, BLOBs in Content, ReceiverList and TxMessageId -> 99 each with
    the reason; three valid 7 MB rows (too many for one request) are cut into requests
    that fit and are accepted, and reach their recipient in fetch answers that fit its
    parser; the good row behind them all reaches 29."""
    world.start_server()
    a, b, c = world.gateway("erp-a"), world.gateway("erp-b"), world.gateway("erp-c")
    add(a, "huge", content="x" * (10 * 1024 * 1024), priority="E")
    for n in range(3):
        add(a, f"seven-{n}", to="erp-c", content="y" * (7 * 1000 * 1000), priority="H")
    add(a, "blob-content", content=b"\x00\xff binary")
    add(a, "blob-receivers", to=b"\xffb")
    add(a, b"blob-tx")
    add(a, "good", priority="L")
    b.run()
    a.run()
    c.run()

    failed_with(a, "huge", "invalid Content", "10485760 bytes")
    failed_with(a, "blob-content", "invalid Content", "binary data")
    failed_with(a, "blob-receivers", "invalid ReceiverList", "binary data")
    failed_with(a, b"blob-tx", "invalid TxMessageId", "binary data")
    a.wait_state("good", 29)
    for n in range(3):
        a.wait_state(f"seven-{n}", 29)
    got = c.sql('SELECT length("Content") AS n FROM "Inbox"')
    assert [r["n"] for r in got] == [7_000_000] * 3
    [msg] = b.inbox()
    assert msg["Subject"] == "subject 'good'"


def test_a_refused_request_is_narrowed_to_the_row_at_fault(world: World) -> None:
    """The server takes less than the gateway thinks (server.max_request_bytes = 8 MB,
    the gateway left at its default): the refused request is split until the one row
    too large for the server stands alone and goes to 99; the rest are accepted."""
    world.server_config.write_text(
        world.server_config.read_text() + "max_request_bytes = 8000000\n"
    )
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    world.gateway("erp-c")
    add(a, "three-1", to="erp-c", content="z" * 3_000_000, priority="H")
    add(a, "too-big", to="erp-c", content="z" * 8_100_000, priority="H")
    add(a, "three-2", to="erp-c", content="z" * 3_000_000, priority="H")
    add(a, "good")
    b.run()
    a.run()

    failed_with(a, "too-big", "refused by server", "too_large")
    a.wait_state("good", 29)
    for tx in ("three-1", "three-2"):
        a.wait_state(tx, 20)


def test_a_state_that_is_not_a_code_is_logged_and_shown_by_status(world: World) -> None:
    """State 'ten' and 10.5 (SQLite keeps them) are never picked up: the gateway logs
    each row once and `mpg status` lists them, instead of ignoring them silently."""
    world.start_server()
    a = world.gateway("erp-a")
    world.gateway("erp-b")
    add(a, "text-state", state="ten")
    add(a, "real-state", state=10.5)
    add(a, "good")
    a.run()
    a.wait_state("good", 20)
    log = world.root / "erp-a.log"
    wait_for(
        "both odd rows in the log",
        lambda: log.read_text().count("outbox_state_not_a_code") >= 2,
    )
    text = log.read_text()
    assert "text-state" in text
    assert "real-state" in text
    status = a.mpg("status").stdout
    assert "text-state State 'ten'" in status
    assert "real-state State 10.5" in status
    with sqlite3.connect(a.db) as conn:
        assert conn.execute(
            'SELECT "State" FROM "Outbox" WHERE "TxMessageId" = ?', ("text-state",)
        ).fetchone() == ("ten",)


def test_a_row_at_19_that_cannot_be_rebuilt_stays_and_does_not_block(world: World) -> None:
    """A row left at 19 (accepted, not yet recorded) whose file is gone or now refused
    cannot go to 99 (the server has it): it stays at 19, logged, and the rows behind it
    flow (before, the refused 19 -> 99 step failed every cycle)."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    add(a, "at-19", attachments=str(world.root / "gone.pdf"), state=19)
    add(a, "good")
    b.run()
    a.run()
    a.wait_state("good", 29)
    log = world.root / "erp-a.log"
    wait_for("the row at 19 in the log", lambda: "row_cannot_be_resumed" in log.read_text())
    row = a.outbox_row("at-19")
    assert row is not None
    assert row["State"] == 19
