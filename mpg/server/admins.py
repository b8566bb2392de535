"""Admin credentials: who may call the admin API, with which role.

A credential is a random 256-bit secret handed out once (``mpg server admin add``) as
the bearer token ``mpga.<credential id>.<secret>``; the server keeps only the secret's
SHA-256. A slow password hash (argon2) protects low-entropy passwords against a stolen
table; a 256-bit random secret cannot be guessed from its SHA-256, and a fast hash
keeps every API call cheap. The comparison is in constant time.

Roles are ordered: ``viewer`` reads, ``operator`` also acts on messages and devices,
``admin`` also changes groups, domains, codes and credentials.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import uuid
from typing import Final

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.server import audit, tables

ROLES: Final = ("viewer", "operator", "admin")
TOKEN_PREFIX: Final = "mpga"  # noqa: S105 (a prefix, not a secret)
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
_SECRET_BYTES: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class Admin:
    """An authenticated admin (or a listed credential)."""

    credential_id: str
    name: str
    role: str
    disabled: bool = False
    created_at: str = ""

    def may(self, role: str) -> bool:
        """True when this admin's role is ``role`` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _digest(secret: str) -> str:
    # UTF-8, not ASCII: a token with other characters is a wrong one (401), not a 500.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_token(token: str) -> tuple[str, str]:
    """``mpga.<id>.<secret>`` -> (id, secret); UnknownKey when it is not one."""
    prefix, _, rest = token.strip().partition(".")
    credential_id, _, secret = rest.partition(".")
    if prefix != TOKEN_PREFIX or not credential_id or not secret or len(token) > 200:
        raise errors.UnknownKey("not an admin token")
    return credential_id, secret


class AdminStore:
    """Admin credentials in the server database."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def add(self, name: str, role: str, actor: str) -> tuple[Admin, str]:
        """Create a credential; return it and its token (shown once, never stored).

        ``actor`` (who does it) goes into the audit log in the same transaction.
        """
        if not _NAME.fullmatch(name):
            raise errors.ValidationError(
                "name", "1-100 characters of letters, digits and _ . @ -, starting with one"
            )
        if role not in ROLES:
            raise errors.ValidationError("role", f"must be one of {', '.join(ROLES)}")
        credential_id = str(uuid.uuid4())
        secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).decode().rstrip("=")
        now = timefmt.now_text("utc")
        c = tables.admin_credential.c
        with transactions.begin(self._engine, "adding an admin credential") as conn:
            if conn.execute(sa.select(c.Name).where(c.Name == name)).first() is not None:
                raise errors.Conflict(f"admin {name} already exists")
            conn.execute(
                tables.admin_credential.insert().values(
                    CredentialId=credential_id,
                    Name=name,
                    Role=role,
                    SecretHash=_digest(secret),
                    Disabled=False,
                    CreatedAt=now,
                )
            )
            audit.record(conn, actor, "admin.create", name, f"role {role}")
        admin = Admin(credential_id, name, role, created_at=now)
        return admin, f"{TOKEN_PREFIX}.{credential_id}.{secret}"

    def authenticate(self, token: str) -> Admin:
        """The admin a bearer token belongs to; UnknownKey (401) or AccountDisabled (403)."""
        credential_id, secret = parse_token(token)
        c = tables.admin_credential.c
        with transactions.connect(self._engine, "reading an admin credential") as conn:
            row = conn.execute(
                sa.select(c.Name, c.Role, c.SecretHash, c.Disabled).where(
                    c.CredentialId == credential_id
                )
            ).first()
        if row is None or not hmac.compare_digest(row.SecretHash, _digest(secret)):
            raise errors.UnknownKey("unknown admin token")
        if row.Disabled:
            raise errors.AccountDisabled(f"admin {row.Name} is disabled")
        return Admin(credential_id, row.Name, row.Role)

    def all(self) -> list[Admin]:
        """Every credential, by name."""
        c = tables.admin_credential.c
        with transactions.connect(self._engine, "listing admin credentials") as conn:
            rows = conn.execute(sa.select(tables.admin_credential).order_by(c.Name)).all()
        return [Admin(r.CredentialId, r.Name, r.Role, r.Disabled, r.CreatedAt) for r in rows]

    def disable(self, name: str, actor: str) -> None:
        """Disable the credential named ``name`` (NotFound if there is none)."""
        c = tables.admin_credential.c
        with transactions.begin(self._engine, "disabling an admin credential") as conn:
            done = conn.execute(
                tables.admin_credential.update().where(c.Name == name).values(Disabled=True)
            )
            if done.rowcount == 0:
                raise errors.NotFound(f"no admin {name}")
            audit.record(conn, actor, "admin.disable", name)
