"""Checking an OpenID Connect ID token (Microsoft Entra ID compatible) for registration.

A device in a managed configuration presents an ID token its organisation's identity
provider issued. :class:`IdTokenVerifier` accepts it only when it is signed by a key of
a configured issuer with an allowed asymmetric algorithm, its ``iss`` is that issuer
exactly, its ``aud`` is the configured client id, it is inside ``exp``/``nbf``/``iat``
(with a small leeway), its ``nonce`` matches when the caller has one, and its tenant
(``tid``, optionally with a group or role claim) maps to a message group. The e-mail
claim never decides anything: it is kept as the device's address only when its domain
is a verified domain of that group. Each refusal raises :class:`errors.IdTokenRefused`
with a ``code`` a client can act on. Decisions: docs/devices.md, "ID tokens".
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import httpx
import jwt

from mpg import errors
from mpg.config import TENANT_PLACEHOLDER, IdTokenIssuer, ServerSettings
from mpg.server import jwks

#: Longest token looked at; Entra's are 1-3 KiB even with many claims.
MAX_TOKEN_CHARS: Final = 16 * 1024
#: Claims every accepted token carries (``tid`` names the tenant the mapping needs).
REQUIRED_CLAIMS: Final = ("iss", "aud", "exp", "iat", "sub", "tid")
#: Claims that may hold the user's address, in order of preference.
ADDRESS_CLAIMS: Final = ("email", "preferred_username")
#: The key type each algorithm family needs (a key cannot be used for another family).
_KEY_TYPE: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}

#: ``domain_is_verified(group, domain)``: is ``domain`` a verified domain of ``group``?
DomainCheck = Callable[[str, str], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupMatch:
    """A group the token registers into, with the address accepted for it (or None)."""

    group: str
    address: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedIdToken:
    """What a verified ID token establishes."""

    issuer: str
    tenant: str
    subject: str
    #: Groups by the configured mapping, in configuration order, without repeats.
    groups: tuple[GroupMatch, ...]
    claims: Mapping[str, Any] = dataclasses.field(repr=False)


def _refuse(code: str, detail: str) -> errors.IdTokenRefused:
    return errors.IdTokenRefused(code, detail)


def _expected_issuer(template: str, tenant: object) -> str | None:
    """The ``iss`` a token of ``tenant`` must carry under ``template``.

    A multi-tenant template (``.../{tenantid}/v2.0``) becomes that tenant's issuer
    (Microsoft's own rule for validating such tokens); a token without a usable ``tid``
    matches no such template.
    """
    if TENANT_PLACEHOLDER not in template:
        return template
    if not isinstance(tenant, str) or not tenant or "/" in tenant:
        return None
    return template.replace(TENANT_PLACEHOLDER, tenant)


def _claim_values(value: object) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def _address(claims: Mapping[str, Any]) -> tuple[str, str] | None:
    """The token's address and its lower-cased domain, if one of its claims has one."""
    for name in ADDRESS_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and value.count("@") == 1:
            local, domain = value.strip().split("@")
            if local and domain:
                return value.strip(), domain.lower()
    return None


class IdTokenVerifier:
    """Verifies ID tokens against ``issuers``, with one :class:`jwks.KeySetCache` each.

    ``key_sets`` maps each issuer's configured ``issuer`` (the template, for a
    multi-tenant one) to its key cache.
    """

    def __init__(
        self,
        issuers: Sequence[IdTokenIssuer],
        key_sets: Mapping[str, jwks.KeySetCache],
        *,
        algorithms: Sequence[str],
        leeway: float,
    ) -> None:
        missing = [entry.issuer for entry in issuers if entry.issuer not in key_sets]
        if missing:
            raise ValueError(f"no key set for issuers {missing}")
        self._issuers = tuple(issuers)
        self._key_sets = dict(key_sets)
        self._algorithms = frozenset(algorithms)
        self._leeway = leeway

    def verify(
        self, token: str, *, domain_is_verified: DomainCheck, nonce: str | None = None
    ) -> VerifiedIdToken:
        """Check ``token``; its identity and groups, or :class:`errors.IdTokenRefused`.

        ``nonce``, when given, must equal the token's ``nonce`` claim. Raises
        :class:`errors.KeySetUnavailable` when the issuer's keys cannot be fetched.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise _refuse("malformed", f"not a token of at most {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _refuse("malformed", f"not a signed JWT: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise _refuse(
                "algorithm_not_allowed",
                f"alg {algorithm!r} is not one of {sorted(self._algorithms)}",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("unknown_key", "the token names no key id (kid)")
        entry, issuer = self._issuer_of(unverified)
        key = self._key_sets[entry.issuer].key(kid)
        if key.key_type != _KEY_TYPE.get(str(algorithm)[:2]):
            raise _refuse(
                "bad_signature", f"key {kid!r} is a {key.key_type} key, not for {algorithm}"
            )
        claims = self._decode(token, key, str(algorithm), entry, issuer)
        if nonce is not None:
            carried = claims.get("nonce")
            if not isinstance(carried, str) or not hmac.compare_digest(
                carried.encode(), nonce.encode()
            ):
                raise _refuse("nonce_mismatch", "the token's nonce is not the one this device sent")
        tenant = str(claims["tid"])
        return VerifiedIdToken(
            issuer=issuer,
            tenant=tenant,
            subject=str(claims["sub"]),
            groups=self._groups(entry, tenant, claims, domain_is_verified),
            claims=claims,
        )

    def _issuer_of(self, unverified: Mapping[str, Any]) -> tuple[IdTokenIssuer, str]:
        """The configured issuer the (not yet trusted) claims name, and its exact ``iss``."""
        iss = unverified.get("iss")
        for entry in self._issuers:
            expected = _expected_issuer(entry.issuer, unverified.get("tid"))
            if expected is not None and iss == expected:
                return entry, expected
        raise _refuse("wrong_issuer", f"issuer {iss!r} is not configured")

    def _decode(
        self, token: str, key: jwt.PyJWK, algorithm: str, entry: IdTokenIssuer, issuer: str
    ) -> dict[str, Any]:
        # PyJWT checks the signature before any claim, so no claim check below runs
        # on a forged token.
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=entry.client_id,
                issuer=issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidSignatureError:
            raise _refuse("bad_signature", "the signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise _refuse("expired", "the token has expired (exp)") from None
        except jwt.ImmatureSignatureError as exc:
            raise _refuse("not_yet_valid", f"the token is not valid yet: {exc}") from None
        except jwt.InvalidAudienceError:
            raise _refuse(
                "wrong_audience", f"the token is not for client id {entry.client_id!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise _refuse("wrong_issuer", f"the token's issuer is not {issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refuse("missing_claim", f"the token lacks claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise _refuse("malformed", f"the token is malformed: {exc}") from None
        return claims

    def _groups(
        self,
        entry: IdTokenIssuer,
        tenant: str,
        claims: Mapping[str, Any],
        domain_is_verified: DomainCheck,
    ) -> tuple[GroupMatch, ...]:
        held = _claim_values(claims.get(entry.group_claim)) if entry.group_claim else set()
        rules = [rule for rule in entry.groups if rule.tenant == tenant]
        if not rules:
            raise _refuse("unmapped_tenant", f"tenant {tenant!r} is mapped to no group")
        groups = list(
            dict.fromkeys(
                rule.group for rule in rules if not rule.claim_value or rule.claim_value in held
            )
        )
        if not groups:
            raise _refuse(
                "unmapped_tenant",
                f"tenant {tenant!r} maps no group for this token's {entry.group_claim!r}",
            )
        found = _address(claims)
        return tuple(
            GroupMatch(
                group,
                found[0] if found is not None and domain_is_verified(group, found[1]) else None,
            )
            for group in groups
        )


def verifier_from_settings(settings: ServerSettings, client: httpx.Client) -> IdTokenVerifier:
    """A verifier for ``settings.id_token_issuers`` fetching keys through ``client``."""
    key_sets = {
        entry.issuer: jwks.KeySetCache(
            jwks.fetcher(
                client,
                jwks_uri=entry.jwks_uri,
                discovery_url=entry.key_set_discovery_url(),
                issuer=entry.issuer,
            ),
            ttl=settings.id_token_keys_ttl,
            min_refetch=settings.id_token_keys_refetch,
        )
        for entry in settings.id_token_issuers
    }
    return IdTokenVerifier(
        settings.id_token_issuers,
        key_sets,
        algorithms=settings.id_token_algorithms,
        leeway=settings.id_token_leeway,
    )
