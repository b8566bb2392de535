"""Voiding: withdraw a message the ERP or an operator no longer wants sent.

A row not yet accepted by the server (0, 10, 11, 12) just moves to 98. A row the
server already accepted (19, 20) is withdrawn with a RECALL to the server's own agent
(``psereceiver``): recipients that have not fetched it never see it, those that did
get a RECALL message. The RECALL's TxMessageId is derived from the row's, so voiding
twice (or after a crash) submits the same RECALL, which the server answers once.

Two ways in: ``mpg void`` (:meth:`Voider.void`) and the ERP writing 98 itself, which
:meth:`Voider.sweep` notices (the row is in 98, its history still ends in 10–20).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Final

import structlog

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.gateway import client as client_mod
from mpg.storage import outbox, states
from mpg.storage.states import OutboxState as S
from mpg.wire import content, model

log = structlog.get_logger("mpg.void")

#: Namespace of the RECALL TxMessageIds derived from the voided row's TxMessageId.
RECALL_NAMESPACE: Final = uuid.UUID("6f1d7c0e-3a52-4b8e-9a57-5d0c2f4e8b11")
#: States in which the server already has the message: voiding means recalling.
ON_SERVER: Final = frozenset({S.UPLOADED, S.WAITING})
#: Rows :meth:`Voider.sweep` takes note of per call.
SWEEP_BATCH: Final = 100
#: Times ``void`` re-reads a row that changed under it before giving up.
_ATTEMPTS: Final = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Voided:
    """What ``void`` did: the state the row left, and the note written to StatusLog."""

    tx_message_id: str
    from_state: int
    note: str


def recall_tx_id(tx_message_id: str) -> str:
    """The TxMessageId of the RECALL that withdraws ``tx_message_id`` (deterministic)."""
    return str(uuid.uuid5(RECALL_NAMESPACE, tx_message_id))


def recall_message(
    row: outbox.OutboxRow, account: str, clock: timefmt.Clock
) -> model.OutgoingMessage:
    """The RECALL of an accepted row, sent as the row's AppCode and SourceDomain."""
    if not row.message_id:
        raise errors.ValidationError("MessageId", f"row {row.tx_message_id} has none to recall")
    domain = row.source_domain or account.partition("@")[2]
    return model.OutgoingMessage(
        tx_message_id=recall_tx_id(row.tx_message_id),
        app_code=row.app_code or "",
        source_domain=domain,
        agent_sender=account,
        sender=row.sender or account,
        receiver_type="U",
        receivers=(model.SERVER_AGENT,),
        bcc=(),
        subject=f"recall of {row.tx_message_id}",
        content=content.build_recall(row.message_id),
        content_type="RECALL",
        alert_flag=False,
        priority="E",
        keywords="",
        transmit_time=timefmt.now_text(clock),
    )


class Voider:
    """Voids rows through the repository; recalls through ``push`` when needed."""

    def __init__(self, repo: outbox.OutboxRepository, push: client_mod.PushClient | None) -> None:
        # ``push`` may be None for a command line without a credential: voiding rows
        # not yet on the server needs no server.
        self._repo = repo
        self._push = push

    def recall(self, row: outbox.OutboxRow) -> str:
        """Withdraw an accepted row from the server; returns the note for StatusLog.

        Raises :class:`~mpg.errors.RefusedByServer` when the server refuses the RECALL
        and :class:`~mpg.errors.TransientServerError` when it cannot be reached.
        """
        if self._push is None:
            raise errors.ConfigError(
                "gateway.secret: needed to recall a message the server already accepted"
            )
        message = recall_message(row, self._repo.gateway_account, self._repo.clock)
        [result] = self._push.submit([message])
        if not result.accepted or result.recall is None:
            raise errors.RefusedByServer(200, "recall_refused", result.reason or "no recall done")
        outcome = result.recall
        log.info(
            "message_recalled",
            tx_message_id=row.tx_message_id,
            message_id=row.message_id,
            withdrawn=outcome.withdrawn,
            notified=outcome.notified,
        )
        return f"recalled: withdrawn from {outcome.withdrawn}, notified {outcome.notified}"

    def void(self, tx_id: str, reason: str) -> Voided:
        """Void one row now (``mpg void``); raises if it is unknown or already final."""
        for _ in range(_ATTEMPTS):
            row = self._repo.get(tx_id)
            if row is None:
                raise errors.ValidationError("TxMessageId", f"no Outbox row {tx_id}")
            try:
                state = S(row.state if row.state is not None else -1)
            except ValueError:
                raise errors.TransitionError(f"row {tx_id} has State {row.state}") from None
            if state in states.FINAL:
                raise errors.TransitionError(
                    f"row {tx_id} is in {state.value} {state.name}: nothing to void"
                )
            note = f"voided: {reason}"
            if state not in ON_SERVER:
                if self._repo.transition([(tx_id, note)], state, S.VOIDED):
                    return Voided(tx_id, int(state), note)
                continue
            # The server has it. The change to 98 and the RECALL must not be split:
            # the RECALL makes the server send a receipt, and the running gateway
            # would move the row 20 -> 29 in between. So the compare-and-set runs
            # first, the RECALL inside the same transaction (the row stays locked
            # for one request), and a refused or failed RECALL rolls the void back.
            note += "; recalled from the server"
            with transactions.begin(self._repo.engine, "voiding an Outbox row") as conn:
                if self._repo.transition([(tx_id, note)], state, S.VOIDED, conn=conn):
                    outcome = self.recall(row)
                    return Voided(tx_id, int(state), f"{note} ({outcome})")
            # The gateway moved it meanwhile (e.g. 12 -> 20): look again.
        raise errors.TransitionError(f"row {tx_id} keeps changing; try again")

    def sweep(self) -> int:
        """Take note of rows the ERP set to 98 itself, recalling those on the server.

        Returns how many were handled. A recall the server cannot take now (down) is
        tried again on the next sweep; one it refuses is noted in StatusLog.
        """
        handled = 0
        for row, last in self._repo.voided_elsewhere(SWEEP_BATCH):
            note = "voided in the database"
            if last in ON_SERVER:
                try:
                    note += "; " + self.recall(row)
                except errors.RefusedByServer as exc:
                    note += f"; recall refused: {exc.detail}"
            handled += self._repo.note_voided(row.tx_message_id, last, note)
        return handled

    def accepted_after_void(self, row: outbox.OutboxRow, from_state: int, message_id: str) -> None:
        """The server accepted a row that was voided while it was being sent: recall it."""
        note = "voided while being sent"
        try:
            note += "; " + self.recall(dataclasses.replace(row, message_id=message_id))
        except errors.RefusedByServer as exc:
            note += f"; recall refused: {exc.detail}"
        self._repo.note_voided(row.tx_message_id, from_state, note, message_id=message_id)
