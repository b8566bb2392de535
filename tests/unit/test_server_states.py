"""The server's transition table: every change it allows, and nothing else."""

from __future__ import annotations

import itertools
import pathlib

import pytest

from mpg import errors
from mpg.server import states

ALL_STATES = [s for kind in states.TRANSITIONS for s in kind]
ALLOWED = [
    (a, b, meaning) for table in states.TRANSITIONS.values() for (a, b), meaning in table.items()
]
REFUSED = [
    (a, b)
    for kind, table in states.TRANSITIONS.items()
    for a, b in itertools.product([None, *kind], kind)
    if (a, b) not in table
]
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "server.md"


@pytest.mark.parametrize(("from_state", "to_state", "meaning"), ALLOWED)
def test_every_step_in_the_table_is_allowed_with_its_meaning(
    from_state: states.State | None, to_state: states.State, meaning: str
) -> None:
    """check() returns the table's words for each listed step."""
    assert states.check(from_state, to_state) == meaning


@pytest.mark.parametrize(("from_state", "to_state"), REFUSED)
def test_every_step_not_in_the_table_is_refused(
    from_state: states.State | None, to_state: states.State
) -> None:
    """Anything else raises TransitionError naming the step."""
    with pytest.raises(errors.TransitionError, match="not allowed"):
        states.check(from_state, to_state)


def test_a_step_between_kinds_of_state_is_refused() -> None:
    """A message state never becomes an entry state ('queued' exists in both)."""
    with pytest.raises(errors.TransitionError, match="mixes"):
        states.check(states.MessageState.QUEUED, states.EntryState.LEASED)


def test_acked_and_withdrawn_entries_stored_receipts_and_served_messages_are_final() -> None:
    """No step leaves a finished entry, receipt or message."""
    finals = {
        states.EntryState.ACKED,
        states.EntryState.WITHDRAWN,
        states.ReceiptState.ACKED,
        *states.FINISHED,
    }
    assert [(a, b) for a, b, _ in ALLOWED if a in finals] == []


def test_docs_draw_every_state_and_step() -> None:
    """docs/server.md names each state and each step's meaning from the table."""
    text = DOC.read_text(encoding="utf-8")
    assert [str(s) for s in ALL_STATES if f"`{s}`" not in text and str(s) not in text] == []
    assert [meaning for _, _, meaning in ALLOWED if meaning not in text] == []
