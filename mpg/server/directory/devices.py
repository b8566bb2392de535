"""Registered devices: their records, credentials, subscriptions and read reports.

A completed registration (:mod:`mpg.server.directory.registration` decides which
group) becomes a ``Device`` row and a device ``Account`` made with the
:class:`~mpg.server.accounts.AccountStore`, whose key is the device's credential for
the sealed protocol (and, through :func:`mpg.server.api.deps.device_token`, for the
device API). The device id is stored encrypted and found by its blind index; the
e-mail address and the push token are stored encrypted (row key: the AccountId).

Registering again with the same device id keeps the AccountId (messages already
queued for it stay its own), issues a new key and disables the old ones, and replaces
the row: group, way of registration and subscriptions start afresh (the new group's
preselected categories).

The directory's half of addressing (:meth:`DeviceStore.addresser`): the device ids
and group or category addresses of a submit, looked up in the submit's transaction
(the rules are :mod:`mpg.server.addressing`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import transactions
from mpg.server import accounts, addressing, rows, tables
from mpg.server.rows import EventKind
from mpg.wire import atrest, keys, model

log = structlog.get_logger(__name__)

#: Prefix of the accounts registration makes ("dev-" and 32 hex digits).
ACCOUNT_PREFIX: Final = "dev-"
VIAS: Final = ("email", "code", "idtoken")
#: Least seconds between two writes of a device's LastSeen.
SEEN_INTERVAL: Final = 60.0
#: Devices whose last write of LastSeen is remembered (about 100 bytes each).
MAX_SEEN: Final = 100_000


def place(column: str, account: str) -> atrest.Place:
    """Where an encrypted ``Device`` column of ``account``'s row lives."""
    return atrest.Place("Device", column, account)


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """A message group as devices are told it."""

    id: str
    name: str
    region: str
    file_url: str


@dataclasses.dataclass(frozen=True, slots=True)
class Category:
    """A category of the device's group and whether the device is subscribed."""

    id: str
    name: str
    preselected: bool
    subscribed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Enrolment:
    """What a registration decided: the device, its group and how it got there."""

    device_id: str
    group: str
    via: str
    via_ref: str
    platform: str = ""
    app_version: str = ""
    email: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """A completed registration: the credential is shown to the device once."""

    account: str
    credential: keys.Credential
    group: Group
    categories: tuple[Category, ...]
    replaced: bool


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as it sees itself."""

    account: str
    device_id: str
    group: Group
    via: str
    platform: str
    app_version: str
    has_push_token: bool
    registered_at: float
    last_start: float | None
    last_seen: float | None
    categories: tuple[Category, ...]


def group_of(conn: sa.Connection, group_id: str) -> Group:
    """The group ``group_id``; NotFound when there is none."""
    g = tables.message_group.c
    row = conn.execute(sa.select(tables.message_group).where(g.GroupId == group_id)).first()
    if row is None:
        raise errors.NotFound(f"no group {group_id}")
    return Group(row.GroupId, row.Name, row.Region, row.FileUrl)


def groups_of(conn: sa.Connection, group_ids: Iterable[str]) -> list[Group]:
    """The groups among ``group_ids`` that exist, in the order given."""
    found = []
    for group_id in dict.fromkeys(group_ids):
        try:
            found.append(group_of(conn, group_id))
        except errors.NotFound:
            continue
    return found


def verified_groups(conn: sa.Connection, domain: str) -> list[str]:
    """The groups ``domain`` is a verified domain of, by id."""
    d = tables.domain.c
    query = (
        sa.select(d.GroupId)
        .where(d.DomainName == domain, d.Verified == sa.true())
        .order_by(d.GroupId)
    )
    return [str(g) for g in conn.execute(query).scalars()]


class DeviceStore:
    """Device records, for registration and for the devices themselves."""

    def __init__(
        self,
        engine: sa.Engine,
        keyring: atrest.Keyring,
        account_store: accounts.AccountStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._accounts = account_store
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()

    # ------------------------------------------------------------ registration

    def _indexes(self, device_id: str) -> list[str]:
        return [i.hex() for i in self._keyring.blind_indexes("device", device_id)]

    def account_of(self, conn: sa.Connection, device_id: str) -> str | None:
        """The account registered with ``device_id``, if any."""
        d = tables.device.c
        found = conn.execute(
            sa.select(d.AccountId).where(d.DeviceIndex.in_(self._indexes(device_id)))
        ).first()
        return None if found is None else str(found.AccountId)

    def enrol(self, enrolment: Enrolment) -> Registration:
        """Register a device (or register it again); its credential and group.

        The account and its key are made first (the AccountStore's own transaction),
        then the device row and its subscriptions in one transaction. A registration
        of the same device id racing this one is a Conflict (try again).
        """
        with transactions.connect(self._engine, "reading a device") as conn:
            group_of(conn, enrolment.group)
            existing = self.account_of(conn, enrolment.device_id)
        if existing is None:
            account, credential = self._accounts.add(ACCOUNT_PREFIX + uuid.uuid4().hex, "device")
        else:
            account = existing
            old = self._accounts.get(account)
            if old is None or old.disabled:
                # An admin's decision: registering again does not undo it.
                raise errors.Forbidden(f"device {account} is disabled; ask an admin")
            _, credential = self._accounts.rotate_key(account)
            for key in old.keys:
                if not key.disabled:
                    self._accounts.disable_key(account, key.key_id)
        try:
            with transactions.begin(self._engine, "registering a device") as conn:
                self._write(conn, account, enrolment, replace=existing is not None)
                group = group_of(conn, enrolment.group)
                categories = self._categories(conn, account, enrolment.group)
        except errors.StorageError as exc:
            if existing is None:
                # No device row points at the new account: it must not stay usable.
                self._accounts.disable(account)
                if transactions.lost_race(exc):
                    raise errors.Conflict(
                        "this device id is being registered by another request; try again"
                    ) from None
            raise
        log.info(
            "device_registered",
            account=account,
            group=enrolment.group,
            via=enrolment.via,
            replaced=existing is not None,
        )
        return Registration(account, credential, group, categories, existing is not None)

    def _write(
        self, conn: sa.Connection, account: str, enrolment: Enrolment, *, replace: bool
    ) -> None:
        now = self._clock()
        encrypt = self._keyring.encrypt
        email = enrolment.email
        values = {
            "AccountId": account,
            "DeviceIndex": self._keyring.blind_index("device", enrolment.device_id).hex(),
            "DeviceIdEnc": encrypt(enrolment.device_id, place("DeviceIdEnc", account)),
            "GroupId": enrolment.group,
            "Via": enrolment.via,
            "ViaRef": enrolment.via_ref,
            "EmailEnc": None if email is None else encrypt(email, place("EmailEnc", account)),
            "EmailIndex": None
            if email is None
            else self._keyring.blind_index("email", email).hex(),
            "NameEnc": None,
            "Platform": enrolment.platform,
            "PushTokenEnc": None,
            "PushTokenAt": None,
            "AppVersion": enrolment.app_version,
            "LastSeen": now,
            # Preselected categories are subscribed now; a start adds those made later.
            "LastStart": now,
            "RegisteredAt": now,
        }
        d, s, c = tables.device.c, tables.subscription.c, tables.category.c
        if replace:
            conn.execute(tables.subscription.delete().where(s.AccountId == account))
            conn.execute(tables.device.delete().where(d.AccountId == account))
        conn.execute(tables.device.insert().values(**values))
        preselected = conn.execute(
            sa.select(c.CategoryId).where(c.GroupId == enrolment.group, c.Preselected == sa.true())
        ).scalars()
        rows_ = [
            {
                "AccountId": account,
                "GroupId": enrolment.group,
                "CategoryId": cat,
                "SubscribedAt": now,
            }
            for cat in preselected
        ]
        if rows_:
            conn.execute(tables.subscription.insert(), rows_)

    # ------------------------------------------------------------ the device itself

    def _row(self, conn: sa.Connection, account: str) -> tables.Row:
        row = conn.execute(
            sa.select(tables.device).where(tables.device.c.AccountId == account)
        ).first()
        if row is None:
            raise errors.NotFound(f"{account} is not a registered device")
        return row

    def view(self, account: str) -> DeviceView:
        """The calling device's own record."""
        with transactions.connect(self._engine, "reading a device") as conn:
            row = self._row(conn, account)
            group = group_of(conn, row.GroupId)
            categories = self._categories(conn, account, row.GroupId)
        return DeviceView(
            account,
            self._keyring.decrypt_text(row.DeviceIdEnc, place("DeviceIdEnc", account)),
            group,
            row.Via,
            row.Platform,
            row.AppVersion,
            row.PushTokenEnc is not None,
            row.RegisteredAt,
            row.LastStart,
            row.LastSeen,
            categories,
        )

    def set_push_token(self, account: str, token: str, platform: str | None) -> None:
        """Store the device's push token (encrypted), and its platform when given."""
        values: dict[str, object] = {
            "PushTokenEnc": self._keyring.encrypt(token, place("PushTokenEnc", account)),
            "PushTokenAt": self._clock(),
        }
        if platform:
            values["Platform"] = platform
        self._update(account, values, "setting a push token")

    def _update(self, account: str, values: dict[str, object], what: str) -> None:
        d = tables.device.c
        with transactions.begin(self._engine, what) as conn:
            changed = conn.execute(
                tables.device.update().where(d.AccountId == account).values(**values)
            ).rowcount
        if not changed:
            raise errors.NotFound(f"{account} is not a registered device")

    def seen_due(self, account: str) -> bool:
        """Whether a call of ``account`` is to be noted now (cheap: memory only).

        Only accounts registration made have a ``Device`` row; for each, once a
        minute. The memory is bounded: forgetting only costs an early write.
        """
        if not account.startswith(ACCOUNT_PREFIX):
            return False
        now = self._clock()
        with self._seen_lock:
            if now - self._seen.get(account, float("-inf")) < SEEN_INTERVAL:
                return False
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            self._seen[account] = now
        return True

    def seen(self, account: str) -> None:
        """Note that ``account`` called (LastSeen); written at most once a minute."""
        if self.seen_due(account):
            self.write_seen(account)

    def write_seen(self, account: str) -> None:
        """Write ``account``'s LastSeen now (after :meth:`seen_due` said so)."""
        now = self._clock()
        d = tables.device.c
        with transactions.begin(self._engine, "noting a device's call") as conn:
            conn.execute(tables.device.update().where(d.AccountId == account).values(LastSeen=now))

    def start(self, account: str, app_version: str) -> tuple[tuple[Category, ...], tuple[str, ...]]:
        """A start of the device's app: subscribe the preselected categories added
        since its last start. Its categories and the ids subscribed now."""
        now = self._clock()
        c, s, d = tables.category.c, tables.subscription.c, tables.device.c
        with transactions.begin(self._engine, "starting a device") as conn:
            row = self._row(conn, account)
            since = row.LastStart if row.LastStart is not None else row.RegisteredAt
            new = (
                conn.execute(
                    sa.select(c.CategoryId)
                    .where(
                        c.GroupId == row.GroupId,
                        c.Preselected == sa.true(),
                        c.CreatedAt > since,
                        c.CategoryId.not_in(
                            sa.select(s.CategoryId).where(
                                s.AccountId == account, s.GroupId == row.GroupId
                            )
                        ),
                    )
                    .order_by(c.CategoryId)
                )
                .scalars()
                .all()
            )
            if new:
                conn.execute(
                    tables.subscription.insert(),
                    [
                        {
                            "AccountId": account,
                            "GroupId": row.GroupId,
                            "CategoryId": cat,
                            "SubscribedAt": now,
                        }
                        for cat in new
                    ],
                )
            values: dict[str, object] = {"LastStart": now, "LastSeen": now}
            if app_version:
                values["AppVersion"] = app_version
            conn.execute(tables.device.update().where(d.AccountId == account).values(**values))
            categories = self._categories(conn, account, row.GroupId)
        return categories, tuple(str(n) for n in new)

    def categories(self, account: str) -> tuple[Category, ...]:
        """The device's group's categories, each with whether it is subscribed."""
        with transactions.connect(self._engine, "reading subscriptions") as conn:
            row = self._row(conn, account)
            return self._categories(conn, account, row.GroupId)

    def subscribe(self, account: str, category: str, *, on: bool) -> tuple[Category, ...]:
        """Subscribe to (``on``) or unsubscribe from a category of the device's group."""
        c, s = tables.category.c, tables.subscription.c
        with transactions.begin(self._engine, "changing a subscription") as conn:
            row = self._row(conn, account)
            exists = conn.execute(
                sa.select(c.CategoryId).where(c.GroupId == row.GroupId, c.CategoryId == category)
            ).first()
            if exists is None:
                raise errors.NotFound(f"group {row.GroupId} has no category {category}")
            mine = (s.AccountId == account, s.GroupId == row.GroupId, s.CategoryId == category)
            held = conn.execute(sa.select(s.CategoryId).where(*mine)).first() is not None
            if on and not held:
                conn.execute(
                    tables.subscription.insert().values(
                        AccountId=account,
                        GroupId=row.GroupId,
                        CategoryId=category,
                        SubscribedAt=self._clock(),
                    )
                )
            elif not on and held:
                conn.execute(tables.subscription.delete().where(*mine))
            return self._categories(conn, account, row.GroupId)

    @staticmethod
    def _categories(conn: sa.Connection, account: str, group_id: str) -> tuple[Category, ...]:
        c, s = tables.category.c, tables.subscription.c
        subscribed = set(
            conn.execute(
                sa.select(s.CategoryId).where(s.AccountId == account, s.GroupId == group_id)
            ).scalars()
        )
        query = sa.select(tables.category).where(c.GroupId == group_id).order_by(c.CategoryId)
        return tuple(
            Category(r.CategoryId, r.Name, bool(r.Preselected), r.CategoryId in subscribed)
            for r in conn.execute(query)
        )

    def read(self, account: str, message_id: str) -> bool:
        """Record that the device read ``message_id`` (a MessageEvent ``read``).

        NotFound unless the device was a recipient of that message; False when the
        read was recorded before (a report sent again).
        """
        r, e = tables.receive_queue.c, tables.message_event.c
        with transactions.begin(self._engine, "recording a read report") as conn:
            entry = conn.execute(
                sa.select(r.EntryId).where(
                    r.MessageId == message_id,
                    r.Recipient == account,
                    r.Kind == model.DeliveryKind.MESSAGE,
                )
            ).first()
            if entry is None:
                raise errors.NotFound(f"{account} received no message {message_id}")
            before = conn.execute(
                sa.select(e.Id).where(
                    e.MessageId == message_id, e.Kind == EventKind.READ, e.Account == account
                )
            ).first()
            if before is not None:
                return False
            conn.execute(
                tables.message_event.insert().values(
                    rows.event(message_id, self._clock(), EventKind.READ, account)
                )
            )
        return True

    # ------------------------------------------------------------ addressing

    def addresser(
        self, conn: sa.Connection, messages: Sequence[model.OutgoingMessage]
    ) -> dict[str, model.OutgoingMessage]:
        """The messages with device ids and group addresses resolved to accounts
        (:mod:`mpg.server.addressing`), looked up in the submit's transaction."""
        wanted = addressing.wanted(messages)
        devices = self._accounts_by_device_id(conn, wanted.device_ids)
        members = {a: self._members(conn, a) for a in sorted(wanted.addresses, key=str)}
        return {m.tx_message_id: addressing.expanded(m, devices, members) for m in messages}

    def _accounts_by_device_id(
        self, conn: sa.Connection, device_ids: Iterable[str]
    ) -> dict[str, str]:
        by_index: dict[str, str] = {}
        for device_id in device_ids:
            for index in self._indexes(device_id):
                by_index[index] = device_id
        d = tables.device.c
        found: dict[str, str] = {}
        for part in transactions.chunks(sorted(by_index)):
            for row in conn.execute(
                sa.select(d.DeviceIndex, d.AccountId).where(d.DeviceIndex.in_(part))
            ):
                found[by_index[row.DeviceIndex]] = str(row.AccountId)
        return found

    @staticmethod
    def _members(conn: sa.Connection, address: addressing.Address) -> list[str]:
        d, s = tables.device.c, tables.subscription.c
        if address.category is None:
            query = sa.select(d.AccountId).where(d.GroupId == address.group)
        else:
            # The device's own group must be the address's: never another group's device.
            query = (
                sa.select(d.AccountId)
                .join_from(tables.device, tables.subscription, s.AccountId == d.AccountId)
                .where(
                    d.GroupId == address.group,
                    s.GroupId == address.group,
                    s.CategoryId == address.category,
                )
            )
        return [str(a) for a in conn.execute(query.order_by(d.AccountId)).scalars()]
