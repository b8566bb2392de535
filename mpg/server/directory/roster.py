"""The admin's view of registered devices: list, show, remove.

Registration writes the ``Device`` rows (:mod:`mpg.server.directory.devices`); this
module only reads them for admins, decrypting what an admin needs to tell devices
apart (the device id) and nothing more (no push token, no address), and removes one
device through :mod:`removal`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import time

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import transactions
from mpg.server import audit, tables
from mpg.server.directory import devices, removal
from mpg.wire import atrest

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceView:
    """A registered device as admins see it."""

    account: str
    #: The id the device reported; None when no configured data key opens it.
    device_id: str | None
    group_id: str
    via: str
    via_ref: str
    platform: str
    app_version: str
    #: Seconds since the device last set its push token; None: it never did.
    push_token_age: float | None
    last_seen: float | None
    last_start: float | None
    registered_at: float
    subscriptions: tuple[str, ...]


class Roster:
    """Registered devices, for admins."""

    def __init__(
        self,
        engine: sa.Engine,
        keyring: atrest.Keyring,
        *,
        clock: collections.abc.Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._clock = clock

    def all(
        self, group_id: str | None = None, *, limit: int = 1000, after: str = ""
    ) -> list[DeviceView]:
        """Devices by account (of one group when given), ``limit`` of them after ``after``."""
        d = tables.device.c
        query = (
            sa.select(tables.device).where(d.AccountId > after).order_by(d.AccountId).limit(limit)
        )
        if group_id is not None:
            query = query.where(d.GroupId == group_id)
        with transactions.connect(self._engine, "listing devices") as conn:
            rows = conn.execute(query).all()
            subscribed = _subscriptions(conn, [str(r.AccountId) for r in rows])
        return [self._view(r, subscribed.get(str(r.AccountId), ())) for r in rows]

    def get(self, account: str) -> DeviceView:
        """One device by its account; NotFound when no device has it."""
        with transactions.connect(self._engine, "reading a device") as conn:
            row = conn.execute(
                sa.select(tables.device).where(tables.device.c.AccountId == account)
            ).first()
            if row is None:
                raise errors.NotFound(f"no device {account}")
            subscribed = _subscriptions(conn, [account])
        return self._view(row, subscribed.get(account, ()))

    def remove(self, account: str, actor: str) -> None:
        """Remove one device (rows, subscriptions; its account disabled)."""
        with transactions.begin(self._engine, "removing a device") as conn:
            if removal.remove(conn, [account], f"removed by {actor}") == 0:
                raise errors.NotFound(f"no device {account}")
            audit.record(conn, actor, "device.remove", account)

    def _view(self, row: sa.Row[tuple[object, ...]], subscriptions: tuple[str, ...]) -> DeviceView:
        account = str(row.AccountId)
        pushed = row.PushTokenAt
        return DeviceView(
            account,
            self._device_id(account, row.DeviceIdEnc),
            str(row.GroupId),
            str(row.Via),
            str(row.ViaRef),
            str(row.Platform),
            str(row.AppVersion),
            None if pushed is None else max(0.0, self._clock() - float(pushed)),
            None if row.LastSeen is None else float(row.LastSeen),
            None if row.LastStart is None else float(row.LastStart),
            float(row.RegisteredAt),
            subscriptions,
        )

    def _device_id(self, account: str, blob: bytes) -> str | None:
        try:
            return self._keyring.decrypt_text(blob, devices.place("DeviceIdEnc", account))
        except errors.AtRestError as exc:
            # A removed data key must not hide every other device from the admin.
            log.warning("device_id_unreadable", account=account, reason=str(exc))
            return None


def _subscriptions(conn: sa.Connection, accounts: list[str]) -> dict[str, tuple[str, ...]]:
    s = tables.subscription.c
    found: dict[str, list[str]] = {}
    for part in transactions.chunks(accounts):
        rows = conn.execute(
            sa.select(s.AccountId, s.CategoryId)
            .where(s.AccountId.in_(part))
            .order_by(s.AccountId, s.CategoryId)
        ).all()
        for account, category in rows:
            found.setdefault(str(account), []).append(str(category))
    return {a: tuple(c) for a, c in found.items()}
