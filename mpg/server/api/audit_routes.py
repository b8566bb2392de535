"""``GET /audit``: the audit log, newest first (admin API, any role)."""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from mpg.server import audit
from mpg.server.api import deps

router = fastapi.APIRouter(tags=["audit"])


class AuditEntry(pydantic.BaseModel):
    """One admin change."""

    id: int
    at: str = pydantic.Field(description="yyyy-MM-dd HH:mm:ss UTC")
    actor: str
    action: str
    target: str
    detail: str


@router.get("/audit", response_model=list[AuditEntry])
def list_audit(
    push: deps.Server,
    caller: deps.Viewer,
    before: Annotated[int | None, fastapi.Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    """Admin changes, newest first; ``before`` (an entry id) pages back."""
    return [
        AuditEntry.model_validate(entry, from_attributes=True)
        for entry in audit.entries(push.engine, before=before, limit=limit)
    ]
