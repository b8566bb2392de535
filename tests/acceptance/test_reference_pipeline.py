"""The yardstick of issue 15 (scripts/refpipe) delivers every message exactly once.

scripts/bench --compare divides MPG's throughput by this pipeline's; a yardstick that lost
or duplicated messages would flatter itself, so its end result is checked here.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))

from refpipe.client import client
from refpipe.run import RefPipeline

CONTENT = "<content><view><page id='p1'>請假一天。&amp;</page></view></content>"


@pytest.mark.parametrize("pairs", [1, 3])
def test_reference_pipeline_delivers_every_message_once_and_reports_29(
    tmp_path: pathlib.Path, pairs: int
) -> None:
    pipeline = RefPipeline(tmp_path, pairs)
    pipeline.start()
    txs = [str(uuid.uuid4()) for _ in range(200)]
    try:
        pipeline.burst(txs, CONTENT, timeout=120)
    finally:
        pipeline.stop()
    received: list[tuple[str, str, str, str]] = []
    for i in range(pairs):
        with contextlib.closing(pipeline.db(f"r{i}")) as db:
            received += db.execute(
                'SELECT "RxMessageId", "Sender", "Subject", "Content" FROM "Inbox"'
            ).fetchall()
        with contextlib.closing(pipeline.db(f"s{i}")) as db:
            states = {s for (s,) in db.execute('SELECT DISTINCT "State" FROM "Outbox"')}
        assert states == {29}
    assert sorted(tx for tx, _, _, _ in received) == sorted(txs)
    for tx, sender, subject, content in received:
        assert (subject, content) == (f"bench {tx}", CONTENT)
        assert sender == f"s{txs.index(tx) % pairs}"


def test_reference_server_refuses_a_wrong_token(tmp_path: pathlib.Path) -> None:
    pipeline = RefPipeline(tmp_path, 1)
    pipeline.start()
    try:
        with client(tmp_path, pipeline.port) as http:
            http.headers["authorization"] = "Bearer wrong"
            assert http.get("/fetch?who=r0").status_code == 403
    finally:
        pipeline.stop()
