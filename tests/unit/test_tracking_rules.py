"""The pure rules of message tracking: a recipient's status, when a message is final,
page positions."""

from __future__ import annotations

import pytest

from mpg import errors
from mpg.server import tracking


@pytest.mark.parametrize(
    ("entry_state", "kinds", "status"),
    [
        ("queued", [], "queued"),
        ("queued", ["push_failed"], "push failed"),
        ("queued", ["push_failed", "notified"], "notified"),
        ("leased", ["notified", "fetched"], "fetched"),
        ("acked", ["fetched", "acknowledged"], "acknowledged"),
        ("acked", ["fetched", "acknowledged", "read"], "read"),
        ("withdrawn", ["fetched", "withdrawn"], "withdrawn"),
    ],
)
def test_a_recipient_s_status_follows_its_entry_and_events(
    entry_state: str, kinds: list[str], status: str
) -> None:
    assert tracking.recipient_status(entry_state, kinds) == status
    assert status in tracking.STATUS_WORDS


@pytest.mark.parametrize(
    ("message_state", "receipt", "entries", "pushes", "final"),
    [
        ("queued", None, ["acked"], [], False),
        ("served", "acked", ["acked", "queued"], [], False),  # its RECALL still waits
        ("served", "acked", ["acked", "leased"], [], False),
        ("served", "queued", ["acked"], [], False),  # its sender has not fetched the receipt
        ("served", "leased", ["acked"], [], False),
        ("served", "acked", ["acked", "withdrawn"], ["pending"], False),
        ("served", "acked", ["acked", "withdrawn"], ["sent", "failed", "cancelled"], True),
        ("served", None, ["acked"], [], True),  # a RECALL owes no receipt
        ("refused", None, [], [], True),
    ],
)
def test_a_message_is_final_when_nothing_waits(
    message_state: str, receipt: str | None, entries: list[str], pushes: list[str], final: bool
) -> None:
    assert tracking.is_final(message_state, receipt, entries, pushes) is final


def test_a_page_position_round_trips_exactly() -> None:
    cursor = tracking.Cursor(1_764_528_000.123456, "5f0c0d7e-0000-4000-8000-000000000000")
    assert tracking.Cursor.parse(cursor.text()) == cursor


@pytest.mark.parametrize("text", ["", "~", "1.5~", "x~id", "inf~id", "1.5~" + "x" * 51])
def test_a_page_position_not_made_by_a_search_is_refused(text: str) -> None:
    with pytest.raises(errors.ValidationError, match="page position"):
        tracking.Cursor.parse(text)


def test_keywords_are_split_like_the_message_s_keywords() -> None:
    assert tracking.Query(keywords=" flood ; North,flood ").keyword_list() == ("flood", "North")
