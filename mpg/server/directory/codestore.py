"""Mailed verification codes kept in the database (``VerificationCode``).

The rules are :mod:`mpg.server.verification`'s (pure); this module stores what it
says to store: a code's keyed hash bound to its subject, its expiry, its wrong tries
and whether it was used. A subject is what the code proves, e.g. an address and a
device id; rows are found by the subject's blind index (no address in clear) and
checked against the newest code issued for it, so asking for a new code retires the
older ones. The hash key is derived from the master key: a stolen table alone does not
reveal codes, and every server process sharing the database derives the same key.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Final

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpg.server import tables, verification
from mpg.wire import atrest

_INFO: Final = b"mpg verification codes v1"
PURPOSES: Final = ("device", "domain")


def code_key(master_key: bytes) -> bytes:
    """The key verification codes are hashed under (HKDF of the master key)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


@dataclasses.dataclass(frozen=True, slots=True)
class CodeStore:
    """Issues and checks codes; every method works in the caller's transaction."""

    key: bytes = dataclasses.field(repr=False)
    keyring: atrest.Keyring
    policy: verification.CodePolicy = dataclasses.field(default_factory=verification.CodePolicy)

    def _subject_index(self, purpose: str, subject: str) -> str:
        # The email kind normalises case; the purpose keeps a domain's and a
        # device's codes for the same address apart.
        return self.keyring.blind_index("email", f"{purpose}\0{subject}").hex()

    def issue(
        self, conn: sa.Connection, purpose: str, subject: str, *, now: float | None = None
    ) -> str:
        """A new code for ``subject``; older unused codes for it stop working."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}")
        now = time.time() if now is None else now
        code, record = verification.issue(subject, key=self.key, now=now, policy=self.policy)
        c = tables.verification_code.c
        index = self._subject_index(purpose, subject)
        conn.execute(
            tables.verification_code.update()
            .where(c.Purpose == purpose, c.SubjectIndex == index, c.Used == sa.false())
            .values(Used=True)
        )
        conn.execute(
            tables.verification_code.insert().values(
                CodeId=str(uuid.uuid4()),
                Purpose=purpose,
                SubjectIndex=index,
                CodeHash=record.digest.hex(),
                ExpiresAt=record.expires_at,
                WrongTries=0,
                Used=False,
            )
        )
        return code

    def check(
        self,
        conn: sa.Connection,
        purpose: str,
        subject: str,
        offered: str,
        *,
        now: float | None = None,
    ) -> verification.Verdict:
        """Check ``offered`` against the newest code for ``subject``; the result is stored.

        With no code issued the verdict is EXPIRED ("ask for a new code"): the caller
        learns nothing about whether one ever existed.
        """
        now = time.time() if now is None else now
        c = tables.verification_code.c
        row = conn.execute(
            sa.select(tables.verification_code)
            .where(c.Purpose == purpose, c.SubjectIndex.in_(self._indexes(purpose, subject)))
            .order_by(c.ExpiresAt.desc())
            .limit(1)
        ).first()
        if row is None:
            return verification.Verdict(
                verification.Outcome.EXPIRED,
                "code expired; ask for a new code",
                verification.IssuedCode(b"", expires_at=0.0),
            )
        record = verification.IssuedCode(
            bytes.fromhex(row.CodeHash), row.ExpiresAt, row.WrongTries, row.Used
        )
        verdict = verification.check(
            record, subject, offered, key=self.key, now=now, policy=self.policy
        )
        if verdict.record != record:
            conn.execute(
                tables.verification_code.update()
                .where(c.CodeId == row.CodeId)
                .values(WrongTries=verdict.record.wrong_attempts, Used=verdict.record.used)
            )
        return verdict

    def _indexes(self, purpose: str, subject: str) -> list[str]:
        return [i.hex() for i in self.keyring.blind_indexes("email", f"{purpose}\0{subject}")]

    def purge(self, conn: sa.Connection, *, now: float | None = None) -> int:
        """Remove expired codes (nothing about them is needed after); return how many."""
        now = time.time() if now is None else now
        c = tables.verification_code.c
        return conn.execute(tables.verification_code.delete().where(c.ExpiresAt < now)).rowcount
