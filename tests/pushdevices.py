"""Devices, groups and subscriptions written straight into the server's tables.

Registration (issue 11) fills these tables through its API; the push tests need only
the rows, made here the way docs/devices.md and the issue 11 conventions make them
(AccountId ``dev-<32 hex>``, the token encrypted at ``Place("Device", "PushTokenEnc",
AccountId)``, the device id found by blind index).
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from mpg import timefmt
from mpg.server import accounts, tables
from mpg.wire import atrest


def add_group(engine: sa.Engine, group: str, *categories: str) -> None:
    """A message group and its categories."""
    with engine.begin() as conn:
        conn.execute(
            tables.message_group.insert(),
            {"GroupId": group, "Name": group.title(), "CreatedAt": timefmt.now_text()},
        )
        for category in categories:
            conn.execute(
                tables.category.insert(),
                {
                    "GroupId": group,
                    "CategoryId": category,
                    "Name": category.title(),
                    "CreatedAt": time.time(),
                },
            )


def add_device(
    engine: sa.Engine,
    store: accounts.AccountStore,
    keyring: atrest.Keyring,
    group: str,
    token: str | None,
    *,
    platform: str = "android",
    categories: tuple[str, ...] = (),
    token_at: float | None = None,
    device_id: str | None = None,
) -> str:
    """A registered device of ``group`` with push ``token`` (and ``device_id``, the id
    the phone reports; a random one if not given); its AccountId."""
    account = "dev-" + uuid.uuid4().hex
    store.add(account, "device")
    device_id = device_id or uuid.uuid4().hex
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            tables.device.insert(),
            {
                "AccountId": account,
                "DeviceIndex": keyring.blind_index("device", device_id).hex(),
                "DeviceIdEnc": keyring.encrypt(
                    device_id, atrest.Place("Device", "DeviceIdEnc", account)
                ),
                "GroupId": group,
                "Via": "code",
                "ViaRef": str(uuid.uuid4()),
                "Platform": platform,
                "PushTokenEnc": None
                if token is None
                else keyring.encrypt(token, atrest.Place("Device", "PushTokenEnc", account)),
                "PushTokenAt": (now if token_at is None else token_at) if token else None,
                "RegisteredAt": now,
            },
        )
        for category in categories:
            conn.execute(
                tables.subscription.insert(),
                {
                    "AccountId": account,
                    "GroupId": group,
                    "CategoryId": category,
                    "SubscribedAt": now,
                },
            )
    return account
