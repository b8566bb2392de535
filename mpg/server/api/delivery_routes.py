"""``GET /messages/{message_id}/deliveries``: a message's record per recipient (admin API).

Every event of the message (queued, each push attempt and its outcome, fetched,
acknowledged, withdrawn …; docs/push.md "Push jobs") grouped by the account it
concerns, oldest first, with the state of each recipient's pushes.
"""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic
import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.server import rows, tables
from mpg.server.api import deps

router = fastapi.APIRouter(tags=["deliveries"])


class Event(pydantic.BaseModel):
    """One thing that happened to the message for this account."""

    at: str = pydantic.Field(description="ISO 8601 UTC")
    kind: str
    detail: str


class Push(pydantic.BaseModel):
    """One push job for this account."""

    kind: str
    state: str
    attempts: int
    last_error: str


class Recipient(pydantic.BaseModel):
    """What happened to the message for one account (a device, a user, the sender)."""

    account: str
    events: list[Event]
    pushes: list[Push]


class Deliveries(pydantic.BaseModel):
    """A message's record per account."""

    message_id: str
    recipients: list[Recipient]


@router.get("/messages/{message_id}/deliveries", response_model=Deliveries)
def deliveries(
    push: deps.Server,
    caller: deps.Viewer,
    message_id: Annotated[str, fastapi.Path(min_length=1, max_length=50)],
) -> Deliveries:
    """Every event and push of ``message_id``, per account."""
    t = tables.transmit_queue.c
    e = tables.message_event.c
    j = tables.push_job.c
    with transactions.connect(push.engine, "reading a message's deliveries") as conn:
        if conn.execute(sa.select(t.MessageId).where(t.MessageId == message_id)).first() is None:
            raise errors.NotFound(f"no message {message_id}")
        events = conn.execute(
            sa.select(e.At, e.Kind, e.Account, e.Detail)
            .where(e.MessageId == message_id)
            .order_by(e.Id)
        ).all()
        jobs = conn.execute(
            sa.select(j.AccountId, j.Kind, j.State, j.Attempts, j.LastError)
            .where(j.MessageId == message_id)
            .order_by(j.CreatedAt)
        ).all()
        names = push.vault.names(
            conn, [str(r.Account) for r in events] + [str(r.AccountId) for r in jobs]
        )
    found: dict[str, Recipient] = {}

    def of(account: str) -> Recipient:
        return found.setdefault(account, Recipient(account=account, events=[], pushes=[]))

    for row in events:
        event = rows.server_event(row, names)
        of(event.account).events.append(Event(at=event.at, kind=event.kind, detail=event.detail))
    for job in jobs:
        of(names.get(job.AccountId, job.AccountId)).pushes.append(
            Push(
                kind=job.Kind,
                state=job.State,
                attempts=job.Attempts,
                last_error=job.LastError or "",
            )
        )
    return Deliveries(message_id=message_id, recipients=list(found.values()))
