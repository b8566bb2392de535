"""The one place that removes devices (docs/devices.md, "Removing devices").

A removed device loses its ``Device`` row and its ``Subscription`` rows, and its
``Account`` is disabled rather than deleted: the sealed protocol refuses it from then
on, while the messages it sent and received keep naming an account that existed
(queued entries stay until housekeeping ends them). Which devices go:

* a domain removed from a group: those registered through that domain (by e-mail, or
  by an ID token carrying an address of it) **into that group only**; the domain's
  devices in other groups stay;
* a registration code deleted: every device registered with it, whatever its group;
* one device by its account.

Each ``..._accounts`` function says which devices a removal would take (the impact
shown before it); :func:`remove` takes them, in the caller's transaction, so the
removal, the change that caused it and its audit entry commit together. It keeps a
``DeviceRemoval`` row per device (when, why, the group and the device id's index), so
that ``mpg server explain`` can name a removal as the reason a message never arrived.
"""

from __future__ import annotations

import collections.abc
import time
from typing import Final

import sqlalchemy as sa

from mpg.db import transactions
from mpg.server import tables

#: The ways of registering that record a mail domain in ``Device.ViaRef``.
DOMAIN_VIAS: Final = ("email", "idtoken")


def domain_accounts(conn: sa.Connection, domain: str, group_id: str) -> list[str]:
    """Devices registered through ``domain`` into ``group_id`` (by e-mail or ID token)."""
    d = tables.device.c
    return _accounts(
        conn, sa.and_(d.Via.in_(DOMAIN_VIAS), d.ViaRef == domain, d.GroupId == group_id)
    )


def code_accounts(conn: sa.Connection, code_id: str) -> list[str]:
    """Devices registered with the registration code ``code_id``."""
    d = tables.device.c
    return _accounts(conn, sa.and_(d.Via == "code", d.ViaRef == code_id))


def _accounts(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[str]:
    d = tables.device.c
    return [
        str(a)
        for a in conn.execute(sa.select(d.AccountId).where(where).order_by(d.AccountId)).scalars()
    ]


def remove(
    conn: sa.Connection,
    accounts: collections.abc.Sequence[str],
    reason: str = "removed by an administrator",
) -> int:
    """Remove these devices: rows and subscriptions deleted, accounts disabled, and
    each removal recorded with ``reason``.

    Returns how many Device rows were deleted (an account that is no device counts 0).
    """
    removed = 0
    d = tables.device.c
    now = time.time()
    for part in transactions.chunks(list(accounts)):
        gone = conn.execute(
            sa.select(d.AccountId, d.DeviceIndex, d.GroupId).where(d.AccountId.in_(part))
        ).all()
        if gone:
            conn.execute(
                tables.device_removal.delete().where(
                    tables.device_removal.c.AccountId.in_([g.AccountId for g in gone])
                )
            )
            conn.execute(
                tables.device_removal.insert(),
                [
                    {
                        "AccountId": g.AccountId,
                        "DeviceIndex": g.DeviceIndex,
                        "GroupId": g.GroupId,
                        "RemovedAt": now,
                        "Reason": reason[:200],
                    }
                    for g in gone
                ],
            )
        conn.execute(tables.subscription.delete().where(tables.subscription.c.AccountId.in_(part)))
        removed += conn.execute(
            tables.device.delete().where(tables.device.c.AccountId.in_(part))
        ).rowcount
        conn.execute(
            tables.account.update()
            .where(tables.account.c.AccountId.in_(part))
            .values(Disabled=True)
        )
    return removed
