"""The reference agent (``mpg device``) run as a process against a test server, as a
user runs it: the console's tests watch the devices it registers."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any


def register_with_code(
    state: pathlib.Path, server_url: str, ca_file: pathlib.Path, code: str
) -> dict[str, Any]:
    """``mpg device --state STATE register --code CODE --json``, which must succeed."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mpg.cli.main",
            "device",
            "--state",
            str(state),
            "register",
            "--server",
            server_url,
            "--ca",
            str(ca_file),
            "--code",
            code,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    joined: dict[str, Any] = json.loads(done.stdout)
    return joined


def account_of(state: pathlib.Path) -> str:
    """The account the server gave the agent of ``state`` (its device.json)."""
    stored: dict[str, Any] = json.loads((state / "device.json").read_text())
    return str(stored["account"])
