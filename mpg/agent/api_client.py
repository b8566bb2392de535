"""The device side of the push server's JSON API (``/api/v1``) over HTTPS (httpx).

One method per route a phone uses (docs/devices.md, "Registering a device" and "The
device API"; the agent's table: "The routes the agent calls"). Every refusal arrives
as ``{"error": code, "detail": text}``; it is raised as
:class:`~mpg.errors.RefusedByServer` (4xx: retrying cannot help) or
:class:`~mpg.errors.TransientServerError` (unreachable, timeouts, 429, 5xx), the
classes the gateway's client uses, so ``mpg device`` exits 5 with the server's detail.
"""

from __future__ import annotations

import dataclasses
import ssl
import urllib.parse
from typing import Any, Final

import httpx

from mpg import errors, tlstrust
from mpg.gateway import client

PREFIX: Final = "/api/v1"


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """A message group as registration shows it."""

    id: str
    name: str = ""
    region: str = ""
    file_url: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """A completed registration: the device's account, its credential and its group."""

    account: str
    credential: str  # "<key id>.<secret>" (mpg.wire.keys.format_credential)
    key_id: str
    group: Group
    categories: tuple[dict[str, Any], ...]
    #: An earlier registration of this device id was replaced (same account, new key).
    replaced: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class GroupChoice:
    """Several groups fit: choose one. After an e-mail confirmation the choice goes to
    ``/registrations/email/choose`` with ``token`` (the mailed code is used up); an ID
    token is simply sent again naming the group (``token`` empty)."""

    groups: tuple[Group, ...]
    token: str = ""
    expires_in: int = 0


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """Trust only ``ca_file`` when given, else the system's authorities."""
    return tlstrust.httpx_verify(ca_file, "--ca")


def check_server_url(url: str) -> str:
    """An https:// URL without a trailing slash; the API is HTTPS only (reference §6)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise errors.ValidationError("server", f"must be an https:// URL, not {url!r}")
    return url.rstrip("/")


class DeviceApi:
    """Calls the JSON API as a device; ``token`` (mpgd...) for the device's own routes."""

    def __init__(
        self, server_url: str, ca_file: str | None, token: str = "", *, timeout: float = 30.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=check_server_url(server_url) + PREFIX,
            verify=tls_verify(ca_file),
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers=headers,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> DeviceApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Registration (anyone; rate limited by the server).

    def register_email(self, email: str, device: dict[str, str]) -> int:
        """Ask for a verification code mailed to ``email``; seconds the code is valid.

        ``device`` (:func:`device_fields`) goes with every registration call, the
        confirmation and the choice too: the registration they complete keeps it."""
        body = {"email": email, **device}
        answer = self._call("POST", "/registrations/email", body)
        try:
            return int(answer["expires_in"])
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.RefusedByServer(
                200, "bad_response", f"the code's answer lacks {exc}"
            ) from exc

    def confirm_email(
        self, email: str, code: str, group: str | None, device: dict[str, str]
    ) -> Registration | GroupChoice:
        """Send the mailed code (and ``group`` when already chosen): registered, or the
        groups to choose from with a choice token (the code is used up either way)."""
        body: dict[str, Any] = {"email": email, "code": code, **device}
        if group:
            body["group"] = group
        return outcome(self._call("POST", "/registrations/email/confirm", body))

    def choose_group(
        self, email: str, token: str, group: str, device: dict[str, str]
    ) -> Registration:
        """Complete an e-mail registration with the group chosen and the choice token."""
        body = {"email": email, "choice_token": token, "group": group, **device}
        return completed(outcome(self._call("POST", "/registrations/email/choose", body)))

    def register_code(self, code: str, device: dict[str, str]) -> Registration:
        """Register with a registration code an admin handed out."""
        body = {"code": code, **device}
        return completed(outcome(self._call("POST", "/registrations/code", body)))

    def register_id_token(
        self,
        id_token: str,
        nonce: str | None,
        group: str | None,
        device: dict[str, str],
    ) -> Registration | GroupChoice:
        """Register with an OpenID Connect ID token (managed configuration); with several
        groups mapped the answer lists them and the token is sent again naming one."""
        body = {"id_token": id_token, **device}
        if nonce:
            body["nonce"] = nonce
        if group:
            body["group"] = group
        return outcome(self._call("POST", "/registrations/id-token", body))

    # The device itself (its bearer token).

    def device(self) -> Any:
        """What the server keeps about this device."""
        return self._call("GET", "/device")

    def set_push_token(self, token: str, platform: str) -> Any:
        """Set or refresh the push token the server notifies this device through."""
        return self._call("PUT", "/device/push-token", {"token": token, "platform": platform})

    def start(self, app_version: str) -> dict[str, Any]:
        """Report an app start: ``{categories, added}`` (the preselected categories made
        since the last start are subscribed by it)."""
        answer = self._call("POST", "/device/start", {"app_version": app_version})
        if not isinstance(answer, dict):
            raise errors.RefusedByServer(200, "bad_response", "the start's answer is not an object")
        return {**answer, "categories": categories(answer.get("categories"))}

    def subscriptions(self) -> list[dict[str, Any]]:
        """The group's categories, each with whether the device is subscribed."""
        return categories(self._call("GET", "/device/subscriptions"))

    def subscribe(self, category: str) -> list[dict[str, Any]]:
        """Subscribe to a category of the device's group; the categories after it."""
        return categories(self._call("PUT", f"/device/subscriptions/{_segment(category)}"))

    def unsubscribe(self, category: str) -> list[dict[str, Any]]:
        """Unsubscribe from a category; the categories after it."""
        return categories(self._call("DELETE", f"/device/subscriptions/{_segment(category)}"))

    def report_read(self, message_id: str) -> Any:
        """Tell the server the user read the message with this server MessageId
        (``{"recorded": false}`` when it was reported before)."""
        return self._call("POST", "/device/read", {"message_id": message_id})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        what = f"{method} {PREFIX}{path}"
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise errors.TransientServerError(f"{what}: server did not answer in time") from exc
        except httpx.TransportError as exc:
            raise errors.TransientServerError(f"{what}: server unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise refusal(what, response)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise errors.RefusedByServer(
                response.status_code, "bad_response", f"{what}: answer is not JSON"
            ) from exc


def refusal(what: str, response: httpx.Response) -> errors.ServerError:
    """The error for a refused call, carrying the server's code and detail."""
    code, detail = client.error_parts(response.content)
    status = response.status_code
    if status in client.TRANSIENT_STATUS:
        after = response.headers.get("retry-after")
        wait = f" (retry after {after} s)" if after else ""
        return errors.TransientServerError(
            f"{what}: server answered {status} {code}: {detail}{wait}"
        )
    return errors.RefusedByServer(status, code or "refused", f"{what}: {detail}")


def outcome(answer: Any) -> Registration | GroupChoice:
    """A registration answer (``{status, registration | groups, choice_token, expires_in}``)
    as data; a malformed one is the server's fault, named."""
    try:
        if answer["status"] == "choose_group":
            return GroupChoice(
                tuple(_group(g) for g in answer["groups"]),
                str(answer.get("choice_token") or ""),
                int(answer.get("expires_in") or 0),
            )
        reg = answer["registration"]
        return Registration(
            account=str(reg["account"]),
            credential=str(reg["credential"]),
            key_id=str(reg["key_id"]),
            group=_group(reg["group"]),
            categories=tuple(categories(reg["categories"])),
            replaced=bool(reg.get("replaced", False)),
        )
    except KeyError as exc:
        raise errors.RefusedByServer(
            200, "bad_response", f"registration answer lacks {exc}"
        ) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise errors.RefusedByServer(
            200, "bad_response", f"registration answer is malformed: {exc}"
        ) from exc


def completed(answer: Registration | GroupChoice) -> Registration:
    """``answer``, which must be a registration (a code names one group)."""
    if isinstance(answer, GroupChoice):
        raise errors.RefusedByServer(200, "bad_response", "the server offered groups instead")
    return answer


def categories(answer: Any) -> list[dict[str, Any]]:
    """A list of categories ``{id, name, preselected, subscribed}`` as plain dicts."""
    if not isinstance(answer, list) or not all(isinstance(c, dict) and "id" in c for c in answer):
        raise errors.RefusedByServer(200, "bad_response", "the categories are not a list")
    return [dict(c) for c in answer]


def _group(data: Any) -> Group:
    return Group(
        id=str(data["id"]),
        name=str(data.get("name", "")),
        region=str(data.get("region", "")),
        file_url=str(data.get("file_url", "")),
    )


def device_fields(device_id: str, platform: str, app_version: str) -> dict[str, str]:
    """What every registration call says about the device."""
    return {"device_id": device_id, "platform": platform, "app_version": app_version}


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")
