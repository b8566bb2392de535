"""Opened messages kept in memory between submit and fetch (mpg.server.openedcache)."""

from __future__ import annotations

from mpg.server import openedcache


def row(text: str, attachments: int = 0) -> openedcache.Kept:
    opened = {"MessageId": "m", "Content": text, "AlertFlag": True, "Keywords": None}
    return openedcache.Kept(opened, attachments)


def test_kept_rows_come_back_and_unknown_ids_are_left_out() -> None:
    cache = openedcache.OpenedMessages()
    cache.put([("m1", row("one")), ("m2", row("two", attachments=2))])
    assert cache.get(["m2", "m3", "m1"]) == {"m2": row("two", 2), "m1": row("one")}


def test_the_oldest_rows_go_first_when_the_text_passes_the_bound() -> None:
    size = openedcache.ENTRY_OVERHEAD + len("m") + 100
    cache = openedcache.OpenedMessages(max_chars=3 * size)
    cache.put([(f"m{n}", row("x" * 100)) for n in range(3)])
    assert len(cache) == 3
    cache.put([("m3", row("x" * 100))])
    assert sorted(cache.get([f"m{n}" for n in range(4)])) == ["m1", "m2", "m3"]


def test_a_row_larger_than_the_whole_bound_is_not_kept_and_drops_nothing() -> None:
    cache = openedcache.OpenedMessages(max_chars=10_000)
    cache.put([("small", row("x"))])
    cache.put([("huge", row("x" * 20_000))])
    assert list(cache.get(["small", "huge"])) == ["small"]
