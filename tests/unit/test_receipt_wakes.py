"""Receipt wake-ups: at once after a quiet spell, then at most one per linger."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mpg.server.receiptwakes import ReceiptWakes


class FakeLoop:
    """The loop's clock and ``call_at``, run by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[str], None], str]] = []

    def call_at(self, when: float, callback: Callable[[str], None], arg: str) -> None:
        self.timers.append((when, callback, arg))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, callback, arg in sorted(due, key=lambda t: t[0]):
            callback(arg)


def make() -> tuple[ReceiptWakes, FakeLoop, list[list[str]]]:
    loop = FakeLoop()
    woken: list[list[str]] = []

    def wake(accounts: Iterable[str]) -> None:
        woken.append(sorted(accounts))

    return ReceiptWakes(wake, loop.call_at, lambda: loop.now, linger=0.05), loop, woken


def test_the_first_receipt_after_a_quiet_spell_wakes_its_sender_at_once() -> None:
    wakes, _, woken = make()
    wakes(["a", "b"])
    assert woken == [["a", "b"]]


def test_receipts_within_the_linger_wake_their_sender_once_at_its_end() -> None:
    wakes, loop, woken = make()
    wakes(["a"])
    loop.advance(0.01)
    wakes(["a"])
    loop.advance(0.01)
    wakes(["a"])
    assert woken == [["a"]]  # held
    loop.advance(0.029)
    assert woken == [["a"]]  # 49 ms after the first wake-up: still held
    loop.advance(0.002)
    assert woken == [["a"], ["a"]]  # one wake-up for both receipts
    assert loop.timers == []


def test_a_sender_quiet_for_a_whole_linger_is_woken_at_once_again() -> None:
    wakes, loop, woken = make()
    wakes(["a"])
    loop.advance(0.06)
    wakes(["a"])
    assert woken == [["a"], ["a"]]
    assert loop.timers == []


def test_one_senders_linger_does_not_hold_another_senders_receipts() -> None:
    wakes, loop, woken = make()
    wakes(["a"])
    loop.advance(0.01)
    wakes(["a", "b"])  # a is held; b has been quiet
    assert woken == [["a"], ["b"]]
    loop.advance(0.05)
    assert woken == [["a"], ["b"], ["a"]]
