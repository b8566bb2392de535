"""The retry decision."""

from __future__ import annotations

import random

import pytest

from mpg import errors
from mpg.gateway import retry


def test_server_down_is_transient_and_refusal_is_not() -> None:
    """A refusal will not change by retrying; an outage will."""
    assert retry.is_transient(errors.TransientServerError("down"))
    assert retry.is_transient(errors.StorageError("locked"))
    assert not retry.is_transient(errors.RefusedByServer(403, "forbidden", "no"))
    assert not retry.is_transient(ValueError("bug"))


def test_delay_grows_exponentially_and_is_capped() -> None:
    """Each retry waits about twice as long, never over the cap."""
    rng = random.Random(1)
    delays = [retry.delay(n, max_delay=5.0, rng=rng) for n in range(1, 12)]
    assert delays[0] <= retry.BASE_DELAY
    assert max(delays) <= 5.0
    assert delays[-1] >= 2.5


def test_attempts_count_from_one() -> None:
    """Attempt 0 is a caller bug."""
    with pytest.raises(ValueError, match="from 1"):
        retry.delay(0, max_delay=1.0)
