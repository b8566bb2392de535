"""The two routes of signing in through OpenID Connect (:mod:`.oidc`): off to the
provider, and back from it. Both answer 404 when no provider is configured."""

from __future__ import annotations

import fastapi
import structlog
from starlette import concurrency, responses

from mpg import errors
from mpg.server.console import auth_pages, deps, oidc

log = structlog.get_logger(__name__)

router = fastapi.APIRouter()


def _client(request: fastapi.Request) -> oidc.OidcClient:
    client = deps.console(request).oidc
    if client is None:
        raise fastapi.HTTPException(404, "OpenID Connect sign-in is not configured")
    return client


def redirect_url(request: fastapi.Request, client: oidc.OidcClient) -> str:
    """The callback URL the provider sends the browser back to (registered there)."""
    if client.settings.redirect_url:
        return client.settings.redirect_url
    public = deps.console(request).settings.public_url.rstrip("/")
    base = public or f"{request.url.scheme}://{request.url.netloc}"
    return base + "/console/login/oidc/callback"


def _set_flow(response: responses.Response, value: str, max_age: int) -> None:
    # Lax, not Strict: the provider sends the browser back with a cross-site GET, which
    # carries no Strict cookie. It only binds the answer to this browser (state).
    response.set_cookie(
        oidc.FLOW_COOKIE,
        value,
        max_age=max_age,
        path="/console/login/oidc",
        secure=True,
        httponly=True,
        samesite="lax",
    )


@router.get("/login/oidc")
async def start(request: fastapi.Request, next: str = "/") -> responses.Response:
    """Send the browser to the identity provider."""
    client = _client(request)
    try:
        flow, target = await concurrency.run_in_threadpool(
            client.start, auth_pages.safe_next(next), redirect_url(request, client)
        )
    except errors.KeySetUnavailable as exc:
        log.warning("console_oidc_unavailable", error=str(exc))
        return auth_pages.login_page(
            request,
            auth_pages.safe_next(next),
            error="The identity provider cannot be reached; sign in with a password or try later.",
            status=502,
        )
    response = responses.RedirectResponse(target, status_code=303)
    _set_flow(response, flow.to_cookie(), oidc.FLOW_SECONDS)
    return response


@router.get("/login/oidc/callback")
async def callback(request: fastapi.Request) -> responses.Response:
    """Back from the provider: check its answer and sign the person in."""
    client = _client(request)
    flow = oidc.Flow.from_cookie(request.cookies.get(oidc.FLOW_COOKIE, ""))
    params = {k: v[:4000] for k, v in request.query_params.items()}
    try:
        user = await concurrency.run_in_threadpool(
            client.finish, flow, params, redirect_url(request, client)
        )
    except errors.Refused as exc:
        log.info("console_oidc_refused", reason=exc.detail)
        response: responses.Response = auth_pages.login_page(
            request, flow.next_path if flow else "/", error=exc.detail, status=exc.status
        )
    else:
        next_path = flow.next_path if flow else "/"
        response = await concurrency.run_in_threadpool(
            auth_pages.start_session, request, user, "oidc", next_path
        )
    _set_flow(response, "", 0)
    return response
