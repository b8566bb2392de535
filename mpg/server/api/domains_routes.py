"""``/domains``: domains of message groups, proven by a mailed code (admin API; viewers
read, admins change). Removing one removes the devices registered through it into that
group: ``GET .../impact`` says how many first."""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from mpg.server import mail
from mpg.server.api import deps
from mpg.server.directory import domains, rules

router = fastapi.APIRouter(tags=["domains"])

DomainPath = Annotated[str, fastapi.Path(pattern=rules.DOMAIN_PATTERN, max_length=253)]
GroupPath = Annotated[str, fastapi.Path(pattern=rules.SLUG_PATTERN, max_length=50)]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class DomainIn(_Strict):
    """A domain to register for a group; the code goes to ``email``, an address at it."""

    domain: str = pydantic.Field(min_length=1, max_length=253, examples=["firma.example"])
    group: str = pydantic.Field(pattern=rules.SLUG_PATTERN, max_length=50)
    email: str = pydantic.Field(
        min_length=3, max_length=mail.MAX_ADDRESS_CHARS, examples=["it@firma.example"]
    )
    region: str | None = pydantic.Field(
        None, max_length=rules.REGION_MAX, description="default: the group's region"
    )


class CodeIn(_Strict):
    """The code mailed for a domain."""

    code: str = pydantic.Field(min_length=1, max_length=64, examples=["492817"])


class DomainOut(pydantic.BaseModel):
    """A domain of a group."""

    domain: str
    group: str
    region: str
    email: str = pydantic.Field(description="where the verification code was mailed")
    verified: bool
    verified_at: str | None
    created_at: str

    @classmethod
    def of(cls, found: domains.Domain) -> DomainOut:
        """The answer for ``found``."""
        return cls(
            domain=found.domain,
            group=found.group_id,
            region=found.region,
            email=found.address,
            verified=found.verified,
            verified_at=found.verified_at,
            created_at=found.created_at,
        )


class DomainImpact(pydantic.BaseModel):
    """The devices removing a domain from a group removes (or removed)."""

    domain: str
    group: str
    devices: int


def _store(push: deps.Server) -> domains.DomainStore:
    return domains.DomainStore(
        push.engine, push.keyring, push.codes, push.mailer, push.settings.mail_from
    )


@router.get("/domains", response_model=list[DomainOut])
def list_domains(
    push: deps.Server,
    caller: deps.Viewer,
    group: Annotated[str | None, fastapi.Query(pattern=rules.SLUG_PATTERN, max_length=50)] = None,
) -> list[DomainOut]:
    """Every domain of every group (or of ``group``), verified or pending."""
    return [DomainOut.of(d) for d in _store(push).all(group)]


@router.post("/domains", response_model=DomainOut, status_code=201)
def register_domain(push: deps.Server, caller: deps.Admin, body: DomainIn) -> DomainOut:
    """Register a domain for a group and mail a verification code to ``email``; the
    domain is pending until ``.../verify``. 404 ``mail_off`` without a mail
    server, 503 ``mail_failed`` when the mail could not be sent (``.../resend``)."""
    registered = _store(push).register(
        body.domain, body.group, body.email, caller.name, region=body.region
    )
    return DomainOut.of(registered)


@router.post("/domains/{domain}/groups/{group}/verify", response_model=DomainOut)
def verify_domain(
    push: deps.Server, caller: deps.Admin, domain: DomainPath, group: GroupPath, body: CodeIn
) -> DomainOut:
    """Confirm a pending domain with its mailed code; refusals ``code_malformed`` (400),
    ``code_wrong``, ``code_expired``, ``code_used``, ``code_attempts_exhausted`` (403)."""
    return DomainOut.of(_store(push).verify(domain, group, body.code, caller.name))


@router.post("/domains/{domain}/groups/{group}/resend", status_code=204)
def resend_domain_code(
    push: deps.Server, caller: deps.Admin, domain: DomainPath, group: GroupPath
) -> None:
    """Mail a new code for a pending domain; older codes stop working."""
    _store(push).resend(domain, group, caller.name)


@router.get("/domains/{domain}/groups/{group}/impact", response_model=DomainImpact)
def domain_impact(
    push: deps.Server, caller: deps.Viewer, domain: DomainPath, group: GroupPath
) -> DomainImpact:
    """How many devices removing this domain from this group would remove."""
    impact = _store(push).impact(domain, group)
    return DomainImpact(domain=impact.domain, group=impact.group_id, devices=impact.devices)


@router.delete("/domains/{domain}/groups/{group}", response_model=DomainImpact)
def remove_domain(
    push: deps.Server, caller: deps.Admin, domain: DomainPath, group: GroupPath
) -> DomainImpact:
    """Remove the domain from the group with the devices registered through it into
    that group (not those of its other groups); the answer says how many went."""
    impact = _store(push).remove(domain, group, caller.name)
    return DomainImpact(domain=impact.domain, group=impact.group_id, devices=impact.devices)
