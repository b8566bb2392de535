"""``GET /messages/{message_id}/explain?recipient=…``: where a delivery stopped (admin API).

The chain of :mod:`mpg.server.explain` for one message and one recipient, gathered by
:mod:`mpg.server.deliveryfacts` (docs/push.md, "Explaining a non-delivery"). An
unknown message is 404; an unknown recipient is an answer whose first broken link is
``recipient``.
"""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from mpg import errors
from mpg.server import deliveryfacts, explain
from mpg.server.api import deps

router = fastapi.APIRouter(tags=["deliveries"])


class Link(pydantic.BaseModel):
    """One step of the delivery."""

    name: str = pydantic.Field(description="message, accepted, recipient, device, … read")
    ok: bool
    detail: str


class Explanation(pydantic.BaseModel):
    """The chain up to its first broken link."""

    message_id: str
    recipient: str
    delivered: bool = pydantic.Field(description="true when no link is broken")
    first_broken: str | None
    summary: str
    links: list[Link]


@router.get("/messages/{message_id}/explain", response_model=Explanation)
def explain_message(
    push: deps.Server,
    caller: deps.Viewer,
    message_id: Annotated[str, fastapi.Path(min_length=1, max_length=50)],
    recipient: Annotated[str, fastapi.Query(min_length=1, max_length=253)],
) -> Explanation:
    """Why ``message_id`` did or did not reach ``recipient`` (a device id, ``dev-…``,
    or an account name as the ReceiverList writes it)."""
    found = deliveryfacts.explain_delivery(push, message_id, recipient)
    if found.unknown == explain.MESSAGE:
        raise errors.NotFound(f"no message {message_id}")
    return Explanation.model_validate(found.as_dict())
