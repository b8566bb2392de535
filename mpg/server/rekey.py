"""``mpg server rekey``: everything under an old data key, re-encrypted under the current one.

What is encrypted where is declared once, in :data:`SEALED` (table, row-key columns,
encrypted columns, an older version's clear columns, blind indexes) and
:func:`rekey_files` (attachment files): a new encrypted column is one line there.

The rekey runs while the servers keep running: it walks each table in primary-key
order in batches of ``batch`` rows, each batch read, re-encrypted in memory and
written in its own transaction, every row written **compare-and-set** (its key plus
the exact old values of the columns it changes), so a row a server changed meanwhile
is left as the server wrote it and counted as a conflict (the next run takes it). A
run that stops can simply be started again: rows already under the current key are
only read. Each row goes from its old key to the current one; a clear column of an
older version is sealed and emptied; a blind index is written again under the
current key.

Accounts of an older version, whose ``AccountId`` is the name in clear
(``NameEnc`` NULL), are moved to their pseudonym (:func:`migrate_accounts`): a new
row, the keys unwrapped and wrapped again for the new id, and every row that names
the account. That one step needs the servers stopped (a server of this version does
not start while such accounts exist, :func:`legacy_accounts`); docs/devices.md,
"Upgrading".
"""

from __future__ import annotations

import dataclasses
import pathlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import transactions
from mpg.server import blobs, tables
from mpg.server.vault import OPAQUE_ID, Vault
from mpg.wire import atrest, keys

log = structlog.get_logger(__name__)

#: Rows per batch (each batch one transaction).
BATCH: Final = 200


@dataclasses.dataclass(frozen=True, slots=True)
class Sealed:
    """A table's encrypted columns, as the rekey walks them.

    ``row_key`` columns joined with ``/`` are the row key of each value's
    :class:`~mpg.wire.atrest.Place` (column: the encrypted column's name). ``clear``
    maps an encrypted column to an older version's clear column and what that column
    holds once sealed. ``indexes`` maps a blind-index column (hex) to the encrypted
    column it indexes and the index kind.
    """

    table: sa.Table
    row_key: tuple[str, ...]
    columns: tuple[str, ...]
    clear: Mapping[str, tuple[str, str | None]] = dataclasses.field(default_factory=dict)
    indexes: Mapping[str, tuple[str, atrest.IndexKind]] = dataclasses.field(default_factory=dict)


_TRANSMIT: Final = (
    "AgentSender",
    "Sender",
    "ReceiverList",
    "BccList",
    "Subject",
    "Content",
    "Keywords",
    "SubmitResult",
)

#: Every encrypted column of the server, by table.
SEALED: Final = (
    Sealed(tables.account, ("AccountId",), ("NameEnc",)),
    Sealed(
        tables.transmit_queue,
        ("MessageId",),
        tuple(f"{name}Enc" for name in _TRANSMIT),
        {f"{name}Enc": (name, "" if name == "SubmitResult" else None) for name in _TRANSMIT},
    ),
    Sealed(
        tables.transmit_attachment,
        ("MessageId", "SeqNo"),
        ("FileNameEnc",),
        {"FileNameEnc": ("FileName", None)},
    ),
    Sealed(
        tables.receive_queue,
        ("EntryId",),
        ("VisibleBccEnc",),
        {"VisibleBccEnc": ("VisibleBcc", None)},
    ),
    Sealed(tables.domain, ("DomainName", "GroupId"), ("VerifyAddressEnc",)),
    Sealed(
        tables.device,
        ("AccountId",),
        ("DeviceIdEnc", "EmailEnc", "NameEnc", "PushTokenEnc"),
        indexes={"DeviceIndex": ("DeviceIdEnc", "device"), "EmailIndex": ("EmailEnc", "email")},
    ),
)


@dataclasses.dataclass(slots=True)
class Progress:
    """What a run did to one table (or to the attachment files)."""

    rows: int = 0  # looked at
    rewritten: int = 0  # written under the current key
    conflicts: int = 0  # changed by a server meanwhile: left alone, for the next run


@dataclasses.dataclass(slots=True)
class Summary:
    """What a whole run did."""

    current: str
    accounts_migrated: int = 0
    tables: dict[str, Progress] = dataclasses.field(default_factory=dict)
    files: Progress = dataclasses.field(default_factory=Progress)
    #: Uploads not yet submitted whose files are under an old key: they are taken over
    #: by a submit (then the next run rewrites them) or purged after the stage TTL.
    stages_under_old_keys: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` summary."""
        return dataclasses.asdict(self)


Report = Callable[[str, Progress], None]


def run(
    engine: sa.Engine,
    vault: Vault,
    master_key: bytes,
    *,
    batch: int = BATCH,
    report: Report | None = None,
) -> Summary:
    """Migrate accounts of an older version, then rekey every table and file."""
    summary = Summary(vault.keyring.current)
    summary.accounts_migrated = migrate_accounts(engine, vault, master_key)
    for sealed in SEALED:
        progress = summary.tables.setdefault(sealed.table.name, Progress())
        for _ in rekey_table(engine, vault.keyring, sealed, progress, batch=batch):
            if report is not None:
                report(sealed.table.name, progress)
    for _ in rekey_files(engine, vault.keyring, summary.files, batch=batch):
        if report is not None:
            report("attachment files", summary.files)
    summary.stages_under_old_keys = _stages_under_old_keys(engine, vault.keyring.current)
    log.info("rekey_done", **summary.as_dict())
    return summary


# ---------------------------------------------------------------- tables


def rekey_table(
    engine: sa.Engine,
    keyring: atrest.Keyring,
    sealed: Sealed,
    progress: Progress,
    *,
    batch: int = BATCH,
) -> Iterator[None]:
    """Walk ``sealed``'s table in key order; yield after each batch (for progress)."""
    table = sealed.table
    key_columns = [c.name for c in table.primary_key.columns]
    wanted = {*key_columns, *sealed.row_key, *sealed.columns, *sealed.indexes}
    wanted.update(clear for clear, _ in sealed.clear.values())
    select = sa.select(*(table.c[name] for name in sorted(wanted))).order_by(
        *(table.c[name] for name in key_columns)
    )
    last: tuple[Any, ...] | None = None
    while True:
        query = select if last is None else select.where(_after(table, key_columns, last))
        with transactions.connect(engine, f"reading {table.name} to rekey") as conn:
            found = conn.execute(query.limit(batch)).all()
        if not found:
            return
        changes = [c for c in (plan_row(keyring, sealed, row) for row in found) if c]
        progress.rows += len(found)
        with transactions.begin(engine, f"rekeying {table.name}") as conn:
            for change in changes:
                if apply_change(conn, sealed, key_columns, change):
                    progress.rewritten += 1
                else:
                    progress.conflicts += 1
        last = tuple(getattr(found[-1], name) for name in key_columns)
        yield


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One row's compare-and-set: its key, the values it had and the new ones."""

    key: Mapping[str, Any]
    old: Mapping[str, Any]
    new: Mapping[str, Any]


def plan_row(keyring: atrest.Keyring, sealed: Sealed, row: tables.Row) -> Change | None:
    """What ``row`` needs to be under the current key (None: nothing)."""
    values = row._mapping
    place_row = "/".join(str(values[name]) for name in sealed.row_key)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    opened: dict[str, str] = {}
    indexed = {column for column, _ in sealed.indexes.values()}
    for column in sealed.columns:
        blob = values[column]
        place = atrest.Place(sealed.table.name, column, place_row)
        if blob is not None:
            stale = keyring.key_id_of(bytes(blob)) != keyring.current
            if stale or column in indexed:
                opened[column] = keyring.decrypt_text(bytes(blob), place)
            if stale:
                old[column], new[column] = blob, keyring.encrypt(opened[column], place)
            continue
        if column not in sealed.clear:
            continue
        clear_column, emptied = sealed.clear[column]
        text = values[clear_column]
        if text:  # a clear value of an older version: seal it, empty the clear column
            opened[column] = text
            old[column], new[column] = None, keyring.encrypt(text, place)
            old[clear_column], new[clear_column] = text, emptied
    for index_column, (column, kind) in sealed.indexes.items():
        if column in opened:
            index = keyring.blind_index(kind, opened[column]).hex()
            if values[index_column] != index:
                old[index_column], new[index_column] = values[index_column], index
    if not new:
        return None
    key = {c.name: values[c.name] for c in sealed.table.primary_key.columns}
    return Change(key, old, new)


def apply_change(
    conn: sa.Connection, sealed: Sealed, key_columns: list[str], change: Change
) -> bool:
    """Write ``change`` if the row still holds its old values; whether it did."""
    table = sealed.table
    where = [table.c[name] == change.key[name] for name in key_columns]
    for name, value in change.old.items():
        where.append(table.c[name].is_(None) if value is None else table.c[name] == value)
    result = conn.execute(table.update().where(*where).values(**change.new))
    return bool(result.rowcount == 1)


def _after(
    table: sa.Table, key_columns: list[str], last: tuple[Any, ...]
) -> sa.ColumnElement[bool]:
    """Rows after ``last`` in key order (spelled out: not every database has row values)."""
    clauses = []
    for n, name in enumerate(key_columns):
        equal = [table.c[key_columns[i]] == last[i] for i in range(n)]
        clauses.append(sa.and_(*equal, table.c[name] > last[n]))
    return sa.or_(*clauses)


# ---------------------------------------------------------------- files


def rekey_files(
    engine: sa.Engine, keyring: atrest.Keyring, progress: Progress, *, batch: int = BATCH
) -> Iterator[None]:
    """Rewrite every attachment file not under the current key (an older version's
    clear file too) into a new file; yield after each batch.

    The new file is written first, then the row moves to it compare-and-set (same
    path as read) and only then is the old file deleted; a row a server changed or
    purged meanwhile keeps its file and the new one is deleted. A download that looked
    up the old path just before retries once.
    """
    a = tables.transmit_attachment.c
    todo = sa.or_(a.BlobKeyId.is_(None), a.BlobKeyId != keyring.current)
    last: tuple[str, int] | None = None
    while True:
        query = sa.select(a.MessageId, a.SeqNo, a.BlobPath, a.BlobKeyId).where(todo)
        if last is not None:
            query = query.where(_after(tables.transmit_attachment, ["MessageId", "SeqNo"], last))
        with transactions.connect(engine, "reading attachment files to rekey") as conn:
            found = conn.execute(query.order_by(a.MessageId, a.SeqNo).limit(batch)).all()
        if not found:
            return
        for row in found:
            progress.rows += 1
            if _rekey_file(engine, keyring, row):
                progress.rewritten += 1
            else:
                progress.conflicts += 1
        last = (found[-1].MessageId, found[-1].SeqNo)
        yield


def _rekey_file(engine: sa.Engine, keyring: atrest.Keyring, row: tables.Row) -> bool:
    a = tables.transmit_attachment.c
    old = pathlib.Path(row.BlobPath)
    name = uuid.uuid4().hex
    new = old.parent / name
    try:
        with old.open("rb") as source, new.open("wb") as sink:
            writer = keyring.stream_writer(sink, blobs.blob_place(new))
            if row.BlobKeyId is None:
                while data := source.read(atrest.CHUNK_BYTES):
                    writer.write(data)
            else:
                keyring.decrypt_stream(source, writer, blobs.blob_place(old))
            writer.close()
    except FileNotFoundError:
        new.unlink(missing_ok=True)
        return False  # purged meanwhile
    with transactions.begin(engine, "moving an attachment to its rekeyed file") as conn:
        moved = conn.execute(
            tables.transmit_attachment.update()
            .where(
                a.MessageId == row.MessageId,
                a.SeqNo == row.SeqNo,
                a.BlobPath == row.BlobPath,
            )
            .values(BlobPath=str(new), BlobKeyId=keyring.current)
        ).rowcount
    (old if moved == 1 else new).unlink(missing_ok=True)
    return bool(moved == 1)


def _stages_under_old_keys(engine: sa.Engine, current: str) -> int:
    s = tables.upload_stage.c
    with transactions.connect(engine, "counting upload stages under old keys") as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(sa.or_(s.KeyId.is_(None), s.KeyId != current))
            ).scalar_one()
        )


# ---------------------------------------------------------------- accounts


def _legacy(a: sa.ColumnCollection[str, sa.Column[Any]]) -> sa.ColumnElement[bool]:
    return a.NameEnc.is_(None)


def legacy_accounts(engine: sa.Engine) -> int:
    """Accounts of an older version (name in clear as the AccountId, never sealed)."""
    a = tables.account.c
    with transactions.connect(engine, "counting accounts of an older version") as conn:
        ids = conn.execute(sa.select(a.AccountId).where(_legacy(a))).scalars().all()
    return sum(1 for account_id in ids if not OPAQUE_ID.fullmatch(account_id))


#: Tables and columns that name an account by its AccountId.
_NAMING: Final = (
    (tables.receive_queue, "Recipient"),
    (tables.receipt_queue, "SenderAccount"),
    (tables.transmit_queue, "SenderAccount"),
    (tables.message_event, "Account"),
    (tables.upload_stage, "SenderAccount"),
)


def migrate_accounts(engine: sa.Engine, vault: Vault, master_key: bytes) -> int:
    """Move every account of an older version to its pseudonym, one account per
    transaction; return how many moved. Run with the servers stopped."""
    a, k = tables.account.c, tables.account_key.c
    with transactions.connect(engine, "listing accounts of an older version") as conn:
        legacy = conn.execute(sa.select(tables.account).where(_legacy(a))).all()
    for row in legacy:
        name = str(row.AccountId)
        new_id = vault.account_id(name)
        sealed_name = vault.seal(name, "Account", "NameEnc", new_id)
        with transactions.begin(engine, f"moving account {name} to its pseudonym") as conn:
            if new_id == name:  # a registered device's opaque id: only seal its name
                conn.execute(
                    tables.account.update()
                    .where(a.AccountId == name, _legacy(a))
                    .values(NameEnc=sealed_name)
                )
                continue
            conn.execute(
                tables.account.insert().values(
                    AccountId=new_id,
                    Kind=row.Kind,
                    Disabled=row.Disabled,
                    CreatedAt=row.CreatedAt,
                    NameEnc=sealed_name,
                )
            )
            for key in conn.execute(sa.select(tables.account_key).where(k.AccountId == name)):
                try:
                    secret = keys.unwrap_key(master_key, name, key.KeyId, key.WrappedKey)
                except errors.WireError as exc:
                    raise errors.ConfigError(
                        f"server.master_key: the stored key {key.KeyId} of an account does "
                        "not open; is this the master key the accounts were created with?"
                    ) from exc
                conn.execute(
                    tables.account_key.insert().values(
                        AccountId=new_id,
                        KeyId=key.KeyId,
                        WrappedKey=keys.wrap_key(master_key, new_id, key.KeyId, secret),
                        Disabled=key.Disabled,
                        CreatedAt=key.CreatedAt,
                    )
                )
            conn.execute(tables.account_key.delete().where(k.AccountId == name))
            for table, column in _NAMING:
                conn.execute(table.update().where(table.c[column] == name).values({column: new_id}))
            conn.execute(tables.account.delete().where(a.AccountId == name))
    if legacy:
        log.info("accounts_migrated", accounts=len(legacy))
    return len(legacy)
