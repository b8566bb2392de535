"""``mpg server rekey`` on each database: every sealed column, blind index and file moves
to the current data key; a row changed meanwhile is left alone; rows of an older
version (names in clear) are migrated."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import uuid
from collections.abc import Iterator

import directoryrows
import pytest
import sqlalchemy as sa
from test_server_queues import SENDER, message

from mpg import config, errors, timefmt
from mpg.db import transactions
from mpg.server import accounts, blobs, datakeys, queues, rekey, tables, vault
from mpg.server import main as server_main
from mpg.wire import atrest, keys, model

MASTER = keys.new_master_key()
OLD = atrest.Keyring({"k1": bytes(range(32))}, "k1")
ROTATED = atrest.Keyring({"k1": bytes(range(32)), "k2": bytes(range(32, 64))}, "k2")
ONLY_NEW = atrest.Keyring({"k2": bytes(range(32, 64))}, "k2")
FILE_BYTES = b"%PDF-1.4 the rekeyed attachment " * 5000  # several chunks
DEVICE = "dev-" + "a" * 32


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = tables.create_engine(db_url)
    tables.create_tables(eng)
    yield eng
    eng.dispose()


def _submit_with_file(
    engine: sa.Engine, ring: atrest.Keyring, root: pathlib.Path
) -> model.SubmitResult:
    """Accounts, one message with Bcc and an attachment, a device and a domain, under
    ``ring``."""
    store = accounts.AccountStore(engine, MASTER, ring)
    store.add(SENDER, "gateway")
    store.add("bob@example.com", "user")
    store.add("carol@example.com", "user")
    files = blobs.BlobStore(engine, root, store.vault)
    tx = str(uuid.uuid4())
    digest = hashlib.sha256(FILE_BYTES).hexdigest()
    files.upload(SENDER, tx, 1, 0, FILE_BYTES, final=True, size=len(FILE_BYTES), sha256=digest)
    info = model.AttachmentInfo(1, "payslip-bob.pdf", "pdf", len(FILE_BYTES), 1, digest)
    msg = dataclasses.replace(message(("bob",), ("carol@example.com",), tx=tx), attachments=(info,))
    [result] = queues.QueueStore(engine, store.vault).submit(SENDER, [msg])
    assert result.accepted
    with transactions.begin(engine, "test directory rows") as conn:
        directoryrows.insert_device(
            conn,
            ring,
            account_id=DEVICE,
            device_id="A1B2-device",
            email="anna@example.com",
            name="Anna's phone",
            push_token="push-token-1",
        )
        directoryrows.insert_domain(conn, ring, "example.com", "north", "it@example.com")
    return result


def _key_ids(engine: sa.Engine) -> set[str]:
    """The key id of every sealed value and attachment file in the database."""
    found: set[str] = set()
    with engine.connect() as conn:
        for sealed in rekey.SEALED:
            for column in sealed.columns:
                for blob in conn.execute(sa.select(sealed.table.c[column])).scalars():
                    if blob is not None:
                        found.add(ROTATED.key_id_of(bytes(blob)))
        a = tables.transmit_attachment.c
        found.update(str(k) for k in conn.execute(sa.select(a.BlobKeyId)).scalars())
    return found


def test_rekey_moves_every_field_index_and_file_to_the_current_key(
    engine: sa.Engine, tmp_path: pathlib.Path
) -> None:
    """After a rotation and a rekey the old key can go: everything opens without it."""
    result = _submit_with_file(engine, OLD, tmp_path / "blobs")
    assert _key_ids(engine) == {"k1"}
    old_files = {p for p in (tmp_path / "blobs").rglob("*") if p.is_file()}

    summary = rekey.run(engine, vault.Vault(MASTER, ROTATED), MASTER, batch=2)

    assert _key_ids(engine) == {"k2"}
    assert summary.files.rewritten == 1
    assert summary.tables["TransmitQueue"].rewritten == 1
    assert summary.tables["Device"].rewritten == summary.tables["Domain"].rewritten == 1
    assert not any(p.exists() for p in old_files)  # the old-key file is gone
    with engine.connect() as conn:
        device = conn.execute(sa.select(tables.device)).one()
    assert device.DeviceIndex == ONLY_NEW.blind_index("device", "A1B2-device").hex()
    assert device.EmailIndex == ONLY_NEW.blind_index("email", "ANNA@example.com").hex()
    assert (
        ONLY_NEW.decrypt_text(device.PushTokenEnc, atrest.Place("Device", "PushTokenEnc", DEVICE))
        == "push-token-1"
    )

    store = accounts.AccountStore(engine, MASTER, ONLY_NEW)
    q = queues.QueueStore(engine, store.vault)
    [bob] = q.fetch("bob@example.com", 10, 60).deliveries
    [carol] = q.fetch("carol@example.com", 10, 60).deliveries
    assert (bob.subject, bob.sender, bob.receiver_list) == (
        "subject",
        "alice@example.com",
        "bob@example.com",
    )
    assert carol.bcc_list == "carol@example.com"
    assert bob.attachments[0].file_name == "payslip-bob.pdf"
    files = blobs.BlobStore(engine, tmp_path / "blobs", store.vault)
    part = files.download("bob@example.com", result.message_id, 1, 70_000, 100_000)
    assert part.data == FILE_BYTES[70_000:170_000]
    assert [a.account_id for a in store.all_accounts()] == [
        "bob@example.com",
        "carol@example.com",
        SENDER,
    ]

    again = rekey.run(engine, vault.Vault(MASTER, ONLY_NEW), MASTER)
    assert again.files.rewritten == 0
    assert all(p.rewritten == 0 for p in again.tables.values())


def test_a_row_a_server_changed_meanwhile_is_left_as_the_server_wrote_it(
    engine: sa.Engine, tmp_path: pathlib.Path
) -> None:
    """Compare-and-set: the rekey never overwrites a newer value with an older one."""
    _submit_with_file(engine, OLD, tmp_path / "blobs")
    [device_sealed] = [s for s in rekey.SEALED if s.table is tables.device]
    d = tables.device.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(tables.device)).one()
    change = rekey.plan_row(ROTATED, device_sealed, row)
    assert change is not None
    assert "PushTokenEnc" in change.new
    fresh = ROTATED.encrypt("push-token-2", atrest.Place("Device", "PushTokenEnc", DEVICE))
    with transactions.begin(engine, "a device sets its push token") as conn:
        conn.execute(tables.device.update().where(d.AccountId == DEVICE).values(PushTokenEnc=fresh))
    with transactions.begin(engine, "rekeying") as conn:
        assert not rekey.apply_change(conn, device_sealed, ["AccountId"], change)
    with engine.connect() as conn:
        token = conn.execute(sa.select(d.PushTokenEnc)).scalar_one()
    assert bytes(token) == fresh

    summary = rekey.run(engine, vault.Vault(MASTER, ROTATED), MASTER)  # the next run
    assert summary.tables["Device"].rewritten == 1
    assert _key_ids(engine) == {"k2"}


def _older_version_rows(engine: sa.Engine, blob: pathlib.Path) -> keys.Credential:
    """Rows as the version before pseudonyms wrote them: names and text in clear."""
    credential = keys.new_credential()
    now = timefmt.now_text("utc")
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(FILE_BYTES)
    with transactions.begin(engine, "older rows") as conn:
        for name, kind in ((SENDER, "gateway"), ("bob@example.com", "user")):
            conn.execute(
                tables.account.insert().values(
                    AccountId=name, Kind=kind, Disabled=False, CreatedAt=now
                )
            )
        conn.execute(
            tables.account_key.insert().values(
                AccountId="bob@example.com",
                KeyId=credential.key_id,
                WrappedKey=keys.wrap_key(
                    MASTER, "bob@example.com", credential.key_id, credential.secret
                ),
                Disabled=False,
                CreatedAt=now,
            )
        )
        conn.execute(
            tables.transmit_queue.insert().values(
                MessageId="m-1",
                SenderAccount=SENDER,
                TxMessageId="tx-1",
                AppCode="BPM",
                SourceDomain="example.com",
                AgentSender=SENDER,
                Sender="alice@example.com",
                ReceiverType="U",
                ReceiverList="bob@example.com",
                BccList="",
                Subject="older subject",
                Content="<older/>",
                ContentType="MSG",
                AlertFlag=False,
                Priority="N",
                Keywords="",
                TransmitTime=now,
                ReceivedAt=1.0,
                RecipientCount=1,
                ServedCount=0,
                RecalledCount=0,
                State="queued",
                SubmitResult='{"tx_message_id":"tx-1","accepted":true,"message_id":"m-1",'
                '"recipients":1,"unknown":[],"reason":"","served_at_once":false,"recall":null}',
            )
        )
        conn.execute(
            tables.transmit_attachment.insert().values(
                MessageId="m-1",
                SeqNo=1,
                FileName="older.pdf",
                FileType="pdf",
                FileSize=len(FILE_BYTES),
                DownloadFlag=1,
                Sha256=hashlib.sha256(FILE_BYTES).hexdigest(),
                BlobPath=str(blob),
            )
        )
        conn.execute(
            tables.receive_queue.insert().values(
                EntryId="e-1",
                MessageId="m-1",
                Recipient="bob@example.com",
                Kind="message",
                VisibleBcc="",
                PriorityRank=2,
                State="queued",
                CreatedSeq=1,
            )
        )
        conn.execute(
            tables.message_event.insert().values(
                MessageId="m-1", At=1.0, Kind="received", Account=SENDER, Detail=""
            )
        )
    return credential


def test_rows_of_an_older_version_are_migrated_and_keep_working(
    engine: sa.Engine, tmp_path: pathlib.Path
) -> None:
    """Clear names become pseudonyms (keys wrapped again), clear text and files are
    sealed, and the account's key, queue, history and file work as before."""
    blob = tmp_path / "blobs" / "ab" / "older"
    credential = _older_version_rows(engine, blob)
    assert rekey.legacy_accounts(engine) == 2  # a server of this version refuses to start

    summary = rekey.run(engine, vault.Vault(MASTER, OLD), MASTER)

    assert summary.accounts_migrated == 2
    assert rekey.legacy_accounts(engine) == 0
    store = accounts.AccountStore(engine, MASTER, OLD)
    assert store.key_for("Bob@Example.com", credential.key_id)[1] == credential.secret
    q = queues.QueueStore(engine, store.vault)
    [delivery] = q.fetch("bob@example.com", 10, 60).deliveries
    assert (delivery.subject, delivery.content, delivery.sender) == (
        "older subject",
        "<older/>",
        "alice@example.com",
    )
    assert delivery.attachments[0].file_name == "older.pdf"
    assert [e.account for e in q.history(SENDER, "tx-1")[1]][:2] == [SENDER, "bob@example.com"]
    files = blobs.BlobStore(engine, tmp_path / "blobs", store.vault)
    assert files.download(SENDER, "m-1", 1, 0, len(FILE_BYTES)).data == FILE_BYTES
    assert not blob.exists()
    t = tables.transmit_queue.c
    with engine.connect() as conn:
        clear = conn.execute(sa.select(t.Subject, t.Content, t.Sender, t.SubmitResult)).one()
        ids = set(conn.execute(sa.select(tables.account.c.AccountId)).scalars())
    assert tuple(clear) == (None, None, None, "")
    assert ids == {store.vault.account_id(SENDER), store.vault.account_id("bob@example.com")}


def test_a_server_does_not_start_on_accounts_of_an_older_version(
    engine: sa.Engine, tmp_path: pathlib.Path
) -> None:
    """Their requests would all fail: it says to run the rekey, and starts after it."""
    _older_version_rows(engine, tmp_path / "blobs" / "ab" / "older")
    settings = config.ServerSettings(
        database_url=engine.url.render_as_string(hide_password=False),
        data_dir=tmp_path,
        allow_plain_http=True,
        master_key=keys.format_master_key(MASTER),
    )
    datakeys.create_data_keys_file(datakeys.data_keys_path(settings))
    with pytest.raises(errors.ConfigError, match="run `mpg server rekey`"):
        server_main.build(settings)
    names = vault.Vault(MASTER, datakeys.load_keyring(settings))
    rekey.run(engine, names, MASTER)
    server_main.build(settings).engine.dispose()
