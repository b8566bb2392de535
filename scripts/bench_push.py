#!/usr/bin/env python3
"""Push jobs under a fan-out, and the message file under a burst beside nginx.

In one process, on a server database (SQLite in a temporary folder by default, or
``--database-url``), with ``--devices`` registered devices of one group (rows written
directly, as tests/pushdevices.py does):

* **message fan-out**: one AlertFlag message submitted to every device
  (``QueueStore.submit``: entries and push jobs in one transaction), against the same
  message without AlertFlag (entries only) — the difference is the push jobs' cost;
* **publication fan-out**: ``publishing.publish`` to the group (file written, then
  one job per device committed);
* **send rate**: ``--workers`` worker threads sending the publication's jobs to the
  webhook stand-in (HTTPS on loopback, signature checked per push) until all are sent.

**The message file under a burst** (``--part file``): a real ``mpg server`` process
(TLS with a throwaway CA, as in production) and nginx (``--nginx``, its own
non-daemon master process with a config in the temporary folder, the same
certificate, the same file and its pre-gzipped copy through ``gzip_static``) serve
one group's file. For each kind of request — HEAD, GET, and both with the
``If-None-Match`` of the version held (304) — a burst of ``--clients`` clients opens
its TLS connections at once and sends ``--requests`` requests each on it (keep-alive,
``Accept-Encoding: gzip`` as phones send it). The load comes from ``--procs``
processes of raw asyncio (uvloop) clients: the same client against both servers,
rounds alternating which server goes first; the median of ``--rounds`` rounds and
MPG's ratio to nginx are printed, along with the servers' CPU seconds per 1,000
requests (less sensitive to other load on the machine than requests/s). Both servers
may hold twice the burst's connections (MPG's ``max_connections``, nginx's
``worker_connections``): the previous burst's connections may still be closing when
the next one starts, and MPG's default (2,048) is a guard against a flood.

Results go to standard output as one JSON object; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import logging
import multiprocessing
import os
import pathlib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import httpx
import sqlalchemy as sa
import structlog
import trustme
from pushdevices import add_group
from standins.webhook import WebhookStandIn, provider_entry

from mpg import config
from mpg.server import accounts, publishing, queues, tables
from mpg.server.push import registry, worker
from mpg.wire import atrest, keys, model

SENDER = "erp-a@example.com"
SECRET = b"bench-webhook-secret"


def devices(engine: sa.Engine, keyring: atrest.Keyring, count: int) -> list[str]:
    """``count`` device accounts with push tokens in group ``acme`` (bulk inserts)."""
    now = time.time()
    ids = ["dev-" + uuid.uuid4().hex for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            tables.account.insert(),
            [{"AccountId": a, "Kind": "device", "Disabled": False, "CreatedAt": ""} for a in ids],
        )
        conn.execute(
            tables.device.insert(),
            [
                {
                    "AccountId": a,
                    "DeviceIndex": a[4:],
                    "DeviceIdEnc": b"",
                    "GroupId": "acme",
                    "Via": "code",
                    "Platform": "android",
                    "PushTokenEnc": keyring.encrypt(
                        "token-" + a, atrest.Place("Device", "PushTokenEnc", a)
                    ),
                    "PushTokenAt": now,
                    "RegisteredAt": now,
                }
                for a in ids
            ],
        )
    return ids


def message(to: list[str], alert: bool) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=SENDER,
        sender="alice@example.com",
        receiver_type="D",
        receivers=tuple(to),
        bcc=(),
        subject="bench",
        content="<c/>",
        content_type="MSG",
        alert_flag=alert,
        priority="H",
        keywords="",
        transmit_time="2026-11-30 12:00:00",
    )


def count_jobs(engine: sa.Engine, state: str | None = None) -> int:
    j = tables.push_job.c
    query = sa.select(sa.func.count()).select_from(tables.push_job)
    if state is not None:
        query = query.where(j.State == state)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def clear_jobs(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(tables.push_job.delete())


def fan_out(args: argparse.Namespace, root: pathlib.Path) -> dict[str, object]:
    root.mkdir(parents=True)
    url = args.database_url or f"sqlite:///{root / 'server.db'}"
    engine = tables.create_engine(url)
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    account_store = accounts.AccountStore(engine, keys.new_master_key(), keyring)
    account_store.add(SENDER, "gateway")
    add_group(engine, "acme")
    ids = devices(engine, keyring, args.devices)
    store = queues.QueueStore(engine, account_store.vault)
    result: dict[str, object] = {"devices": args.devices, "database": engine.dialect.name}

    timings = {}
    for alert in (False, True):
        start = time.perf_counter()
        [answer] = store.submit(SENDER, [message(ids, alert)])
        timings[alert] = time.perf_counter() - start
        assert answer.accepted, answer.reason
    result["submit_without_alert_s"] = round(timings[False], 3)
    result["submit_with_alert_s"] = round(timings[True], 3)
    result["push_jobs_enqueued"] = count_jobs(engine)
    clear_jobs(engine)

    ca = trustme.CA()
    receiver = WebhookStandIn(SECRET)
    serving = receiver.serve(ca)
    next(serving)
    entry = provider_entry(receiver, ca, root)
    settings = config.ServerSettings(
        data_dir=root / "data", push_providers=(entry,), push_workers=args.workers
    )
    files = publishing.message_files(settings)
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    done = publishing.publish(
        engine,
        files,
        settings,
        "acme",
        actor="bench",
        add=[publishing.new_message("bench", now=now)],
    )
    result["publish_s"] = round(time.perf_counter() - start, 3)
    result["publication_pushes"] = done.pushes

    pusher = worker.PushWorker(engine, keyring, registry.Registry(settings), settings)
    start = time.perf_counter()
    pusher.start()
    try:
        while count_jobs(engine, "sent") + count_jobs(engine, "failed") < done.pushes:
            time.sleep(0.2)
    finally:
        pusher.stop()
    elapsed = time.perf_counter() - start
    result["workers"] = args.workers
    result["sent"] = count_jobs(engine, "sent")
    result["received_by_stand_in"] = len(receiver.received)
    result["send_s"] = round(elapsed, 2)
    result["pushes_per_s"] = round(done.pushes / elapsed, 1)
    serving.close()
    engine.dispose()
    return result


# ------------------------------------------------------------- the message file

#: The request kinds of a burst: method, and whether the version held is sent.
KINDS: Final = {
    "head": ("HEAD", False),
    "get": ("GET", False),
    "head_if_none_match": ("HEAD", True),
    "get_if_none_match": ("GET", True),
}


def _request(method: str, path: str, etag: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Accept-Encoding: gzip",
        "User-Agent: mpg-bench",
    ]
    if etag:
        lines.append(f"If-None-Match: {etag}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _header(head: bytes, name: bytes) -> bytes:
    """One header's value from a response head (names matched in any case)."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return b""


async def _one_client(
    port: int, context: ssl.SSLContext, request: bytes, count: int, method: str
) -> tuple[int, int]:
    """One client: connect, send ``count`` requests on the connection; (answers, errors)."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
    except (OSError, ssl.SSLError):
        return 0, count
    done = 0
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            if status not in (200, 304):
                break
            length = int(_header(head, b"content-length") or b"0")
            if method == "GET" and status == 200 and length:
                await reader.readexactly(length)
            done += 1
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()
    return done, count - done


def _client_process(
    port: int,
    ca_pem: bytes,
    request: bytes,
    method: str,
    clients: int,
    count: int,
    start_at: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    """A load process: ``clients`` clients at once from ``start_at``; puts its figures."""
    import uvloop

    context = ssl.create_default_context(cadata=ca_pem.decode())

    async def burst() -> tuple[float, float, int, int]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        results = await asyncio.gather(
            *(_one_client(port, context, request, count, method) for _ in range(clients))
        )
        return began, time.time(), sum(r[0] for r in results), sum(r[1] for r in results)

    out.put(uvloop.run(burst()))


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``pids``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _burst(
    port: int, pids: Sequence[int], ca_pem: bytes, path: str, etag: str, kind: str, args: Any
) -> dict[str, float]:
    """One burst of ``args.clients`` clients of one request kind; its figures."""
    method, conditional = KINDS[kind]
    request = _request(method, path, etag if conditional else "")
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 1.0
    each, extra = divmod(args.clients, args.procs)
    share = [each + (n < extra) for n in range(args.procs)]
    procs = [
        multiprocessing.Process(
            target=_client_process,
            args=(port, ca_pem, request, method, n, args.requests, start_at, out),
        )
        for n in share
    ]
    for proc in procs:
        proc.start()
    cpu_before = _cpu_seconds(pids)
    parts = [out.get(timeout=600) for _ in procs]
    cpu = _cpu_seconds(pids) - cpu_before
    for proc in procs:
        proc.join()
    answered = sum(p[2] for p in parts)
    wall = max(p[1] for p in parts) - min(p[0] for p in parts)
    return {
        "requests_per_s": answered / wall,
        "errors": float(sum(p[3] for p in parts)),
        "server_cpu_ms_per_1000": 1e6 * cpu / max(answered, 1),
    }


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NGINX_CONF = """
user root;
worker_processes {workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {root}/nginx-tmp;
    proxy_temp_path {root}/nginx-tmp;
    fastcgi_temp_path {root}/nginx-tmp;
    uwsgi_temp_path {root}/nginx-tmp;
    scgi_temp_path {root}/nginx-tmp;
    types {{ text/xml ibi; }}
    sendfile on;
    keepalive_requests 100000;
    gzip_static on;
    gzip_vary on;
    server {{
        listen 127.0.0.1:{port} ssl backlog=2048;
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        root {root}/www;
        add_header Cache-Control "public, no-cache";
    }}
}}
"""


@dataclasses.dataclass
class Site:
    """The two servers of :func:`file_burst`, serving the same file with the same cert."""

    ca_pem: bytes
    body: bytes
    gzipped: bytes
    messages: int
    ports: dict[str, int]
    commands: dict[str, list[str]]


def _prepare(args: argparse.Namespace, root: pathlib.Path) -> Site:
    """A server config and data folder with group ``acme``'s file; nginx's config and
    folder holding the same bytes (and the gzip body MPG serves, for gzip_static)."""
    root.mkdir(parents=True)
    ca = trustme.CA()
    pem = root / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ports = {"mpg": _free_port(), "nginx": _free_port()}
    cfg = root / "server.toml"
    cfg.write_text(
        "[server]\n"
        f'database_url = "sqlite:///{root / "server.db"}"\n'
        f'host = "127.0.0.1"\nport = {ports["mpg"]}\n'
        f'tls_cert = "{pem}"\ntls_key = "{pem}"\n'
        f'data_dir = "{root / "data"}"\npush_workers = 0\n'
        # Room for the burst and the previous burst's connections still closing.
        f"max_connections = {2 * args.clients + 100}\n"
        '[log]\nlevel = "warning"\n'
    )
    mpg_cli = [sys.executable, "-m", "mpg.cli.main", "--config", str(cfg)]
    subprocess.run([*mpg_cli, "server", "init"], check=True, capture_output=True)
    settings = config.load(cfg).server
    engine = tables.create_engine(settings.database_url)
    add_group(engine, "acme")
    now = dt.datetime.now(dt.UTC)
    text = "Road closed between the two bridges until further notice; use the bypass. " * 5
    done = publishing.publish(
        engine,
        publishing.message_files(settings),
        settings,
        "acme",
        actor="bench",
        add=[publishing.new_message(f"Notice {n}", text, now=now) for n in range(args.messages)],
    )
    engine.dispose()
    version = publishing.message_files(settings).current("acme")
    if version is None or version.gzipped is None:
        raise SystemExit("the published file is not served, or gzip does not shrink it")
    www = root / "www" / "files"
    www.mkdir(parents=True)
    (www / "acme.ibi").write_bytes(version.body)
    (www / "acme.ibi.gz").write_bytes(version.gzipped)
    (root / "nginx-tmp").mkdir()
    nginx_conf = root / "nginx.conf"
    nginx_conf.write_text(
        NGINX_CONF.format(
            workers=args.nginx_workers,
            connections=2 * args.clients + 100,
            root=root,
            port=ports["nginx"],
            pem=pem,
        )
    )
    return Site(
        ca.cert_pem.bytes(),
        version.body,
        version.gzipped,
        len(done.kept),
        ports,
        {
            "mpg": [*mpg_cli, "server"],
            "nginx": [args.nginx, "-p", str(root), "-c", str(nginx_conf), "-e", "stderr"],
        },
    )


def _summary(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, float]]:
    """Per kind: each server's medians and MPG's median ratio to nginx (paired by round)."""
    table = {}
    for kind, by_server in runs.items():
        row: dict[str, float] = {}
        for name, figures in by_server.items():
            for key in ("requests_per_s", "server_cpu_ms_per_1000", "errors"):
                row[f"{name}_{key}"] = round(statistics.median(f[key] for f in figures), 1)
        pairs = zip(by_server["mpg"], by_server["nginx"], strict=True)
        ratios = [m["requests_per_s"] / x["requests_per_s"] for m, x in pairs]
        row["ratio_requests_per_s"] = round(statistics.median(ratios), 2)
        table[kind] = row
    return table


def file_burst(args: argparse.Namespace, root: pathlib.Path) -> dict[str, object]:
    """The message file from ``mpg server`` and from nginx under bursts (module doc)."""
    site = _prepare(args, root)
    servers = {
        name: subprocess.Popen(command, stdout=subprocess.DEVNULL)
        for name, command in site.commands.items()
    }
    try:
        for name, proc in servers.items():
            _wait_listening(site.ports[name], proc, name)
        time.sleep(1.0)  # nginx's workers start after its master listens
        pids = {name: [proc.pid, *_children(proc.pid)] for name, proc in servers.items()}
        context = ssl.create_default_context(cadata=site.ca_pem.decode())
        etags = {}
        for name, port in site.ports.items():
            got = httpx.get(
                f"https://127.0.0.1:{port}/files/acme.ibi",
                headers={"Accept-Encoding": "gzip"},
                verify=context,
            )
            if got.status_code != 200 or got.content != site.body:
                raise SystemExit(f"{name} does not serve the file: {got.status_code}")
            etags[name] = got.headers["etag"]
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            k: {"mpg": [], "nginx": []} for k in KINDS
        }
        for n in range(args.rounds):
            order = ("mpg", "nginx") if n % 2 == 0 else ("nginx", "mpg")
            for kind in KINDS:
                for name in order:
                    port = site.ports[name]
                    figures = _burst(
                        port, pids[name], site.ca_pem, "/files/acme.ibi", etags[name], kind, args
                    )
                    runs[kind][name].append(figures)
                    time.sleep(2.0)  # the burst's connections close before the next
                    print(f"round {n + 1} {kind:20} {name:5} {figures}", file=sys.stderr)
    finally:
        for proc in servers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "load_processes": args.procs,
        "rounds": args.rounds,
        "file_bytes": len(site.body),
        "file_gzip_bytes": len(site.gzipped),
        "messages_in_file": site.messages,
        "nginx_workers": args.nginx_workers,
        "kinds": _summary(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "fanout", "file"), default="all")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8, help="push worker threads")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp folder")
    parser.add_argument("--clients", type=int, default=2000, help="clients of one burst")
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--procs", type=int, default=4, help="load-generating processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=40, help="messages in the file")
    parser.add_argument("--nginx", default="/usr/sbin/nginx")
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker_processes")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "fanout"):
            result["fan_out"] = fan_out(args, pathlib.Path(tmp) / "fanout")
        if args.part in ("all", "file"):
            result["message_file"] = file_burst(args, pathlib.Path(tmp) / "file")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
