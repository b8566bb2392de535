"""``POST /groups/{group}/publish``: publish to a group's or category's message file (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import fastapi
import pydantic

from mpg.server import publishing
from mpg.server.api import deps

router = fastapi.APIRouter(tags=["publishing"])

#: Group and category ids (docs/devices.md).
SLUG = r"^[a-z0-9][a-z0-9_-]{0,49}$"


class NewMessage(pydantic.BaseModel):
    """A message to add to the file (plain text; markup is escaped)."""

    title: str = pydantic.Field(min_length=1, max_length=200)
    text: str = pydantic.Field(default="", max_length=20_000)
    priority: Literal["E", "H", "N", "L"] = "N"
    expires: dt.datetime | None = pydantic.Field(
        default=None, description="ISO 8601 with a time zone; the message leaves the file then"
    )


class PublishRequest(pydantic.BaseModel):
    """What to publish: messages added to the file of the group, or of one category."""

    category: Annotated[str, pydantic.Field(pattern=SLUG)] | None = None
    messages: list[NewMessage] = pydantic.Field(min_length=1, max_length=50)


class PublishAnswer(pydantic.BaseModel):
    """The version now served and the pushes committed for it."""

    group: str
    category: str
    version: str = pydantic.Field(description="the file's strong ETag")
    changed: bool
    kept: list[str]
    dropped: list[str]
    expired: list[str]
    pushes: int


@router.post("/groups/{group}/publish", response_model=PublishAnswer)
def publish(
    push: deps.Server,
    caller: deps.Admin,
    group: Annotated[str, fastapi.Path(pattern=SLUG)],
    body: PublishRequest,
) -> PublishAnswer:
    """Write the new version of the file, then push the group's (or category's) devices."""
    now = dt.datetime.now(dt.UTC)
    category = body.category or ""
    done = publishing.publish(
        push.engine,
        push.files,
        push.settings,
        group,
        actor=caller.name,
        category=category,
        add=[
            publishing.new_message(
                m.title, m.text, priority=m.priority, expires=m.expires, category=category, now=now
            )
            for m in body.messages
        ],
    )
    return PublishAnswer(
        group=done.group,
        category=done.category,
        version=done.version,
        changed=done.changed,
        kept=list(done.kept),
        dropped=list(done.dropped),
        expired=list(done.expired),
        pushes=done.pushes,
    )
