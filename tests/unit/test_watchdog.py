"""The gateway's watchdog decision: a long-running cycle is a stall, idling is not."""

from __future__ import annotations

from mpg.gateway import runner


def test_idle_worker_is_never_stalled() -> None:
    """Between cycles (waiting for work or a retry) the watchdog keeps pinging."""
    assert not runner.stalled(None, now=10_000.0, limit=300.0)


def test_cycle_within_the_limit_is_alive() -> None:
    """A cycle running for less than the limit is still making progress."""
    assert not runner.stalled(1_000.0, now=1_299.0, limit=300.0)


def test_cycle_past_the_limit_is_stalled() -> None:
    """A cycle running for the limit or longer stops the pings, so systemd restarts it."""
    assert runner.stalled(1_000.0, now=1_300.0, limit=300.0)
