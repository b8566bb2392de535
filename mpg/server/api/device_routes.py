"""``/device/...``: a registered device about itself (its token: ``deps.CallingDevice``).

Its record, its push token, its app's start (which subscribes the preselected
categories added since the last start), its subscriptions and its read reports. Each
call notes when the device was last seen (:meth:`DeviceStore.seen`, at most one write
a minute). Shapes: docs/devices.md, "The device API".
"""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from mpg.server.api import deps
from mpg.server.api.registration_routes import (
    AppVersion,
    Category,
    Group,
    Platform,
    category_models,
    group_model,
)

router = fastapi.APIRouter(prefix="/device", tags=["device"])


def seen_device(push: deps.Server, caller: deps.CallingDevice) -> deps.Device:
    """The calling device, its LastSeen noted."""
    push.devices.seen(caller.account)
    return caller


Me = Annotated[deps.Device, fastapi.Depends(seen_device)]
CategoryId = Annotated[
    str, fastapi.Path(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]


class DeviceInfo(pydantic.BaseModel):
    """The device's own record (its address and push token are not sent back)."""

    account: str
    device_id: str
    group: Group
    via: str = pydantic.Field(description="email | code | idtoken")
    platform: str
    app_version: str
    has_push_token: bool
    registered_at: float = pydantic.Field(description="Unix time")
    last_start: float | None
    last_seen: float | None
    categories: list[Category]


class PushToken(pydantic.BaseModel):
    """The device's push token (FCM, APNs ...), and its platform when it changed."""

    token: Annotated[str, pydantic.Field(min_length=1, max_length=4096, pattern=r"^[!-~]+$")]
    platform: Platform | None = None


class Start(pydantic.BaseModel):
    """The app started (and which version it is)."""

    app_version: AppVersion = ""


class Started(pydantic.BaseModel):
    """The categories after the start; ``added``: those subscribed by it."""

    categories: list[Category]
    added: list[str]


class ReadReport(pydantic.BaseModel):
    """The user read this message (its MessageId)."""

    message_id: Annotated[str, pydantic.Field(min_length=1, max_length=50, pattern=r"^[!-~]+$")]


class ReadRecorded(pydantic.BaseModel):
    """``recorded`` is false when this read was reported before."""

    recorded: bool


@router.get("", response_model=DeviceInfo)
def get_device(push: deps.Server, me: Me) -> DeviceInfo:
    """The calling device's record and its group's categories."""
    view = push.devices.view(me.account)
    return DeviceInfo(
        account=view.account,
        device_id=view.device_id,
        group=group_model(view.group),
        via=view.via,
        platform=view.platform,
        app_version=view.app_version,
        has_push_token=view.has_push_token,
        registered_at=view.registered_at,
        last_start=view.last_start,
        last_seen=view.last_seen,
        categories=category_models(view.categories),
    )


@router.put("/push-token", status_code=204)
def set_push_token(push: deps.Server, me: Me, body: PushToken) -> None:
    """Set or refresh the device's push token (stored encrypted)."""
    push.devices.set_push_token(
        me.account, body.token, None if body.platform is None else body.platform.lower()
    )


@router.post("/start", response_model=Started)
def start(push: deps.Server, me: Me, body: Start) -> Started:
    """The app started: subscribe the preselected categories added since the last start."""
    categories, added = push.devices.start(me.account, body.app_version)
    return Started(categories=category_models(categories), added=list(added))


@router.get("/subscriptions", response_model=list[Category])
def subscriptions(push: deps.Server, me: Me) -> list[Category]:
    """The group's categories, each with whether the device is subscribed."""
    return category_models(push.devices.categories(me.account))


@router.put("/subscriptions/{category}", response_model=list[Category])
def subscribe(push: deps.Server, me: Me, category: CategoryId) -> list[Category]:
    """Subscribe to a category of the device's group (again: no change)."""
    return category_models(push.devices.subscribe(me.account, category, on=True))


@router.delete("/subscriptions/{category}", response_model=list[Category])
def unsubscribe(push: deps.Server, me: Me, category: CategoryId) -> list[Category]:
    """Unsubscribe from a category of the device's group (not subscribed: no change)."""
    return category_models(push.devices.subscribe(me.account, category, on=False))


@router.post("/read", response_model=ReadRecorded)
def read(push: deps.Server, me: Me, body: ReadReport) -> ReadRecorded:
    """Report that the user read a message this device received (its sender's history)."""
    return ReadRecorded(recorded=push.devices.read(me.account, body.message_id))
