"""Adaptive batch sizes: doubling while batches come back full, the base otherwise."""

from __future__ import annotations

from mpg.gateway import batching


def test_a_full_batch_doubles_the_next() -> None:
    """A backlog (a batch as large as asked for) makes the next batch twice as large."""
    assert batching.next_size(200, 200, 200) == 400
    assert batching.next_size(400, 400, 200) == 800


def test_growth_stops_at_the_growth_limit() -> None:
    """Under a long backlog the size settles at GROWTH times the configured size."""
    size = 100
    for _ in range(10):
        size = batching.next_size(size, size, 100)
    assert size == 100 * batching.GROWTH


def test_growth_never_passes_the_ceiling() -> None:
    """However large the configured size, no batch asks for more than the ceiling."""
    assert batching.next_size(4000, 4000, 4000) == batching.CEILING
    assert batching.next_size(5000, 5000, 5000) == 5000


def test_a_batch_that_is_not_full_drops_back_to_the_configured_size() -> None:
    """The backlog is gone as soon as a batch comes back short; idle, one row is a batch."""
    assert batching.next_size(1600, 1599, 200) == 200
    assert batching.next_size(200, 1, 200) == 200
    assert batching.next_size(200, 0, 200) == 200
