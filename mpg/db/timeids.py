"""Row keys that sort by creation time: UUID version 7 (RFC 9562).

A key made with ``uuid4`` is random, so every insert lands on a random page of
each index that holds it: a batch of 500 messages dirtied hundreds of pages of the
primary key, the message id indexes and the event index, and SQLite wrote them
all to its WAL at every commit (and again at every checkpoint), more as the tables
grew. A version-7 UUID starts with the Unix time in milliseconds, so new keys land
at the right edge of those B-trees, where the previous inserts already dirtied
the page: the same holds for PostgreSQL, MariaDB's clustered primary keys and SQL
Server. It is still a UUID in the usual text form, and still 74 random bits wide,
so it is as unique and as unguessable as a ``uuid4`` for anything that needs a
fresh id; it does tell when it was made, which its rows record anyway.

Within one process the keys are strictly increasing: keys made in the same
millisecond count up in the 12 bits after the version (RFC 9562 §6.2, method 1),
starting from a random value each millisecond.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Final

_VERSION: Final = 7 << 76
_VARIANT: Final = 2 << 62
_RANDOM_MASK: Final = (1 << 62) - 1
_COUNTER_MAX: Final = 0xFFF


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyClock:
    """The millisecond and counter of the last key, shared by the process's threads."""

    def __init__(self, unix_ms: Callable[[], int] = _unix_ms) -> None:
        self._unix_ms = unix_ms
        self._lock = threading.Lock()
        self._ms = 0
        self._counter = 0

    def next(self) -> tuple[int, int]:
        """The (millisecond, counter) of a new key, after every earlier one."""
        now = self._unix_ms()
        with self._lock:
            if now > self._ms:
                # A random start leaves room to count up within the millisecond.
                self._ms, self._counter = now, int.from_bytes(os.urandom(2), "big") >> 5
            elif self._counter < _COUNTER_MAX:
                self._counter += 1
            else:
                # 4,096 keys in one millisecond, or the clock went back: borrow the
                # next millisecond rather than repeat an order.
                self._ms, self._counter = self._ms + 1, 0
            return self._ms, self._counter


_CLOCK: Final = KeyClock()


def time_ordered_uuid(clock: KeyClock = _CLOCK) -> str:
    """A new UUID version 7 in its usual text form, after every earlier one made by
    ``clock`` (the process's own unless a test gives one)."""
    ms, counter = clock.next()
    rand = int.from_bytes(os.urandom(8), "big") & _RANDOM_MASK
    # The text form written directly: uuid.UUID's checks cost twice as much.
    h = f"{(ms << 80) | _VERSION | (counter << 64) | _VARIANT | rand:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
