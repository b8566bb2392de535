"""Adaptive polling: a short pause while rows arrive, backing off to the poll interval."""

from __future__ import annotations

from mpg.gateway import outbound


def test_a_cycle_with_rows_polls_again_soon() -> None:
    """After a cycle that found rows the next pause is the adaptive minimum."""
    assert outbound.next_pause(1.0, 3, 1.0) == outbound.ADAPTIVE_MIN_POLL


def test_idle_cycles_double_the_pause_up_to_the_poll_interval() -> None:
    """Empty cycles double the pause until it reaches poll_interval, then stay there."""
    pause, seen = outbound.ADAPTIVE_MIN_POLL, []
    for _ in range(8):
        pause = outbound.next_pause(pause, 0, 1.0)
        seen.append(pause)
    assert seen[:4] == [0.1, 0.2, 0.4, 0.8]
    assert seen[4:] == [1.0, 1.0, 1.0, 1.0]


def test_the_minimum_never_exceeds_a_shorter_poll_interval() -> None:
    """A poll_interval below the adaptive minimum is honoured as it is."""
    assert outbound.next_pause(0.01, 5, 0.01) == 0.01
