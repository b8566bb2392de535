"""Rows of the alerting directory written straight into the server's tables, for tests
of registration and addressing that need groups, categories, domains and codes
without going through the admin API."""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from mpg import timefmt
from mpg.db import transactions
from mpg.server import tables, verification
from mpg.wire import atrest


def add_group(
    engine: sa.Engine, group_id: str, *, name: str = "", region: str = "", file_url: str = ""
) -> None:
    """A message group."""
    with transactions.begin(engine, "test group") as conn:
        conn.execute(
            tables.message_group.insert().values(
                GroupId=group_id,
                Name=name or group_id.title(),
                Region=region,
                FileUrl=file_url,
                CreatedAt=timefmt.now_text("utc"),
            )
        )


def add_category(
    engine: sa.Engine,
    group_id: str,
    category_id: str,
    *,
    preselected: bool = False,
    created_at: float | None = None,
) -> None:
    """A category of a group (``created_at``: Unix time, default now)."""
    with transactions.begin(engine, "test category") as conn:
        conn.execute(
            tables.category.insert().values(
                GroupId=group_id,
                CategoryId=category_id,
                Name=category_id.title(),
                Preselected=preselected,
                CreatedAt=time.time() if created_at is None else created_at,
            )
        )


def add_domain(
    engine: sa.Engine,
    keyring: atrest.Keyring,
    domain: str,
    group_id: str,
    *,
    verified: bool = True,
) -> None:
    """A domain of a group (verified unless told)."""
    with transactions.begin(engine, "test domain") as conn:
        conn.execute(
            tables.domain.insert().values(
                DomainName=domain,
                GroupId=group_id,
                Region="",
                VerifyAddressEnc=keyring.encrypt(
                    f"admin@{domain}",
                    atrest.Place("Domain", "VerifyAddressEnc", f"{domain}/{group_id}"),
                ),
                Verified=verified,
                CreatedAt=timefmt.now_text("utc"),
            )
        )


def add_code(
    engine: sa.Engine,
    code_key: bytes,
    group_id: str,
    *,
    valid_until: float | None = None,
    deleted: bool = False,
) -> tuple[str, str]:
    """A registration code of a group: the code as shown and its CodeId."""
    code = verification.new_registration_code()
    code_id = str(uuid.uuid4())
    with transactions.begin(engine, "test registration code") as conn:
        conn.execute(
            tables.registration_code.insert().values(
                CodeId=code_id,
                CodeIndex=verification.registration_code_digest(code_key, code).hex(),
                Name="test code",
                GroupId=group_id,
                ValidUntil=valid_until,
                Deleted=deleted,
                CreatedAt=timefmt.now_text("utc"),
            )
        )
    return code, code_id
