"""Who is signed in to the console; an admin can end any session (a lost laptop, a
person who left). Ending one is audited (``console.session.end``)."""

from __future__ import annotations

import time
import urllib.parse
from typing import Annotated

import fastapi
from starlette import concurrency, responses

from mpg.server.console import deps, render, sessions

router = fastapi.APIRouter()


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix))


@router.get("/sessions")
async def sessions_page(request: fastapi.Request, user: deps.Viewer) -> responses.HTMLResponse:
    """The live sessions."""
    state = deps.console(request)
    found = await concurrency.run_in_threadpool(state.sessions.live)
    mine = deps.signed_in(request)
    own_key = sessions.digest(mine.session_id) if mine is not None else ""
    rows = [
        {
            "key": s.key,
            "name": s.name,
            "role": s.role,
            "source": s.source,
            "since": _when(s.created_at),
            "seen": _when(s.last_seen),
            "own": s.key == own_key,
        }
        for s in found
    ]
    return render.render(request, "sessions.html", {"sessions": rows})


@router.post("/sessions/end")
def end_session(
    request: fastapi.Request,
    user: deps.Admin,
    key: Annotated[str, fastapi.Form(min_length=64, max_length=64)],
) -> responses.RedirectResponse:
    """End the session ``key``; back to the list with what happened."""
    name = deps.console(request).sessions.end_listed(key, user.actor)
    notice = f"Ended a session of {name}." if name else "That session had already ended."
    root = request.scope.get("root_path", "")
    query = urllib.parse.urlencode({"notice": notice})
    return responses.RedirectResponse(f"{root}/sessions?{query}", status_code=303)
