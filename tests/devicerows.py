"""Device rows as registration leaves them, written directly for tests of the admin side
(groups, domains, codes, removal) that must not depend on how devices register."""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from mpg import timefmt
from mpg.db import transactions
from mpg.server import tables
from mpg.wire import atrest


def add_device(
    engine: sa.Engine,
    keyring: atrest.Keyring,
    *,
    group: str,
    via: str,
    via_ref: str,
    device_id: str | None = None,
    subscriptions: tuple[str, ...] = (),
    push_token_at: float | None = None,
) -> str:
    """A registered device (Account, Device and Subscription rows); returns its account."""
    account = "dev-" + uuid.uuid4().hex
    device_id = device_id or f"serial-{uuid.uuid4().hex[:8]}"
    now = time.time()
    with transactions.begin(engine, "adding a test device") as conn:
        conn.execute(
            tables.account.insert().values(
                AccountId=account, Kind="device", Disabled=False, CreatedAt=timefmt.now_text("utc")
            )
        )
        conn.execute(
            tables.device.insert().values(
                AccountId=account,
                DeviceIndex=keyring.blind_index("device", device_id).hex(),
                DeviceIdEnc=keyring.encrypt(
                    device_id, atrest.Place("Device", "DeviceIdEnc", account)
                ),
                GroupId=group,
                Via=via,
                ViaRef=via_ref,
                Platform="android",
                PushTokenAt=push_token_at,
                AppVersion="1.0.0",
                RegisteredAt=now,
            )
        )
        for category in subscriptions:
            conn.execute(
                tables.subscription.insert().values(
                    AccountId=account, GroupId=group, CategoryId=category, SubscribedAt=now
                )
            )
    return account


def devices(engine: sa.Engine) -> set[str]:
    """The accounts that have a Device row."""
    with transactions.connect(engine, "reading test devices") as conn:
        return {str(a) for a in conn.execute(sa.select(tables.device.c.AccountId)).scalars()}


def disabled_accounts(engine: sa.Engine) -> set[str]:
    """The accounts that are disabled."""
    c = tables.account.c
    with transactions.connect(engine, "reading test accounts") as conn:
        return {str(a) for a in conn.execute(sa.select(c.AccountId).where(c.Disabled)).scalars()}


def subscriptions(engine: sa.Engine) -> set[tuple[str, str]]:
    """(account, category) of every subscription."""
    s = tables.subscription.c
    with transactions.connect(engine, "reading test subscriptions") as conn:
        return {(str(a), str(c)) for a, c in conn.execute(sa.select(s.AccountId, s.CategoryId))}
