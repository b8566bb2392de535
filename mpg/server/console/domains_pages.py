"""Domains of message groups: register (a verification code is mailed to an address at
the domain), confirm with the code, mail a new code, remove (first a page saying how
many devices go with it). Admins change, everybody signed in reads; the store is the
API's (:mod:`mpg.server.directory.domains`)."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
from starlette import responses

from mpg import errors
from mpg.server import mail
from mpg.server.console import deps, pagekit, render
from mpg.server.directory import domains, groups, rules

router = fastapi.APIRouter()

DomainPath = Annotated[str, fastapi.Path(pattern=rules.DOMAIN_PATTERN, max_length=253)]
GroupPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]
GroupQuery = Annotated[str, fastapi.Query(pattern=r"^$|" + rules.SLUG_PATTERN, max_length=50)]


def _store(push: deps.Server) -> domains.DomainStore:
    return domains.DomainStore(
        push.engine, push.keyring, push.codes, push.mailer, push.settings.mail_from
    )


def _list_context(push: deps.Server, group: str) -> dict[str, Any]:
    return {
        "domains": _store(push).all(group or None),
        "groups": groups.GroupStore(push.engine).all(),
        "group": group,
        "mail_on": push.mailer is not None,
    }


def _path(domain: str, group: str) -> str:
    return f"/domains/{domain}/groups/{group}"


@router.get("/domains")
def list_domains(
    request: fastapi.Request, push: deps.Server, user: deps.Viewer, group: GroupQuery = ""
) -> responses.Response:
    """Every domain (of ``group``), verified or pending."""
    return render.render(request, "domains.html", _list_context(push, group))


@router.post("/domains")
def register_domain(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    domain: Annotated[str, fastapi.Form(max_length=253)],
    group: Annotated[str, fastapi.Form(max_length=50)],
    email: Annotated[str, fastapi.Form(max_length=mail.MAX_ADDRESS_CHARS)],
    region: Annotated[str, fastapi.Form(max_length=rules.REGION_MAX)] = "",
) -> responses.Response:
    """Register a domain for a group (pending) and mail its verification code."""
    try:
        added = _store(push).register(domain, group, email, user.actor, region=region or None)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "domains.html", _list_context(push, group))
    return pagekit.done(
        request,
        f"/domains?group={added.group_id}",
        f"Domain {added.domain} registered for {added.group_id}: "
        f"a verification code was mailed to {added.address}.",
    )


@router.post("/domains/{domain}/groups/{group}/verify")
def verify_domain(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    domain: DomainPath,
    group: GroupPath,
    code: Annotated[str, fastapi.Form(max_length=64)],
) -> responses.Response:
    """Confirm a pending domain with the code mailed for it."""
    try:
        _store(push).verify(domain, group, code, user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "domains.html", _list_context(push, group))
    return pagekit.done(request, f"/domains?group={group}", f"Domain {domain} verified.")


@router.post("/domains/{domain}/groups/{group}/resend")
def resend_code(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    domain: DomainPath,
    group: GroupPath,
) -> responses.Response:
    """Mail a new code for a pending domain; older codes stop working."""
    try:
        _store(push).resend(domain, group, user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "domains.html", _list_context(push, group))
    return pagekit.done(request, f"/domains?group={group}", f"A new code for {domain} was mailed.")


@router.get("/domains/{domain}/groups/{group}/remove")
def confirm_remove(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    domain: DomainPath,
    group: GroupPath,
) -> responses.Response:
    """The confirm step: how many devices removing the domain from the group removes."""
    store = _store(push)
    found = store.get(domain, group)
    return render.render(
        request, "domain_remove.html", {"found": found, "impact": store.impact(domain, group)}
    )


@router.post("/domains/{domain}/groups/{group}/remove")
def remove_domain(
    request: fastapi.Request,
    push: deps.Server,
    user: deps.Admin,
    domain: DomainPath,
    group: GroupPath,
) -> responses.Response:
    """Remove the domain from the group with the devices registered through it there."""
    try:
        impact = _store(push).remove(domain, group, user.actor)
    except errors.MpgError as exc:
        return pagekit.refused(request, exc, "domains.html", _list_context(push, group))
    devices = f"{impact.devices} device{'s' if impact.devices != 1 else ''}"
    return pagekit.done(
        request,
        f"/domains?group={group}",
        f"Domain {domain} removed from {group}; {devices} removed.",
    )
