"""``mpg demo``: the whole loop of the source document on one machine, with real processes.

In a fresh folder (``demo-run/``) it writes a server configuration and two gateway
configurations (``erp-a@example.com`` and ``erp-b@example.com``, SQLite), prepares the
server and its two accounts, starts the server and both gateways as subprocesses,
sends the sample approval of reference §3 from A to B, answers it from B with a REPLY,
and shows both arriving. Then it prints how to insert rows with ``sqlite3`` and keeps
running until Ctrl-C, when it stops the subprocesses cleanly.

Every step runs the same ``mpg`` commands a user would, and prints them; the short
ones run in this process (through the CLI's own entry point), the server and gateways
as subprocesses. Whatever ends the demo (Ctrl-C, SIGTERM, the terminal closing, an
output pipe gone, even SIGKILL on Linux), those subprocesses end with it, and a second
demo in the same folder is refused while the first runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import io
import os
import pathlib
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import types
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, Final, TypeVar

import click

if sys.platform != "win32":
    import fcntl

from mpg import errors, exitcodes
from mpg.cli import context
from mpg.storage import outbox, states
from mpg.wire import content

ACCOUNT_A: Final = "erp-a@example.com"
ACCOUNT_B: Final = "erp-b@example.com"
MARKER: Final = ".mpg-demo"
STEP_TIMEOUT: Final = 60.0
STOP_GRACE: Final = 15.0
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG: Final = 1
#: argv of the server in the foreground (`mpg server` with no subcommand serves).
SERVER_RUN: Final = ("server",)

T = TypeVar("T")


def _say(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan", bold=True) + text)


def _detail(text: str) -> None:
    click.echo("    " + text)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_png(width: int = 48, height: int = 48) -> bytes:
    """A small valid PNG (a coloured gradient): a binary attachment with no file to ship."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 5 % 256, y * 5 % 256, 160)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


SERVER_TOML: Final = """\
# Push server of the MPG demo (written by `mpg demo`).
# Plain http on 127.0.0.1 is allowed here ONLY because client and server run on this
# one machine for the demo and a throwaway certificate would add nothing to show;
# MPG refuses plain http on any other address. Real deployments set tls_cert/tls_key.
[server]
database_url = "sqlite:///server.db"
host = "127.0.0.1"
port = {port}
allow_plain_http = true
data_dir = "server-data"
master_key_file = "server-master.key"
public_url = "http://127.0.0.1:{port}"

[log]
format = "json"
"""

GATEWAY_TOML: Final = """\
# Gateway {name} of the MPG demo (written by `mpg demo`): account {account}.
# The credential is read from a file next to this one (never put secrets in the TOML).
# Plain http to 127.0.0.1 is allowed ONLY for this one-machine demo (see server.toml).
[gateway]
account = "{account}"
database_url = "sqlite:///gateway-{name}.db"
server_url = "http://127.0.0.1:{port}"
allow_plain_http = true
secret_file = "gateway-{name}.credential"
# Attachments by path are read only from here (docs/security.md).
attachment_roots = ["files"]
poll_interval = 0.5
long_poll_wait = 10

[log]
format = "json"
"""


@dataclasses.dataclass
class DemoFiles:
    """Paths of everything the demo writes in its folder."""

    root: pathlib.Path
    #: The open, locked marker file: a second demo in the same folder is refused.
    lock: IO[str] | None = None

    def release(self) -> None:
        """Unlock the folder (the next demo may replace it)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    @property
    def server_config(self) -> pathlib.Path:
        """The server's TOML."""
        return self.root / "server.toml"

    def gateway_config(self, name: str) -> pathlib.Path:
        """Gateway ``a`` or ``b``'s TOML."""
        return self.root / f"gateway-{name}.toml"

    def gateway_db(self, name: str) -> pathlib.Path:
        """Gateway ``a`` or ``b``'s SQLite file (its Outbox and Inbox)."""
        return self.root / f"gateway-{name}.db"

    def credential(self, name: str) -> pathlib.Path:
        """Gateway ``a`` or ``b``'s credential file."""
        return self.root / f"gateway-{name}.credential"

    def log(self, name: str) -> pathlib.Path:
        """A subprocess's log file."""
        return self.root / "logs" / f"{name}.log"

    @property
    def attachment(self) -> pathlib.Path:
        """The binary file the approval carries."""
        return self.root / "files" / "leave-form-signature.png"


def _lock(marker: pathlib.Path) -> IO[str]:
    """Hold an exclusive lock on ``marker`` for as long as the returned file stays open.

    Refused (:class:`~mpg.cli.errors.CommandError`) while another process holds it,
    i.e. a demo runs in that folder. Windows has no ``flock``: the file is returned
    unlocked there.
    """
    handle = marker.open("a+", encoding="utf-8")
    if sys.platform != "win32":
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            handle.close()
            raise errors.CommandError(
                f"another `mpg demo` is running in {marker.parent} ({owner}); "
                "stop it first (Ctrl-C in its terminal), or give this one another --dir"
            ) from None
    return handle


def prepare_folder(root: pathlib.Path) -> DemoFiles:
    """Create ``root`` afresh; refuse to delete a folder the demo did not make, or one
    a running demo uses. The folder stays locked until :meth:`DemoFiles.release`."""
    if root.exists():
        if not (root / MARKER).exists():
            raise errors.CommandError(
                f"{root} exists and was not made by `mpg demo`; choose another --dir"
            )
        with _lock(root / MARKER):  # refuses while another demo runs there
            shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    (root / "files").mkdir()
    lock = _lock(root / MARKER)
    lock.write(f"made by mpg demo, pid {os.getpid()}; deleted by the next `mpg demo`\n")
    lock.flush()
    return DemoFiles(root, lock)


def write_configs(files: DemoFiles, port: int) -> None:
    """The server configuration and the two gateway configurations."""
    files.server_config.write_text(SERVER_TOML.format(port=port), encoding="utf-8")
    for name, account in (("a", ACCOUNT_A), ("b", ACCOUNT_B)):
        text = GATEWAY_TOML.format(name=name, account=account, port=port)
        files.gateway_config(name).write_text(text, encoding="utf-8")
    files.attachment.write_bytes(tiny_png())


def mpg_argv(config_file: pathlib.Path, *args: str) -> list[str]:
    """argv running this very ``mpg`` (the same interpreter) with a config file."""
    return [sys.executable, "-m", "mpg.cli.main", "--config", str(config_file), *args]


def _shown(argv: list[str]) -> str:
    """The command as a user would type it."""
    return shlex.join(["mpg", *argv[3:]])


def run_step(argv: list[str], cwd: pathlib.Path) -> str:
    """Run one ``mpg`` command, show it, and fail the demo with its errors if it fails.

    It runs in this process (a new Python per step cost 1.5-2.5 s each;
    docs/benchmarks.md), with its output captured as a subprocess's would be.
    """
    from mpg.cli import main

    _detail("$ " + _shown(argv))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main.run_cli(argv[3:])
    if code != exitcodes.OK:
        raise errors.CommandError(
            f"`{_shown(argv)}` exited {code}: {err.getvalue().strip()[-800:]}"
        )
    return out.getvalue()


#: libc, loaded before any fork: the child may only call into it, not load it.
_LIBC: Final = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the demo dies, however it dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """The long-running subprocesses, stopped in reverse order of start."""

    def __init__(self, cwd: pathlib.Path) -> None:
        self.cwd = cwd
        self.running: list[tuple[str, subprocess.Popen[bytes], pathlib.Path]] = []

    def start(self, name: str, argv: list[str], log: pathlib.Path) -> None:
        """Start ``argv`` with its output in ``log``, in its own session (Ctrl-C is ours).

        Its own session keeps a terminal's signals away from it, so the demo alone
        decides how it stops; on Linux it is also told to stop if the demo dies.
        """
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.running.append((name, proc, log))
        _detail(f"$ {_shown(argv)}   (pid {proc.pid}, log: {log.relative_to(self.cwd)})")

    def check(self) -> None:
        """Fail the demo if a subprocess died, showing the end of its log."""
        for name, proc, log in self.running:
            code = proc.poll()
            if code is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
                raise errors.CommandError(f"{name} exited with {code}; end of {log}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM all (gateways first, server last), SIGKILL after the grace period.

        Nothing here writes before every process is gone: the terminal or pipe the
        demo writes to may be gone already (closed window, ``| tee`` ended by Ctrl-C).
        Nor can a second Ctrl-C or SIGHUP cut it short: they are ignored meanwhile.
        """
        with _stop_signals_ignored():
            for _name, proc, _log in reversed(self.running):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for _name, proc, _log in reversed(self.running):
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        stopped, self.running = self.running, []
        with contextlib.suppress(OSError):
            for name, proc, _log in reversed(stopped):
                _detail(f"stopped {name} (exit {proc.returncode})")


def wait_for(what: str, probe: Callable[[], T | None], procs: Processes) -> T:
    """Poll ``probe`` until it returns a value; fail after :data:`STEP_TIMEOUT`."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        procs.check()
        value = probe()
        if value is not None:
            return value
        time.sleep(0.25)
    raise errors.CommandError(f"timed out after {STEP_TIMEOUT:.0f}s waiting for {what}")


def _port_open(port: int) -> bool | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return True if sock.connect_ex(("127.0.0.1", port)) == 0 else None


def _find_message(
    ctx: context.CliContext, message_id: str | None, content_type: str
) -> dict[str, Any] | None:
    """The newest Inbox row of ``content_type`` (and ``message_id`` when known)."""
    for row in ctx.inbox().list(None, 1000):
        if str(row.get("ContentType", "")).strip().upper() != content_type:
            continue
        if message_id is None or row.get("MessageId") == message_id:
            return ctx.inbox().get(str(row["RxMessageId"]))
    return None


def _outbox_done(ctx: context.CliContext, tx: str) -> outbox.OutboxRow | None:
    row = ctx.outbox().get(tx)
    return row if row is not None and row.state == states.OutboxState.SENT else None


def _show_inbox_row(row: dict[str, Any], original: bytes | None, ctx: context.CliContext) -> None:
    _detail(f"RxMessageId  {row['RxMessageId']}")
    _detail(f"MessageId    {row.get('MessageId')}")
    _detail(
        f"from         {row.get('Sender')}  (AppCode {row.get('AppCode')}, "
        f"ContentType {row.get('ContentType')})"
    )
    _detail(f"Subject      {row.get('Subject')}")
    parsed = content.parse_content(str(row.get("Content") or ""))
    _detail(f"params       {parsed.params}")
    if parsed.results:
        answers = ", ".join(f"{r.name or r.id} = {r.value}" for r in parsed.results)
        _detail(f"submitinfo   {answers}")
    elif parsed.pages:
        _detail(f"pages        {', '.join(page.name for page in parsed.pages)}")
    for item in row.get("attachments", []):
        meta = ctx.inbox().attachment(str(item["AttachmentId"]))
        data = None if meta is None else meta.get("FileData")
        verdict = ""
        if original is not None and data is not None:
            same = hashlib.sha256(bytes(data)).digest() == hashlib.sha256(original).digest()
            verdict = "bytes identical to the file sent" if same else "BYTES DIFFER"
        _detail(
            f"attachment   {item.get('FileName')} ({item.get('FileSize')} bytes, "
            f"DownloadFlag {item.get('DownloadFlag')}) {verdict}"
        )


#: What an ERP writes to send a message (printed for the user to paste, not run here).
#: ``.timeout`` first: the gateway takes the write lock briefly while it moves rows, and
#: the sqlite3 shell would otherwise give up at once with "database is locked".
INSERT_SQL: Final = """\
.timeout 5000
INSERT INTO Outbox (TxMessageId, AppCode, SourceDomain, AgentSender, Sender,
  ReceiverType, ReceiverList, Subject, Content, ContentType, AttachmentList,
  AlertFlag, State, StatusTime, Priority)
VALUES (lower(hex(randomblob(16))), 'BPM', 'example.com', 'erp-a@example.com',
  'erp-a@example.com', 'U', 'erp-b@example.com', '你好 from sqlite3',
  '<content contenttype="msg"><params/></content>', 'MSG', {attachments},
  1, 10, strftime('%Y-%m-%d %H:%M:%S', 'now', 'localtime'), 'N');"""

#: What an ERP runs to read its new messages and mark them read (docs/states.md).
READ_SQL: Final = """\
.timeout 5000
SELECT RxMessageId, Sender, Subject, State FROM Inbox WHERE State = 0;
UPDATE Inbox SET State = 29, StatusTime = strftime('%Y-%m-%d %H:%M:%S', 'now', 'localtime')
 WHERE State = 0;"""


def _sql_text(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def print_try_it(files: DemoFiles) -> None:
    """How to drive the running demo by hand with sqlite3 and ``mpg tail``."""
    mpg = shlex.quote(str(pathlib.Path(sys.executable).with_name("mpg")))
    config_a = shlex.quote(str(files.gateway_config("a")))
    config_b = shlex.quote(str(files.gateway_config("b")))
    click.echo("")
    _say("The demo keeps running. Try it yourself in another terminal:")
    click.echo("\n# 1. watch gateway A's Outbox rows move 10 -> 12 -> 19 -> 20 -> 29:")
    click.echo(f"{mpg} --config {config_a} tail")
    click.echo("\n# 2. be gateway A's ERP: write an Outbox row to erp-b@example.com:")
    # AttachmentList: full paths; "|1" makes the file travel with the message.
    insert = INSERT_SQL.format(attachments=_sql_text(f"{files.attachment}|1"))
    click.echo(f"sqlite3 {shlex.quote(str(files.gateway_db('a')))} <<'SQL'\n{insert}\nSQL")
    click.echo("\n# 3. be gateway B's ERP: read the new Inbox rows and mark them read:")
    click.echo(f"sqlite3 {shlex.quote(str(files.gateway_db('b')))} <<'SQL'\n{READ_SQL}\nSQL")
    click.echo("\n# the same with mpg:")
    click.echo(f"{mpg} --config {config_b} inbox list --state all")
    click.echo(f"{mpg} --config {config_a} status")
    click.echo(f"\n# logs of the server and both gateways: {files.root / 'logs'}\n")
    _say("Press Ctrl-C to stop the server and both gateways.")


#: Signals that end the demo like Ctrl-C: a kill, and the terminal window closing.
STOP_SIGNALS: Final = (signal.SIGTERM,) + ((signal.SIGHUP,) if sys.platform != "win32" else ())


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    """Ignore Ctrl-C and :data:`STOP_SIGNALS` inside (stopping is under way already)."""
    signums = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo like Ctrl-C, so the subprocesses are stopped."""

    def on_term(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, on_term) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_demo(root: pathlib.Path, *, wait: bool) -> None:
    """The demo's steps; ``wait`` keeps it running until Ctrl-C at the end.

    Whatever ends it (Ctrl-C, SIGTERM, the terminal closing, a failed step, an output
    error), the server and gateways it started are stopped before it returns.
    """
    files = prepare_folder(root)
    procs = Processes(files.root)
    try:
        with _terminate_as_interrupt():
            try:
                _steps(files, procs, wait=wait)
            except KeyboardInterrupt:
                with contextlib.suppress(OSError):
                    click.echo("")
                    _say("Stopping")
            finally:
                procs.stop()
    finally:
        files.release()


def _steps(files: DemoFiles, procs: Processes, *, wait: bool) -> None:
    port = free_port()
    cwd = files.root
    _say(f"[1/8] Writing the server and two gateway configurations in {files.root}")
    write_configs(files, port)

    _say(f"[2/8] Preparing the push server, starting it on 127.0.0.1:{port}, adding A and B")
    run_step(mpg_argv(files.server_config, "server", "init"), cwd)
    # The server starts up while the accounts and tables are being made.
    procs.start("server", mpg_argv(files.server_config, *SERVER_RUN), files.log("server"))
    for name, account in (("a", ACCOUNT_A), ("b", ACCOUNT_B)):
        run_step(
            mpg_argv(
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

    _say("[3/8] Creating the Outbox/Inbox tables of both gateways")
    for name in ("a", "b"):
        run_step(mpg_argv(files.gateway_config(name), "init-db"), cwd)

    _say("[4/8] Starting both gateways once the server listens")
    wait_for("the server to listen", lambda: _port_open(port), procs)
    for name in ("a", "b"):
        procs.start(
            f"gateway {name.upper()}",
            mpg_argv(files.gateway_config(name), "run"),
            files.log(f"gateway-{name}"),
        )
    _round_trip(files, procs)
    if wait:
        print_try_it(files)
        while True:
            procs.check()
            time.sleep(1.0)


def _round_trip(files: DemoFiles, procs: Processes) -> None:
    cwd = files.root
    gw_a = context.CliContext(str(files.gateway_config("a")))
    gw_b = context.CliContext(str(files.gateway_config("b")))
    try:
        _say(f"[5/8] A sends the sample approval (BPM, MSG, one attachment) to {ACCOUNT_B}")
        tx = run_step(
            mpg_argv(
                files.gateway_config("a"),
                "send",
                "--to",
                ACCOUNT_B,
                "--approval-demo",
                "--app-code",
                "BPM",
                "--attach",
                f"{files.attachment}|1",
            ),
            cwd,
        ).strip()
        _detail(f"Outbox row TxMessageId {tx}, State 10")

        _say("[6/8] Waiting for it in B's Inbox")
        approval = wait_for(
            "the approval in B's Inbox", lambda: _find_message(gw_b, None, "MSG"), procs
        )
        _show_inbox_row(approval, files.attachment.read_bytes(), gw_b)

        _say(f"[7/8] B answers with a REPLY (submitinfo) to {ACCOUNT_A}")
        parsed = content.parse_content(str(approval.get("Content") or ""))
        reply = content.build_reply(
            parsed.params,
            [
                content.Result("result", "Result", "approve"),
                content.Result("comment", "Comment", "同意，no problem"),
            ],
        )
        reply_file = files.root / "files" / "reply.xml"
        reply_file.write_text(reply, encoding="utf-8")
        run_step(
            mpg_argv(
                files.gateway_config("b"),
                "send",
                "--to",
                ACCOUNT_A,
                "--content-type",
                "REPLY",
                "--content-file",
                str(reply_file),
                "--subject",
                f"Re: {approval.get('Subject')}",
            ),
            cwd,
        )
        run_step(
            mpg_argv(files.gateway_config("b"), "inbox", "read", str(approval["RxMessageId"])), cwd
        )

        _say("[8/8] Waiting for the reply in A's Inbox and A's Outbox row to reach 29")
        answer = wait_for(
            "the reply in A's Inbox", lambda: _find_message(gw_a, None, "REPLY"), procs
        )
        _show_inbox_row(answer, None, gw_a)
        done = wait_for("A's Outbox row to reach State 29", lambda: _outbox_done(gw_a, tx), procs)
        _detail(
            f"Outbox {tx}: State {done.state} (SENT) since {(done.status_time or '').strip()}, "
            f"MessageId {done.message_id}"
        )
        _detail(f"StatusLog: {done.status_log}")
    finally:
        gw_a.close()
        gw_b.close()


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("demo-run"),
    show_default=True,
    help="Folder for the demo's files (recreated on every run).",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Stop after the round trip instead of waiting for Ctrl-C (for tests).",
)
def demo(directory: pathlib.Path, no_wait: bool) -> None:
    """Run the server and two gateways locally and send the sample approval round trip."""
    run_demo(directory.resolve(), wait=not no_wait)
    _say("Demo finished")
