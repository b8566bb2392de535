"""The console's home, ``/console/``: the dashboard (mpg.server.dashboard's figures),
its figures refreshed in place every :data:`REFRESH_SECONDS` (htmx)."""

from __future__ import annotations

import time
from typing import Any, Final

import fastapi
from starlette import responses

from mpg.server import dashboard
from mpg.server.console import deps, pagekit, render

router = fastapi.APIRouter()

#: How often the page asks for fresh figures.
REFRESH_SECONDS: Final = 10


def _context(push: deps.Server) -> dict[str, Any]:
    board = dashboard.collect(
        push.engine,
        push.queues,
        push.vault,
        stuck_after=push.settings.stuck_after,
        now=time.time(),
    )
    busiest = max((h.count for h in board.per_hour), default=0)
    return {
        "board": board,
        "at": pagekit.when(board.at),
        "stuck_after": pagekit.age(board.stuck_after),
        "stuck": [
            {
                "message": m,
                "received": pagekit.when(m.received_at),
                "waiting": pagekit.age(board.at - m.received_at),
            }
            for m in board.stuck
        ],
        "hours": [
            {
                "label": pagekit.when(h.start)[11:16],
                "count": h.count,
                # The bar's width in tenths (CSS classes bar-0 .. bar-10: no inline style).
                "tenths": round(10 * h.count / busiest) if busiest else 0,
            }
            for h in board.per_hour
        ],
        "refresh": REFRESH_SECONDS,
    }


@router.get("/")
def home(request: fastapi.Request, push: deps.Server, user: deps.Viewer) -> responses.Response:
    """The dashboard."""
    return render.render(request, "dashboard.html", _context(push))


@router.get("/dashboard/figures")
def figures(request: fastapi.Request, push: deps.Server, user: deps.Viewer) -> responses.Response:
    """The dashboard's figures alone, for the page's periodic refresh."""
    return render.render(request, "dashboard_figures.html", _context(push))
