"""The audit log page: every admin change, who made it, when and what; newest first.

Filters: who (the actor contains the text), what (the action starts with it, e.g.
``group.``) and target (contains); older entries page by entry id, so a page stays
right while new entries arrive.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Final

import fastapi
from starlette import concurrency, responses

from mpg.server import audit
from mpg.server.console import deps, render

router = fastapi.APIRouter()

PAGE_SIZE: Final = 50
_FILTER = fastapi.Query(max_length=100)


@router.get("/audit")
async def audit_log(
    request: fastapi.Request,
    user: deps.Viewer,
    push: deps.Server,
    who: Annotated[str, _FILTER] = "",
    what: Annotated[str, _FILTER] = "",
    target: Annotated[str, _FILTER] = "",
    before: Annotated[int | None, fastapi.Query(ge=1)] = None,
) -> responses.HTMLResponse:
    """One page of the audit log."""
    found = await concurrency.run_in_threadpool(
        audit.entries,
        push.engine,
        before=before,
        limit=PAGE_SIZE + 1,
        actor=who.strip(),
        action=what.strip(),
        target=target.strip(),
    )
    shown = found[:PAGE_SIZE]
    filters = {k: v for k, v in (("who", who), ("what", what), ("target", target)) if v}
    older = ""
    if len(found) > PAGE_SIZE:
        older = "/audit?" + urllib.parse.urlencode({**filters, "before": shown[-1].id})
    return render.render(
        request,
        "audit.html",
        {
            "entries": shown,
            "who": who,
            "what": what,
            "target": target,
            "older": older,
            "newest": "/audit?" + urllib.parse.urlencode(filters) if before else "",
        },
    )
