"""``/groups`` and ``/groups/{group}/categories``: message groups and their categories
(admin API; viewers read, admins change)."""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from mpg.server.api import deps
from mpg.server.directory import categories, groups, rules

router = fastapi.APIRouter(tags=["groups"])

GroupPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]
CategoryPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]
Name = Annotated[str, pydantic.Field(min_length=1, max_length=rules.NAME_MAX)]
Region = Annotated[str, pydantic.Field(max_length=rules.REGION_MAX)]
FileUrl = Annotated[
    str,
    pydantic.Field(
        max_length=rules.FILE_URL_MAX,
        description="public https:// address of the group's message file, or empty",
    ),
]
Slug = Annotated[str, pydantic.Field(pattern=rules.SLUG_PATTERN, max_length=50)]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class GroupIn(_Strict):
    """A new message group."""

    group: Slug = pydantic.Field(description="the group's id: a-z 0-9 _ -, at most 50")
    name: Name
    region: Region = ""
    file_url: FileUrl = ""


class GroupChange(_Strict):
    """What to change of a group; fields left out stay."""

    name: Name | None = None
    region: Region | None = None
    file_url: FileUrl | None = None


class GroupOut(pydantic.BaseModel):
    """A message group."""

    group: str
    name: str
    region: str
    file_url: str
    created_at: str = pydantic.Field(description="yyyy-MM-dd HH:mm:ss UTC")

    @classmethod
    def of(cls, group: groups.Group) -> GroupOut:
        """The answer for ``group``."""
        return cls(
            group=group.group_id,
            name=group.name,
            region=group.region,
            file_url=group.file_url,
            created_at=group.created_at,
        )


class CategoryIn(_Strict):
    """A new category of a group."""

    category: Slug = pydantic.Field(description="the category's id: a-z 0-9 _ -, at most 50")
    name: Name
    preselected: bool = False


class CategoryChange(_Strict):
    """What to change of a category; fields left out stay."""

    name: Name | None = None
    preselected: bool | None = None


class CategoryOut(pydantic.BaseModel):
    """A category of a group."""

    group: str
    category: str
    name: str
    preselected: bool
    created_at: float = pydantic.Field(description="Unix time it was created")

    @classmethod
    def of(cls, category: categories.Category) -> CategoryOut:
        """The answer for ``category``."""
        return cls(
            group=category.group_id,
            category=category.category_id,
            name=category.name,
            preselected=category.preselected,
            created_at=category.created_at,
        )


@router.get("/groups", response_model=list[GroupOut])
def list_groups(push: deps.Server, caller: deps.Viewer) -> list[GroupOut]:
    """Every message group, by id."""
    return [GroupOut.of(g) for g in groups.GroupStore(push.engine).all()]


@router.post("/groups", response_model=GroupOut, status_code=201)
def add_group(push: deps.Server, caller: deps.Admin, body: GroupIn) -> GroupOut:
    """Create a message group (409 when the id is taken)."""
    store = groups.GroupStore(push.engine)
    return GroupOut.of(store.add(body.group, body.name, body.region, body.file_url, caller.name))


@router.get("/groups/{group}", response_model=GroupOut)
def show_group(push: deps.Server, caller: deps.Viewer, group: GroupPath) -> GroupOut:
    """One message group."""
    return GroupOut.of(groups.GroupStore(push.engine).get(group))


@router.patch("/groups/{group}", response_model=GroupOut)
def change_group(
    push: deps.Server, caller: deps.Admin, group: GroupPath, body: GroupChange
) -> GroupOut:
    """Change a group's name, region or message file address."""
    changed = groups.GroupStore(push.engine).change(
        group, caller.name, name=body.name, region=body.region, file_url=body.file_url
    )
    return GroupOut.of(changed)


@router.delete("/groups/{group}", status_code=204)
def remove_group(push: deps.Server, caller: deps.Admin, group: GroupPath) -> None:
    """Remove a group and its categories; 409 naming what it still has (devices, domains,
    registration codes), which are removed first."""
    groups.GroupStore(push.engine).remove(group, caller.name)


@router.get("/groups/{group}/categories", response_model=list[CategoryOut])
def list_categories(push: deps.Server, caller: deps.Viewer, group: GroupPath) -> list[CategoryOut]:
    """The group's categories, by id."""
    return [CategoryOut.of(c) for c in categories.CategoryStore(push.engine).of_group(group)]


@router.post("/groups/{group}/categories", response_model=CategoryOut, status_code=201)
def add_category(
    push: deps.Server, caller: deps.Admin, group: GroupPath, body: CategoryIn
) -> CategoryOut:
    """Create a category of the group (409 when the id is taken in it)."""
    store = categories.CategoryStore(push.engine)
    added = store.add(group, body.category, body.name, body.preselected, caller.name)
    return CategoryOut.of(added)


@router.get("/groups/{group}/categories/{category}", response_model=CategoryOut)
def show_category(
    push: deps.Server, caller: deps.Viewer, group: GroupPath, category: CategoryPath
) -> CategoryOut:
    """One category of the group."""
    return CategoryOut.of(categories.CategoryStore(push.engine).get(group, category))


@router.patch("/groups/{group}/categories/{category}", response_model=CategoryOut)
def change_category(
    push: deps.Server,
    caller: deps.Admin,
    group: GroupPath,
    category: CategoryPath,
    body: CategoryChange,
) -> CategoryOut:
    """Change a category's name or whether it is preselected."""
    changed = categories.CategoryStore(push.engine).change(
        group, category, caller.name, name=body.name, preselected=body.preselected
    )
    return CategoryOut.of(changed)


@router.delete("/groups/{group}/categories/{category}", status_code=204)
def remove_category(
    push: deps.Server, caller: deps.Admin, group: GroupPath, category: CategoryPath
) -> None:
    """Remove a category and every device's subscription to it."""
    categories.CategoryStore(push.engine).remove(group, category, caller.name)
