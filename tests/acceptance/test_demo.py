"""`mpg demo` as a user runs it: whatever ends it, its server and gateways end with it."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import IO

import pytest
from harness import wait_for

from mpg.cli import demo as demo_module

READY = "The demo keeps running"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def child_pids(output: str) -> list[int]:
    """The server's and gateways' pids, as the demo prints them."""
    return [int(pid) for pid in re.findall(r"\(pid (\d+),", output)]


def start_demo(folder: pathlib.Path, stdout: int | IO[bytes]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
    return subprocess.Popen(
        [sys.executable, "-m", "mpg.cli.main", "demo", "--dir", str(folder)],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # signals in this test go to the demo alone
    )


def erp_runs_the_printed_insert(output: str, folder: pathlib.Path) -> None:
    """Paste the demo's sqlite3 INSERT as printed: it works, attachment and all."""
    sqlite3_cli = shutil.which("sqlite3")
    if sqlite3_cli is None:
        pytest.skip("the sqlite3 command-line shell is not installed (.ci/run installs it)")
    match = re.search(r"sqlite3 (\S+) <<'SQL'\n(.*?)\nSQL\n", output, re.DOTALL)
    assert match is not None, output
    database, script = match.groups()
    assert script.startswith(".timeout 5000\n")
    subprocess.run([sqlite3_cli, database], input=script, text=True, check=True, timeout=60)

    def arrived() -> bool:
        with contextlib.closing(sqlite3.connect(folder / "gateway-b.db", timeout=10)) as conn:
            rows = conn.execute(
                'SELECT a."FileName", length(a."FileData") FROM "Inbox" i JOIN "InboxAttachment" a'
                ' ON a."MessageId" = i."RxMessageId" WHERE i."Subject" = ?',
                ("你好 from sqlite3",),
            ).fetchall()
        return rows == [("leave-form-signature.png", len(demo_module.tiny_png()))]

    wait_for("the pasted INSERT's message in B's Inbox", arrived, 60)


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids a failed test must not leave running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_closing_the_terminal_stops_the_children_and_a_second_demo_is_refused(
    tmp_path: pathlib.Path, reaper: list[int]
) -> None:
    """SIGHUP (the window closed) stops all three; meanwhile a second demo keeps off."""
    folder = tmp_path / "demo-run"
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = start_demo(folder, out)
    reaper.append(demo.pid)
    wait_for("the demo to run", lambda: READY in log.read_text(encoding="utf-8"), 120)
    pids = child_pids(log.read_text(encoding="utf-8"))
    reaper.extend(pids)
    assert len(pids) == 3
    second = subprocess.run(
        [sys.executable, "-m", "mpg.cli.main", "demo", "--no-wait", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 1
    assert "another `mpg demo` is running in" in second.stderr
    assert (folder / "server.db").exists()
    assert all(alive(pid) for pid in pids)
    erp_runs_the_printed_insert(log.read_text(encoding="utf-8"), folder)

    demo.send_signal(signal.SIGHUP)
    demo.wait(timeout=60)
    assert [pid for pid in pids if alive(pid)] == []


def test_ctrl_c_with_the_output_pipe_gone_still_stops_every_child(
    tmp_path: pathlib.Path, reaper: list[int]
) -> None:
    """`mpg demo | tee log` then Ctrl-C: tee is gone first, the demo still stops all three."""
    demo = start_demo(tmp_path / "demo-run", subprocess.PIPE)
    reaper.append(demo.pid)
    assert demo.stdout is not None
    seen = ""
    while READY not in seen:
        line = demo.stdout.readline().decode("utf-8", "replace")
        assert line, seen
        seen += line
    pids = child_pids(seen)
    reaper.extend(pids)
    demo.stdout.close()  # the reader (tee) died of the same Ctrl-C
    demo.send_signal(signal.SIGINT)
    demo.wait(timeout=60)
    assert [pid for pid in pids if alive(pid)] == []


def test_children_stop_when_the_demo_is_killed(tmp_path: pathlib.Path, reaper: list[int]) -> None:
    """Even SIGKILL, which the demo cannot handle, does not leave them running (Linux)."""
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = start_demo(tmp_path / "demo-run", out)
    reaper.append(demo.pid)
    wait_for("the demo to run", lambda: READY in log.read_text(encoding="utf-8"), 120)
    pids = child_pids(log.read_text(encoding="utf-8"))
    reaper.extend(pids)
    demo.kill()
    demo.wait(timeout=60)
    wait_for("the children to stop", lambda: not any(alive(pid) for pid in pids), 60)
