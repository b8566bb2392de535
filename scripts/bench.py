"""End-to-end benchmark: real server and gateway processes on loopback with TLS.

Scenarios (all by default):
  burst     N messages inserted into A's Outbox at once: messages/s and latencies
  paced     messages inserted at a fixed rate (default 100/s): latencies
  big       one message with a large attachment: the gateways' peak RSS
            (DownloadFlag 0; with --inbound-files DownloadFlag 1, received by B into
            files under attachment_dir)

--compare runs instead, for --rounds rounds, MPG's burst and the same burst through the
reference pipeline of scripts/refpipe (no MPG code) with one and with three sender/receiver
pairs, one after the other, and prints each figure with its ratio (issue 15).

--versus TREE runs instead, for --rounds rounds, this checkout's burst and the burst of the
mpg package in another checkout TREE (e.g. ``git worktree add ../base main``), alternately,
and prints each pair's ratio: before/after figures from one run on a shared machine. With
``--only paced`` it does the same for the paced run (latency percentiles, CPU per message).

--db postgresql runs the server and both gateways on one throwaway PostgreSQL (started as
tests/dbservers.py starts it: durability off), each in a database of its own, gateway A
woken by the Outbox trigger (``mpg init-db --notify``); the reference pipeline stays on
SQLite.

--profile DIR samples every process with py-spy (``pip install py-spy``) during the burst,
writes each one's collapsed stacks to DIR and prints where its time went.

Latency is measured from the ERP's commit of the row to the gateway's transition into
State 20 (from MpgTransition, microsecond UTC stamps) and to the row's arrival in the
recipient's Inbox. Peak RSS is the kernel's high-water mark (VmHWM) of each process.
Prints a Markdown report; paste it into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import pathlib
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import trustme
from refpipe.run import RefPipeline

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import dbservers

#: This checkout (the folder above scripts/).
CHECKOUT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stamp(iso: str) -> float:
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Db:
    """The ERP's view of a gateway database (and the bench's reads): sqlite3 on a file,
    or psycopg on PostgreSQL. SQL is written with ``?`` placeholders."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(
                url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
            )
        else:
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement (committed at once)."""
        rows = list(self.conn.execute(self._sql(sql), params))
        if not self.postgres:
            self.conn.commit()
        return rows

    def insert(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """All ``rows`` in one transaction."""
        if self.postgres:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)
            self.conn.commit()


def _own_folder(root: pathlib.Path, name: str) -> pathlib.Path:
    folder = root / f"{name}-db"
    folder.mkdir(exist_ok=True)
    return folder


class Cluster:
    """A server and two gateways (A sends, B receives) in a temporary folder."""

    def __init__(
        self,
        root: pathlib.Path,
        batch_size: int,
        inbound_files: bool = False,
        tree: pathlib.Path | None = None,
        postgres: str | None = None,
    ) -> None:
        self.root = root
        # One database each (server, a, b): SQLite files, or on the PostgreSQL server
        # whose admin URL is ``postgres``. Each SQLite file in a folder of its own, as
        # each service has its own data folder when deployed: a gateway watches its
        # database's folder, and the others' writes there would wake it for nothing.
        self.urls = {
            name: dbservers.fresh_database(postgres, f"mpg_bench_{name}")
            if postgres
            else f"sqlite:///{_own_folder(root, name)}/{name}.db"
            for name in ("server", "a", "b")
        }
        # The mpg package of another checkout when given (--versus), else this one's: the
        # processes start in that checkout, whose folder `python -m` puts first on sys.path.
        self.tree = tree or CHECKOUT
        self.env = dict(os.environ, PYTHONPATH=str(self.tree))
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(root / "server.pem")
        )
        (root / "server.toml").write_text(
            f'[server]\ndatabase_url = "{self.urls["server"]}"\nport = {self.port}\n'
            f'tls_cert = "{root}/server.pem"\ntls_key = "{root}/server.pem"\n'
            f'data_dir = "{root}/server-data"\n[log]\nlevel = "warning"\nformat = "json"\n'
        )
        self.mpg("server.toml", "server", "init")
        for name in ("a", "b"):
            self.mpg(
                "server.toml",
                "server",
                "account",
                "add",
                f"erp-{name}@example.com",
                "--kind",
                "gateway",
                "--credential-file",
                str(root / f"{name}.cred"),
            )
            (root / f"{name}.toml").write_text(
                f'[gateway]\naccount = "erp-{name}@example.com"\n'
                f'database_url = "{self.urls[name]}"\n'
                f'server_url = "https://127.0.0.1:{self.port}"\nca_bundle = "{root}/ca.pem"\n'
                f'secret_file = "{root}/{name}.cred"\nbatch_size = {batch_size}\n'
                f'attachment_roots = ["{root}"]\n'
                'poll_interval = 1.0\nlong_poll_wait = 20\nclock = "utc"\n'
                + (
                    f'inbound_attachments = "files"\nattachment_dir = "{root}/{name}-att"\n'
                    if inbound_files
                    else ""
                )
                + '[log]\nlevel = "warning"\nformat = "json"\n'
            )
            self.mpg(f"{name}.toml", "init-db", *(["--notify"] if postgres else []))

    def mpg(self, config: str, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "mpg.cli.main", "--config", str(self.root / config), *args],
            check=True,
            capture_output=True,
            env=self.env,
            cwd=self.tree,
        )

    def start(self) -> None:
        for name, config, args in (
            ("server", "server.toml", ["server"]),
            ("gateway A", "a.toml", ["run"]),
            ("gateway B", "b.toml", ["run"]),
        ):
            with (self.root / f"{name.replace(' ', '-')}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "mpg.cli.main",
                        "--config",
                        str(self.root / config),
                        *args,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.tree,
                )
            if name == "server":
                wait("server to listen", self._listening, 30)
        time.sleep(1.0)
        # On a busy machine the processes may still be importing after that second;
        # their start-up must not count as the burst's CPU or delay it.
        wait("processes to settle", self._settled, 60)

    def _settled(self) -> bool:
        """Whether every process used under 20 ms of CPU in the last 300 ms."""
        before = cpu_seconds(self.procs)
        time.sleep(0.3)
        after = cpu_seconds(self.procs)
        return all(after[name] - before[name] < 0.02 for name in after)

    def _listening(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
        ):
            return True
        return False

    def stop(self) -> dict[str, float]:
        peaks = {name: peak_rss_mb(p.pid) for name, p in self.procs.items()}
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        return peaks

    def db(self, name: str) -> Db:
        return Db(self.urls[name])


def wait(what: str, probe: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > end:
            raise SystemExit(f"bench: gave up waiting for {what}")
        time.sleep(0.05)


ROW_SQL = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","AttachmentList","AlertFlag",'
    '"State","Priority") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)'
)
CONTENT = (
    '<content contenttype="msg"><params><param name="sheetno" value="AF1"/></params>'
    '<view><page id="p1" name="摘要">' + "請假一天。" * 40 + "</page></view></content>"
)


def row(tx: str, attachment: str = "") -> tuple[Any, ...]:
    return (
        tx,
        "BPM",
        "example.com",
        "U",
        "erp-b",
        f"bench {tx}",
        CONTENT,
        "MSG",
        attachment,
        True,  # AlertFlag: 1 in SQLite, a boolean in PostgreSQL
        10,
        "N",
    )


def insert(db: Db, rows: list[tuple[Any, ...]]) -> float:
    db.insert(ROW_SQL, rows)
    return time.time()


def latencies(cluster: Cluster, inserted: dict[str, float]) -> dict[str, list[float]]:
    a, b = cluster.db("a"), cluster.db("b")
    to20 = {
        tx: stamp(at)
        for tx, at in a.execute(
            'SELECT "MessageKey", MIN("At") FROM "MpgTransition" WHERE "Box"=\'out\' AND '
            '"ToState"=20 GROUP BY "MessageKey"'
        )
    }
    msg_to_tx = dict(a.execute('SELECT "MessageId", "TxMessageId" FROM "Outbox"'))
    rx_to_msg = dict(b.execute('SELECT "RxMessageId", "MessageId" FROM "Inbox"'))
    arrived = {}
    for rx, at in b.execute('SELECT "MessageKey", "At" FROM "MpgTransition" WHERE "Box"=\'in\''):
        tx = msg_to_tx.get(rx_to_msg.get(rx))
        if tx is not None:
            arrived[tx] = stamp(at)
    return {
        "insert → State 20": [(to20[t] - s) * 1000 for t, s in inserted.items() if t in to20],
        "insert → recipient Inbox": [
            (arrived[t] - s) * 1000 for t, s in inserted.items() if t in arrived
        ],
    }


def count(db: Db, sql: str) -> int:
    return int(db.execute(sql)[0][0])


def burst(cluster: Cluster, n: int) -> dict[str, Any]:
    a, b = cluster.db("a"), cluster.db("b")
    txs = [str(uuid.uuid4()) for _ in range(n)]
    cpu_before = cpu_seconds(cluster.procs)
    start = time.time()
    t = insert(a, [row(tx) for tx in txs])
    inserted = dict.fromkeys(txs, t)
    wait("burst delivered", lambda: count(b, 'SELECT COUNT(*) FROM "Inbox"') >= n, 600)
    elapsed = time.time() - start
    cpu_after = cpu_seconds(cluster.procs)
    wait(
        "burst at 29", lambda: count(a, 'SELECT COUNT(*) FROM "Outbox" WHERE "State"=29') >= n, 120
    )
    return {
        "messages": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "latency": latencies(cluster, inserted),
        # Share of one core each process was busy until the last message was in B's
        # Inbox: the process near 100 % paces the burst (a Python process's own code
        # runs on one core at a time).
        "busy": {name: (cpu_after[name] - cpu_before[name]) / elapsed for name in cpu_after},
    }


def paced(cluster: Cluster, rate: float, seconds: float) -> dict[str, Any]:
    a, b = cluster.db("a"), cluster.db("b")
    before = count(b, 'SELECT COUNT(*) FROM "Inbox"')
    inserted: dict[str, float] = {}
    n = int(rate * seconds)
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        time.sleep(max(0.0, due - time.monotonic()))
        tx = str(uuid.uuid4())
        inserted[tx] = insert(a, [row(tx)])
    wait("paced delivered", lambda: count(b, 'SELECT COUNT(*) FROM "Inbox"') >= before + n, 300)
    return {"messages": n, "rate": rate, "latency": latencies(cluster, inserted)}


def big(cluster: Cluster, megabytes: int, download_flag: int = 0) -> dict[str, Any]:
    a, b = cluster.db("a"), cluster.db("b")
    path = cluster.root / "big.bin"
    with path.open("wb") as fh:
        block = os.urandom(1024 * 1024)
        for _ in range(megabytes):
            fh.write(block)
    tx = str(uuid.uuid4())
    start = time.time()
    insert(a, [row(tx, f"{path}|{download_flag}")])
    wait(
        "big attachment sent",
        lambda: (
            a.execute('SELECT COUNT(*) FROM "Outbox" WHERE "TxMessageId"=? AND "State">=20', (tx,))[
                0
            ][0]
            > 0
        ),
        600,
    )
    elapsed = time.time() - start
    wait(
        "big message delivered",
        lambda: count(b, 'SELECT COUNT(*) FROM "Inbox" WHERE "AttachmentFlag"=1') > 0,
        600,
    )
    received = time.time() - start
    return {"megabytes": megabytes, "seconds": elapsed, "received": received}


def fmt_lat(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50):.1f} ms · p95 {percentile(values, 95):.1f} ms · "
        f"p99 {percentile(values, 99):.1f} ms (n={len(values)})"
    )


@contextlib.contextmanager
def cluster_in(
    tmp: str | None,
    batch_size: int,
    inbound_files: bool = False,
    tree: pathlib.Path | None = None,
    postgres: str | None = None,
) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(dir=tmp) as root:
        c = Cluster(pathlib.Path(root), batch_size, inbound_files, tree, postgres)
        c.start()
        try:
            yield c
        finally:
            c.peaks = c.stop()  # type: ignore[attr-defined]


def cpu_seconds(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """User plus system CPU seconds used so far by each process (Linux /proc)."""
    used = {}
    for name, p in procs.items():
        with open(f"/proc/{p.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_per_message(
    before: dict[str, float], after: dict[str, float], n: int
) -> tuple[float, float]:
    """CPU ms per message of all the processes and of the server alone."""
    spent = {name: after[name] - before[name] for name in after}
    return sum(spent.values()) * 1000 / n, spent["server"] * 1000 / n


def mpg_burst(
    tmp: str | None, batch_size: int, n: int, postgres: str | None = None
) -> tuple[float, float, float]:
    """messages/s, CPU ms per message and server CPU ms per message of MPG's burst of n."""
    with cluster_in(tmp, batch_size, postgres=postgres) as c:
        before = cpu_seconds(c.procs)
        rate = burst(c, n)["rate"]
        return rate, *cpu_per_message(before, cpu_seconds(c.procs), n)


def ref_burst(tmp: str | None, pairs: int, n: int) -> tuple[float, float, float]:
    """The same figures for a burst of n through the reference pipeline with `pairs` pairs."""
    with tempfile.TemporaryDirectory(dir=tmp) as root:
        ref = RefPipeline(pathlib.Path(root), pairs)
        ref.start()
        time.sleep(1.0)  # as Cluster.start gives MPG's processes
        try:
            before = cpu_seconds(ref.procs)
            rate = n / ref.burst([str(uuid.uuid4()) for _ in range(n)], CONTENT)
            return rate, *cpu_per_message(before, cpu_seconds(ref.procs), n)
        finally:
            ref.stop()


def compare(
    tmp: str | None, batch_size: int, n: int, rounds: int, postgres: str | None = None
) -> None:
    """MPG's burst against the reference pipeline, alternately, with medians and ratios."""
    runs: dict[str, list[tuple[float, float, float]]] = {"MPG": [], "ref-1": [], "ref-3": []}
    on = " (MPG on PostgreSQL)" if postgres else ""
    print(f"## Burst of {n} messages: MPG against the reference pipeline (scripts/refpipe){on}\n")
    print("| round | load before | MPG msg/s | ref-1 msg/s | ref-3 msg/s | MPG/ref-1 | MPG/ref-3 |")
    print("|---|---|---|---|---|---|---|")
    for i in range(1, rounds + 1):
        load = os.getloadavg()[0]
        runs["MPG"].append(mpg_burst(tmp, batch_size, n, postgres))
        runs["ref-1"].append(ref_burst(tmp, 1, n))
        runs["ref-3"].append(ref_burst(tmp, 3, n))
        mpg, one, three = (v[-1][0] for v in runs.values())
        print(
            f"| {i} | {load:.2f} | {mpg:.0f} | {one:.0f} | {three:.0f} | "
            f"{mpg / one:.2f}× | {mpg / three:.2f}× |",
            flush=True,
        )
    mpg, one, three = (statistics.median(r[0] for r in v) for v in runs.values())
    print(
        f"| median | | **{mpg:.0f}** | **{one:.0f}** | **{three:.0f}** | "
        f"**{mpg / one:.2f}×** | **{mpg / three:.2f}×** |\n"
    )
    print("CPU per message (median of the rounds; all processes, of which the server):\n")
    for name, v in runs.items():
        total, server = (statistics.median(r[i] for r in v) for i in (1, 2))
        print(f"- {name}: {total:.3f} ms, of which the server {server:.3f} ms")
    print(f"- load average after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


#: Where a sample's own time goes, by its innermost frame: the first rule whose text
#: the frame contains names it (py-spy frames read "function (path:line)"). A C call
#: (SQLite, OpenSSL, lxml) counts to the Python frame that made it.
LEAF_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SQLite (execute, commit)", ("do_execute", "do_commit", "do_begin", "do_rollback")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("file watcher (watchdog)", ("watchdog/",)),
    ("XML", ("lxml", "xmlsafe.py", "payloads.py", "dropfile.py")),
    ("AES-GCM", ("cryptography/", "envelope.py")),
    ("TLS and HTTP", ("ssl.py", "httpx/", "httpcore/", "h11/", "uvicorn/", "starlette/")),
    ("asyncio and threads", ("asyncio/", "anyio/", "selectors.py", "threading.py", "queue.py")),
    ("logging", ("structlog/", "logging/", "logs.py")),
    ("metrics", ("prometheus_client/", "metrics.py")),
    ("MPG's own code", ("mpg/",)),
)


def classify(frame: str) -> str:
    """The LEAF_RULES name of one py-spy frame ("other" when none matches)."""
    for name, needles in LEAF_RULES:
        if any(needle in frame for needle in needles):
            return name
    return "other"


def profile_summary(path: pathlib.Path, top: int = 12) -> list[str]:
    """Report lines for one process's collapsed stacks: by thread, by kind of leaf, and
    MPG's functions by inclusive share (time in them and what they call)."""
    threads: dict[str, int] = {}
    leaves: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    names: dict[str, str] = {}  # native thread id -> Python thread name
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        tid, _, thread = frames[0].partition(": ")
        names[tid.removeprefix("thread (").rstrip(")")] = thread
        threads[thread] = threads.get(thread, 0) + count
        leaves[classify(frames[-1])] = leaves.get(classify(frames[-1]), 0) + count
        # A function counts once per sample however deep it recurses.
        for name in {f.split(" (")[0] for f in frames[1:] if "mpg/" in f}:
            inclusive[name] = inclusive.get(name, 0) + count
        total += count
    if not total:
        return ["no samples"]

    def shares(counts: dict[str, int], limit: int) -> str:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return ", ".join(f"{name} {100 * n / total:.0f} %" for name, n in ranked)

    cpu: dict[str, float] = {}
    for line in path.with_suffix(".cpu").read_text().splitlines():
        tid, seconds = line.split()
        name = names.get(tid, "other threads")
        cpu[name] = cpu.get(name, 0.0) + float(seconds)
    ranked = sorted(cpu.items(), key=lambda kv: -kv[1])
    return [
        f"CPU {sum(cpu.values()):.2f} s: " + ", ".join(f"{n} {s:.2f} s" for n, s in ranked),
        f"{total} samples",
        "by thread: " + shares(threads, 6),
        "by kind (innermost frame): " + shares(leaves, len(LEAF_RULES) + 1),
        "MPG functions, inclusive: " + shares(inclusive, top),
    ]


@contextlib.contextmanager
def profiling(cluster: Cluster, out: pathlib.Path | None) -> Iterator[None]:
    """Sample every process of ``cluster`` with py-spy while the body runs (no-op
    without ``out``); each process's collapsed stacks go to ``out/<name>.txt``."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spy = pathlib.Path(sys.executable).with_name("py-spy")
    samplers = [
        subprocess.Popen(
            [
                *(str(spy), "record", "--pid", str(p.pid), "--rate", "100", "--nonblocking"),
                *("--threads", "--format", "raw", "-o", str(out / f"{name.replace(' ', '-')}.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, p in cluster.procs.items()
    ]
    before = {name: thread_cpu(p.pid) for name, p in cluster.procs.items()}
    try:
        yield
    finally:
        for name, p in cluster.procs.items():
            used = thread_cpu(p.pid)
            (out / f"{name.replace(' ', '-')}.cpu").write_text(
                "".join(
                    f"{tid} {cpu - before[name].get(tid, 0.0):.2f}\n" for tid, cpu in used.items()
                )
            )
        for s in samplers:
            s.send_signal(signal.SIGINT)
        for s in samplers:
            s.wait(30)


def thread_cpu(pid: int) -> dict[str, float]:
    """User plus system CPU seconds of each thread of ``pid`` by its native id (Linux)."""
    used = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            used[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


VERSUS_PROCESSES = ("server", "gateway A", "gateway B")


def versus_burst(
    tmp: str | None,
    batch_size: int,
    n: int,
    tree: pathlib.Path | None,
    postgres: str | None = None,
) -> list[float]:
    """messages/s and CPU ms per message of the server, gateway A and gateway B."""
    with cluster_in(tmp, batch_size, tree=tree, postgres=postgres) as c:
        before = cpu_seconds(c.procs)
        rate = burst(c, n)["rate"]
        after = cpu_seconds(c.procs)
        return [rate, *((after[p] - before[p]) * 1000 / n for p in VERSUS_PROCESSES)]


def versus_paced(
    tmp: str | None,
    batch_size: int,
    rate: float,
    seconds: float,
    tree: pathlib.Path | None,
    postgres: str | None = None,
) -> list[float]:
    """p50 and p99 (ms) of insert → 20 and of insert → Inbox, then the CPU ms per
    message of the server, gateway A and gateway B."""
    with cluster_in(tmp, batch_size, tree=tree, postgres=postgres) as c:
        before = cpu_seconds(c.procs)
        r = paced(c, rate, seconds)
        after = cpu_seconds(c.procs)
    to20, to_inbox = r["latency"].values()
    n = r["messages"]
    return [
        *(percentile(values, p) for values in (to20, to_inbox) for p in (50, 99)),
        *((after[p] - before[p]) * 1000 / n for p in VERSUS_PROCESSES),
    ]


def versus(
    title: str,
    columns: Sequence[tuple[str, str]],
    measure: Callable[[pathlib.Path | None], list[float]],
    rounds: int,
    tree: pathlib.Path,
) -> None:
    """This checkout against another checkout, alternately: one figure per column
    (its name and format), each as the other's and this one's, medians with ratios."""
    print(f"## {title}: this checkout against {tree}\n")
    print("Each pair is one round, the other checkout first.\n")
    names = " | ".join(f"{name} other | this" for name, _ in columns)
    print(f"| round | load before | {names} |")
    print("|---|---|" + "---|---|" * len(columns))
    pairs: list[tuple[list[float], list[float]]] = []
    for i in range(1, rounds + 1):
        load = os.getloadavg()[0]
        other, this = measure(tree), measure(None)
        pairs.append((other, this))
        cells = " | ".join(
            f"{o:{fmt}} | {t:{fmt}}" for (_, fmt), o, t in zip(columns, other, this, strict=True)
        )
        print(f"| {i} | {load:.2f} | {cells} |", flush=True)
    cells = " | ".join(
        f"{statistics.median(o[j] for o, _ in pairs):{fmt}} | "
        f"{statistics.median(t[j] for _, t in pairs):{fmt}} "
        f"(**{statistics.median(t[j] / o[j] for o, t in pairs):.2f}×**)"
        for j, (_, fmt) in enumerate(columns)
    )
    print(f"| median (ratio: of the pairs) | | {cells} |\n")
    print(f"- load average after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="burst size")
    parser.add_argument("--rate", type=float, default=100.0, help="paced rate, messages/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced duration")
    parser.add_argument("--attachment-mb", type=int, default=200, help="big attachment size")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--only", choices=["burst", "paced", "big"], action="append")
    parser.add_argument("--tmp", help="folder for the throwaway files")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="burst: MPG against the reference pipeline (scripts/refpipe), with ratios",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="--compare, --versus: alternating rounds"
    )
    parser.add_argument(
        "--versus",
        metavar="TREE",
        type=pathlib.Path,
        help="burst (or with --only paced: paced): this checkout against the mpg package "
        "of checkout TREE, alternately",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=pathlib.Path,
        help="burst: sample each process with py-spy into DIR and print where the time went",
    )
    parser.add_argument(
        "--inbound-files",
        action="store_true",
        help='big: send with DownloadFlag 1 and B in inbound_attachments = "files"',
    )
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the server's and gateways' databases (the reference pipeline stays on SQLite)",
    )
    args = parser.parse_args()
    only = set(args.only or ["burst", "paced", "big"])
    pg = dbservers.start_postgres() if args.db == "postgresql" else None
    try:
        return run(args, only, pg.url if pg else None)
    finally:
        if pg is not None:
            pg.stop()


def run(args: argparse.Namespace, only: set[str], postgres: str | None) -> int:
    """The scenarios ``args`` ask for (``postgres``: the admin URL of the database server)."""

    print(
        f"# MPG benchmark, {dt.date.today()} — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, TLS on loopback"
        + (", server and gateways on PostgreSQL (durability off)" if postgres else "")
        + "\n"
    )
    if args.compare:
        compare(args.tmp, args.batch_size, args.messages, args.rounds, postgres)
        return 0
    if args.versus:
        cpu = [(f"CPU ms/msg {name}", ".3f") for name in VERSUS_PROCESSES]
        if "paced" in only and "burst" not in only:
            versus(
                f"Paced: {args.rate:g} messages/s for {args.seconds:g} s",
                [(f"→ {to} {p}", ".1f") for to in ("20", "Inbox") for p in ("p50", "p99")] + cpu,
                lambda tree: versus_paced(
                    args.tmp, args.batch_size, args.rate, args.seconds, tree, postgres
                ),
                args.rounds,
                args.versus.resolve(),
            )
        else:
            versus(
                f"Burst of {args.messages} messages",
                [("msg/s", ".0f"), *cpu],
                lambda tree: versus_burst(args.tmp, args.batch_size, args.messages, tree, postgres),
                args.rounds,
                args.versus.resolve(),
            )
        return 0
    if "burst" in only:
        with (
            cluster_in(args.tmp, args.batch_size, postgres=postgres) as c,
            profiling(c, args.profile),
        ):
            r = burst(c, args.messages)
        print(f"## Burst: {r['messages']} messages inserted at once\n")
        print(
            f"- throughput: **{r['rate']:.0f} messages/s** end to end "
            f"({r['seconds']:.2f} s until the last one was in B's Inbox)"
        )
        for name, values in r["latency"].items():
            print(f"- {name}: {fmt_lat(values)}")
        print(
            "- busy until then (share of one core): "
            + ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["busy"].items())
        )
        print("- peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in c.peaks.items()) + "\n")
        if args.profile:
            for name in c.procs:
                print(f"### Profile: {name}\n")
                lines = profile_summary(args.profile / f"{name.replace(' ', '-')}.txt")
                print("\n".join(f"- {line}" for line in lines) + "\n")
    if "paced" in only:
        with cluster_in(args.tmp, args.batch_size, postgres=postgres) as c:
            r = paced(c, args.rate, args.seconds)
        print(f"## Paced: {r['messages']} messages at {r['rate']:.0f} messages/s\n")
        for name, values in r["latency"].items():
            print(f"- {name}: {fmt_lat(values)}")
        print("- peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in c.peaks.items()) + "\n")
    if "big" in only:
        flag = 1 if args.inbound_files else 0
        with cluster_in(args.tmp, args.batch_size, args.inbound_files, postgres=postgres) as c:
            r = big(c, args.attachment_mb, flag)
        mode = ", B stores it as a file" if args.inbound_files else ""
        print(f"## One message with a {r['megabytes']} MB attachment (DownloadFlag {flag}{mode})\n")
        print(
            f"- insert → State 20: {r['seconds']:.2f} s ({r['megabytes'] / r['seconds']:.0f} MB/s)"
        )
        print(f"- insert → in B's Inbox: {r['received']:.2f} s")
        print("- peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in c.peaks.items()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
