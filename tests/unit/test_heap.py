"""The collector's settings of a long-running process (mpg.ops.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mpg.ops import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_what_start_up_made_and_spaces_out_young_collections() -> None:
    class Lasting:
        pass

    lasting = Lasting()
    before = gc.get_threshold()
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert not any(obj is lasting for obj in gc.get_objects())
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, before[1], before[2])
