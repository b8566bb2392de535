#!/usr/bin/env python3
"""The server's work per message counted in instructions: repeatable on a busy machine.

CPU seconds on a shared two-core machine move by a fifth from one run to the next,
more than most single changes save. Valgrind's callgrind counts the instructions a
program executes instead, and that count does not depend on what else the machine
does. This script runs ``scripts/bench_queue.py`` (the server's side of a burst in one
process: envelopes, parsing, the store on SQLite, answers) under callgrind twice per
checkout, with ``--messages N`` and ``2N``: the difference divided by N is what one more
message costs, with the process's start, imports and table creation cancelled out.

What the count covers: everything ``bench_queue`` runs, so the clients' side too
(building and sealing requests, opening answers), in user space only; the kernel's
work in system calls (SQLite's reads and writes, random bytes) is not counted, nor
time spent waiting. It compares code, not machines: use it for before/after pairs and
``scripts/bench.py`` for throughput.

``--versus TREE`` counts another checkout's ``mpg`` package too (``git archive <rev> mpg |
tar -x -C TREE``), the two checkouts' runs side by side on the two cores, and prints
the ratio. Needs valgrind (``apt-get install valgrind``); about two minutes per
checkout for N = 1,000. Prints Markdown; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH_QUEUE = ROOT / "scripts" / "bench_queue.py"
_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(tree: pathlib.Path, messages: int, batch: int) -> int:
    """Instructions callgrind counts for one ``bench_queue`` run of ``tree``'s mpg."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        # The same hash seed every run: dict and set layouts, so the same instructions.
        "PYTHONHASHSEED": "0",
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(BENCH_QUEUE),
        "--messages",
        str(messages),
        "--batch",
        str(batch),
        "--fold",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise SystemExit(f"error: bench_queue under valgrind failed for {tree}:\n{tail}")
    return int(found.group(1))


def per_message(trees: list[pathlib.Path], messages: int, batch: int) -> list[float]:
    """Instructions one more message costs, for each of ``trees`` (run two at a time)."""
    runs = [(tree, n) for n in (messages, 2 * messages) for tree in trees]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda run: instructions(run[0], run[1], batch), runs))
    by_run = dict(zip(runs, counts, strict=True))
    return [(by_run[(t, 2 * messages)] - by_run[(t, messages)]) / messages for t in trees]


def main() -> int:
    """Count, print the Markdown table; exit 2 on bad arguments or a missing valgrind."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=1000, help="N: runs of N and 2N")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--versus", type=pathlib.Path, metavar="TREE")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("error: valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.messages < args.batch:
        print("error: --messages must be at least --batch", file=sys.stderr)
        return 2
    if args.versus is not None and not (args.versus / "mpg").is_dir():
        print(f"error: {args.versus} holds no mpg package", file=sys.stderr)
        return 2
    others = [args.versus.resolve()] if args.versus is not None else []
    print(f"Counting {2 + 2 * len(others)} runs under callgrind…", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        # A copy of this checkout's package: edits made while the runs go on (minutes)
        # do not leak into them.
        shutil.copytree(ROOT / "mpg", pathlib.Path(tmp) / "mpg")
        counts = per_message([pathlib.Path(tmp), *others], args.messages, args.batch)
    trees = [ROOT, *others]
    print(
        f"## Instructions per message (`bench_queue --batch {args.batch} --fold`, "
        f"{args.messages} and {2 * args.messages} messages)\n"
    )
    print("| checkout | instructions per message |")
    print("|---|---|")
    for tree, count in zip(trees, counts, strict=True):
        print(f"| {'this one' if tree == ROOT else tree} | {count / 1e6:.3f} M |")
    if len(counts) == 2:
        print(f"\nthis one / {trees[1]}: **{counts[0] / counts[1]:.3f}×**")
    return 0


if __name__ == "__main__":
    sys.exit(main())
