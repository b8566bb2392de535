"""Registration codes: list (validity, devices, deleted = blocked for ever), create
(the code is shown once, on the page the creation answers with, and never again),
delete (first a page saying how many devices go with it, then the confirmed delete).
Admins change, everybody signed in reads; the store is the API's
(:mod:`mpg.server.directory.regcodes`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import fastapi
from starlette import responses

from mpg import errors
from mpg.server.console import deps, pagekit, render
from mpg.server.directory import groups, regcodes, rules

router = fastapi.APIRouter()

GroupQuery = Annotated[str, fastapi.Query(pattern=r"^$|" + rules.SLUG_PATTERN, max_length=50)]
Text = Annotated[str, fastapi.Form(max_length=rules.NOTE_MAX)]


def _store(push: deps.Server) -> regcodes.RegCodeStore:
    return regcodes.RegCodeStore(push.engine, push.codes.key)


def _list_context(push: deps.Server, group: str) -> dict[str, Any]:
    return {
        "codes": [
            {"code": c, "valid_until": pagekit.when(c.valid_until) if c.valid_until else "no end"}
            for c in _store(push).all(group or None)
        ],
        "groups": groups.GroupStore(push.engine).all(),
        "group": group,
    }


@router.get("/codes")
def list_codes(
    request: fastapi.Request, push: deps.Server, user: deps.Viewer, group: GroupQuery = ""
) -> responses.Response:
    """Every code (of ``group``), deleted ones too, newest first."""
    return render.render(request, "codes.html", _list_context(push, group))


@router.post("/codes")
def create_code(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    name: Text,
    group: Annotated[str, fastapi.Form(max_length=50)],
    note: Text = "",
    valid_until: Annotated[str, fastapi.Form(max_length=40)] = "",
) -> responses.Response:
    """Make a code; the answer is the only place it is ever shown."""
    try:
        until = pagekit.parse_utc(valid_until, "valid_until")
        made, code = _store(push).create(name, group, user.actor, note=note, valid_until=until)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "codes.html", _list_context(push, group))
    response = render.render(
        request,
        "code_created.html",
        {
            "made": made,
            "code": code,
            "valid_until": pagekit.when(made.valid_until) if made.valid_until else "no end",
        },
    )
    # The code is on this page only: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/codes/{code_id}/delete")
def confirm_delete(
    request: fastapi.Request, push: deps.Server, user: deps.Admin, code_id: uuid.UUID
) -> responses.Response:
    """The confirm step: what the code is and how many devices deleting it removes."""
    store = _store(push)
    found = store.get(str(code_id))
    impact = store.impact(str(code_id))
    return render.render(request, "code_delete.html", {"found": found, "impact": impact})


@router.post("/codes/{code_id}/delete")
def delete_code(
    request: fastapi.Request, push: deps.Server, user: deps.Admin, code_id: uuid.UUID
) -> responses.Response:
    """Delete the code (blocked for ever) with every device registered with it."""
    store = _store(push)
    try:
        impact = store.delete(str(code_id), user.actor)
    except errors.MpgError as exc:
        found = store.get(str(code_id))
        context = {"found": found, "impact": store.impact(str(code_id))}
        return pagekit.refused(request, exc, "code_delete.html", context)
    devices = f"{impact.devices} device{'s' if impact.devices != 1 else ''}"
    return pagekit.done(
        request, "/codes", f"Registration code deleted; {devices} of {impact.group_id} removed."
    )
