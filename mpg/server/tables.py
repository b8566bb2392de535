"""The push server's own database: its tables, defined once, and its engine.

The server keeps its data apart from any gateway (``server.database_url``, SQLite by
default). ``TransmitQueue`` and ``ReceiveQueue`` carry the names the source document
gives the server's queues (reference §1); their columns are this project's, because
the document never defines them and outside systems never read them (reference §2).

* ``Account`` / ``AccountKey``: who may talk to the server. Keys are stored wrapped
  with the master key (AES-256-GCM), never in plain text.
* ``TransmitQueue``: one row per accepted message (``MessageId``), idempotent per
  ``(TxMessageId, SenderAccount)``; ``SubmitResult`` holds the answer given the first
  time, so a resubmission gets exactly the same answer (empty when the row says it
  all: accepted for ``RecipientCount`` recipients, none unknown).
* ``TransmitAttachment``: the message's attachments; ``BlobPath`` is the file under
  ``data_dir/blobs`` that the staged upload left there.
* ``ReceiveQueue``: one entry per recipient per message (``EntryId`` is the
  recipient's ``RxMessageId``). ``CreatedSeq`` is a monotonic number that orders
  entries of equal priority by arrival.
* ``ReceiptQueue``: the receipt a served message owes its sender, one row per
  message, fetched and acknowledged beside the sender's entries
  (:mod:`mpg.server.receipts`).
* ``UploadStage``: attachment uploads in progress, keyed by (account, tx, seq).
* ``SeenNonce``: request nonces accepted within the replay window, by any process.

Times the server decides are Unix seconds (``float``) where it computes with them
(leases, arrival) and ``yyyy-MM-dd HH:mm:ss`` UTC text where people read them.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Final, NamedTuple, TypeAlias

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import engine as engines
from mpg.db import notify, transactions
from mpg.server import states
from mpg.wire import model

log = structlog.get_logger(__name__)

#: A result row of any shape (rows are read by column name).
Row: TypeAlias = sa.Row[*tuple[Any, ...]]

# Unix times are sa.Double: sa.Float is FLOAT on MariaDB/MySQL, 4 bytes, which holds a
# Unix time of today only to about 128 s (1764528000.123 read back as 1764530000.0).
metadata = sa.MetaData()


account = sa.Table(
    "Account",
    metadata,
    # A pseudonym of the name (mpg.server.vault), or a registered device's opaque id;
    # rows of an older version: the lower-cased 'name@domain' or serial in clear.
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),
    sa.Column("Kind", sa.Unicode(10), nullable=False),  # gateway | user | device
    sa.Column("Disabled", sa.Boolean(), nullable=False, default=False),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
    # The name (lower-cased 'name@domain', or a device serial as given), encrypted.
    sa.Column("NameEnc", engines.max_binary()),
)

account_key = sa.Table(
    "AccountKey",
    metadata,
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),
    sa.Column("KeyId", sa.Unicode(50), primary_key=True),
    sa.Column("WrappedKey", sa.LargeBinary(), nullable=False),
    sa.Column("Disabled", sa.Boolean(), nullable=False, default=False),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
)

transmit_queue = sa.Table(
    "TransmitQueue",
    metadata,
    sa.Column("MessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SenderAccount", sa.Unicode(100), nullable=False),
    sa.Column("TxMessageId", sa.Unicode(50), nullable=False),
    sa.Column("AppCode", sa.Unicode(20)),
    sa.Column("SourceDomain", sa.Unicode(50)),
    sa.Column("AgentSender", sa.Unicode(100)),
    sa.Column("Sender", sa.Unicode(100)),
    sa.Column("ReceiverType", sa.CHAR(1)),
    sa.Column("ReceiverList", engines.max_text()),
    sa.Column("BccList", engines.max_text()),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", engines.max_text()),
    sa.Column("ContentType", sa.Unicode(20)),
    sa.Column("AlertFlag", sa.Boolean()),
    sa.Column("Priority", sa.Unicode(1)),
    sa.Column("Keywords", sa.Unicode(200)),
    sa.Column("TransmitTime", sa.Unicode(20)),
    sa.Column("ReceivedAt", sa.Double(), nullable=False),
    sa.Column("RecipientCount", sa.Integer(), nullable=False),
    sa.Column("ServedCount", sa.Integer(), nullable=False, default=0),
    sa.Column("RecalledCount", sa.Integer(), nullable=False, default=0),
    sa.Column("State", sa.Unicode(10), nullable=False),  # queued | served
    # JSON of the first answer, returned again to a resubmission; '' (and no
    # SubmitResultEnc) when the row's own columns say it (mpg.server.rows).
    sa.Column("SubmitResult", engines.max_text(), nullable=False),
    # SHA-256 of the message's content (mpg.server.identity.digest): the same
    # TxMessageId with other content is refused. NULL on rows from before the column.
    sa.Column("ContentDigest", sa.Unicode(64)),
    # The personal columns above, encrypted (row key MessageId); the clear ones are
    # NULL ('' for SubmitResult) on rows written since (mpg.server.vault).
    sa.Column("AgentSenderEnc", engines.max_binary()),
    sa.Column("SenderEnc", engines.max_binary()),
    sa.Column("ReceiverListEnc", engines.max_binary()),
    sa.Column("BccListEnc", engines.max_binary()),
    sa.Column("SubjectEnc", engines.max_binary()),
    sa.Column("ContentEnc", engines.max_binary()),
    sa.Column("KeywordsEnc", engines.max_binary()),
    sa.Column("SubmitResultEnc", engines.max_binary()),
    # TxMessageId first: the one key serves the submit's idempotency read, the race
    # between two processes submitting the same message, and the console's search by
    # TxMessageId, so each message lands in one index keyed by the sender's GUIDs,
    # not two (docs/benchmarks.md, "One key for a sender's TxMessageIds").
    sa.UniqueConstraint("TxMessageId", "SenderAccount", name="UQ_TransmitQueue_TxSender"),
    # The console's message search (mpg.server.tracking): each filter with the
    # newest-first order it pages by (docs/benchmarks.md, "Message tracking").
    sa.Index("IX_TransmitQueue_Received", "ReceivedAt", "MessageId"),
    sa.Index("IX_TransmitQueue_Sender", "SenderAccount", "ReceivedAt", "MessageId"),
    sa.Index("IX_TransmitQueue_AppCode", "AppCode", "ReceivedAt", "MessageId"),
    sa.Index("IX_TransmitQueue_State", "State", "ReceivedAt", "MessageId"),
)

transmit_attachment = sa.Table(
    "TransmitAttachment",
    metadata,
    sa.Column("MessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SeqNo", sa.Integer(), primary_key=True),
    sa.Column("FileName", sa.Unicode(250)),
    sa.Column("FileType", sa.Unicode(10)),
    sa.Column("FileSize", sa.BigInteger(), nullable=False),
    sa.Column("DownloadFlag", sa.Integer(), nullable=False),
    sa.Column("Sha256", sa.Unicode(64), nullable=False),
    sa.Column("BlobPath", sa.Unicode(1024), nullable=False),
    # FileName encrypted (row key "MessageId/SeqNo"); FileName is NULL on new rows.
    sa.Column("FileNameEnc", engines.max_binary()),
    # The data key the file is encrypted under; NULL: a clear file of an older version.
    sa.Column("BlobKeyId", sa.Unicode(255)),
)

receive_queue = sa.Table(
    "ReceiveQueue",
    metadata,
    sa.Column("EntryId", sa.Unicode(50), primary_key=True),  # the recipient's RxMessageId
    sa.Column("MessageId", sa.Unicode(50), nullable=False),
    sa.Column("Recipient", sa.Unicode(100), nullable=False),
    # message (receipt: an entry of a version before ReceiptQueue; create_tables moves
    # them there)
    sa.Column("Kind", sa.Unicode(10), nullable=False),
    # What of the Bcc list this recipient may see.
    sa.Column("VisibleBcc", engines.max_text()),
    sa.Column("PriorityRank", sa.Integer(), nullable=False),  # 0 = E ... 3 = L
    sa.Column("State", sa.Unicode(10), nullable=False),  # queued|leased|acked|withdrawn
    sa.Column("LeaseUntil", sa.Double()),
    sa.Column("CreatedSeq", sa.BigInteger(), nullable=False),
    # Receipt entries of a version before ReceiptQueue only.
    sa.Column("TxMessageId", sa.Unicode(50)),
    sa.Column("Served", sa.Integer()),
    sa.Column("Recalled", sa.Integer()),
    # VisibleBcc encrypted (row key EntryId); VisibleBcc is NULL on new rows.
    sa.Column("VisibleBccEnc", engines.max_binary()),
    sa.Index("IX_ReceiveQueue_Fetch", "Recipient", "State", "PriorityRank", "CreatedSeq"),
    sa.Index("IX_ReceiveQueue_Message", "MessageId", "State"),
    # The console's search by recipient (mpg.server.tracking).
    sa.Index("IX_ReceiveQueue_Recipient", "Recipient", "Kind", "MessageId"),
)

receipt_queue = sa.Table(
    "ReceiptQueue",
    metadata,
    # The receipt a served message owes its sender (mpg.server.receipts), as narrow as
    # it can be and with one index beside its key: it is written three times (queued,
    # leased, acknowledged) for every message, each write changes the indexed State,
    # and on PostgreSQL such a write adds an entry to every index of its table.
    sa.Column("MessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SenderAccount", sa.Unicode(100), nullable=False),
    sa.Column("TxMessageId", sa.Unicode(50), nullable=False),
    sa.Column("Served", sa.Integer(), nullable=False),
    sa.Column("Recalled", sa.Integer(), nullable=False),
    sa.Column("PriorityRank", sa.Integer(), nullable=False),  # the message's, 0 = E ... 3 = L
    sa.Column("State", sa.Unicode(10), nullable=False),  # queued | leased | acked
    sa.Column("LeaseUntil", sa.Double()),
    sa.Column("CreatedSeq", sa.BigInteger(), nullable=False),  # shares ReceiveQueue's order
    sa.Index("IX_ReceiptQueue_Fetch", "SenderAccount", "State", "PriorityRank", "CreatedSeq"),
)

upload_stage = sa.Table(
    "UploadStage",
    metadata,
    sa.Column("SenderAccount", sa.Unicode(100), primary_key=True),
    sa.Column("TxMessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SeqNo", sa.Integer(), primary_key=True),
    sa.Column("Size", sa.BigInteger(), nullable=False, default=0),
    sa.Column("Path", sa.Unicode(1024), nullable=False),
    sa.Column("Complete", sa.Boolean(), nullable=False, default=False),
    sa.Column("Sha256", sa.Unicode(64)),
    # The data key of the stage's encrypted file(s); NULL: a stage of an older version.
    sa.Column("KeyId", sa.Unicode(255)),
)

message_event = sa.Table(
    "MessageEvent",
    metadata,
    # What happened to a message on the server, for its sender's `mpg history`.
    sa.Column("Id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("MessageId", sa.Unicode(50), nullable=False),
    sa.Column("At", sa.Double(), nullable=False),  # Unix time
    sa.Column("Kind", sa.Unicode(30), nullable=False),  # see rows.EventKind
    sa.Column("Account", sa.Unicode(100), nullable=False),  # AccountId: who did it (or got it)
    sa.Column("Detail", sa.Unicode(200), nullable=False, default=""),
    sa.Index("IX_MessageEvent_Message", "MessageId", "Id"),
)

seen_nonce = sa.Table(
    "SeenNonce",
    metadata,
    # Request nonces every server process has accepted, so that an envelope replayed
    # to another process sharing this database is refused too (mpg.server.replay).
    # SHA-256 hex of account and nonce: fixed width whatever a client sends.
    sa.Column("NonceKey", sa.Unicode(64), primary_key=True),
    sa.Column("ExpiresAt", sa.Double(), nullable=False),  # Unix time; pruned after
    sa.Index("IX_SeenNonce_Expires", "ExpiresAt"),
)

# The alerting directory (issue 11, docs/devices.md): message groups, their categories,
# domains, registration codes, devices and subscriptions; admin credentials and the
# audit log. Ids people choose (groups, categories) are short slugs that a ReceiverList
# can name; ids the server makes are UUID text (known before the insert, so encrypted
# fields can be bound to their row). Personal data is stored encrypted (columns named
# ...Enc, mpg.wire.atrest, bound to table, column and row key) and found by blind
# index (columns named ...Index: hex of mpg.wire.atrest.Keyring.blind_index).

message_group = sa.Table(
    "MessageGroup",
    metadata,
    sa.Column("GroupId", sa.Unicode(50), primary_key=True),
    sa.Column("Name", sa.Unicode(200), nullable=False),
    sa.Column("Region", sa.Unicode(100), nullable=False, default=""),
    # Public address of the group's message file (issue 12), as devices are told it.
    sa.Column("FileUrl", sa.Unicode(1024), nullable=False, default=""),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
)

category = sa.Table(
    "Category",
    metadata,
    sa.Column("GroupId", sa.Unicode(50), primary_key=True),
    sa.Column("CategoryId", sa.Unicode(50), primary_key=True),
    sa.Column("Name", sa.Unicode(200), nullable=False),
    sa.Column("Preselected", sa.Boolean(), nullable=False, default=False),
    # Unix time: a device's start subscribes it to preselected categories added since.
    sa.Column("CreatedAt", sa.Double(), nullable=False),
)

domain = sa.Table(
    "Domain",
    metadata,
    # One row per (domain, group): a domain may belong to several groups.
    sa.Column("DomainName", sa.Unicode(253), primary_key=True),  # lower-cased
    sa.Column("GroupId", sa.Unicode(50), primary_key=True),
    sa.Column("Region", sa.Unicode(100), nullable=False, default=""),
    # The address the verification code was mailed to (encrypted; row key "domain/group").
    sa.Column("VerifyAddressEnc", engines.max_binary(), nullable=False),
    sa.Column("Verified", sa.Boolean(), nullable=False, default=False),
    sa.Column("VerifiedAt", sa.Unicode(20)),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
)

registration_code = sa.Table(
    "RegistrationCode",
    metadata,
    sa.Column("CodeId", sa.Unicode(36), primary_key=True),  # UUID
    # HMAC of the normalised code (lookup and uniqueness, for ever: kept after delete);
    # the code itself is shown once, when it is made (docs/devices.md).
    sa.Column("CodeIndex", sa.Unicode(64), nullable=False, unique=True),
    sa.Column("Name", sa.Unicode(200), nullable=False),
    sa.Column("Note", sa.Unicode(1000), nullable=False, default=""),
    sa.Column("GroupId", sa.Unicode(50), nullable=False),
    sa.Column("ValidUntil", sa.Double()),  # Unix time; NULL: no end
    # A deleted code stays as a blocked row: never issued again, refused with its reason.
    sa.Column("Deleted", sa.Boolean(), nullable=False, default=False),
    sa.Column("DeletedAt", sa.Unicode(20)),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
)

device = sa.Table(
    "Device",
    metadata,
    # The device's Account (Kind 'device') that the sealed protocol knows it by.
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),
    # Blind index of the device id the phone reports: registering again replaces.
    sa.Column("DeviceIndex", sa.Unicode(64), nullable=False, unique=True),
    sa.Column("DeviceIdEnc", engines.max_binary(), nullable=False),
    sa.Column("GroupId", sa.Unicode(50), nullable=False),
    sa.Column("Via", sa.Unicode(10), nullable=False),  # email | code | idtoken
    # What it registered through: the domain (email, idtoken) or the CodeId (code).
    sa.Column("ViaRef", sa.Unicode(253), nullable=False, default=""),
    sa.Column("EmailEnc", engines.max_binary()),
    sa.Column("EmailIndex", sa.Unicode(64)),
    sa.Column("NameEnc", engines.max_binary()),
    sa.Column("Platform", sa.Unicode(20), nullable=False, default=""),  # android | ios | ...
    sa.Column("PushTokenEnc", engines.max_binary()),
    sa.Column("PushTokenAt", sa.Double()),  # Unix time the device last set its token
    sa.Column("AppVersion", sa.Unicode(50), nullable=False, default=""),
    sa.Column("LastSeen", sa.Double()),
    sa.Column("LastStart", sa.Double()),
    sa.Column("RegisteredAt", sa.Double(), nullable=False),
    # What the push worker learnt of the token (issue 12, docs/push.md "Token hygiene"):
    # 'removed' (PushTokenEnc cleared) or 'flagged', with when and why. It holds for the
    # token of that time only: a PushTokenAt after PushTokenStateAt is a new token.
    sa.Column("PushTokenState", sa.Unicode(10)),
    sa.Column("PushTokenStateAt", sa.Double()),
    sa.Column("PushTokenStateReason", sa.Unicode(200)),
    sa.Index("IX_Device_Group", "GroupId"),
    sa.Index("IX_Device_Via", "Via", "ViaRef"),
)

subscription = sa.Table(
    "Subscription",
    metadata,
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),  # the device
    sa.Column("GroupId", sa.Unicode(50), primary_key=True),
    sa.Column("CategoryId", sa.Unicode(50), primary_key=True),
    sa.Column("SubscribedAt", sa.Double(), nullable=False),
    sa.Index("IX_Subscription_Category", "GroupId", "CategoryId"),
)

verification_code = sa.Table(
    "VerificationCode",
    metadata,
    # Codes mailed to prove an address (mpg.server.verification.IssuedCode): the
    # code's keyed hash bound to its subject, never the code.
    sa.Column("CodeId", sa.Unicode(36), primary_key=True),  # UUID
    sa.Column("Purpose", sa.Unicode(10), nullable=False),  # device | domain
    sa.Column("SubjectIndex", sa.Unicode(64), nullable=False),
    sa.Column("CodeHash", sa.Unicode(64), nullable=False),
    sa.Column("ExpiresAt", sa.Double(), nullable=False),
    sa.Column("WrongTries", sa.Integer(), nullable=False, default=0),
    sa.Column("Used", sa.Boolean(), nullable=False, default=False),
    sa.Index("IX_VerificationCode_Subject", "Purpose", "SubjectIndex"),
)

admin_credential = sa.Table(
    "AdminCredential",
    metadata,
    # Who may call the admin API: a random secret, stored as its SHA-256 (hex).
    sa.Column("CredentialId", sa.Unicode(36), primary_key=True),
    sa.Column("Name", sa.Unicode(100), nullable=False, unique=True),
    sa.Column("Role", sa.Unicode(10), nullable=False),  # viewer | operator | admin
    sa.Column("SecretHash", sa.Unicode(64), nullable=False),
    sa.Column("Disabled", sa.Boolean(), nullable=False, default=False),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
    # The admin console's password (argon2id, PHC string; mpg.server.console.users);
    # NULL: this admin signs in to the console only through OpenID Connect, if at all.
    sa.Column("PasswordHash", sa.Unicode(200)),
)

audit_log = sa.Table(
    "AuditLog",
    metadata,
    # Every admin change: who, what, when (docs/devices.md, "Admin API").
    sa.Column("Id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("At", sa.Unicode(20), nullable=False),
    sa.Column("Actor", sa.Unicode(100), nullable=False),  # admin name, or cli:<os user>
    sa.Column("Action", sa.Unicode(50), nullable=False),  # e.g. group.create
    sa.Column("Target", sa.Unicode(300), nullable=False, default=""),
    sa.Column("Detail", sa.Unicode(2000), nullable=False, default=""),
    sa.Index("IX_AuditLog_At", "At"),
)

push_job = sa.Table(
    "PushJob",
    metadata,
    # One push to one device (issue 12, docs/push.md "Push jobs"), written in the
    # transaction of the message or message-file version that causes it, claimed by
    # a worker with a lease (mpg.server.push.jobs). The token is read from Device at
    # send time, so it is never copied and a refreshed one is used. Times are DOUBLE:
    # MariaDB's FLOAT is single precision, about two minutes at today's Unix times.
    sa.Column("JobId", sa.Unicode(36), primary_key=True),  # UUID
    sa.Column("AccountId", sa.Unicode(100), nullable=False),  # the device
    sa.Column("GroupId", sa.Unicode(50), nullable=False),
    sa.Column("Kind", sa.Unicode(10), nullable=False),  # message | recall | file
    sa.Column("MessageId", sa.Unicode(50)),  # message, recall
    sa.Column("Version", sa.Unicode(80)),  # file: the ETag it announces
    sa.Column("CategoryId", sa.Unicode(50)),  # file: the category's file, if any
    sa.Column("Priority", sa.Unicode(1), nullable=False),
    # pending | leased | sent | failed | parked | cancelled (mpg.server.push.jobs.JobState)
    sa.Column("State", sa.Unicode(10), nullable=False),
    sa.Column("NotBefore", sa.Double(), nullable=False),  # Unix time it is due
    sa.Column("LeaseUntil", sa.Double()),
    sa.Column("Attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("LastError", sa.Unicode(200)),
    sa.Column("ProviderId", sa.Unicode(200)),
    sa.Column("CreatedAt", sa.Double(), nullable=False),
    sa.Column("DoneAt", sa.Double()),
    sa.Index("IX_PushJob_Due", "State", "NotBefore"),
    sa.Index("IX_PushJob_Message", "MessageId"),
)

device_removal = sa.Table(
    "DeviceRemoval",
    metadata,
    # When and why a device was removed (mpg.server.directory.removal), for
    # `mpg server explain`: the Device row is gone, this says what became of it.
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),
    # The removed row's DeviceIndex, so the device id it reported still finds it.
    sa.Column("DeviceIndex", sa.Unicode(64), nullable=False),
    sa.Column("GroupId", sa.Unicode(50), nullable=False),
    sa.Column("RemovedAt", sa.Double(), nullable=False),
    sa.Column("Reason", sa.Unicode(200), nullable=False),
    sa.Index("IX_DeviceRemoval_Index", "DeviceIndex"),
)

console_session = sa.Table(
    "ConsoleSession",
    metadata,
    # A signed-in admin console user (mpg.server.console.sessions). The cookie holds a
    # random id; only its SHA-256 is kept, so the table's rows sign nobody in. Times
    # are Unix seconds.
    sa.Column("SessionHash", sa.Unicode(64), primary_key=True),
    sa.Column("Name", sa.Unicode(200), nullable=False),
    sa.Column("Role", sa.Unicode(10), nullable=False),  # viewer | operator | admin
    sa.Column("Source", sa.Unicode(10), nullable=False),  # password | oidc
    sa.Column("CsrfToken", sa.Unicode(64), nullable=False),
    sa.Column("CreatedAt", sa.Double(), nullable=False),
    sa.Column("LastSeen", sa.Double(), nullable=False),
    sa.Index("IX_ConsoleSession_CreatedAt", "CreatedAt"),
)

console_lockout = sa.Table(
    "ConsoleLockout",
    metadata,
    # Failed console sign-ins per user name and per client address
    # (mpg.server.console.lockout): "user:<name>" or "addr:<address>".
    sa.Column("Subject", sa.Unicode(300), primary_key=True),
    sa.Column("Failures", sa.Integer(), nullable=False),
    sa.Column("WindowStart", sa.Double(), nullable=False),
    sa.Column("LockedUntil", sa.Double()),
)

message_keyword = sa.Table(
    "MessageKeyword",
    metadata,
    # One row per keyword of an accepted message, for the console's search by keyword
    # (mpg.server.tracking): Keywords is sealed in TransmitQueue, so a keyword is found
    # by its blind index (Vault.keyword_index, hex). ReceivedAt is the message's, so a
    # search pages newest first through this table's index alone.
    sa.Column("MessageId", sa.Unicode(50), primary_key=True),
    sa.Column("KeywordIndex", sa.Unicode(64), primary_key=True),
    sa.Column("ReceivedAt", sa.Double(), nullable=False),
    sa.Index("IX_MessageKeyword_Search", "KeywordIndex", "ReceivedAt", "MessageId"),
)

ALL_TABLES: Final = (
    account,
    account_key,
    transmit_queue,
    transmit_attachment,
    receive_queue,
    receipt_queue,
    upload_stage,
    message_event,
    seen_nonce,
    message_group,
    category,
    domain,
    registration_code,
    device,
    subscription,
    verification_code,
    admin_credential,
    audit_log,
    push_job,
    device_removal,
    console_session,
    console_lockout,
    message_keyword,
)


#: The server's engine: a pool for its threadpool workers, and READ COMMITTED on
#: MariaDB, whose default REPEATABLE READ takes gap locks on the fetch index so that
#: processes leasing one queue deadlock (READ COMMITTED, PostgreSQL's default, locks
#: only the rows it reads, which is what SKIP LOCKED needs). Every other database
#: setting is the core's (:mod:`mpg.db.engine`); every server transaction is a
#: :func:`mpg.db.transactions.begin`, so on SQLite it holds the write lock from its
#: first statement and two fetches can never lease the same entry.
ENGINE_OPTIONS: Final = engines.EngineOptions(
    url_key="server.database_url", pool_size=8, max_overflow=32, read_committed=True
)


def create_engine(url: str) -> sa.Engine:
    """An engine for ``server.database_url``."""
    return engines.create_engine(url, ENGINE_OPTIONS)


#: The PostgreSQL advisory lock that orders create_tables between processes (a fixed
#: key: the bytes of "mpgschm" as a number).
_SCHEMA_LOCK: Final = sa.text("SELECT pg_advisory_xact_lock(30804362081298541)")


def create_tables(engine: sa.Engine) -> list[str]:
    """Create the server's missing tables; return the names created.

    An existing table gets the nullable columns its definition here has and it lacks
    (a column added in a later version) and the indexes it lacks, and on MariaDB/MySQL
    its Unix-time columns made as 4-byte FLOAT by earlier versions become DOUBLE; the
    keys a later version replaced are replaced (:data:`_RETIRED_KEYS`); nothing else is
    altered. A missing column that may not be NULL cannot be added to rows already
    there: SchemaMismatch. Server processes starting together on one PostgreSQL
    database do this one after another: the first does the work, the others find it done.
    """
    with transactions.begin(engine, "creating the server tables") as conn:
        if conn.dialect.name == "postgresql":
            # Released at commit. Without it each process saw the same missing tables
            # and keys and all but one failed on the other's CREATE or ALTER. (SQLite's
            # write lock already orders them; scale-out is PostgreSQL's.)
            conn.execute(_SCHEMA_LOCK)
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names())
        metadata.create_all(conn, checkfirst=True)
        for table in ALL_TABLES:
            if table.name not in existing:
                continue
            if table.name in _RETIRED_KEYS and _replace_retired_keys(conn, table, inspector):
                continue  # copied under its current definition: nothing else to add
            _add_missing_columns(conn, table, inspector)
            _add_missing_indexes(conn, table, inspector)
            _widen_single_floats(conn, table, inspector)
        if receive_queue.name in existing and receipt_queue.name not in existing:
            _move_receipt_entries(conn)
    return [table.name for table in ALL_TABLES if table.name not in existing]


class _RetiredKeys(NamedTuple):
    """The keys of one table that an earlier version made and a later one replaced."""

    constraints: tuple[str, ...]  # unique constraints
    indexes: tuple[str, ...]


#: Keys that deployed tables may still have, by table. UQ_TransmitQueue_SenderTx
#: (SenderAccount, TxMessageId) and IX_TransmitQueue_Tx (TxMessageId) became
#: UQ_TransmitQueue_TxSender (TxMessageId, SenderAccount), one index instead of two.
_RETIRED_KEYS: Final[collections.abc.Mapping[str, _RetiredKeys]] = {
    "TransmitQueue": _RetiredKeys(("UQ_TransmitQueue_SenderTx",), ("IX_TransmitQueue_Tx",)),
}


def _replace_retired_keys(conn: sa.Connection, table: sa.Table, inspector: sa.Inspector) -> bool:
    """Give a deployed ``table`` the unique constraints it lacks and drop its retired
    keys, once: after that nothing is left to do. True when the table was copied.

    A unique constraint is part of a SQLite table's definition, which SQLite cannot
    alter: there the table is rebuilt (copied under its current definition, with every
    current column and index, which takes a while on a large table, once, at start).
    Elsewhere the constraint is added and the old one dropped.
    """
    retired = _RETIRED_KEYS[table.name]
    present = {c["name"] for c in inspector.get_unique_constraints(table.name)}
    indexes = {i["name"] for i in inspector.get_indexes(table.name)}
    missing = [
        c for c in table.constraints if isinstance(c, sa.UniqueConstraint) and c.name not in present
    ]
    old_constraints = [name for name in retired.constraints if name in present]
    old_indexes = [name for name in retired.indexes if name in indexes]
    if not (missing or old_constraints or old_indexes):
        return False
    log.info(
        "replacing retired keys",
        table=table.name,
        added=[c.name for c in missing],
        dropped=old_constraints + old_indexes,
    )
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite_table(conn, table, inspector)
        return True
    for statement in key_changes(conn.dialect, table, missing, old_constraints, old_indexes):
        conn.exec_driver_sql(statement)
    return False


def key_changes(
    dialect: sa.Dialect,
    table: sa.Table,
    missing: collections.abc.Sequence[sa.UniqueConstraint],
    old_constraints: collections.abc.Sequence[str],
    old_indexes: collections.abc.Sequence[str],
) -> list[str]:
    """The statements that add ``missing`` to ``table`` and drop its retired unique
    constraints and indexes, on a database that alters constraints (not SQLite)."""
    prep = dialect.identifier_preparer
    quoted = prep.format_table(table)
    # Written out rather than sa.schema.AddConstraint, which marks the shared
    # definition's constraint as added apart, so later CREATE TABLEs would leave it out.
    statements = [
        f"ALTER TABLE {quoted} ADD CONSTRAINT {prep.quote(str(c.name))}"
        f" UNIQUE ({', '.join(prep.quote(col.name) for col in c.columns)})"
        for c in missing
    ]
    # MariaDB keeps a unique constraint as a unique index of the same name.
    drop = "DROP INDEX" if dialect.name in ("mysql", "mariadb") else "DROP CONSTRAINT"
    statements += [f"ALTER TABLE {quoted} {drop} {prep.quote(name)}" for name in old_constraints]
    on_table = f" ON {quoted}" if dialect.name in ("mysql", "mariadb", "mssql") else ""
    statements += [f"DROP INDEX {prep.quote(name)}{on_table}" for name in old_indexes]
    return statements


def _rebuild_sqlite_table(conn: sa.Connection, table: sa.Table, inspector: sa.Inspector) -> None:
    # SQLite's way to change a table's constraints: a new table of the current
    # definition, the rows copied over, the old table dropped. The old one is renamed
    # first (its indexes dropped) so the new one is made under its own name.
    columns = [c["name"] for c in inspector.get_columns(table.name)]
    unknown = sorted(set(columns) - set(table.columns.keys()))
    if unknown:
        raise errors.SchemaMismatch(
            f"{table.name} has columns this version does not know ({', '.join(unknown)}): "
            "its keys cannot be changed without losing them; start from a new database "
            "or drop the columns by hand"
        )
    rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    # Said before the copy, which shows no progress of its own: about 2.5 s per
    # 100,000 messages on the benchmarks' machine (docs/benchmarks.md).
    log.warning("copying a table under its new keys, once", table=table.name, rows=rows)
    prep = conn.dialect.identifier_preparer
    retired = table.name + "_retired"
    for found in inspector.get_indexes(table.name):
        conn.exec_driver_sql(f"DROP INDEX {prep.quote(str(found['name']))}")
    conn.exec_driver_sql(f"ALTER TABLE {prep.format_table(table)} RENAME TO {prep.quote(retired)}")
    conn.execute(sa.schema.CreateTable(table))
    copied = sa.select(sa.table(retired, *(sa.column(name) for name in columns)))
    conn.execute(table.insert().from_select(columns, copied))
    conn.exec_driver_sql(f"DROP TABLE {prep.quote(retired)}")
    # Indexes built once over the copied rows rather than grown row by row.
    for index in table.indexes:
        index.create(conn)
    log.info("table copied", table=table.name, rows=rows)


def _move_receipt_entries(conn: sa.Connection) -> None:
    """Move the receipts an earlier version queued as ``ReceiveQueue`` entries to
    ``ReceiptQueue``, once, as that table is made.

    A stored receipt stays stored; a queued or leased one is queued again, so its
    sender fetches it once more under its new id (a gateway applies a receipt it
    has seen before as a no-op) rather than acknowledging an entry that is gone.
    """
    r = receive_queue.c
    old = r.Kind == model.DeliveryKind.RECEIPT
    state = sa.case(
        (r.State == states.EntryState.ACKED, states.ReceiptState.ACKED),
        else_=states.ReceiptState.QUEUED,
    )
    moved = sa.select(
        r.MessageId,
        r.Recipient,
        r.TxMessageId,
        sa.func.coalesce(r.Served, 0),
        sa.func.coalesce(r.Recalled, 0),
        r.PriorityRank,
        state,
        r.CreatedSeq,
    ).where(old)
    columns = [
        "MessageId",
        "SenderAccount",
        "TxMessageId",
        "Served",
        "Recalled",
        "PriorityRank",
        "State",
        "CreatedSeq",
    ]
    conn.execute(receipt_queue.insert().from_select(columns, moved))
    conn.execute(receive_queue.delete().where(old))


def _widen_single_floats(conn: sa.Connection, table: sa.Table, inspector: sa.Inspector) -> None:
    # Earlier versions declared Unix times as sa.Float: FLOAT on MariaDB, which keeps a
    # time of today only to about two minutes (leases, expiries). Other databases
    # made them 8-byte already.
    if conn.dialect.name not in ("mysql", "mariadb"):
        return
    found = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
    quoted = conn.dialect.identifier_preparer.format_table(table)
    for column in table.columns:
        kind = found.get(column.name)
        if not isinstance(column.type, sa.Double) or kind is None:
            continue
        if type(kind).__name__.upper() != "FLOAT":
            continue
        name = conn.dialect.identifier_preparer.quote(column.name)
        null = "NULL" if column.nullable else "NOT NULL"
        conn.exec_driver_sql(f"ALTER TABLE {quoted} MODIFY {name} DOUBLE {null}")


def _add_missing_columns(conn: sa.Connection, table: sa.Table, inspector: sa.Inspector) -> None:
    present = {c["name"] for c in inspector.get_columns(table.name)}
    quoted = conn.dialect.identifier_preparer.format_table(table)
    for column in table.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise errors.SchemaMismatch(
                f"{table.name}.{column.name} is missing and may not be NULL: "
                "add it to the existing rows by hand, or start from a new database"
            )
        ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD {ddl}")


def _add_missing_indexes(conn: sa.Connection, table: sa.Table, inspector: sa.Inspector) -> None:
    # An index a later version declares (e.g. the console's search) is made on a
    # deployed table too; on a large table this takes a while, once, at start.
    present = {index["name"] for index in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in present:
            index.create(conn)


#: The PostgreSQL channel on which a commit that queued entries names their accounts.
QUEUED_CHANNEL: Final = "mpg_server_queued"
#: Before an AccountId in a notification of receipts (an AccountId never has a space).
RECEIPTS_PREFIX: Final = "receipts "


def announce(
    conn: sa.Connection, accounts: collections.abc.Iterable[str], *, receipts: bool = False
) -> None:
    """Tell every server process (PostgreSQL ``NOTIFY``) that entries await ``accounts``
    (``receipts``: receipts for the senders of messages just served, announced as
    :data:`RECEIPTS_PREFIX` + AccountId, which :mod:`mpg.server.receiptwakes` paces).

    Called inside the transaction that queued them, so a listener is never woken
    before the entries are visible (:func:`mpg.db.notify.send`); elsewhere a no-op:
    the other processes find the entries by polling.
    """
    prefix = RECEIPTS_PREFIX if receipts else ""
    notify.send(conn, QUEUED_CHANNEL, [prefix + account for account in accounts])
