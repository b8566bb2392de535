"""What an operator may do to a message from the console: recall it, push it again.

Both go through the paths the rest of MPG uses, so the rules are the same:

* **Recall** is the RECALL a sending gateway submits (reference §3, ``mpg void``):
  :meth:`mpg.server.queues.QueueStore.submit` of a RECALL row in the name of the
  message's own sender, so the server withdraws what was not yet stored, sends the
  RECALL to those who have it, cancels or follows up its pushes, and the sender's
  gateway gets the receipt with the recalled count. Its TxMessageId is
  ``console:<MessageId>``: a second click is the same submission and gets the same
  answer; a message recalled already (by the console or its gateway) is refused.
* **Push again** adds one push job (:mod:`mpg.server.push.jobs`) for a device that
  has not fetched the message yet and has a live token, as the submit does.

Each change is written to the audit log naming the console user (``console:<name>``)
and things by id only. The recall's entry follows its submit's transaction (the
queue store owns that one); the push's is in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.server import audit, queues, tables
from mpg.server.push import jobs as push_jobs
from mpg.server.rows import EventKind
from mpg.server.states import WAITING, MessageState
from mpg.server.vault import Vault
from mpg.wire import content, model
from mpg.wire.push import NoticeKind

#: TxMessageId prefix of the RECALLs the console submits.
RECALL_TX_PREFIX: Final = "console:"


def recall(
    engine: sa.Engine, vault: Vault, store: queues.QueueStore, message_id: str, actor: str
) -> model.RecallOutcome:
    """Recall ``message_id`` in its sender's name; what the recall did.

    NotFound when there is no such message; Conflict when it cannot be recalled (a
    refused message, a RECALL itself, one recalled already) or the server refused
    the RECALL (its reason).
    """
    t = tables.transmit_queue.c
    e = tables.message_event.c
    with transactions.connect(engine, "reading a message to recall") as conn:
        row = conn.execute(
            sa.select(t.MessageId, t.SenderAccount, t.State, t.ContentType, t.Priority).where(
                t.MessageId == message_id
            )
        ).first()
        if row is None:
            raise errors.NotFound(f"no message {message_id}")
        recalled = conn.execute(
            sa.select(e.Id).where(e.MessageId == message_id, e.Kind == EventKind.RECALLED).limit(1)
        ).first()
        sender = vault.names(conn, [str(row.SenderAccount)])[str(row.SenderAccount)]
    if row.State == MessageState.REFUSED:
        raise errors.Conflict(f"message {message_id} was refused: there is nothing to recall")
    if row.ContentType == "RECALL":
        raise errors.Conflict(f"message {message_id} is a RECALL itself")
    if recalled is not None:
        raise errors.Conflict(f"message {message_id} was recalled already")
    [result] = store.submit(sender, [_recall_message(message_id, sender, row.Priority)])
    if not result.accepted or result.recall is None:
        raise errors.Conflict(f"the server refused the recall: {result.reason}")
    outcome = result.recall
    with transactions.begin(engine, "recording a console recall") as conn:
        audit.record(
            conn,
            actor,
            "message.recall",
            message_id,
            f"withdrawn {outcome.withdrawn}, RECALL sent to {outcome.notified}; "
            f"RECALL {result.message_id}",
        )
    return outcome


def _recall_message(message_id: str, sender: str, priority: str | None) -> model.OutgoingMessage:
    """The RECALL row of reference §3, as the sender's gateway would submit it."""
    return model.OutgoingMessage(
        tx_message_id=RECALL_TX_PREFIX + message_id,
        app_code=content.RECALL_APP_CODE,
        source_domain="",
        agent_sender=sender,
        sender="",
        receiver_type="U",
        receivers=(model.SERVER_AGENT,),
        bcc=(),
        subject=f"[Recall]: {message_id}",
        content=content.build_recall(message_id),
        content_type="RECALL",
        alert_flag=False,
        priority=priority or model.DEFAULT_PRIORITY,
        keywords="",
        transmit_time=timefmt.now_text("utc"),
    )


def push_again(
    engine: sa.Engine,
    message_id: str,
    account_id: str,
    actor: str,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Queue one more push of ``message_id`` to the device ``account_id``.

    NotFound when the message has no entry for it; Conflict when there is nothing to
    push (it fetched the message already, or a push is still waiting) or no way to
    (not a device with a live push token).
    """
    r = tables.receive_queue.c
    t = tables.transmit_queue.c
    j = tables.push_job.c
    now = clock()
    with transactions.begin(engine, "pushing a message again") as conn:
        entry = conn.execute(
            sa.select(r.State, t.Priority)
            .join(tables.transmit_queue, t.MessageId == r.MessageId)
            .where(
                r.MessageId == message_id,
                r.Recipient == account_id,
                r.Kind == model.DeliveryKind.MESSAGE,
            )
        ).first()
        if entry is None:
            raise errors.NotFound(f"message {message_id} has no recipient {account_id}")
        if entry.State not in WAITING:
            raise errors.Conflict(f"{account_id} has the message already ({entry.State})")
        waiting = conn.execute(
            sa.select(j.JobId).where(
                j.MessageId == message_id,
                j.AccountId == account_id,
                j.Kind == str(NoticeKind.MESSAGE),
                j.State.in_([push_jobs.JobState.PENDING, push_jobs.JobState.LEASED]),
            )
        ).first()
        if waiting is not None:
            raise errors.Conflict(f"a push to {account_id} is waiting to be sent already")
        group = push_jobs.pushable_devices(conn, [account_id]).get(account_id)
        if group is None:
            raise errors.Conflict(f"{account_id} is not a device with a live push token")
        push_jobs.enqueue(
            conn,
            [
                push_jobs.job_row(
                    account_id,
                    group,
                    NoticeKind.MESSAGE,
                    entry.Priority or model.DEFAULT_PRIORITY,
                    now,
                    message_id=message_id,
                )
            ],
        )
        audit.record(conn, actor, "message.push_again", message_id, f"to {account_id}")
