"""Each group's message file (and its categories' files): the messages of the version
served now, and (admins) publishing new ones through :func:`mpg.server.publishing.publish`
— the API's path: the file is written, then the group's (or category's) devices get
their pushes, and the publication is audited."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import fastapi
from starlette import responses

from mpg import errors
from mpg.server import publishing
from mpg.server.console import deps, pagekit, render
from mpg.server.directory import categories, groups, rules
from mpg.wire import messagefile

router = fastapi.APIRouter()

GroupPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]
CategoryField = Annotated[str, fastapi.Form(pattern=r"^$|" + rules.SLUG_PATTERN, max_length=50)]
CategoryQuery = Annotated[str, fastapi.Query(pattern=r"^$|" + rules.SLUG_PATTERN, max_length=50)]


def _context(push: deps.Server, group: str, category: str) -> dict[str, Any]:
    found = groups.GroupStore(push.engine).get(group)
    current = push.files.current(publishing.file_key(group, category))
    shown: list[dict[str, Any]] = []
    if current is not None:
        for m in messagefile.parse(current.body).messages:
            shown.append(
                {
                    "message": m,
                    "published": pagekit.when(m.published.timestamp()),
                    "expires": pagekit.when(m.expires.timestamp()) if m.expires else "no end",
                }
            )
    return {
        "group": found,
        "category": category,
        "categories": categories.CategoryStore(push.engine).of_group(group),
        "version": current,
        "modified": pagekit.when(current.modified) if current else "",
        "messages": shown,
    }


@router.get("/files")
def list_files(
    request: fastapi.Request, push: deps.Server, user: deps.Viewer
) -> responses.Response:
    """Every group with the version of its file served now."""
    rows = []
    for found in groups.GroupStore(push.engine).all():
        current = push.files.current(publishing.file_key(found.group_id))
        rows.append(
            {
                "group": found,
                "version": current.etag if current else "",
                "modified": pagekit.when(current.modified) if current else "",
            }
        )
    return render.render(request, "files.html", {"files": rows})


@router.get("/groups/{group}/file")
def show_file(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Viewer,
    group: GroupPath,
    category: CategoryQuery = "",
) -> responses.Response:
    """The messages of the group's (or ``category``'s) file as served now."""
    return render.render(request, "file.html", _context(push, group, category))


@router.post("/groups/{group}/file")
def publish(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    group: GroupPath,
    title: Annotated[str, fastapi.Form(min_length=1, max_length=200)],
    text: Annotated[str, fastapi.Form(max_length=20_000)] = "",
    priority: Annotated[Literal["E", "H", "N", "L"], fastapi.Form()] = "N",
    expires: Annotated[str, fastapi.Form(max_length=40)] = "",
    category: CategoryField = "",
) -> responses.Response:
    """Add a message to the file and push the group's (or category's) devices."""
    now = dt.datetime.now(dt.UTC)
    try:
        until = pagekit.parse_utc(expires, "expires")
        done = publishing.publish(
            push.engine,
            push.files,
            push.settings,
            group,
            actor=user.actor,
            category=category,
            add=[
                publishing.new_message(
                    title,
                    text,
                    priority=priority,
                    expires=None if until is None else dt.datetime.fromtimestamp(until, dt.UTC),
                    category=category,
                    now=now,
                )
            ],
        )
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "file.html", _context(push, group, category))
    where = f"{group}/{category}" if category else group
    suffix = f"?category={category}" if category else ""
    return pagekit.done(
        request,
        f"/groups/{group}/file{suffix}",
        f"Published to {where}: version {done.version}, {len(done.kept)} messages in the file, "
        f"{done.pushes} pushes.",
    )
