"""Accounts of the sealed protocol: gateways, users and devices (as ``mpg server
account`` manages them). Admins add one (its credential token is shown once, on the
page that answers the add) or disable one (after a confirm step); everybody signed in
reads. The store is :class:`mpg.server.accounts.AccountStore`, with its rules; the
console's changes are audited (by the account's pseudonym)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import fastapi
from starlette import responses

from mpg import errors
from mpg.server import accounts
from mpg.server.console import deps, pagekit, render
from mpg.wire import keys

router = fastapi.APIRouter()

KindQuery = Annotated[Literal["gateway", "user", "device"], fastapi.Query()]
Name = Annotated[str, fastapi.Form(min_length=1, max_length=accounts.MAX_ACCOUNT_LENGTH + 50)]


def _list_context(push: deps.Server, kind: str) -> dict[str, Any]:
    return {
        "accounts": [a for a in push.accounts.all_accounts() if a.kind == kind],
        "kind": kind,
        "kinds": accounts.KINDS,
    }


@router.get("/accounts")
def list_accounts(
    request: fastapi.Request, push: deps.Server, user: deps.Viewer, kind: KindQuery = "gateway"
) -> responses.Response:
    """The accounts of one kind, by name, with their keys."""
    return render.render(request, "accounts.html", _list_context(push, kind))


@router.post("/accounts")
def add_account(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    name: Name,
    kind: Annotated[Literal["gateway", "user", "device"], fastapi.Form()],
) -> responses.Response:
    """Add an account with one key; the answer is the only place its token is shown."""
    try:
        stored, credential = push.accounts.add(name, kind, actor=user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "accounts.html", _list_context(push, kind))
    response = render.render(
        request,
        "account_created.html",
        {"name": stored, "kind": kind, "token": keys.format_credential(credential)},
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/accounts/disable")
def confirm_disable(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    name: Annotated[str, fastapi.Query(min_length=1, max_length=accounts.MAX_ACCOUNT_LENGTH)],
) -> responses.Response:
    """The confirm step for disabling ``name``."""
    found = push.accounts.get(name)
    if found is None:
        raise errors.NotFound(f"no account {name}")
    return render.render(request, "account_disable.html", {"account": found})


@router.post("/accounts/disable")
def disable_account(
    request: fastapi.Request, push: deps.Server, user: deps.Admin, name: Name
) -> responses.Response:
    """Disable an account: every request made as it is refused from now on."""
    found = push.accounts.get(name)
    if found is None:
        raise errors.NotFound(f"no account {name}")
    try:
        push.accounts.disable(found.account_id, actor=user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "account_disable.html", {"account": found})
    return pagekit.done(
        request, f"/accounts?kind={found.kind}", f"Account {found.account_id} disabled."
    )
