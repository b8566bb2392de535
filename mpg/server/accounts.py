"""Accounts and their keys: add, list, disable, rotate; keys wrapped at rest.

An account is a gateway (``erp-a@example.com``), a user (``bob@example.com``) or a
device (its serial number). Names with a domain are taken lower-cased, device
serials exactly as given; the row's ``AccountId`` is the name's pseudonym and the
name itself is stored encrypted (:mod:`mpg.server.vault`). Each account holds one or
more keys (rotation); every key is stored wrapped with the server's master key
(:func:`mpg.wire.keys.wrap_key`, bound to the AccountId) and is shown to the
operator once, as a credential token, when it is created.

The server unwraps a key on the first request that uses it and keeps it in memory
for :data:`KEY_CACHE_SECONDS`. An account or key disabled from another process (the
CLI) is therefore refused by a running server within that time; one disabled
through this store is refused at once.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
import time
from typing import Final, Literal, get_args

import sqlalchemy as sa

from mpg import config, errors, timefmt
from mpg.db import transactions
from mpg.server import audit, tables, vault
from mpg.wire import atrest, keys

Kind = Literal["gateway", "user", "device"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
#: Account kinds a ``U`` recipient may be (reference §4: user accounts; a gateway's
#: account receives replies, reference §2 step 6).
USER_KINDS: Final = frozenset({"gateway", "user"})
DEVICE_KINDS: Final = frozenset({"device"})
#: How long an unwrapped key is trusted without looking at the database again.
KEY_CACHE_SECONDS: Final = 30.0
#: File name of the master key under ``server.data_dir`` when none is configured.
MASTER_KEY_FILE: Final = "master.key"
MAX_ACCOUNT_LENGTH: Final = 100


@dataclasses.dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key of an account, without its secret."""

    key_id: str
    disabled: bool
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class AccountInfo:
    """One account as the operator sees it (``account_id`` is its name)."""

    account_id: str
    kind: str
    disabled: bool
    created_at: str
    keys: tuple[KeyInfo, ...] = ()
    #: The row's AccountId: the name's pseudonym (or a registered device's id).
    row_id: str = ""


def normalize(name: str, kind: str | None = None) -> str:
    """The stored form of an account name: lower-cased unless it is a device serial."""
    name = name.strip()
    if kind == "device" or (kind is None and "@" not in name):
        return name
    return name.lower()


def master_key_path(settings: config.ServerSettings) -> pathlib.Path:
    """Where the master key file is: ``master_key_file``, else ``data_dir/master.key``."""
    if settings.master_key_file is not None:
        return settings.master_key_file
    return settings.data_dir / MASTER_KEY_FILE


def _parse_master_key(text: str, where: str) -> bytes:
    try:
        return keys.parse_master_key(text)
    except errors.WireError as exc:
        raise errors.ConfigError(f"{where}: {exc}") from None


def load_master_key(settings: config.ServerSettings) -> bytes:
    """The master key from ``MPG_SERVER__MASTER_KEY`` / ``master_key`` or its file."""
    if settings.master_key is not None:
        return _parse_master_key(settings.master_key.get_secret_value(), "server.master_key")
    path = master_key_path(settings)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise errors.ConfigError(
            f"server.master_key_file: {path} does not exist; run `mpg server init` "
            "or set MPG_SERVER__MASTER_KEY"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"server.master_key_file: cannot read {path}: {exc}") from exc
    return _parse_master_key(text, f"server.master_key_file ({path})")


def create_master_key_file(path: pathlib.Path) -> bool:
    """Write a new master key to ``path`` (mode 0600); False if the file exists."""
    # Never overwrite a key that wraps existing accounts' keys.
    return create_secret_file(path, keys.format_master_key(keys.new_master_key()) + "\n")


def create_secret_file(path: pathlib.Path, text: str) -> bool:
    """Create ``path`` with ``text`` only its owner can read (0600), flushed to disk;
    False, and nothing written, when it exists already (O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return True


class AccountStore:
    """Accounts and keys in the server database; unwrapped keys cached in memory."""

    def __init__(
        self,
        engine: sa.Engine,
        master_key: bytes,
        keyring: atrest.Keyring,
        *,
        cache_seconds: float = KEY_CACHE_SECONDS,
    ) -> None:
        self._engine = engine
        self._master = master_key
        #: Pseudonyms and sealed columns; the queue and blob stores share it.
        self.vault = vault.Vault(master_key, keyring)
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, kind: str, *, actor: str = "") -> tuple[str, keys.Credential]:
        """Create an account with one key; return its stored name and the credential.

        An ``actor`` (an admin; the console's changes) gets an audit entry naming the
        account by its pseudonym, in the same transaction.
        """
        if kind not in KINDS:
            raise errors.ValidationError("kind", f"must be one of {', '.join(KINDS)}")
        stored = normalize(name, kind)
        if not stored or len(stored) > MAX_ACCOUNT_LENGTH or ";" in stored:
            raise errors.ValidationError(
                "name", f"must be 1..{MAX_ACCOUNT_LENGTH} characters without ';'"
            )
        account_id = self.vault.account_id(stored)
        credential = keys.new_credential()
        now = timefmt.now_text("utc")
        with transactions.begin(self._engine, "adding an account") as conn:
            exists = conn.execute(
                sa.select(tables.account.c.AccountId).where(
                    tables.account.c.AccountId == account_id
                )
            ).first()
            if exists is not None:
                raise errors.ValidationError("name", f"account {stored} already exists")
            conn.execute(
                tables.account.insert().values(
                    AccountId=account_id,
                    Kind=kind,
                    Disabled=False,
                    CreatedAt=now,
                    NameEnc=self.vault.seal(stored, "Account", "NameEnc", account_id),
                )
            )
            self._insert_key(conn, account_id, credential, now)
            if actor:
                audit.record(conn, actor, "account.create", account_id, f"kind {kind}")
        return stored, credential

    def rotate_key(self, name: str) -> tuple[AccountInfo, keys.Credential]:
        """Add a new key to an existing account (old keys stay until disabled).

        Returns the account (as it was before) and the new credential.
        """
        info = self._existing(name)
        credential = keys.new_credential()
        with transactions.begin(self._engine, "adding a key") as conn:
            self._insert_key(conn, info.row_id, credential, timefmt.now_text("utc"))
        return info, credential

    def disable(self, name: str, *, actor: str = "") -> str:
        """Disable an account: every request made as it is refused from now on
        (audited as :meth:`add` when ``actor`` is given)."""
        info = self._existing(name)
        with transactions.begin(self._engine, "disabling an account") as conn:
            conn.execute(
                tables.account.update()
                .where(tables.account.c.AccountId == info.row_id)
                .values(Disabled=True)
            )
            if actor:
                audit.record(conn, actor, "account.disable", info.row_id, f"kind {info.kind}")
        self._forget(info.row_id)
        return info.account_id

    def disable_key(self, name: str, key_id: str) -> str:
        """Disable one key of an account (after a rotation)."""
        info = self._existing(name)
        with transactions.begin(self._engine, "disabling a key") as conn:
            changed = conn.execute(
                tables.account_key.update()
                .where(
                    tables.account_key.c.AccountId == info.row_id,
                    tables.account_key.c.KeyId == key_id,
                )
                .values(Disabled=True)
            ).rowcount
        if not changed:
            raise errors.ValidationError("key_id", f"{info.account_id} has no key {key_id}")
        self._forget(info.row_id)
        return info.account_id

    def get(self, name: str) -> AccountInfo | None:
        """One account with its keys, or None."""
        found = self._load([self.vault.account_id(normalize(name))]) or self._load(
            [self.vault.account_id(name.strip())]
        )
        return found[0] if found else None

    def all_accounts(self) -> list[AccountInfo]:
        """Every account with its keys, by name."""
        return self._load(None)

    def key_for(self, account: str, key_id: str) -> tuple[str, bytes]:
        """The stored account name and the unwrapped key a request was sealed with.

        Raises :class:`mpg.errors.UnknownKey` for an unknown account or key id and
        :class:`mpg.errors.AccountDisabled` when either is disabled.
        """
        account_id, secret, disabled = self.key_state(account, key_id)
        if disabled:
            raise errors.AccountDisabled(disabled)
        return account_id, secret

    def key_state(self, account: str, key_id: str) -> tuple[str, bytes, str]:
        """Like :meth:`key_for`, but a disabled account or key comes back with the reason.

        The server needs a disabled account's key to tell its holder "disabled" (403)
        and everyone else the 401 of any failed authentication.
        """
        stored = normalize(account)
        account_id = self.vault.account_id(stored)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((account_id, key_id))
        if cached is not None and cached[1] > now:
            return stored, cached[0], ""
        row = self._key_row(account_id, key_id)
        if row is None:
            raise errors.UnknownKey(f"unknown account or key: {account} / {key_id}")
        disabled = ""
        if row.AccountDisabled:
            disabled = f"account {stored} is disabled"
        elif row.KeyDisabled:
            disabled = f"key {key_id} of {stored} is disabled"
        try:
            secret = keys.unwrap_key(self._master, account_id, key_id, row.WrappedKey)
        except errors.WireError as exc:
            # Not the caller's fault: the server runs with another master key than
            # the one that wrapped this key. The app answers 500, the log says why.
            raise errors.ConfigError(
                f"server.master_key: the stored key {key_id} of {stored} does not "
                "open; is this the master key the accounts were created with?"
            ) from exc
        if not disabled:
            with self._lock:
                self._cache[(account_id, key_id)] = (secret, now + self._cache_seconds)
        return stored, secret, disabled

    def kinds(self, names: list[str]) -> dict[str, str]:
        """``{account: kind}`` of the enabled accounts among ``names`` (stored forms)."""
        with transactions.begin(self._engine, "reading account kinds") as conn:
            return kinds(conn, self.vault, names)

    def _insert_key(
        self, conn: sa.Connection, account_id: str, credential: keys.Credential, now: str
    ) -> None:
        wrapped = keys.wrap_key(self._master, account_id, credential.key_id, credential.secret)
        conn.execute(
            tables.account_key.insert().values(
                AccountId=account_id,
                KeyId=credential.key_id,
                WrappedKey=wrapped,
                Disabled=False,
                CreatedAt=now,
            )
        )

    def _existing(self, name: str) -> AccountInfo:
        info = self.get(name)
        if info is None:
            raise errors.ValidationError("name", f"no account {name}")
        return info

    def _key_row(self, account_id: str, key_id: str) -> tables.Row | None:
        a, k = tables.account.c, tables.account_key.c
        query = (
            sa.select(
                k.WrappedKey,
                a.Disabled.label("AccountDisabled"),
                k.Disabled.label("KeyDisabled"),
            )
            .join_from(tables.account, tables.account_key, a.AccountId == k.AccountId)
            .where(a.AccountId == account_id, k.KeyId == key_id)
        )
        with transactions.begin(self._engine, "reading an account key") as conn:
            return conn.execute(query).first()

    def _load(self, names: list[str] | None) -> list[AccountInfo]:
        a, k = tables.account.c, tables.account_key.c
        accounts = sa.select(tables.account)
        key_rows = sa.select(tables.account_key).order_by(k.AccountId, k.CreatedAt, k.KeyId)
        if names is not None:
            accounts = accounts.where(a.AccountId.in_(names))
            key_rows = key_rows.where(k.AccountId.in_(names))
        with transactions.begin(self._engine, "listing accounts") as conn:
            account_rows = conn.execute(accounts).all()
            by_account: dict[str, list[KeyInfo]] = {}
            for row in conn.execute(key_rows):
                by_account.setdefault(row.AccountId, []).append(
                    KeyInfo(row.KeyId, bool(row.Disabled), row.CreatedAt)
                )
        found = [
            AccountInfo(
                self.vault.name_of(row),
                row.Kind,
                bool(row.Disabled),
                row.CreatedAt,
                tuple(by_account.get(row.AccountId, ())),
                row.AccountId,
            )
            for row in account_rows
        ]
        return sorted(found, key=lambda info: info.account_id)

    def _forget(self, account_id: str) -> None:
        with self._lock:
            for cache_key in [key for key in self._cache if key[0] == account_id]:
                del self._cache[cache_key]


#: Built once: every submit asks it.
_ENABLED_KINDS: Final = sa.select(tables.account.c.AccountId, tables.account.c.Kind).where(
    tables.account.c.AccountId.in_(sa.bindparam("b_ids", expanding=True)),
    tables.account.c.Disabled == sa.false(),
)


def kinds(conn: sa.Connection, names_vault: vault.Vault, names: list[str]) -> dict[str, str]:
    """``{name: kind}`` of the enabled accounts among ``names`` (stored forms), in
    ``conn``'s transaction: one indexed lookup of their pseudonyms."""
    ids = {names_vault.account_id(name): name for name in names}
    found: dict[str, str] = {}
    for part in transactions.chunks(sorted(ids)):
        rows = conn.execute(_ENABLED_KINDS, {"b_ids": part})
        found.update({ids[row.AccountId]: row.Kind for row in rows})
    return found
