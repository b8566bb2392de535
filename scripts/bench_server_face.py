#!/usr/bin/env python3
"""The server's network face under attack and load: peak memory and long-poll answers.

Starts a real ``mpg server`` (TLS on loopback, SQLite) and measures:

* **bodies**: twelve concurrent 63 MB upload bodies, first naming no account
  (unauthenticated), then naming a real account with a forged key; the server's
  RSS before and its peak (``VmHWM``) after, from ``/proc``;
* **long polls**: N concurrent fetches (one account each) on an empty queue with
  ``wait`` = ``max_long_poll``; how long each took to be answered.

``--tree DIR`` runs the server from another checkout's ``mpg`` (e.g. an older commit
unpacked with ``git archive``), to compare before and after; only settings that
code knows are passed. Results go to standard output as one JSON
object; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import serverproc

from mpg.wire import payloads

MIB = 1024 * 1024
GATEWAY = "erp-a@example.com"


def bodies(root: pathlib.Path) -> dict[str, object]:
    """Peak RSS of a server taking twelve 63 MB bodies, unauthenticated then forged."""
    settings: dict[str, object] = {"max_request_bytes": 64 * MIB}
    srv = serverproc.start(root / "bodies", {GATEWAY: "gateway"}, **settings)
    try:
        result: dict[str, object] = {"idle_rss_mib": srv.memory_kib("VmRSS") // 1024}
        forged_key = serverproc.forged(GATEWAY, "upload", key_id=srv.credentials[GATEWAY].key_id)
        for name, first in (
            ("unauthenticated", serverproc.forged("nobody@example.com", "upload")),
            ("known_account_forged_key", forged_key),
        ):
            statuses = serverproc.flood_of_bodies(srv, first)
            result[name] = {
                "statuses": sorted({str(s) for s in statuses}),
                "peak_rss_mib": srv.memory_kib("VmHWM") // 1024,
            }
        return result
    finally:
        srv.stop()


async def _long_polls(srv: serverproc.ServerProcess, names: list[str], wait: float) -> list[float]:
    """Each long poll's seconds from its request's last byte sent to its answer.

    Plain asyncio streams, one connection per poll, each sending at once as a gateway
    does: an HTTP client library's own pool must not be what is measured.
    """
    context = srv.tls_context()

    async def answer(reader: asyncio.StreamReader, started: float) -> float:
        status = await reader.readline()
        took = time.monotonic() - started
        if b" 200 " not in status:
            raise RuntimeError(f"long poll answered {status!r}")
        return took

    waiting = []
    writers = []
    for name in names:
        reader, writer = await asyncio.open_connection(srv.host, srv.port, ssl=context)
        body = srv.seal(name, "fetch", payloads.build_fetch(100, wait))
        head = f"POST /v1/fetch HTTP/1.1\r\nHost: {srv.host}\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        waiting.append(asyncio.ensure_future(answer(reader, time.monotonic())))
        writers.append(writer)
    took = list(await asyncio.gather(*waiting))
    for writer in writers:
        writer.close()
    return took


def long_polls(root: pathlib.Path, count: int, wait: float) -> dict[str, object]:
    """``count`` concurrent long polls (one account each) with nothing to fetch."""
    names = [f"poller{i}@example.com" for i in range(count)]
    srv = serverproc.start(root / "polls", dict.fromkeys(names, "gateway"), max_long_poll=wait)
    try:
        took = sorted(asyncio.run(_long_polls(srv, names, wait)))
    finally:
        srv.stop()
    return {
        "count": count,
        "wait_s": wait,
        "p50_s": round(statistics.median(took), 2),
        "p99_s": round(took[int(len(took) * 0.99) - 1], 2),
        "max_s": round(took[-1], 2),
        "later_than_wait_plus_1s": sum(1 for t in took if t > wait + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", help="run the server from this checkout's mpg package")
    parser.add_argument("--polls", type=int, default=500, help="concurrent long polls")
    parser.add_argument("--wait", type=float, default=30.0, help="max_long_poll and wait (s)")
    parser.add_argument("--skip-bodies", action="store_true")
    options = parser.parse_args()
    if options.tree:
        os.environ["PYTHONPATH"] = str(pathlib.Path(options.tree).resolve())
    with tempfile.TemporaryDirectory(prefix="mpg-face-") as tmp:
        root = pathlib.Path(tmp)
        report: dict[str, object] = {"tree": options.tree or "this checkout"}
        if not options.skip_bodies:
            report["bodies"] = bodies(root)
        if options.polls:
            report["long_polls"] = long_polls(root, options.polls, options.wait)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
