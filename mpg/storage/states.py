"""State codes and the one transition table every state change goes through.

The codes are the source document's (reference §5); ``docs/states.md`` draws the
diagram. Only :func:`check` decides whether a change is allowed, and the repositories
call it before every compare-and-set on ``State``.
"""

from __future__ import annotations

import enum
import itertools
from typing import Final

from mpg import errors


class OutboxState(enum.IntEnum):
    """``Outbox.State`` as the source document defines it."""

    INITIALIZED = 0  # the ERP is still composing the row; the gateway leaves it alone
    READY = 10  # "not yet uploaded": the ERP hands the row to the gateway
    ATTACHMENTS_UPLOADING = 11  # claimed; attachment files are streaming to the server
    ATTACHMENTS_UPLOADED = 12  # every attachment is on the server (vacuously true: none)
    UPLOADED = 19  # the message itself was accepted; MessageId is known
    WAITING = 20  # the server queued it for its recipients and is delivering
    SENT = 29  # every recipient was served (or the message was recalled from it)
    TIMED_OUT = 97  # not uploaded within the configured send timeout
    VOIDED = 98  # voided by the ERP or an operator (recalled if the server had it)
    FAILED = 99  # invalid, or refused by the server; StatusLog says why


class InboxState(enum.IntEnum):
    """``Inbox.State`` as this project uses it (the document gives no read code)."""

    NEW = 0  # stored by the gateway; the ERP has not read it yet
    READ = 29  # the ERP (or ``mpg inbox read``) marked it read
    RECALLED = 98  # the sender recalled it before the ERP read it


#: States in which the gateway owns the row and is still working on it.
IN_FLIGHT: Final = frozenset(
    {
        OutboxState.ATTACHMENTS_UPLOADING,
        OutboxState.ATTACHMENTS_UPLOADED,
        OutboxState.UPLOADED,
    }
)

#: States no transition leaves.
FINAL: Final = frozenset(
    {OutboxState.SENT, OutboxState.TIMED_OUT, OutboxState.VOIDED, OutboxState.FAILED}
)

_S = OutboxState

#: (from, to) -> what the step means. Nothing outside this table may change State.
OUTBOX_TRANSITIONS: Final[dict[tuple[OutboxState, OutboxState], str]] = {
    (_S.INITIALIZED, _S.READY): "the ERP released the row",
    (_S.INITIALIZED, _S.VOIDED): "voided before release",
    (_S.READY, _S.ATTACHMENTS_UPLOADING): "claimed; uploading attachments",
    (_S.READY, _S.ATTACHMENTS_UPLOADED): "claimed; no attachments to upload",
    (_S.READY, _S.FAILED): "invalid row",
    (_S.READY, _S.VOIDED): "voided",
    (_S.READY, _S.TIMED_OUT): "not picked up within the send timeout",
    (_S.ATTACHMENTS_UPLOADING, _S.ATTACHMENTS_UPLOADED): "attachments uploaded",
    (_S.ATTACHMENTS_UPLOADING, _S.FAILED): "attachment refused or unreadable",
    (_S.ATTACHMENTS_UPLOADING, _S.VOIDED): "voided",
    (_S.ATTACHMENTS_UPLOADING, _S.TIMED_OUT): "upload not finished within the send timeout",
    (_S.ATTACHMENTS_UPLOADED, _S.UPLOADED): "message accepted by the server",
    (_S.ATTACHMENTS_UPLOADED, _S.FAILED): "message refused by the server",
    (_S.ATTACHMENTS_UPLOADED, _S.VOIDED): "voided",
    (_S.ATTACHMENTS_UPLOADED, _S.TIMED_OUT): "not accepted within the send timeout",
    (_S.UPLOADED, _S.WAITING): "queued for its recipients",
    (_S.UPLOADED, _S.TIMED_OUT): "accepted but not recorded within the send timeout",
    (_S.UPLOADED, _S.SENT): "served at once (server-side recipient)",
    (_S.WAITING, _S.SENT): "every recipient served",
    # Voided after the server accepted it: the gateway withdraws it with a RECALL.
    (_S.UPLOADED, _S.VOIDED): "voided; recalled from the server",
    (_S.WAITING, _S.VOIDED): "voided; recalled from the server",
    # Operators requeue rows whose cause they fixed (``mpg retry``, issue 4).
    (_S.TIMED_OUT, _S.READY): "requeued by an operator",
    (_S.FAILED, _S.READY): "requeued by an operator",
}

INBOX_TRANSITIONS: Final[dict[tuple[InboxState, InboxState], str]] = {
    (InboxState.NEW, InboxState.READ): "read by the ERP",
    (InboxState.NEW, InboxState.RECALLED): "recalled by the sender",
}


def check(from_state: int, to_state: int) -> str:
    """Return the meaning of an Outbox step, or raise if the table does not allow it."""
    try:
        key = (OutboxState(from_state), OutboxState(to_state))
    except ValueError as exc:
        raise errors.TransitionError(f"unknown state in {from_state} -> {to_state}") from exc
    try:
        return OUTBOX_TRANSITIONS[key]
    except KeyError:
        raise errors.TransitionError(
            f"Outbox state {from_state} -> {to_state} is not allowed"
        ) from None


def check_inbox(from_state: int, to_state: int) -> str:
    """Return the meaning of an Inbox step, or raise if the table does not allow it."""
    try:
        key = (InboxState(from_state), InboxState(to_state))
        return INBOX_TRANSITIONS[key]
    except (ValueError, KeyError):
        raise errors.TransitionError(
            f"Inbox state {from_state} -> {to_state} is not allowed"
        ) from None


def path(from_state: int, to_state: int) -> list[tuple[OutboxState, OutboxState]]:
    """The steps a row takes from one state to another along the normal walk.

    Used when several steps complete in one database transaction (e.g. 12 -> 19 -> 20
    after one submit): each step is still checked and recorded on its own.
    """
    walk = [
        _S.READY,
        _S.ATTACHMENTS_UPLOADING,
        _S.ATTACHMENTS_UPLOADED,
        _S.UPLOADED,
        _S.WAITING,
        _S.SENT,
    ]
    start, end = OutboxState(from_state), OutboxState(to_state)
    if (start, end) in OUTBOX_TRANSITIONS:
        return [(start, end)]
    if start not in walk or end not in walk or walk.index(end) <= walk.index(start):
        raise errors.TransitionError(f"no path from {from_state} to {to_state}")
    steps = walk[walk.index(start) : walk.index(end) + 1]
    if start == _S.READY and _S.ATTACHMENTS_UPLOADING in steps:
        # A row with nothing to upload skips 11; callers that uploaded pass 11 explicitly.
        steps.remove(_S.ATTACHMENTS_UPLOADING)
    pairs = list(itertools.pairwise(steps))
    for a, b in pairs:
        check(a, b)
    return pairs
