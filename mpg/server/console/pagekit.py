"""What the management pages share: the answer to a change (redirect with a notice, or
the page again with the refusal), and times and ages as people read them.

A change a store refuses on purpose (a taken id, a group that still holds devices, a
wrong code: the API's 4xx; a mail server that failed: 503) is shown on the page it came
from, with the status the API gives; a fault (500) goes to the frame's error page.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

import fastapi
from starlette import responses

from mpg import errors
from mpg.server import httperrors
from mpg.server.console import render


def done(request: fastapi.Request, path: str, notice: str) -> responses.RedirectResponse:
    """POST/redirect/GET: back to the console's ``path`` with ``notice`` shown there."""
    root = request.scope.get("root_path", "")
    query = urllib.parse.urlencode({"notice": notice})
    separator = "&" if "?" in path else "?"
    return responses.RedirectResponse(f"{root}{path}{separator}{query}", status_code=303)


def refusal_status(exc: errors.MpgError) -> int | None:
    """The status the API answers ``exc`` with (a 4xx, or 503 when the mail server or
    the server itself cannot now); None when it is a fault (500)."""
    status, _ = httperrors.error_for(exc)
    return None if status == httperrors.INTERNAL[0] else status


def refused(
    request: fastapi.Request, exc: errors.MpgError, template: str, context: dict[str, Any]
) -> responses.HTMLResponse:
    """The page ``template`` again, with the refusal's words as its error; a fault is
    raised again for the frame."""
    status = refusal_status(exc)
    if status is None:
        raise exc
    return render.render(request, template, {**context, "error": str(exc)}, status)


def when(at: float | None) -> str:
    """A Unix time as ``yyyy-MM-dd HH:mm UTC``; "never" for None."""
    if at is None:
        return "never"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def age(seconds: float | None) -> str:
    """A duration in its two largest units (``3 d 4 h``, ``5 min``); "never" for None."""
    if seconds is None:
        return "never"
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or (not parts and unit == "s"):
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2])


def parse_utc(value: str, field: str) -> float | None:
    """A ``datetime-local`` input's ``yyyy-MM-ddTHH:mm`` read as UTC; None when empty."""
    text = value.strip()
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise errors.ValidationError(field, f"{text[:40]!r} is not a date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
