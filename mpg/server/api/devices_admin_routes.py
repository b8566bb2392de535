"""``/devices``: registered devices as admins see them (viewers read, operators remove).

The device's own calls are under ``/device`` (:mod:`device_routes`)."""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from mpg.server.api import deps
from mpg.server.directory import roster, rules

router = fastapi.APIRouter(tags=["devices"])

#: Printable, no control characters: PostgreSQL refuses NUL in text (a 500 otherwise).
ACCOUNT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
AccountPath = Annotated[str, fastapi.Path(min_length=1, max_length=100, pattern=ACCOUNT_PATTERN)]


class DeviceOut(pydantic.BaseModel):
    """A registered device."""

    account: str = pydantic.Field(description="the device's account in the sealed protocol")
    device_id: str | None = pydantic.Field(
        description="the id the device reported; null when no configured data key opens it"
    )
    group: str
    via: str = pydantic.Field(description="email | code | idtoken")
    via_ref: str = pydantic.Field(description="the mail domain (email, idtoken) or code id")
    platform: str
    app_version: str
    push_token_age: float | None = pydantic.Field(
        description="seconds since the device last set its push token; null: never"
    )
    last_seen: float | None = pydantic.Field(description="Unix time")
    last_start: float | None = pydantic.Field(description="Unix time")
    registered_at: float = pydantic.Field(description="Unix time")
    subscriptions: list[str] = pydantic.Field(description="category ids")

    @classmethod
    def of(cls, view: roster.DeviceView) -> DeviceOut:
        """The answer for ``view``."""
        return cls(
            account=view.account,
            device_id=view.device_id,
            group=view.group_id,
            via=view.via,
            via_ref=view.via_ref,
            platform=view.platform,
            app_version=view.app_version,
            push_token_age=view.push_token_age,
            last_seen=view.last_seen,
            last_start=view.last_start,
            registered_at=view.registered_at,
            subscriptions=list(view.subscriptions),
        )


def _roster(push: deps.Server) -> roster.Roster:
    return roster.Roster(push.engine, push.keyring)


@router.get("/devices", response_model=list[DeviceOut])
def list_devices(
    push: deps.Server,
    caller: deps.Viewer,
    group: Annotated[str | None, fastapi.Query(pattern=rules.SLUG_PATTERN, max_length=50)] = None,
    after: Annotated[
        str,
        fastapi.Query(
            max_length=100, pattern=ACCOUNT_PATTERN, description="page after this account"
        ),
    ] = "",
    limit: Annotated[int, fastapi.Query(ge=1, le=1000)] = 100,
) -> list[DeviceOut]:
    """Registered devices by account (of ``group``); ``after`` pages on."""
    return [DeviceOut.of(d) for d in _roster(push).all(group, limit=limit, after=after)]


@router.get("/devices/{account}", response_model=DeviceOut)
def show_device(push: deps.Server, caller: deps.Viewer, account: AccountPath) -> DeviceOut:
    """One registered device."""
    return DeviceOut.of(_roster(push).get(account))


@router.delete("/devices/{account}", status_code=204)
def remove_device(push: deps.Server, caller: deps.Operator, account: AccountPath) -> None:
    """Remove a device: its record and subscriptions go, its account is disabled."""
    _roster(push).remove(account, caller.name)
