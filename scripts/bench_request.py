#!/usr/bin/env python3
"""A request's fixed cost: its round trip and the server's CPU, one request at a time.

Starts the processes of ``scripts/bench.py`` (a real ``mpg server`` and two gateways,
TLS on loopback, SQLite; the gateways idle) and sends from this process, as gateway A's
account, one request after another: ``GET /healthz`` (no envelope, no database), a
``fetch`` that finds nothing and does not wait, and a ``submit`` of one message (to an
account that does not exist: the message is refused and queued for nobody, so no other
request follows from it). For each it prints the median round trip and the server's
CPU (user + system, ``/proc``) per request.

``--versus TREE`` runs the server and gateways of another checkout's ``mpg`` package
too, alternately, and prints the ratios: before/after figures from one run.
Prints Markdown; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import bench

from mpg import config
from mpg.gateway import client as client_mod
from mpg.wire import keys, model

#: What each request does, by the name the report gives it.
Requests = dict[str, Callable[[], object]]


def requests_of(client: client_mod.PushClient) -> Requests:
    """The three requests, as gateway A's account sends them."""

    def submit() -> object:
        message = model.OutgoingMessage(
            str(uuid.uuid4()), "BPM", "example.com", "", "erp-a", "U", ("nobody-here",),
            (), "one", bench.CONTENT, "MSG", True, "N", "", time.strftime("%Y-%m-%d %H:%M:%S"),
        )  # fmt: skip
        return client.submit([message])

    return {
        "GET /healthz": client.ping,
        "empty fetch": lambda: client.fetch(1, 0.0),
        "submit of one message": submit,
    }


def measure(tree: pathlib.Path | None, count: int) -> dict[str, tuple[float, float]]:
    """Per request name: the median round trip (ms) and the server's CPU ms per request."""
    with bench.cluster_in(None, 500, tree=tree) as cluster:
        settings = config.load(cluster.root / "a.toml").gateway
        client = client_mod.PushClient(settings, keys.parse_credential(settings.credential_text()))
        try:
            client.ping()  # the connection made outside the clock
            found = {}
            for name, send in requests_of(client).items():
                before = bench.cpu_seconds(cluster.procs)["server"]
                trips = []
                for _ in range(count):
                    started = time.perf_counter()
                    send()
                    trips.append((time.perf_counter() - started) * 1000)
                spent = bench.cpu_seconds(cluster.procs)["server"] - before
                found[name] = (statistics.median(trips), spent * 1000 / count)
            return found
        finally:
            client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="requests of each kind")
    parser.add_argument("--rounds", type=int, default=2, help="with --versus: alternations")
    parser.add_argument("--versus", metavar="TREE", type=pathlib.Path)
    args = parser.parse_args()
    print(f"## A request's fixed cost ({args.count} of each, one at a time)\n")
    if args.versus is None:
        print("| request | round trip p50 ms | server CPU ms |\n|---|---|---|")
        for name, (trip, cpu) in measure(None, args.count).items():
            print(f"| {name} | {trip:.2f} | {cpu:.2f} |")
        return 0
    runs: list[tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]] = []
    for _ in range(args.rounds):
        load = os.getloadavg()[0]
        runs.append((measure(args.versus.resolve(), args.count), measure(None, args.count)))
        print(f"- round {len(runs)}, load before {load:.2f}", flush=True)
    print(f"\nMedians of {args.rounds} rounds; other = {args.versus}.\n")
    print(
        "| request | round trip other | this | ratio | server CPU other | this | ratio |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name in runs[0][0]:
        cells = []
        for j in (0, 1):
            other = statistics.median(o[name][j] for o, _ in runs)
            this = statistics.median(t[name][j] for _, t in runs)
            cells.append(f"{other:.2f} | {this:.2f} | {this / other:.2f}×")
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
