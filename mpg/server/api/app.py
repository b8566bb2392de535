"""The FastAPI application of the JSON API, mounted by the server at :data:`PREFIX`.

FastAPI generates the OpenAPI document (``/api/v1/openapi.json``) from the routes and
their pydantic models, so the document cannot drift from the code. Every refusal has
the server's one error shape, ``{"error": code, "detail": text}``
(:mod:`mpg.server.httperrors`): the exception tree's own, a request that does not
match its schema (400 ``bad_request`` naming the field), an unknown path (404) or
method (405); a fault is a 500 whose detail names nothing internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import fastapi
import fastapi.exceptions
import pydantic
import structlog
from starlette import exceptions as starlette_exceptions
from starlette import requests, responses

from mpg import errors
from mpg.server import httperrors
from mpg.server.api import (
    audit_routes,
    codes_routes,
    delivery_routes,
    device_routes,
    devices_admin_routes,
    domains_routes,
    explain_routes,
    groups_routes,
    publish_routes,
    registration_routes,
)

if TYPE_CHECKING:
    from mpg.server.app import PushServer

log = structlog.get_logger(__name__)

PREFIX: Final = "/api/v1"
VERSION: Final = "1"


class ErrorBody(pydantic.BaseModel):
    """Every refusal of the API (and of the sealed protocol)."""

    error: str = pydantic.Field(description="machine code, e.g. bad_request, code_expired")
    detail: str = pydantic.Field(description="what was wrong, for people")


#: The refusals any route may give, declared once in the OpenAPI document.
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "the request does not match the schema or breaks a rule"),
        (401, "authentication failed"),
        (403, "authenticated but not allowed"),
        (404, "no such thing"),
        (409, "conflicts with what exists"),
        (429, "too many requests; see Retry-After"),
    )
}


def _field_errors(exc: fastapi.exceptions.RequestValidationError) -> str:
    parts = []
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _refused(request: requests.Request, exc: Exception) -> responses.Response:
    status, _ = httperrors.error_for(exc)
    if status == httperrors.INTERNAL[0]:
        log.exception("api_request_failed", path=request.url.path[:200])
    return httperrors.error_response(exc)


async def _invalid(request: requests.Request, exc: Exception) -> responses.Response:
    assert isinstance(exc, fastapi.exceptions.RequestValidationError)
    return responses.JSONResponse(
        {"error": "bad_request", "detail": _field_errors(exc)}, status_code=400
    )


async def _http(request: requests.Request, exc: Exception) -> responses.Response:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return responses.JSONResponse(
        {"error": code, "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def create_api(push: PushServer) -> fastapi.FastAPI:
    """The API application over ``push``'s stores."""
    api = fastapi.FastAPI(
        title="MPG push server API",
        version=VERSION,
        description="Admin and device API of the MPG push server (docs/devices.md).",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    api.state.push = push
    api.add_exception_handler(fastapi.exceptions.RequestValidationError, _invalid)
    api.add_exception_handler(starlette_exceptions.HTTPException, _http)
    api.add_exception_handler(errors.MpgError, _refused)
    api.add_exception_handler(Exception, _refused)
    api.include_router(audit_routes.router)
    api.include_router(groups_routes.router)
    api.include_router(domains_routes.router)
    api.include_router(codes_routes.router)
    api.include_router(devices_admin_routes.router)
    api.include_router(registration_routes.router)
    api.include_router(device_routes.router)
    api.include_router(publish_routes.router)
    api.include_router(delivery_routes.router)
    api.include_router(explain_routes.router)
    return api
