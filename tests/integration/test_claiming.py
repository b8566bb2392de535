"""Several gateways on one Outbox: claims, leases and take-over, on every database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg import timefmt
from mpg.db import transactions
from mpg.storage import database, outbox, states, tables

S = states.OutboxState
GATEWAY = "mpg-a@example.com"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(db_url)
    database.init_db(eng)
    yield eng
    eng.dispose()


def gateway(engine: sa.Engine, name: str) -> outbox.OutboxRepository:
    """The repository of one gateway process named ``name``."""
    return outbox.OutboxRepository(engine, GATEWAY, "utc", instance=name, lease_seconds=60)


def seed(engine: sa.Engine, n: int, state: int = S.READY) -> list[str]:
    ids = [f"tx-{i:04d}" for i in range(n)]
    with transactions.begin(engine, "seed") as conn:
        conn.execute(
            tables.outbox.insert(),
            [{"TxMessageId": tx, "State": state, "Priority": "N"} for tx in ids],
        )
    return ids


def test_two_gateways_claim_disjoint_rows(engine: sa.Engine) -> None:
    """A row claimed by one gateway is not offered to another while its lease lasts."""
    ids = seed(engine, 10)
    a, b = gateway(engine, "a"), gateway(engine, "b")
    first = [r.tx_message_id for r in a.claim(6)]
    second = [r.tx_message_id for r in b.claim(6)]
    assert first == ids[:6]
    assert second == ids[6:]
    assert gateway(engine, "c").claim(6) == []
    holders = {tx: gw for tx, (gw, _) in a.claims().items()}
    assert holders == {tx: "a" if tx in first else "b" for tx in ids}


def test_claim_is_renewed_in_flight_and_dropped_when_the_row_leaves(engine: sa.Engine) -> None:
    """11/12/19 keep the claim with a later lease; 20 (or 99) deletes it."""
    (tx,) = seed(engine, 1)
    a = gateway(engine, "a")
    a.claim(1)
    first_until = a.claims()[tx][1]
    a.transition([(tx, "claimed")], S.READY, S.ATTACHMENTS_UPLOADED)
    assert a.claims()[tx][0] == "a"
    assert a.claims()[tx][1] >= first_until
    a.transition([(tx, "queued")], S.ATTACHMENTS_UPLOADED, S.WAITING)
    assert a.claims() == {}


def test_take_over_leaves_rows_a_live_gateway_holds(engine: sa.Engine) -> None:
    """Rows in flight under another process's live claim are not resumed."""
    ids = seed(engine, 3)
    a, b = gateway(engine, "a"), gateway(engine, "b")
    a.claim(3)
    a.transition([(tx, "claimed") for tx in ids], S.READY, S.ATTACHMENTS_UPLOADED)
    assert b.take_over(10) == []
    assert sorted(r.tx_message_id for r in a.take_over(10)) == ids


def test_rows_of_a_dead_gateway_are_taken_over_after_its_lease(engine: sa.Engine) -> None:
    """A claim whose lease ran out (its gateway died) is replaced by the taker's."""
    ids = seed(engine, 2, state=S.ATTACHMENTS_UPLOADED)
    expired = timefmt.utc_stamp(-1)
    with transactions.begin(engine, "a dead gateway's claims") as conn:
        conn.execute(
            tables.claim.insert(),
            [{"TxMessageId": tx, "Gateway": "dead", "LeaseUntil": expired} for tx in ids],
        )
    b = gateway(engine, "b")
    assert sorted(r.tx_message_id for r in b.take_over(10)) == ids
    assert {gw for gw, _ in b.claims().values()} == {"b"}
    assert gateway(engine, "c").take_over(10) == []


def test_ready_rows_with_an_expired_claim_are_claimed_again(engine: sa.Engine) -> None:
    """A State-10 row claimed by a gateway that died before moving it is offered again."""
    (tx,) = seed(engine, 1)
    with transactions.begin(engine, "a dead gateway's claim") as conn:
        conn.execute(
            tables.claim.insert(),
            {"TxMessageId": tx, "Gateway": "dead", "LeaseUntil": timefmt.utc_stamp(-1)},
        )
    b = gateway(engine, "b")
    assert [r.tx_message_id for r in b.claim(5)] == [tx]
    assert b.claims()[tx][0] == "b"


def test_sweep_removes_only_claims_expired_for_a_whole_lease(engine: sa.Engine) -> None:
    """Long-expired claims (e.g. of a row voided while claimed) go; live ones stay."""
    ids = seed(engine, 3)
    with transactions.begin(engine, "claims of every age") as conn:
        conn.execute(
            tables.claim.insert(),
            [
                {"TxMessageId": ids[0], "Gateway": "dead", "LeaseUntil": timefmt.utc_stamp(-3600)},
                {"TxMessageId": ids[1], "Gateway": "late", "LeaseUntil": timefmt.utc_stamp(-1)},
                {"TxMessageId": ids[2], "Gateway": "live", "LeaseUntil": timefmt.utc_stamp(60)},
            ],
        )
    a = gateway(engine, "a")
    assert a.sweep_claims() == 1
    assert sorted(a.claims()) == ids[1:]


def test_a_restarted_gateway_resumes_its_rows_at_once(engine: sa.Engine) -> None:
    """The default name is the host's, so a process started again takes its rows back."""
    ids = seed(engine, 2)
    before = outbox.OutboxRepository(engine, GATEWAY, "utc", lease_seconds=60)
    before.claim(2)
    before.transition([(tx, "claimed") for tx in ids], S.READY, S.ATTACHMENTS_UPLOADED)
    after = outbox.OutboxRepository(engine, GATEWAY, "utc", lease_seconds=60)
    assert after.instance == before.instance
    assert sorted(r.tx_message_id for r in after.take_over(10)) == ids


def test_a_restarted_gateway_reclaims_ready_rows_it_had_claimed(engine: sa.Engine) -> None:
    """Rows claimed but not yet moved when the process died are taken again on restart."""
    ids = seed(engine, 2)
    gateway(engine, "a").claim(2)
    assert gateway(engine, "b").claim(5) == []
    assert [r.tx_message_id for r in gateway(engine, "a").claim(5)] == ids
