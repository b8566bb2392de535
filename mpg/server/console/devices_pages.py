"""Registered devices: platform, push token age, last seen, subscriptions; operators
remove one (after a confirm step) through the API's roster
(:mod:`mpg.server.directory.roster`): its record and subscriptions go, its account is
disabled."""

from __future__ import annotations

from typing import Annotated, Any, Final

import fastapi
from starlette import responses

from mpg import errors
from mpg.server.api.devices_admin_routes import ACCOUNT_PATTERN
from mpg.server.console import deps, pagekit, render
from mpg.server.directory import groups, roster, rules

router = fastapi.APIRouter()

#: Devices on one page.
PAGE: Final = 100

AccountPath = Annotated[str, fastapi.Path(min_length=1, max_length=100, pattern=ACCOUNT_PATTERN)]
GroupQuery = Annotated[str, fastapi.Query(pattern=r"^$|" + rules.SLUG_PATTERN, max_length=50)]
AfterQuery = Annotated[str, fastapi.Query(max_length=100, pattern=ACCOUNT_PATTERN)]


def _roster(push: deps.Server) -> roster.Roster:
    return roster.Roster(push.engine, push.keyring)


def _row(view: roster.DeviceView) -> dict[str, Any]:
    return {
        "view": view,
        "token_age": pagekit.age(view.push_token_age),
        "last_seen": pagekit.when(view.last_seen),
        "registered": pagekit.when(view.registered_at),
    }


@router.get("/devices")
def list_devices(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Viewer,
    group: GroupQuery = "",
    after: AfterQuery = "",
) -> responses.Response:
    """Registered devices by account (of ``group``), :data:`PAGE` at a time."""
    found = _roster(push).all(group or None, limit=PAGE + 1, after=after)
    return render.render(
        request,
        "devices.html",
        {
            "devices": [_row(v) for v in found[:PAGE]],
            "next_after": found[PAGE - 1].account if len(found) > PAGE else "",
            "groups": groups.GroupStore(push.engine).all(),
            "group": group,
        },
    )


@router.get("/devices/{account}/remove")
def confirm_remove(
    request: fastapi.Request, push: deps.Server, user: deps.Operator, account: AccountPath
) -> responses.Response:
    """The confirm step: the device, and what removing it does."""
    return render.render(request, "device_remove.html", _row(_roster(push).get(account)))


@router.post("/devices/{account}/remove")
def remove_device(
    request: fastapi.Request, push: deps.Server, user: deps.Operator, account: AccountPath
) -> responses.Response:
    """Remove the device: its record and subscriptions go, its account is disabled."""
    try:
        _roster(push).remove(account, user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "device_remove.html", _row(_roster(push).get(account)))
    return pagekit.done(request, "/devices", f"Device {account} removed.")
