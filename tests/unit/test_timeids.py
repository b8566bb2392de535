"""Time-ordered row keys (mpg.db.timeids): UUID version 7, strictly increasing."""

from __future__ import annotations

import threading
import uuid

from mpg.db import timeids


def test_a_key_is_a_version_7_uuid_carrying_the_millisecond_it_was_made() -> None:
    clock = timeids.KeyClock(lambda: 1_764_547_200_123)
    text = timeids.time_ordered_uuid(clock)
    key = uuid.UUID(text)
    assert str(key) == text  # the usual lower-case hyphenated form
    assert key.version == 7
    assert key.variant == uuid.RFC_4122
    assert key.int >> 80 == 1_764_547_200_123


def test_keys_made_in_the_same_millisecond_still_sort_in_the_order_they_were_made() -> None:
    clock = timeids.KeyClock(lambda: 1_000)
    keys = [timeids.time_ordered_uuid(clock) for _ in range(10_000)]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_a_clock_that_goes_back_does_not_make_a_key_sort_before_an_earlier_one() -> None:
    times = iter([5_000, 5_000, 4_000, 4_000, 6_000])
    clock = timeids.KeyClock(lambda: next(times))
    keys = [timeids.time_ordered_uuid(clock) for _ in range(5)]
    assert keys == sorted(keys)
    assert len(set(keys)) == 5


def test_keys_made_by_many_threads_at_once_are_all_different() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        keys = [timeids.time_ordered_uuid() for _ in range(2_000)]
        with lock:
            made.extend(keys)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8_000


def test_the_random_part_differs_between_keys_of_the_same_millisecond() -> None:
    clock = timeids.KeyClock(lambda: 1_000)
    randoms = {uuid.UUID(timeids.time_ordered_uuid(clock)).int & ((1 << 62) - 1) for _ in range(50)}
    assert len(randoms) == 50
