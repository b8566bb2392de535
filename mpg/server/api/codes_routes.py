"""``/codes``: registration codes (admin API; viewers read, admins change). A code is
shown once, in the answer that creates it; deleting one removes every device registered
with it (``GET .../impact`` says how many first) and blocks it for ever."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import fastapi
import pydantic

from mpg.server.api import deps
from mpg.server.directory import regcodes, rules

router = fastapi.APIRouter(tags=["registration codes"])

ValidUntil = Annotated[
    float,
    pydantic.Field(
        gt=0,
        le=regcodes.MAX_VALID_UNTIL,
        allow_inf_nan=False,
        description="Unix time from which the code registers no new device",
    ),
]
Name = Annotated[str, pydantic.Field(min_length=1, max_length=rules.NAME_MAX)]
Note = Annotated[str, pydantic.Field(max_length=rules.NOTE_MAX)]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class CodeIn(_Strict):
    """A new registration code."""

    name: Name
    group: str = pydantic.Field(pattern=rules.SLUG_PATTERN, max_length=50)
    note: Note = ""
    valid_until: ValidUntil | None = None


class CodeChange(_Strict):
    """What to change of a code; fields left out stay, ``valid_until: null`` removes the end."""

    name: Name | None = None
    note: Note | None = None
    valid_until: ValidUntil | None = None


class CodeOut(pydantic.BaseModel):
    """A registration code (never the code itself, but when it is made)."""

    code_id: uuid.UUID
    name: str
    note: str
    group: str
    valid_until: float | None
    status: Literal["valid", "expired", "deleted"]
    deleted_at: str | None
    created_at: str
    devices: int = pydantic.Field(description="devices registered with it now")

    @classmethod
    def of(cls, found: regcodes.RegCode) -> CodeOut:
        """The answer for ``found``."""
        return cls(
            code_id=uuid.UUID(found.code_id),
            name=found.name,
            note=found.note,
            group=found.group_id,
            valid_until=found.valid_until,
            status=found.status.value,
            deleted_at=found.deleted_at,
            created_at=found.created_at,
            devices=found.devices,
        )


class CodeCreated(CodeOut):
    """A new code: ``code`` is shown only in this answer."""

    code: str = pydantic.Field(examples=["WXWC-BYB6-WK95-2SWA-0438"])


class CodeImpact(pydantic.BaseModel):
    """The devices deleting a code removes (or removed)."""

    code_id: uuid.UUID
    group: str
    devices: int


def _store(push: deps.Server) -> regcodes.RegCodeStore:
    return regcodes.RegCodeStore(push.engine, push.codes.key)


@router.get("/codes", response_model=list[CodeOut])
def list_codes(
    push: deps.Server,
    caller: deps.Viewer,
    group: Annotated[str | None, fastapi.Query(pattern=rules.SLUG_PATTERN, max_length=50)] = None,
) -> list[CodeOut]:
    """Every registration code (of ``group``), deleted ones too, newest first."""
    return [CodeOut.of(c) for c in _store(push).all(group)]


@router.post("/codes", response_model=CodeCreated, status_code=201)
def create_code(push: deps.Server, caller: deps.Admin, body: CodeIn) -> CodeCreated:
    """Make a registration code for a group; the answer is the only place it is shown."""
    made, code = _store(push).create(
        body.name, body.group, caller.name, note=body.note, valid_until=body.valid_until
    )
    return CodeCreated(**CodeOut.of(made).model_dump(), code=code)


@router.get("/codes/{code_id}", response_model=CodeOut)
def show_code(push: deps.Server, caller: deps.Viewer, code_id: uuid.UUID) -> CodeOut:
    """One registration code."""
    return CodeOut.of(_store(push).get(str(code_id)))


@router.patch("/codes/{code_id}", response_model=CodeOut)
def change_code(
    push: deps.Server, caller: deps.Admin, code_id: uuid.UUID, body: CodeChange
) -> CodeOut:
    """Change a code's name, note or validity; a deleted code is 410."""
    no_end = "valid_until" in body.model_fields_set and body.valid_until is None
    changed = _store(push).change(
        str(code_id),
        caller.name,
        name=body.name,
        note=body.note,
        valid_until=body.valid_until,
        no_end=no_end,
    )
    return CodeOut.of(changed)


@router.get("/codes/{code_id}/impact", response_model=CodeImpact)
def code_impact(push: deps.Server, caller: deps.Viewer, code_id: uuid.UUID) -> CodeImpact:
    """How many devices deleting this code would remove."""
    impact = _store(push).impact(str(code_id))
    return CodeImpact(code_id=code_id, group=impact.group_id, devices=impact.devices)


@router.delete("/codes/{code_id}", response_model=CodeImpact)
def delete_code(push: deps.Server, caller: deps.Admin, code_id: uuid.UUID) -> CodeImpact:
    """Delete the code: every device registered with it is removed, and the code stays
    blocked for ever (410 ``registration_code_deleted``)."""
    impact = _store(push).delete(str(code_id), caller.name)
    return CodeImpact(code_id=code_id, group=impact.group_id, devices=impact.devices)
