"""The server's states and the one transition table every change goes through.

Four things on the server have a state: a message (``TransmitQueue.State``), the
receipt it owes its sender once served (``ReceiptQueue.State``), each entry of a
recipient's queue (``ReceiveQueue.State``) and an attachment upload
(``UploadStage.Complete``). :data:`TRANSITIONS` lists every change each may make,
``None`` standing for "no row yet"; :func:`check` is asked before every statement
that creates a row in a state or moves one, exactly as the gateway asks
:func:`mpg.storage.states.check`. ``docs/server.md`` draws the table.

To add a state: add it to its enum and its moves to :data:`TRANSITIONS` (the unit
tests then require the diagram in ``docs/server.md`` to name it, and refuse any move
the table does not list).
"""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

from mpg import errors


class MessageState(enum.StrEnum):
    """``TransmitQueue.State``."""

    QUEUED = "queued"  # some entries are not yet acked or withdrawn
    SERVED = "served"  # every entry is acked or withdrawn; the receipt is queued
    REFUSED = "refused"  # not accepted; kept only to answer a resubmission the same


class EntryState(enum.StrEnum):
    """``ReceiveQueue.State``."""

    QUEUED = "queued"  # waiting for its recipient to fetch it
    LEASED = "leased"  # fetched; delivered again when LeaseUntil passes without an ack
    ACKED = "acked"  # the recipient stored it: served
    WITHDRAWN = "withdrawn"  # recalled (before it was fetched, or while leased)


class ReceiptState(enum.StrEnum):
    """``ReceiptQueue.State``: the receipt a served message owes its sender (refused
    messages and RECALLs owe none)."""

    QUEUED = "queued"  # waiting for the sender to fetch it
    LEASED = "leased"  # fetched; delivered again when LeaseUntil passes
    ACKED = "acked"  # the sender stored it


class UploadState(enum.StrEnum):
    """An attachment upload: ``UploadStage.Complete`` false (receiving) or true."""

    RECEIVING = "receiving"  # chunks arriving; a failed final check starts it over
    COMPLETE = "complete"  # size and SHA-256 matched; a submit may use it


State: TypeAlias = MessageState | EntryState | ReceiptState | UploadState

_M, _E, _R, _U = MessageState, EntryState, ReceiptState, UploadState

#: Per kind of state: (from, to) -> what the step means; ``None``: the row is created.
TRANSITIONS: Final[dict[type[State], dict[tuple[State | None, State], str]]] = {
    MessageState: {
        (None, _M.QUEUED): "accepted and queued for its recipients",
        (None, _M.REFUSED): "refused; kept to answer a resubmission the same",
        (None, _M.SERVED): "a RECALL: served at once",
        (_M.QUEUED, _M.SERVED): "every entry acknowledged or withdrawn; receipt queued",
    },
    EntryState: {
        (None, _E.QUEUED): "queued for its recipient",
        (_E.QUEUED, _E.LEASED): "fetched",
        (_E.LEASED, _E.LEASED): "fetched again: the earlier lease ran out",
        (_E.LEASED, _E.ACKED): "acknowledged: the recipient stored it",
        (_E.QUEUED, _E.WITHDRAWN): "recalled before it was fetched",
        (_E.LEASED, _E.WITHDRAWN): "recalled while leased",
    },
    ReceiptState: {
        (None, _R.QUEUED): "its message served: the receipt waits for the sender",
        (_R.QUEUED, _R.LEASED): "fetched by the sender",
        (_R.LEASED, _R.LEASED): "fetched again by the sender: the earlier lease ran out",
        (_R.LEASED, _R.ACKED): "acknowledged: the sender stored it",
    },
    UploadState: {
        (None, _U.RECEIVING): "first chunk: the stage is created",
        (_U.RECEIVING, _U.COMPLETE): "final chunk: size and SHA-256 match",
    },
}


def check(from_state: State | None, to_state: State) -> str:
    """Return the meaning of a step, or raise TransitionError if the table lacks it."""
    kind = type(to_state)
    if from_state is not None and type(from_state) is not kind:
        raise errors.TransitionError(f"{from_state!r} -> {to_state!r} mixes kinds of state")
    try:
        return TRANSITIONS[kind][(from_state, to_state)]
    except KeyError:
        where = "new" if from_state is None else str(from_state)
        raise errors.TransitionError(
            f"{kind.__name__} {where} -> {to_state} is not allowed"
        ) from None


#: States in which an entry still waits for its recipient (counted as queue depth).
WAITING: Final = (EntryState.QUEUED, EntryState.LEASED)
#: States in which a receipt still waits for its sender (counted as the sender's depth).
RECEIPT_WAITING: Final = (ReceiptState.QUEUED, ReceiptState.LEASED)
#: Message states retention may delete (once no entry of theirs is waiting).
FINISHED: Final = (MessageState.SERVED, MessageState.REFUSED)
