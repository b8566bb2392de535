"""The watcher's ledger: a commit counter value is the gateway's only if it claimed it."""

from __future__ import annotations

from mpg.gateway import wakeup


def test_a_commit_the_gateway_claimed_is_not_external() -> None:
    """The counter moving by the gateway's own claimed commits wakes nobody."""
    ledger = wakeup.Ledger(7)
    ledger.claim(7)
    ledger.claim(8)
    assert not ledger.external(8)
    assert not ledger.external(9)


def test_a_commit_nobody_claimed_is_external() -> None:
    """A counter value between the gateway's own commits is someone else's."""
    ledger = wakeup.Ledger(7)
    ledger.claim(7)
    ledger.claim(9)  # 8 -> 9 was not the gateway's commit
    assert ledger.external(10)
    assert not ledger.external(10)


def test_more_new_commits_than_claims_are_external() -> None:
    """A jump beyond every claim is external without looking at each value."""
    ledger = wakeup.Ledger(100)
    ledger.claim(100)
    assert ledger.external(1_000_000)


def test_a_withdrawn_claim_leaves_the_next_commit_to_others() -> None:
    """A gateway commit that wrote nothing does not hide the commit that follows it."""
    ledger = wakeup.Ledger(3)
    ledger.claim(3)
    ledger.withdraw(3)
    assert ledger.external(4)


def test_an_unchanged_counter_is_nothing_new() -> None:
    """File events without a commit (a checkpoint, a read) wake nobody."""
    ledger = wakeup.Ledger(5)
    assert not ledger.external(5)


def test_a_claim_still_ahead_of_the_counter_is_kept() -> None:
    """A claim made before the commit lands is still honoured when the counter gets there."""
    ledger = wakeup.Ledger(5)
    ledger.claim(5)
    assert not ledger.external(5)
    assert not ledger.external(6)


def test_the_counter_wraps_around() -> None:
    """iChange is 32 bits: the gateway's commit across the wrap is still its own."""
    top = (1 << 32) - 1
    ledger = wakeup.Ledger(top)
    ledger.claim(top)
    assert not ledger.external(0)
    assert ledger.external(1)


def test_an_unreadable_or_rebuilt_counter_wakes() -> None:
    """Without a counter, or with one behind what was seen, every event wakes."""
    ledger = wakeup.Ledger(None)
    assert ledger.external(None)
    assert ledger.external(10)
    assert ledger.external(4)  # behind: the wal-index was rebuilt
    assert not ledger.external(4)
