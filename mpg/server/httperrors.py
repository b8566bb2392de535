"""The one error shape of every HTTP answer the server gives, and the one table from
exception to status.

Every refusal is JSON ``{"error": code, "detail": text}`` (docs/protocol.md): the
sealed protocol's ``/v1/<op>`` and the JSON admin and device API (``/api/v1``) alike.
:data:`ERRORS` maps the exception tree (:mod:`mpg.errors`) to an HTTP status and a
machine code; the first match wins, so subclasses come before their bases.
"""

from __future__ import annotations

import math
from typing import Final

from starlette import requests, responses

from mpg import errors

#: The detail of every 401: which check failed is for the log, not the caller.
UNAUTHENTICATED: Final = "authentication failed"

#: Exception class -> (HTTP status, error code); the first match wins, so subclasses
#: come before their bases.
ERRORS: Final[tuple[tuple[type[BaseException], int, str], ...]] = (
    (errors.TooLarge, 413, "too_large"),
    (errors.Conflict, 409, "conflict"),
    (errors.RequestTimeout, 408, "request_timeout"),
    (errors.TooManyRequests, 429, "too_many_requests"),
    (errors.NotFound, 404, "not_found"),
    (errors.Forbidden, 403, "forbidden"),  # includes AccountDisabled
    (errors.SignInRequired, 401, "sign_in_required"),  # the console redirects instead
    (errors.ReplayedEnvelope, 409, "replayed"),
    (errors.EnvelopeError, 401, "unauthenticated"),  # TamperedEnvelope, UnknownKey
    (errors.WireError, 400, "bad_request"),  # includes UnsafeXml
    (errors.ValidationError, 400, "bad_request"),
    (requests.ClientDisconnect, 400, "bad_request"),  # nobody is left to read it
    (errors.Unavailable, 503, "unavailable"),
    (errors.MailError, 503, "mail_failed"),  # the mail server, not the caller
)
INTERNAL: Final = (500, "internal")


def error_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code for an exception (500 ``internal`` if unlisted)."""
    if isinstance(exc, errors.Refused):
        return exc.status, exc.code
    for cls, status, code in ERRORS:
        if isinstance(exc, cls):
            return status, code
    return INTERNAL


def error_response(exc: BaseException) -> responses.JSONResponse:
    """The JSON error body of ``docs/protocol.md`` for ``exc``."""
    status, code = error_for(exc)
    # A fault's text may name internals (paths, SQL); the log has it, the client not.
    # A failed authentication says nothing about which check failed.
    if status == INTERNAL[0]:
        detail = "internal server error"
    elif status == 401:
        detail = UNAUTHENTICATED
    else:
        detail = str(exc)
    headers = {}
    if isinstance(exc, errors.Refused) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return responses.JSONResponse(
        {"error": code, "detail": detail}, status_code=status, headers=headers
    )
