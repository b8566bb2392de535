"""Who is calling the API: the dependencies routes declare.

Admins send ``Authorization: Bearer mpga.<id>.<secret>`` (:mod:`mpg.server.admins`).
Devices send ``Authorization: Bearer mpgd.<account>.<key id>.<proof>``, where the
proof is :func:`device_proof` of the key their registration issued for the sealed
protocol: one credential for both channels, and the key itself never travels. Every
failed authentication is the same 401.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import TYPE_CHECKING, Annotated

import fastapi
from fastapi import security

from mpg import errors
from mpg.server import admins
from mpg.wire.keys import DEVICE_TOKEN_PREFIX as DEVICE_PREFIX
from mpg.wire.keys import device_proof as device_proof
from mpg.wire.keys import device_token as device_token

if TYPE_CHECKING:
    from mpg.server.app import PushServer


def server(request: fastapi.Request) -> PushServer:
    """The :class:`~mpg.server.app.PushServer` whose stores the routes use."""
    push: PushServer = request.app.state.push
    return push


Server = Annotated["PushServer", fastapi.Depends(server)]

_bearer = security.HTTPBearer(auto_error=False)
Bearer = Annotated[security.HTTPAuthorizationCredentials | None, fastapi.Security(_bearer)]


def _token(credentials: security.HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise errors.UnknownKey("no bearer token")
    token: str = credentials.credentials
    return token


def admin(push: Server, credentials: Bearer) -> admins.Admin:
    """The calling admin, any role."""
    return push.admins.authenticate(_token(credentials))


def _role(role: str) -> object:
    def check(caller: Annotated[admins.Admin, fastapi.Depends(admin)]) -> admins.Admin:
        if not caller.may(role):
            raise errors.Forbidden(f"admin {caller.name} is a {caller.role}; this needs {role}")
        return caller

    return fastapi.Depends(check)


Viewer = Annotated[admins.Admin, _role("viewer")]
Operator = Annotated[admins.Admin, _role("operator")]
Admin = Annotated[admins.Admin, _role("admin")]


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """An authenticated device: its account (the sealed protocol's name) and key id."""

    account: str
    key_id: str


def device(push: Server, credentials: Bearer) -> Device:
    """The calling device; its token must carry a right proof of an enabled device key."""
    # An account name may hold dots; the key id and the proof never do.
    prefix, _, rest = _token(credentials).partition(".")
    parts = rest.rsplit(".", 2)
    if prefix != DEVICE_PREFIX or len(parts) != 3 or not all(parts):
        raise errors.UnknownKey("not a device token")
    account, key_id, proof = parts
    stored, secret = push.accounts.key_for(account, key_id)
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if not hmac.compare_digest(proof.encode(), device_proof(secret).encode()):
        raise errors.UnknownKey("wrong device proof")
    if push.accounts.kinds([stored]).get(stored) != "device":
        raise errors.Forbidden(f"{stored} is not a device")
    return Device(stored, key_id)


CallingDevice = Annotated[Device, fastapi.Depends(device)]
