"""``/registrations/...``: a device registers by e-mail, registration code or ID token.

Anyone may call these (they are how a device gets a credential); mails and code
checks are rate-limited (429 with ``Retry-After``). The logic is
:mod:`mpg.server.directory.registration`; shapes and examples: docs/devices.md,
"Registering a device".
"""

from __future__ import annotations

from typing import Annotated, Literal

import fastapi
import pydantic

from mpg.server.api import deps
from mpg.server.directory import devices, registration
from mpg.wire import keys

router = fastapi.APIRouter(prefix="/registrations", tags=["registration"])

DeviceId = Annotated[
    str,
    pydantic.Field(
        min_length=1,
        max_length=100,
        description="the device's own id: printable ASCII without spaces, ';' or ','",
    ),
]
Email = Annotated[str, pydantic.Field(min_length=3, max_length=254)]
Platform = Annotated[str, pydantic.Field(max_length=20, pattern=r"^[A-Za-z0-9._-]*$")]
AppVersion = Annotated[str, pydantic.Field(max_length=50, pattern=r"^[ -~]*$")]
GroupId = Annotated[str, pydantic.Field(max_length=50, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class DeviceFields(pydantic.BaseModel):
    """What every registration request says about the device."""

    device_id: DeviceId
    platform: Platform = ""
    app_version: AppVersion = ""

    def device(self) -> registration.Device:
        """As the registrar takes it."""
        return registration.Device(
            registration.device_id(self.device_id), self.platform.lower(), self.app_version
        )


class EmailRequest(DeviceFields):
    """Ask for a verification code mailed to ``email``."""

    email: Email


class CodeSent(pydantic.BaseModel):
    """A code is on its way."""

    sent: bool = True
    expires_in: int = pydantic.Field(description="seconds the mailed code is valid")


class EmailConfirm(DeviceFields):
    """The code from the mail; ``group`` when the device already knows which one."""

    email: Email
    code: Annotated[str, pydantic.Field(min_length=1, max_length=64)]
    group: GroupId | None = None


class EmailChoose(DeviceFields):
    """The group chosen after a confirmation offered several, with its choice token."""

    email: Email
    choice_token: Annotated[
        str, pydantic.Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    ]
    group: GroupId


class CodeRegistration(DeviceFields):
    """Register with a registration code, e.g. ``WXWC-BYB6-WK95-2SWA-0438``."""

    code: Annotated[str, pydantic.Field(min_length=1, max_length=64)]


class IdTokenRegistration(DeviceFields):
    """Register with an OpenID Connect ID token of a configured issuer."""

    id_token: Annotated[str, pydantic.Field(min_length=1, max_length=16 * 1024)]
    nonce: Annotated[str, pydantic.Field(min_length=1, max_length=200)] | None = None
    group: GroupId | None = None


class Group(pydantic.BaseModel):
    """A message group."""

    id: str
    name: str
    region: str
    file_url: str


class Category(pydantic.BaseModel):
    """A category of the device's group."""

    id: str
    name: str
    preselected: bool
    subscribed: bool


class Registration(pydantic.BaseModel):
    """A completed registration. ``credential`` is shown once: the device keeps it."""

    account: str = pydantic.Field(description="the device's account (sealed protocol)")
    credential: str = pydantic.Field(description="<key id>.<secret>, mpg.wire.keys format")
    key_id: str
    group: Group
    categories: list[Category]
    replaced: bool = pydantic.Field(description="an earlier registration of this device id")


class Answer(pydantic.BaseModel):
    """``registered`` (see ``registration``) or ``choose_group`` (see ``groups``)."""

    status: Literal["registered", "choose_group"]
    registration: Registration | None = None
    groups: list[Group] = []
    choice_token: str | None = pydantic.Field(
        default=None, description="e-mail only: send it to /registrations/email/choose"
    )
    expires_in: int | None = None


def group_model(group: devices.Group) -> Group:
    """The API's form of a group."""
    return Group(id=group.id, name=group.name, region=group.region, file_url=group.file_url)


def category_models(categories: tuple[devices.Category, ...]) -> list[Category]:
    """The API's form of categories."""
    return [
        Category(id=c.id, name=c.name, preselected=c.preselected, subscribed=c.subscribed)
        for c in categories
    ]


def registration_model(done: devices.Registration) -> Registration:
    """The API's form of a completed registration."""
    return Registration(
        account=done.account,
        credential=keys.format_credential(done.credential),
        key_id=done.credential.key_id,
        group=group_model(done.group),
        categories=category_models(done.categories),
        replaced=done.replaced,
    )


def answer(outcome: registration.Outcome) -> Answer:
    """A registration or a choice, as the API answers it."""
    if isinstance(outcome, registration.Choice):
        return Answer(
            status="choose_group",
            groups=[group_model(g) for g in outcome.groups],
            choice_token=outcome.token or None,
            expires_in=outcome.expires_in or None,
        )
    return Answer(status="registered", registration=registration_model(outcome))


def _client(request: fastapi.Request) -> str:
    return request.client.host if request.client is not None else ""


@router.post("/email", response_model=CodeSent)
def ask_email_code(push: deps.Server, body: EmailRequest, request: fastapi.Request) -> CodeSent:
    """Mail a verification code to ``email`` for this device (rate-limited)."""
    seconds = push.registrar.mail_code(body.email, body.device(), _client(request))
    return CodeSent(expires_in=seconds)


@router.post("/email/confirm", response_model=Answer)
def confirm_email(push: deps.Server, body: EmailConfirm, request: fastapi.Request) -> Answer:
    """Check the mailed code: registered, or several groups to choose from."""
    return answer(
        push.registrar.confirm_email(
            body.email, body.device(), body.code, body.group, _client(request)
        )
    )


@router.post("/email/choose", response_model=Answer)
def choose_group(push: deps.Server, body: EmailChoose, request: fastapi.Request) -> Answer:
    """Register into the group chosen, with the choice token of the confirmation."""
    return answer(
        push.registrar.choose(
            body.email, body.device(), body.choice_token, body.group, _client(request)
        )
    )


@router.post("/code", response_model=Answer)
def register_with_code(push: deps.Server, body: CodeRegistration) -> Answer:
    """Register into the group of a registration code."""
    return answer(push.registrar.with_code(body.code, body.device()))


@router.post("/id-token", response_model=Answer)
def register_with_id_token(push: deps.Server, body: IdTokenRegistration) -> Answer:
    """Register with an ID token; its tenant's mapping decides the group."""
    return answer(
        push.registrar.with_id_token(body.id_token, body.device(), body.nonce, body.group)
    )
