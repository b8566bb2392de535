"""Pages from templates: :func:`render` and the globals every template has.

Jinja2 escapes every value (autoescape), so text from the database or the request
never becomes markup. Templates extend ``base.html`` (blocks ``title`` and
``content``) and get ``user`` (a :class:`~.deps.ConsoleUser` or None),
``csrf_field()`` (the hidden input each ``<form method="post">`` holds), ``url(path)``
(a console path as a link) and ``nav`` (the menu entries this user may open).
"""

from __future__ import annotations

from typing import Any, Final

import fastapi
import jinja2
import markupsafe
from starlette import responses

from mpg.server.console import csrf, deps

_ENV: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("mpg.server.console", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
#: Longest notice taken from the query string.
MAX_NOTICE: Final = 300


def csrf_token(request: fastapi.Request) -> str:
    """The CSRF token forms of this request's page carry: the session's, or (not signed
    in) the pre-sign-in cookie's, made now when the browser has none."""
    signed = deps.signed_in(request)
    if signed is not None:
        return signed.session.csrf
    token = request.cookies.get(csrf.PRE_COOKIE, "")
    if not token or len(token) > csrf.MAX_CHARS:
        token = getattr(request.state, "new_pre_token", "") or csrf.new_token()
        request.state.new_pre_token = token
    return token


def set_cookie(response: responses.Response, name: str, value: str) -> None:
    """Set a console cookie: only over HTTPS, never read by scripts, never sent by
    another site's request, only under /console; gone when the browser closes."""
    response.set_cookie(name, value, path="/console", secure=True, httponly=True, samesite="strict")


def _nav(request: fastapi.Request, user: deps.ConsoleUser | None) -> list[dict[str, Any]]:
    if user is None:
        return []
    here = deps.page_path(request).partition("?")[0]
    return [
        {
            "label": item.label,
            "path": item.path,
            "current": here == item.path or (item.path != "/" and here.startswith(item.path + "/")),
        }
        for item in deps.console(request).menu
        if user.may(item.role)
    ]


def render(
    request: fastapi.Request,
    name: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> responses.HTMLResponse:
    """The page of template ``name`` with ``context`` (plus the globals above)."""
    signed = deps.signed_in(request)
    user = signed.user if signed is not None else None
    token = csrf_token(request)
    root = request.scope.get("root_path", "")

    def csrf_field() -> markupsafe.Markup:
        return markupsafe.Markup('<input type="hidden" name="{}" value="{}">').format(
            csrf.FIELD, token
        )

    values: dict[str, Any] = {
        "user": user,
        "csrf_field": csrf_field,
        "csrf_token": token,
        "url": lambda path: root + path,
        "nav": _nav(request, user),
        "notice": request.query_params.get("notice", "")[:MAX_NOTICE],
        "error": "",
        **(context or {}),
    }
    response = responses.HTMLResponse(_ENV.get_template(name).render(values), status)
    minted: str = getattr(request.state, "new_pre_token", "")
    if signed is None and minted:
        set_cookie(response, csrf.PRE_COOKIE, token)
    return response
