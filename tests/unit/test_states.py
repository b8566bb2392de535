"""The transition table: what may change State, and the multi-step walk."""

from __future__ import annotations

import itertools

import pytest

from mpg import errors
from mpg.storage import states

S = states.OutboxState
I = states.InboxState  # noqa: E741 - mirrors S

ALLOWED = sorted(states.OUTBOX_TRANSITIONS)
REFUSED = [pair for pair in itertools.product(S, S) if pair not in states.OUTBOX_TRANSITIONS]


@pytest.mark.parametrize(("from_state", "to_state"), ALLOWED)
def test_check_returns_the_meaning_of_every_allowed_step(from_state: S, to_state: S) -> None:
    """Every pair in the table is allowed and says what it means."""
    assert states.check(from_state, to_state) == states.OUTBOX_TRANSITIONS[(from_state, to_state)]


@pytest.mark.parametrize(("from_state", "to_state"), REFUSED)
def test_check_refuses_every_pair_not_in_the_table(from_state: S, to_state: S) -> None:
    """Any pair missing from the table raises TransitionError."""
    with pytest.raises(errors.TransitionError):
        states.check(from_state, to_state)


def test_check_refuses_unknown_state_codes() -> None:
    """A code the document does not define is refused, not crashed on."""
    with pytest.raises(errors.TransitionError, match="unknown state"):
        states.check(10, 15)


def test_gateway_never_moves_a_draft_row() -> None:
    """State 0 is the ERP's draft: only the ERP's own 0 -> 10 / 0 -> 98 leave it."""
    leaving_draft = {b for a, b in states.OUTBOX_TRANSITIONS if a == S.INITIALIZED}
    assert leaving_draft == {S.READY, S.VOIDED}


def test_sent_and_voided_are_terminal() -> None:
    """No step leaves 29 or 98; 97 and 99 leave only by an operator's requeue to 10."""
    for final in (S.SENT, S.VOIDED):
        assert not [pair for pair in states.OUTBOX_TRANSITIONS if pair[0] == final]
    for requeueable in (S.TIMED_OUT, S.FAILED):
        assert [b for a, b in states.OUTBOX_TRANSITIONS if a == requeueable] == [S.READY]


def test_failure_never_comes_from_waiting_or_later() -> None:
    """Once queued by the server (20) a row ends sent or voided (recalled); never 99."""
    assert [b for a, b in states.OUTBOX_TRANSITIONS if a == S.WAITING] == [S.SENT, S.VOIDED]


@pytest.mark.parametrize(
    ("from_state", "to_state", "expected"),
    [
        (10, 12, [(10, 12)]),
        (10, 11, [(10, 11)]),
        (10, 20, [(10, 12), (12, 19), (19, 20)]),
        (11, 20, [(11, 12), (12, 19), (19, 20)]),
        (12, 20, [(12, 19), (19, 20)]),
        (12, 29, [(12, 19), (19, 20), (20, 29)]),
        (19, 29, [(19, 29)]),
        (20, 29, [(20, 29)]),
        (12, 99, [(12, 99)]),
        (11, 98, [(11, 98)]),
    ],
)
def test_path_lists_each_step_of_a_move(
    from_state: int, to_state: int, expected: list[tuple[int, int]]
) -> None:
    """path() walks 10..29 step by step, skipping 11 when nothing is uploaded."""
    assert states.path(from_state, to_state) == expected


@pytest.mark.parametrize(("from_state", "to_state"), [(20, 10), (29, 10), (12, 12), (98, 10)])
def test_path_refuses_backwards_or_out_of_final_states(from_state: int, to_state: int) -> None:
    """No path leads backwards along the walk or out of 29/98."""
    with pytest.raises(errors.TransitionError):
        states.path(from_state, to_state)


@pytest.mark.parametrize(("from_state", "to_state"), [(0, 29), (0, 98)])
def test_check_inbox_allows_read_and_recall_of_new_rows(from_state: int, to_state: int) -> None:
    """A new Inbox row (0) may become read (29) or recalled (98)."""
    assert states.check_inbox(from_state, to_state)


@pytest.mark.parametrize(
    ("from_state", "to_state"), [(29, 0), (29, 98), (98, 29), (98, 0), (0, 10), (0, 0)]
)
def test_check_inbox_refuses_everything_else(from_state: int, to_state: int) -> None:
    """Read and recalled rows stay as they are; unknown codes are refused."""
    with pytest.raises(errors.TransitionError):
        states.check_inbox(from_state, to_state)


def test_in_flight_states_are_the_claimed_ones() -> None:
    """11, 12 and 19 are the states a restarted gateway resumes."""
    assert set(states.IN_FLIGHT) == {S.ATTACHMENTS_UPLOADING, S.ATTACHMENTS_UPLOADED, S.UPLOADED}


def test_inbox_codes_are_new_read_recalled() -> None:
    """Inbox uses 0 new, 29 read, 98 recalled and nothing else."""
    assert [int(code) for code in I] == [0, 29, 98]
