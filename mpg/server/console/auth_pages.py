"""Signing in and out of the console (password; OpenID Connect in :mod:`.oidc_pages`).

A sign-in is refused, before the password is checked, while its user name or its
client address is locked out (:mod:`.lockout`); a wrong password counts a failure.
The page never says whether the name or the password was wrong. A good sign-in ends
the browser's previous session and starts a new one with a new id.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Final

import fastapi
import structlog
from starlette import concurrency, responses

from mpg.server.console import deps, render, sessions

log = structlog.get_logger(__name__)

router = fastapi.APIRouter()

#: Longest ``next`` kept (the page to return to after sign-in).
MAX_NEXT: Final = 500
WRONG: Final = "Wrong user name or password."


def safe_next(value: str | None) -> str:
    """A console path to go to after sign-in; anything else (another site) is ``/``."""
    if (
        not value
        or len(value) > MAX_NEXT
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(ch) < 0x20 for ch in value)
    ):
        return "/"
    return value


def locked_message(until: float) -> str:
    """What the sign-in page says while a lockout lasts."""
    at = time.strftime("%H:%M:%S", time.gmtime(until))
    minutes = max(1, round((until - time.time()) / 60))
    return (
        f"Too many failed sign-ins. Signing in is locked until {at} UTC "
        f"(about {minutes} minute{'s' if minutes != 1 else ''}); try again then."
    )


def _client_address(request: fastapi.Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def login_page(
    request: fastapi.Request, next_path: str, *, error: str = "", status: int = 200, name: str = ""
) -> responses.HTMLResponse:
    """The sign-in form (with ``error`` above it)."""
    state = deps.console(request)
    oidc_label = state.settings.console_oidc.label if state.settings.console_oidc else ""
    return render.render(
        request,
        "login.html",
        {"next": next_path, "error": error, "name": name, "oidc_label": oidc_label},
        status,
    )


def start_session(
    request: fastapi.Request, user: deps.ConsoleUser, source: str, next_path: str
) -> responses.RedirectResponse:
    """Sign ``user`` in: end the browser's old session, start one, go to ``next_path``."""
    state = deps.console(request)
    old = request.cookies.get(sessions.COOKIE, "")
    if old:
        state.sessions.end(old)
    session_id, _ = state.sessions.create(user.name, user.role, source)
    log.info("console_signed_in", user=user.name, role=user.role, source=source)
    root = request.scope.get("root_path", "")
    response = responses.RedirectResponse(root + safe_next(next_path), status_code=303)
    render.set_cookie(response, sessions.COOKIE, session_id)
    return response


@router.get("/login")
def login_form(request: fastapi.Request, next: str = "/") -> responses.Response:
    """The sign-in page; a signed-in user goes on to ``next``."""
    if deps.signed_in(request) is not None:
        root = request.scope.get("root_path", "")
        return responses.RedirectResponse(root + safe_next(next), status_code=303)
    return login_page(request, safe_next(next))


def _attempt(
    request: fastapi.Request, name: str, password: str
) -> deps.ConsoleUser | tuple[str, float | None]:
    """The user, or the refusal's message and until when signing in is locked."""
    state = deps.console(request)
    address = _client_address(request)
    until = state.lockouts.locked_until(name, address)
    if until is not None:
        log.info("console_sign_in_locked", user=name[:100], address=address)
        return locked_message(until), until
    user = state.users.check(name, password)
    if user is None:
        until = state.lockouts.failed(name, address)
        log.info("console_sign_in_failed", user=name[:100], address=address)
        return (locked_message(until) if until is not None else WRONG), until
    state.lockouts.succeeded(name)
    return user


@router.post("/login")
async def login(
    request: fastapi.Request,
    name: Annotated[str, fastapi.Form(max_length=1000)] = "",
    password: Annotated[str, fastapi.Form(max_length=1000)] = "",
    next: Annotated[str, fastapi.Form(max_length=1000)] = "/",
) -> responses.Response:
    """Check the name and password; start a session or show the form again."""
    name = name.strip()
    outcome = await concurrency.run_in_threadpool(_attempt, request, name, password)
    if isinstance(outcome, tuple):
        message, until = outcome
        # 403 for a wrong password, 429 while locked out (the page says until when).
        status = 403 if until is None else 429
        page = login_page(request, safe_next(next), error=message, status=status, name=name)
        if until is not None:
            page.headers["Retry-After"] = str(max(1, math.ceil(until - time.time())))
        return page
    return await concurrency.run_in_threadpool(start_session, request, outcome, "password", next)


@router.post("/logout")
def logout(request: fastapi.Request) -> responses.Response:
    """End this browser's session and show the sign-in page."""
    signed = deps.signed_in(request)
    if signed is not None:
        deps.console(request).sessions.end(signed.session_id)
        log.info("console_signed_out", user=signed.user.name)
    root = request.scope.get("root_path", "")
    response = responses.RedirectResponse(
        root + "/login?notice=" + "You+have+signed+out.", status_code=303
    )
    response.delete_cookie(sessions.COOKIE, path="/console", secure=True, httponly=True)
    return response
