"""Device registration, three ways (issue 11 part 5; docs/devices.md, "Registering").

* **E-mail**: :meth:`Registrar.mail_code` mails a verification code for an address
  and a device id; :meth:`Registrar.confirm_email` checks it and finds the groups of
  the address's domain (its verified ``Domain`` rows). One group (or a ``group`` the
  device named that is one of them) completes the registration at once; with several,
  the answer lists them with a *choice token* (random, 10 minutes, single-use, stored
  hashed like a code) that :meth:`Registrar.choose` takes with the group chosen. The
  verification code itself is used up by the confirmation.
* **Registration code**: :meth:`Registrar.with_code`, found by its keyed digest;
  deleted codes are refused for ever, expired ones refused, unknown ones 404.
* **ID token**: :meth:`Registrar.with_id_token`, checked by
  :mod:`mpg.server.idtoken`; the group comes from the issuer's tenant mapping, the
  address is kept only when its domain is a verified domain of that group. An ID token
  may be sent again, so several matching groups are answered with the list, and the
  device sends the token again naming one.

Mails and code checks are rate-limited per address, device id and client address
(:class:`mpg.server.verification.VerificationLimits`); registration codes (95 random
bits) and ID tokens (signed) cannot be guessed, so they are not.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import config, errors
from mpg.db import transactions
from mpg.server import idtoken, mail, tables, verification
from mpg.server.directory import codestore, devices
from mpg.wire import atrest

log = structlog.get_logger(__name__)

#: Seconds a choice token (several groups to choose from) is valid.
CHOICE_SECONDS: Final = 600.0
_CHOICE_PURPOSE: Final = "choice"
#: A device id: printable ASCII without ';' and ',' (the ReceiverList separators).
DEVICE_ID: Final = re.compile(r"[!-+\--:<-~]{1,100}")


def device_id(value: str) -> str:
    """``value`` if it is a device id a ReceiverList can name; ValidationError if not."""
    if not DEVICE_ID.fullmatch(value):
        raise errors.ValidationError(
            "device_id", "1 to 100 printable ASCII characters without spaces, ';' or ','"
        )
    if value[: len("group:")].lower() == "group:":
        raise errors.ValidationError("device_id", "may not begin with 'group:' (group addresses)")
    return value


def stored_domain(domain: str) -> str:
    """A mail domain as ``Domain`` stores it: lower-case, no trailing dot, IDNA;
    ValidationError on field ``email`` if it cannot be one."""
    plain = domain.strip().rstrip(".").lower()
    try:
        return plain if plain.isascii() else plain.encode("idna").decode("ascii")
    except UnicodeError:
        raise errors.ValidationError("email", f"not a domain name: {domain!r}") from None


def address(value: str) -> tuple[str, str]:
    """The normalised address (trimmed, lower-cased) and its domain as ``Domain`` stores
    it (:func:`stored_domain`); ValidationError on field ``email`` if it is not one."""
    plain = value.strip().lower()
    local, at, domain = plain.rpartition("@")
    bad = not plain.isprintable() or any(ch.isspace() or ch in "<>,;" for ch in plain)
    if not at or not local or not domain or bad:
        raise errors.ValidationError("email", "not an e-mail address (name@domain)")
    if len(plain) > mail.MAX_ADDRESS_CHARS:
        raise errors.ValidationError("email", f"longer than {mail.MAX_ADDRESS_CHARS} characters")
    return plain, stored_domain(domain)


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """What the device says about itself when it registers."""

    device_id: str
    platform: str = ""
    app_version: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """Several groups fit: the device chooses one (with the token, for e-mail)."""

    groups: tuple[devices.Group, ...]
    token: str = ""
    expires_in: int = 0


Outcome = devices.Registration | Choice


class Registrar:
    """The three registrations over the directory's tables."""

    def __init__(
        self,
        *,
        engine: sa.Engine,
        keyring: atrest.Keyring,
        codes: codestore.CodeStore,
        device_store: devices.DeviceStore,
        limits: verification.VerificationLimits,
        settings: config.ServerSettings,
        mailer: mail.Mailer | None,
        verifier: Callable[[], idtoken.IdTokenVerifier | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._codes = codes
        self._devices = device_store
        self._limits = limits
        self._limits_lock = threading.Lock()
        self._settings = settings
        self._mailer = mailer
        self._verifier = verifier
        self._clock = clock

    # ------------------------------------------------------------ e-mail

    def _allow(self, kind: str, email: str, device: str, client: str) -> None:
        # VerificationLimits is not thread-safe; sync routes run in a threadpool.
        with self._limits_lock:
            check = self._limits.allow_mail if kind == "mail" else self._limits.allow_check
            decision = check(address=email, device_id=device, client=client)
        if not decision.allowed:
            raise errors.Refused(
                429, "rate_limited", decision.reason, retry_after=decision.retry_after
            )

    @staticmethod
    def _subject(email: str, device: str) -> str:
        return f"{email}\0{device}"

    def mail_code(self, email: str, device: Device, client: str) -> int:
        """Mail a verification code for ``email`` and the device; seconds it is valid."""
        plain, domain = address(email)
        device_id(device.device_id)
        if self._mailer is None:
            raise errors.Refused(
                404, "mail_off", "registration by e-mail is off: the server has no mail server"
            )
        self._allow("mail", plain, device.device_id, client)
        with transactions.begin(self._engine, "issuing a verification code") as conn:
            if not devices.verified_groups(conn, domain):
                raise errors.Refused(
                    404, "domain_not_registered", f"{domain} is not a registered domain"
                )
            code = self._codes.issue(conn, "device", self._subject(plain, device.device_id))
        lifetime = self._codes.policy.lifetime
        self._mailer.send(
            mail.verification_message(
                sender=self._settings.mail_from,
                to=plain,
                code=code,
                valid_for=dt.timedelta(seconds=lifetime),
            )
        )
        log.info("device_code_mailed", domain=domain)
        return int(lifetime)

    def confirm_email(
        self, email: str, device: Device, code: str, group: str | None, client: str
    ) -> Outcome:
        """Check the mailed code; register, or let the device choose among the groups."""
        plain, domain = address(email)
        device_id(device.device_id)
        self._allow("check", plain, device.device_id, client)
        with transactions.begin(self._engine, "checking a verification code") as conn:
            verdict = self._codes.check(
                conn, "device", self._subject(plain, device.device_id), code
            )
            if verdict.ok:
                groups = devices.groups_of(conn, devices.verified_groups(conn, domain))
                choosing = len(groups) > 1 and group not in {g.id for g in groups}
                token = self._choice_token(conn, plain, device.device_id) if choosing else ""
        if not verdict.ok:
            status = 400 if verdict.outcome is verification.Outcome.MALFORMED else 403
            raise errors.Refused(status, verdict.outcome.value, verdict.reason)
        return self._email_outcome(plain, domain, device, group, groups, token)

    def choose(self, email: str, device: Device, token: str, group: str, client: str) -> Outcome:
        """Complete an e-mail registration with the group chosen and the choice token."""
        plain, domain = address(email)
        device_id(device.device_id)
        self._allow("check", plain, device.device_id, client)
        with transactions.begin(self._engine, "using a choice token") as conn:
            self._use_choice(conn, plain, device.device_id, token)
            groups = devices.groups_of(conn, devices.verified_groups(conn, domain))
            if group not in {g.id for g in groups}:
                # Raised inside: the token stays unused for a right choice.
                raise errors.Refused(
                    404, "group_not_offered", f"{group!r} is not a group of {domain}"
                )
        return self._email_outcome(plain, domain, device, group, groups, "")

    def _email_outcome(
        self,
        email: str,
        domain: str,
        device: Device,
        group: str | None,
        groups: Sequence[devices.Group],
        token: str,
    ) -> Outcome:
        ids = [g.id for g in groups]
        if not ids:
            raise errors.Refused(
                404, "domain_not_registered", f"{domain} is no longer a registered domain"
            )
        chosen = ids[0] if len(ids) == 1 else group if group in ids else None
        if chosen is None:
            return Choice(tuple(groups), token, int(CHOICE_SECONDS))
        return self._devices.enrol(
            devices.Enrolment(
                device.device_id,
                chosen,
                "email",
                domain,
                device.platform,
                device.app_version,
                email,
            )
        )

    def _choice_token(self, conn: sa.Connection, email: str, device: str) -> str:
        secret = secrets.token_bytes(32)
        code_id = str(uuid.uuid4())
        conn.execute(
            tables.verification_code.insert().values(
                CodeId=code_id,
                Purpose=_CHOICE_PURPOSE,
                SubjectIndex=self._choice_subject(email, device)[0],
                CodeHash=self._choice_hash(secret),
                ExpiresAt=self._clock() + CHOICE_SECONDS,
                WrongTries=0,
                Used=False,
            )
        )
        return code_id + "." + base64.urlsafe_b64encode(secret).decode("ascii").rstrip("=")

    def _choice_subject(self, email: str, device: str) -> list[str]:
        value = f"{_CHOICE_PURPOSE}\0{email}\0{device}"
        return [i.hex() for i in self._keyring.blind_indexes("email", value)]

    def _choice_hash(self, secret: bytes) -> str:
        return hmac.new(self._codes.key, b"choice\0" + secret, hashlib.sha256).hexdigest()

    def _use_choice(self, conn: sa.Connection, email: str, device: str, token: str) -> None:
        code_id, _, text = token.partition(".")
        refused = errors.Refused(
            403, "choice_token_invalid", "not a choice token for this address and device"
        )
        try:
            secret = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            raise refused from None
        v = tables.verification_code.c
        row = conn.execute(
            sa.select(tables.verification_code).where(
                v.CodeId == code_id[:36],
                v.Purpose == _CHOICE_PURPOSE,
                v.SubjectIndex.in_(self._choice_subject(email, device)),
            )
        ).first()
        if row is None or not hmac.compare_digest(row.CodeHash, self._choice_hash(secret)):
            raise refused
        if row.Used:
            raise errors.Refused(403, "choice_token_used", "choice token already used")
        if self._clock() >= row.ExpiresAt:
            raise errors.Refused(
                410, "choice_token_expired", "choice token expired; confirm a new code"
            )
        conn.execute(
            tables.verification_code.update().where(v.CodeId == row.CodeId).values(Used=True)
        )

    # ------------------------------------------------------------ registration code

    def with_code(self, code: str, device: Device) -> devices.Registration:
        """Register with a registration code into its group."""
        device_id(device.device_id)
        index = verification.registration_code_digest(self._codes.key, code).hex()
        r = tables.registration_code.c
        with transactions.connect(self._engine, "reading a registration code") as conn:
            row = conn.execute(
                sa.select(r.CodeId, r.GroupId, r.ValidUntil, r.Deleted).where(r.CodeIndex == index)
            ).first()
        if row is None:
            raise errors.NotFound("no such registration code")
        if row.Deleted:
            raise errors.Refused(
                410, "registration_code_deleted", "this registration code was deleted"
            )
        if row.ValidUntil is not None and self._clock() >= row.ValidUntil:
            raise errors.Refused(
                410, "registration_code_expired", "this registration code has expired"
            )
        return self._devices.enrol(
            devices.Enrolment(
                device.device_id,
                row.GroupId,
                "code",
                row.CodeId,
                device.platform,
                device.app_version,
            )
        )

    # ------------------------------------------------------------ ID token

    def with_id_token(
        self, token: str, device: Device, nonce: str | None, group: str | None
    ) -> Outcome:
        """Register with an ID token into a group of its tenant's mapping."""
        device_id(device.device_id)
        verifier = self._verifier()
        if verifier is None:
            raise errors.Refused(
                404, "id_token_off", "registration by ID token is off: no issuer is configured"
            )

        def domain_is_verified(group_id: str, domain: str) -> bool:
            try:
                stored = stored_domain(domain)
            except errors.ValidationError:
                return False
            with transactions.connect(self._engine, "reading domains") as conn:
                return group_id in devices.verified_groups(conn, stored)

        try:
            verified = verifier.verify(token, domain_is_verified=domain_is_verified, nonce=nonce)
        except errors.IdTokenRefused as exc:
            raise errors.Refused(
                400 if exc.code == "malformed" else 403, exc.code, exc.detail
            ) from None
        except errors.KeySetUnavailable as exc:
            raise errors.Refused(503, "key_set_unavailable", str(exc)) from None
        with transactions.connect(self._engine, "reading groups") as conn:
            groups = devices.groups_of(conn, [m.group for m in verified.groups])
        matches = {m.group: m for m in verified.groups if m.group in {g.id for g in groups}}
        if not matches:
            raise errors.Refused(
                403, "unmapped_tenant", f"tenant {verified.tenant!r} maps to no existing group"
            )
        ids = list(matches)
        chosen = ids[0] if len(ids) == 1 else group if group in ids else None
        if chosen is None:
            return Choice(tuple(g for g in groups if g.id in matches))
        found = _token_address(matches[chosen].address)
        log.info("id_token_accepted", tenant=verified.tenant, group=chosen)
        return self._devices.enrol(
            devices.Enrolment(
                device.device_id,
                chosen,
                "idtoken",
                f"tenant:{verified.tenant}" if found is None else found[1],
                device.platform,
                device.app_version,
                None if found is None else found[0],
            )
        )


def _token_address(claimed: str | None) -> tuple[str, str] | None:
    """The address an ID token carries for the group, normalised, if it is one."""
    if claimed is None:
        return None
    try:
        return address(claimed)
    except errors.ValidationError:
        return None
