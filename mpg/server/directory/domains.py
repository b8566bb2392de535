"""Domains of message groups: ``Domain`` rows, one per (domain, group), proven by mail.

Registering a domain for a group stores it, unverified, with its region and the
address a verification code is mailed to (an address *at* that domain: whoever reads
its mail speaks for the domain). It becomes active (``Verified``) only when that code
is typed back. Until then it counts for nothing: a device registering by e-mail is
offered only groups whose row for its domain is verified. A domain may belong to
several groups, each proven on its own.

The code is one of the mailed verification codes (:mod:`codestore`, purpose
``domain``), bound to the subject ``"<domain>/<group>\\0<address>"``: it proves that
address for that row only. The mail goes out after the row and code are committed, so
a mail failure (503 ``mail_failed``) leaves a pending row that ``resend`` (or
registering again) mails a new code for. A wrong try is committed before it is
refused, so the code's five tries hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.message

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.server import audit, mail, tables, verification
from mpg.server.directory import codestore, groups, removal, rules
from mpg.wire import atrest

PURPOSE = "domain"
_ADDRESS_COLUMN = "VerifyAddressEnc"


@dataclasses.dataclass(frozen=True, slots=True)
class Domain:
    """A domain of a group as admins see it."""

    domain: str
    group_id: str
    region: str
    #: The address the verification code was (or is to be) mailed to.
    address: str
    verified: bool
    verified_at: str | None
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class Impact:
    """What removing a domain from a group would remove."""

    domain: str
    group_id: str
    devices: int


def row_key(domain: str, group_id: str) -> str:
    """The row key a Domain row's encrypted fields are bound to."""
    return f"{domain}/{group_id}"


def subject(domain: str, group_id: str, address: str) -> str:
    """What a domain's verification code proves: this address, for this row."""
    return f"{row_key(domain, group_id)}\0{address}"


def address_domain(address: str) -> str:
    """The domain of ``address`` as Domain rows hold it (ValidationError, field email)."""
    local, at, host = address.strip().rpartition("@")
    if not at or not local:
        raise errors.ValidationError("email", "not an e-mail address: user@domain expected")
    try:
        return rules.domain(host)
    except errors.ValidationError as exc:
        raise errors.ValidationError("email", exc.reason) from None


class DomainStore:
    """Domains in the server database; every change is audited with it."""

    def __init__(
        self,
        engine: sa.Engine,
        keyring: atrest.Keyring,
        codes: codestore.CodeStore,
        mailer: mail.Mailer | None,
        mail_from: str,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._codes = codes
        self._mailer = mailer
        self._mail_from = mail_from

    def register(
        self, domain: str, group_id: str, address: str, actor: str, *, region: str | None = None
    ) -> Domain:
        """Store ``domain`` for ``group_id`` unverified and mail a code to ``address``.

        Registering a pending domain again replaces its address and mails a new code; a
        verified one is a Conflict (remove it first). With no mail server configured the
        request is refused (404 ``mail_off``, as registration by e-mail is): nothing could
        prove the domain.
        """
        name = rules.domain(domain)
        if address_domain(address) != name:
            raise errors.ValidationError("email", f"the address must be one at {name}")
        chosen_region = None if region is None else rules.region(region)
        mailer = self._require_mailer()
        c = tables.domain.c

        def store() -> tuple[Domain, email.message.EmailMessage]:
            with transactions.begin(self._engine, "registering a domain") as conn:
                group = groups.require(conn, group_id)
                found = self._row(conn, name, group_id)
                if found is not None and found.Verified:
                    raise errors.Conflict(
                        f"{name} is already a verified domain of group {group_id}"
                    )
                values = {
                    "Region": group.region if chosen_region is None else chosen_region,
                    "VerifyAddressEnc": self._keyring.encrypt(
                        address.strip(),
                        atrest.Place("Domain", _ADDRESS_COLUMN, row_key(name, group_id)),
                    ),
                    "Verified": False,
                    "VerifiedAt": None,
                }
                if found is None:
                    conn.execute(
                        tables.domain.insert().values(
                            DomainName=name,
                            GroupId=group_id,
                            CreatedAt=timefmt.now_text("utc"),
                            **values,
                        )
                    )
                else:
                    conn.execute(
                        tables.domain.update()
                        .where(c.DomainName == name, c.GroupId == group_id)
                        .values(values)
                    )
                message = self._code_mail(conn, name, group_id, address.strip())
                audit.record(conn, actor, "domain.register", row_key(name, group_id))
                return self._domain(self._row(conn, name, group_id)), message

        # Two admins registering one domain for one group at once: the loser's insert
        # breaks the key, and run again it finds the winner's row.
        registered, message = transactions.retrying(store)
        mailer.send(message)
        return registered

    def resend(self, domain: str, group_id: str, actor: str) -> None:
        """Mail a new code for a pending domain (older codes stop working)."""
        mailer = self._require_mailer()
        with transactions.begin(self._engine, "mailing a new domain code") as conn:
            found = self._pending(conn, domain, group_id)
            message = self._code_mail(conn, found.domain, group_id, found.address)
            audit.record(conn, actor, "domain.resend", row_key(found.domain, group_id))
        mailer.send(message)

    def verify(self, domain: str, group_id: str, code: str, actor: str) -> Domain:
        """Confirm a pending domain with the code mailed for it; Refused naming why not."""
        c = tables.domain.c
        with transactions.begin(self._engine, "verifying a domain") as conn:
            found = self._pending(conn, domain, group_id)
            verdict = self._codes.check(
                conn, PURPOSE, subject(found.domain, group_id, found.address), code
            )
            if verdict.ok:
                conn.execute(
                    tables.domain.update()
                    .where(c.DomainName == found.domain, c.GroupId == group_id)
                    .values(Verified=True, VerifiedAt=timefmt.now_text("utc"))
                )
                audit.record(conn, actor, "domain.verify", row_key(found.domain, group_id))
                verified = self._domain(self._row(conn, found.domain, group_id))
        # Outside the transaction: a wrong try is counted even though it is refused.
        if not verdict.ok:
            # As for a device's code (registration.py): only a malformed one is the
            # request's fault; the others are refusals of a well-formed request.
            status = 400 if verdict.outcome is verification.Outcome.MALFORMED else 403
            raise errors.Refused(status, verdict.outcome.value, verdict.reason)
        return verified

    def all(self, group_id: str | None = None) -> list[Domain]:
        """Every domain row (of one group when given), by domain then group."""
        c = tables.domain.c
        query = sa.select(tables.domain).order_by(c.DomainName, c.GroupId)
        if group_id is not None:
            query = query.where(c.GroupId == group_id)
        with transactions.connect(self._engine, "listing domains") as conn:
            rows = conn.execute(query).all()
        return [self._domain(r) for r in rows]

    def get(self, domain: str, group_id: str) -> Domain:
        """One domain row; NotFound when there is none."""
        with transactions.connect(self._engine, "reading a domain") as conn:
            return self._require(conn, domain, group_id)

    def impact(self, domain: str, group_id: str) -> Impact:
        """What :meth:`remove` would remove now."""
        with transactions.connect(self._engine, "reading a domain's devices") as conn:
            found = self._require(conn, domain, group_id)
            accounts = removal.domain_accounts(conn, found.domain, group_id)
        return Impact(found.domain, group_id, len(accounts))

    def remove(self, domain: str, group_id: str, actor: str) -> Impact:
        """Remove the domain from the group with the devices registered through it there."""
        c = tables.domain.c
        with transactions.begin(self._engine, "removing a domain") as conn:
            found = self._require(conn, domain, group_id)
            removed = removal.remove(
                conn,
                removal.domain_accounts(conn, found.domain, group_id),
                f"its domain {found.domain} was removed from group {group_id} by {actor}",
            )
            conn.execute(
                tables.domain.delete().where(c.DomainName == found.domain, c.GroupId == group_id)
            )
            audit.record(
                conn,
                actor,
                "domain.remove",
                row_key(found.domain, group_id),
                f"{removed} devices removed",
            )
        return Impact(found.domain, group_id, removed)

    # --- helpers ----------------------------------------------------------------

    def _require_mailer(self) -> mail.Mailer:
        if self._mailer is None:
            raise errors.Refused(
                404,
                "mail_off",
                "no mail server is configured (server.mail_host): "
                "a domain's verification code cannot be sent",
            )
        return self._mailer

    def _code_mail(
        self, conn: sa.Connection, domain: str, group_id: str, address: str
    ) -> email.message.EmailMessage:
        code = self._codes.issue(conn, PURPOSE, subject(domain, group_id, address))
        return mail.verification_message(
            sender=self._mail_from,
            to=address,
            code=code,
            valid_for=dt.timedelta(seconds=self._codes.policy.lifetime),
        )

    def _row(
        self, conn: sa.Connection, domain: str, group_id: str
    ) -> sa.Row[tuple[object, ...]] | None:
        c = tables.domain.c
        return conn.execute(
            sa.select(tables.domain).where(c.DomainName == domain, c.GroupId == group_id)
        ).first()

    def _require(self, conn: sa.Connection, domain: str, group_id: str) -> Domain:
        name = rules.domain(domain)
        row = self._row(conn, name, group_id)
        if row is None:
            raise errors.NotFound(f"{name} is no domain of group {group_id}")
        return self._domain(row)

    def _pending(self, conn: sa.Connection, domain: str, group_id: str) -> Domain:
        found = self._require(conn, domain, group_id)
        if found.verified:
            raise errors.Conflict(f"{found.domain} is already verified for group {group_id}")
        return found

    def _domain(self, row: sa.Row[tuple[object, ...]] | None) -> Domain:
        assert row is not None  # read in the transaction that wrote it
        name, group_id = str(row.DomainName), str(row.GroupId)
        address = self._keyring.decrypt_text(
            row.VerifyAddressEnc,
            atrest.Place("Domain", _ADDRESS_COLUMN, row_key(name, group_id)),
        )
        return Domain(
            name,
            group_id,
            str(row.Region),
            address,
            bool(row.Verified),
            None if row.VerifiedAt is None else str(row.VerifiedAt),
            str(row.CreatedAt),
        )
