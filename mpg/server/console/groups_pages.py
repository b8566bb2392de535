"""Message groups and their categories: list, create, rename, remove (admins change,
everybody signed in reads). The changes go through the stores the API uses
(:mod:`mpg.server.directory.groups`, :mod:`~mpg.server.directory.categories`), so a
group that still holds devices, domains or codes is refused the same way (409), shown
here in words."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
from starlette import responses

from mpg import errors
from mpg.db import transactions
from mpg.server import dashboard
from mpg.server.console import deps, pagekit, render
from mpg.server.directory import categories, groups, rules

router = fastapi.APIRouter()

GroupPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]
CategoryPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]
#: The slug rule for an input's ``pattern`` (browsers compile it with the ``v`` flag,
#: under which a ``-`` in a class must be escaped).
HTML_SLUG = r"[a-z0-9][a-z0-9_\-]{0,49}"
#: A text field of a form (the store checks each field's own rule).
Text = Annotated[str, fastapi.Form(max_length=rules.FILE_URL_MAX)]


def _list_context(push: deps.Server) -> dict[str, Any]:
    with transactions.connect(push.engine, "counting devices per group") as conn:
        devices = {c.label: c.count for c in dashboard.devices_per_group(conn)}
    return {
        "groups": groups.GroupStore(push.engine).all(),
        "devices": devices,
        "slug_pattern": HTML_SLUG,
    }


def _group_context(push: deps.Server, group: str) -> dict[str, Any]:
    with transactions.connect(push.engine, "reading what a group holds") as conn:
        holds = groups.holding(conn, group)
    return {
        "group": groups.GroupStore(push.engine).get(group),
        "categories": categories.CategoryStore(push.engine).of_group(group),
        "holds": holds,
        "slug_pattern": HTML_SLUG,
    }


@router.get("/groups")
def list_groups(
    request: fastapi.Request, push: deps.Server, user: deps.Viewer
) -> responses.Response:
    """Every message group with its device count; admins get the form for a new one."""
    return render.render(request, "groups.html", _list_context(push))


@router.post("/groups")
def add_group(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    group: Annotated[str, fastapi.Form(max_length=50)],
    name: Text,
    region: Text = "",
    file_url: Text = "",
) -> responses.Response:
    """Create a group (refused: the id is taken, or a field breaks its rule)."""
    try:
        added = groups.GroupStore(push.engine).add(
            group.strip(), name, region, file_url, user.actor
        )
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "groups.html", _list_context(push))
    return pagekit.done(request, f"/groups/{added.group_id}", f"Group {added.group_id} created.")


@router.get("/groups/{group}")
def show_group(
    request: fastapi.Request, push: deps.Server, user: deps.Viewer, group: GroupPath
) -> responses.Response:
    """One group: its settings, categories and what keeps it from being removed."""
    return render.render(request, "group.html", _group_context(push, group))


@router.post("/groups/{group}")
def change_group(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    group: GroupPath,
    name: Text,
    region: Text = "",
    file_url: Text = "",
) -> responses.Response:
    """Rename a group, or change its region or message file address."""
    try:
        groups.GroupStore(push.engine).change(
            group, user.actor, name=name, region=region, file_url=file_url
        )
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "group.html", _group_context(push, group))
    return pagekit.done(request, f"/groups/{group}", f"Group {group} changed.")


@router.post("/groups/{group}/remove")
def remove_group(
    request: fastapi.Request, push: deps.Server, user: deps.Admin, group: GroupPath
) -> responses.Response:
    """Remove an empty group and its categories; one that still holds devices, domains
    or codes is refused (409) with what it holds."""
    try:
        groups.GroupStore(push.engine).remove(group, user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "group.html", _group_context(push, group))
    return pagekit.done(request, "/groups", f"Group {group} removed.")


@router.post("/groups/{group}/categories")
def add_category(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    group: GroupPath,
    category: Annotated[str, fastapi.Form(max_length=50)],
    name: Text,
    preselected: Annotated[bool, fastapi.Form()] = False,
) -> responses.Response:
    """Add a category to the group."""
    try:
        categories.CategoryStore(push.engine).add(
            group, category.strip(), name, preselected, user.actor
        )
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "group.html", _group_context(push, group))
    return pagekit.done(request, f"/groups/{group}", f"Category {category.strip()} added.")


@router.post("/groups/{group}/categories/{category}")
def change_category(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    group: GroupPath,
    category: CategoryPath,
    name: Text,
    preselected: Annotated[bool, fastapi.Form()] = False,
) -> responses.Response:
    """Rename a category, or change whether new devices get it preselected."""
    try:
        categories.CategoryStore(push.engine).change(
            group, category, user.actor, name=name, preselected=preselected
        )
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "group.html", _group_context(push, group))
    return pagekit.done(request, f"/groups/{group}", f"Category {category} changed.")


@router.post("/groups/{group}/categories/{category}/remove")
def remove_category(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    group: GroupPath,
    category: CategoryPath,
) -> responses.Response:
    """Remove a category and every device's subscription to it."""
    try:
        gone = categories.CategoryStore(push.engine).remove(group, category, user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "group.html", _group_context(push, group))
    return pagekit.done(
        request, f"/groups/{group}", f"Category {category} removed ({gone} subscriptions)."
    )
