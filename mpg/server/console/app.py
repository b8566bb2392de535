"""The console application: the frame every page module plugs its router into.

:func:`create_console` makes the FastAPI app the server mounts at ``/console``. The
frame gives every page the same guarantees (docs/console.md):

* every request's session is read once (:func:`.deps.load`), and every unsafe
  request (POST, PUT, PATCH, DELETE) without the session's CSRF token is refused 403;
* every response carries the strict Content-Security-Policy (:data:`CSP`) and the
  other headers of :data:`SECURITY_HEADERS`; pages are never cached;
* the body of a change is at most :data:`MAX_BODY_BYTES` and must say its length;
* not signed in: 303 to the sign-in page; role too low, CSRF: the 403 page; a
  refusal from the stores: its status with its text; a fault: a 500 page naming
  nothing internal.

A page module has ``router = fastapi.APIRouter()`` and is listed in :data:`ROUTERS`;
the menu (:data:`MENU`) shows an entry when a page module serves its path.
"""

from __future__ import annotations

import pathlib
import urllib.parse
from typing import TYPE_CHECKING, Final

import fastapi
import fastapi.exceptions
import httpx
import structlog
from starlette import exceptions as starlette_exceptions
from starlette import requests, responses, staticfiles, types

from mpg import config, errors, tlstrust
from mpg.server import httperrors
from mpg.server.console import (
    accounts_pages,
    audit_pages,
    auth_pages,
    codes_pages,
    csrf,
    dashboard_pages,
    deps,
    devices_pages,
    domains_pages,
    files_pages,
    groups_pages,
    lockout,
    messages_pages,
    oidc,
    oidc_pages,
    render,
    sessions,
    sessions_pages,
    users,
)

if TYPE_CHECKING:
    from mpg.server.app import PushServer

log = structlog.get_logger(__name__)

#: The page modules' routers. A new page module adds its router here.
ROUTERS: Final = (
    auth_pages.router,
    oidc_pages.router,
    audit_pages.router,
    messages_pages.router,
    sessions_pages.router,
    dashboard_pages.router,
    accounts_pages.router,
    devices_pages.router,
    groups_pages.router,
    codes_pages.router,
    domains_pages.router,
    files_pages.router,
)

#: The menu, in order; an entry shows only when a router above serves its path.
MENU: Final = (
    deps.MenuItem("Dashboard", "/"),
    deps.MenuItem("Messages", "/messages"),
    deps.MenuItem("Accounts", "/accounts"),
    deps.MenuItem("Devices", "/devices"),
    deps.MenuItem("Groups", "/groups"),
    deps.MenuItem("Codes", "/codes"),
    deps.MenuItem("Domains", "/domains"),
    deps.MenuItem("Message files", "/files"),
    deps.MenuItem("Audit log", "/audit"),
    deps.MenuItem("Sessions", "/sessions"),
)

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
#: Largest body of a console request (forms are small; nothing is uploaded here).
MAX_BODY_BYTES: Final = 1024 * 1024
STATIC_DIR: Final = pathlib.Path(__file__).parent / "static"


class Frame:
    """ASGI middleware: the security headers on every response; bodies bounded."""

    def __init__(self, app: types.ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _body_refusal(scope)
        static = scope["path"].startswith(scope.get("root_path", "") + "/static/")

        async def send_with_headers(message: types.Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _body_refusal(scope: types.Scope) -> responses.Response | None:
    """411 for a change whose length is not said, 413 for one too large; else None."""
    if scope["method"] not in csrf.UNSAFE:
        return None
    length = dict(scope.get("headers", [])).get(b"content-length")
    if length is None:
        return responses.PlainTextResponse("Length Required", status_code=411)
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return responses.PlainTextResponse("Request body too large", status_code=413)
    return None


_TITLES: Final = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    429: "Too many requests",
}


def _error_page(
    request: requests.Request, status: int, title: str, message: str
) -> responses.Response:
    return render.render(
        request, "error.html", {"status": status, "title": title, "message": message}, status
    )


async def _sign_in(request: requests.Request, exc: Exception) -> responses.Response:
    assert isinstance(exc, errors.SignInRequired)
    root = request.scope.get("root_path", "")
    target = root + "/login?" + urllib.parse.urlencode({"next": exc.next_path})
    if request.headers.get("hx-request"):
        # htmx would swap the sign-in page into a fragment: make it load the page.
        return responses.Response(status_code=401, headers={"HX-Redirect": target})
    return responses.RedirectResponse(target, status_code=303)


async def _refused(request: requests.Request, exc: Exception) -> responses.Response:
    status, _ = httperrors.error_for(exc)
    if status == httperrors.INTERNAL[0]:
        log.exception("console_request_failed", path=request.url.path[:200])
        return _error_page(
            request, 500, "Something went wrong", "The server failed; the error is in its log."
        )
    return _error_page(request, status, _TITLES.get(status, "Refused"), str(exc))


async def _invalid(request: requests.Request, exc: Exception) -> responses.Response:
    assert isinstance(exc, fastapi.exceptions.RequestValidationError)
    parts = []
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return _error_page(request, 400, "Bad request", "; ".join(parts) or "invalid request")


async def _http(request: requests.Request, exc: Exception) -> responses.Response:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    return _error_page(
        request, exc.status_code, _TITLES.get(exc.status_code, "Bad request"), str(exc.detail)
    )


def _home(request: fastapi.Request, user: deps.Viewer) -> responses.Response:
    """The console's home when no page module serves ``/``: the first page of the menu."""
    menu = [item for item in deps.console(request).menu if user.may(item.role)]
    root = request.scope.get("root_path", "")
    return responses.RedirectResponse(root + (menu[0].path if menu else "/audit"), 303)


def _served(routers: tuple[fastapi.APIRouter, ...]) -> set[str]:
    return {
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, fastapi.routing.APIRoute) and "GET" in (route.methods or ())
    }


def _oidc_client(settings: config.ServerSettings) -> oidc.OidcClient | None:
    if settings.console_oidc is None:
        return None
    # Made now, so that a bad CA file stops the start instead of failing a sign-in.
    trust = tlstrust.context(settings.id_token_ca_bundle, "server.id_token_ca_bundle")
    return oidc.OidcClient(
        settings.console_oidc,
        httpx.Client(verify=trust, timeout=10.0, follow_redirects=False),
        algorithms=settings.id_token_algorithms,
        leeway=settings.id_token_leeway,
        keys_ttl=settings.id_token_keys_ttl,
        keys_refetch=settings.id_token_keys_refetch,
    )


def create_console(push: PushServer) -> types.ASGIApp:
    """The console application over ``push``'s stores (404 everywhere when disabled)."""
    app = fastapi.FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[fastapi.Depends(deps.load)],
    )
    settings = push.settings
    served = _served(ROUTERS)
    app.state.push = push
    app.state.console = deps.Console(
        settings=settings,
        sessions=sessions.SessionStore(
            push.engine,
            sessions.Policy(settings.console_idle_timeout, settings.console_session_lifetime),
        ),
        lockouts=lockout.LockoutStore(
            push.engine,
            lockout.Policy(
                settings.console_lockout_failures,
                settings.console_lockout_address_failures,
                settings.console_lockout_seconds,
            ),
        ),
        users=users.ConsoleUsers(push.engine),
        oidc=_oidc_client(settings),
        menu=tuple(item for item in MENU if item.path in served),
    )
    app.add_exception_handler(errors.SignInRequired, _sign_in)
    app.add_exception_handler(fastapi.exceptions.RequestValidationError, _invalid)
    app.add_exception_handler(starlette_exceptions.HTTPException, _http)
    app.add_exception_handler(errors.MpgError, _refused)
    app.add_exception_handler(Exception, _refused)
    if not settings.console_enabled:
        return Frame(app)
    for router in ROUTERS:
        app.include_router(router)
    if "/" not in served:
        app.add_api_route("/", _home, methods=["GET"], include_in_schema=False)
    app.mount("/static", staticfiles.StaticFiles(directory=STATIC_DIR), name="static")
    return Frame(app)
