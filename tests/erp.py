"""What an ERP does on a server database: insert Outbox rows, read their progress."""

from __future__ import annotations

import collections

import sqlalchemy as sa

from mpg.storage import tables

o = tables.outbox.c
t = tables.transition.c


def seed(url: str, n: int, start: int = 0) -> None:
    """Insert ready rows ``tx-<start>`` .. ``tx-<start+n-1>`` addressed to account erp-b."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                tables.outbox.insert(),
                [
                    {
                        "TxMessageId": f"tx-{i:05d}",
                        "SourceDomain": "example.com",
                        "ReceiverType": "U",
                        "ReceiverList": "erp-b",
                        "Subject": f"第 {i} 號",
                        "Content": "<c/>",
                        "ContentType": "MSG",
                        "AttachmentList": "",
                        "State": 10,
                        "Priority": "N",
                    }
                    for i in range(start, start + n)
                ],
            )
    finally:
        engine.dispose()


def progress(url: str) -> tuple[dict[int, int], collections.Counter[tuple[str, int, int]]]:
    """Rows per State, and how often each (row, from, to) step is in the history."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            states = conn.execute(sa.select(o.State, sa.func.count()).group_by(o.State)).all()
            steps = collections.Counter(
                (str(key), int(a), int(b))
                for key, a, b in conn.execute(
                    sa.select(t.MessageKey, t.FromState, t.ToState).where(t.FromState.is_not(None))
                )
            )
    finally:
        engine.dispose()
    return {int(k): int(v) for k, v in states}, steps
