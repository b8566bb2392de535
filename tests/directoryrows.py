"""Directory rows (Device, Domain) written as issue 11's conventions say, for tests of
what is stored at rest: encrypted fields bound to (table, column, row key), blind
indexes as hex (docs/devices.md)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from mpg import timefmt
from mpg.server import tables
from mpg.wire import atrest


def insert_device(
    conn: sa.Connection,
    keyring: atrest.Keyring,
    *,
    account_id: str,
    device_id: str,
    email: str,
    name: str,
    push_token: str,
    group: str = "north",
) -> None:
    """A Device registered by e-mail: its id, address, name and push token encrypted
    (row key: its AccountId), its id and address findable by blind index."""

    def seal(column: str, value: str) -> bytes:
        return keyring.encrypt(value, atrest.Place("Device", column, account_id))

    now = time.time()
    conn.execute(
        tables.device.insert().values(
            AccountId=account_id,
            DeviceIndex=keyring.blind_index("device", device_id).hex(),
            DeviceIdEnc=seal("DeviceIdEnc", device_id),
            GroupId=group,
            Via="email",
            ViaRef=email.rpartition("@")[2].lower(),
            EmailEnc=seal("EmailEnc", email),
            EmailIndex=keyring.blind_index("email", email).hex(),
            NameEnc=seal("NameEnc", name),
            Platform="android",
            PushTokenEnc=seal("PushTokenEnc", push_token),
            PushTokenAt=now,
            AppVersion="1.0",
            RegisteredAt=now,
        )
    )


def insert_domain(
    conn: sa.Connection, keyring: atrest.Keyring, domain: str, group: str, address: str
) -> None:
    """A Domain of a group whose verification code went to ``address`` (encrypted,
    row key "domain/group")."""
    conn.execute(
        tables.domain.insert().values(
            DomainName=domain,
            GroupId=group,
            Region="",
            VerifyAddressEnc=keyring.encrypt(
                address, atrest.Place("Domain", "VerifyAddressEnc", f"{domain}/{group}")
            ),
            Verified=False,
            CreatedAt=timefmt.now_text("utc"),
        )
    )
