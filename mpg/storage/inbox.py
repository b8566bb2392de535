"""InboxRepository: stores deliveries exactly once and serves the ERP-side commands.

``RxMessageId`` is the exactly-once key: a delivery fetched again after a crash (the
server re-leases what was not acknowledged) is skipped, so acknowledging after
:meth:`InboxRepository.store` committed is always safe.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import bulk, transactions
from mpg.storage import history, schema, states, tables
from mpg.wire import model

#: Ids per ``IN (…)`` list; SQL Server takes at most 2100 parameters per statement.
_IN_CHUNK: Final = 500

_i = tables.inbox.c
_a = tables.inbox_attachment.c

_ATTACHMENT_META: Final = tuple(c for c in tables.inbox_attachment.columns if c.name != "FileData")

_CAS: Final = (
    sa.update(tables.inbox)
    .where(_i.RxMessageId == sa.bindparam("p_rx"), _i.State == sa.bindparam("p_expected"))
    .values(
        State=sa.bindparam("p_state"),
        StatusTime=sa.bindparam("p_status_time"),
        StatusLog=sa.bindparam("p_status_log"),
    )
)


class InboxRepository:
    """Reads and changes Inbox (and InboxAttachment) rows for one gateway account."""

    def __init__(
        self,
        engine: sa.Engine,
        gateway_account: str,
        clock: timefmt.Clock = "local",
        *,
        source_uri_width: int | None = tables.SOURCE_URI_WIDTH,
    ) -> None:
        self.engine = engine
        self.gateway_account = gateway_account
        self.clock: timefmt.Clock = clock
        #: InboxAttachment.SourceUri as found; a URI that does not fit is stored as NULL.
        self.source_uri_width = source_uri_width

    def store(
        self,
        deliveries: Sequence[model.Delivery],
        files: Mapping[tuple[str, int], bytes | None],
        source_uris: Mapping[tuple[str, int], str],
    ) -> list[str]:
        """Insert new deliveries and their attachments in one transaction.

        ``files`` holds the bytes of attachments fetched with the message (keyed by
        RxMessageId and SeqNo; DownloadFlag 1), ``source_uris`` where each attachment
        can be fetched later. RxMessageIds already stored are skipped; returns the
        ones inserted, in order.
        """
        unique = list({d.rx_message_id: d for d in deliveries}.values())
        if not unique:
            return []
        now = timefmt.now_text(self.clock)
        with transactions.begin(self.engine, "storing deliveries in Inbox") as conn:
            present = _existing(conn, [d.rx_message_id for d in unique])
            fresh = [d for d in unique if d.rx_message_id not in present]
            if fresh:
                bulk.insert_rows(conn, tables.inbox, [_inbox_row(d, now) for d in fresh])
            attachments = [
                _attachment_row(d.rx_message_id, info, files, source_uris, self.source_uri_width)
                for d in fresh
                for info in d.attachments
            ]
            if attachments:
                bulk.insert_rows(conn, tables.inbox_attachment, attachments)
            steps = [
                history.Step(d.rx_message_id, None, int(states.InboxState.NEW), "received")
                for d in fresh
            ]
            history.record(conn, "in", self.gateway_account, steps)
        history.log_steps("in", steps)
        return [d.rx_message_id for d in fresh]

    def existing(self, rx_ids: Sequence[str]) -> set[str]:
        """The ones of ``rx_ids`` already stored (their repeated delivery is only acknowledged)."""
        with transactions.connect(self.engine, "reading Inbox") as conn:
            return _existing(conn, rx_ids)

    def list(
        self, state: int | None, limit: int, app_code: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Inbox rows keyed by column name, oldest received first; ``state`` None for all."""
        query = sa.select(tables.inbox)
        if state is not None:
            query = query.where(_i.State == state)
        if app_code is not None:
            query = query.where(_i.AppCode == app_code)
        query = query.order_by(_i.ReceiveTime, _i.RxMessageId).limit(limit)
        with transactions.connect(self.engine, "listing Inbox") as conn:
            return [_inbox_dict(m) for m in conn.execute(query).mappings()]

    def get(self, rx_id: str) -> dict[str, Any] | None:
        """One Inbox row (column names) plus ``attachments``: their columns but FileData,
        and ``HasFileData`` (False until an on-demand attachment was fetched)."""
        query = sa.select(tables.inbox).where(_i.RxMessageId == rx_id)
        meta = (
            sa.select(*_ATTACHMENT_META, _a.FileData.is_not(None).label("HasFileData"))
            .where(_a.MessageId == rx_id)
            .order_by(_a.SeqNo)
        )
        with transactions.connect(self.engine, "reading Inbox") as conn:
            found = conn.execute(query).mappings().first()
            if found is None:
                return None
            row = _inbox_dict(found)
            row["attachments"] = [
                {**_attachment_dict(m), "HasFileData": bool(m["HasFileData"])}
                for m in conn.execute(meta).mappings()
            ]
        return row

    def counts(self) -> dict[int, int]:
        """Number of rows per State (rows with a NULL State are not counted)."""
        query = sa.select(_i.State, sa.func.count()).where(_i.State.is_not(None)).group_by(_i.State)
        with transactions.connect(self.engine, "counting Inbox rows") as conn:
            return {int(state): int(n) for state, n in conn.execute(query)}

    def mark_read(self, rx_ids: Iterable[str]) -> int:
        """Move new rows (0) to read (29); return how many moved."""
        return self._move(list(dict.fromkeys(rx_ids)), states.InboxState.READ, None)

    def mark_recalled(self, message_id: str) -> int:
        """Move the still-new rows of a recalled message (0) to 98; return how many."""
        return self._move(None, states.InboxState.RECALLED, message_id)

    def attachment(self, attachment_id: str) -> dict[str, Any] | None:
        """One InboxAttachment row by column name, FileData included (None until fetched)."""
        query = sa.select(tables.inbox_attachment).where(_a.AttachmentId == _uuid(attachment_id))
        with transactions.connect(self.engine, "reading InboxAttachment") as conn:
            found = conn.execute(query).mappings().first()
        if found is None:
            return None
        return {**_attachment_dict(found), "FileData": found["FileData"]}

    def save_attachment_data(self, attachment_id: str, data: bytes) -> None:
        """Store the bytes of an attachment fetched on demand (DownloadFlag 0)."""
        statement = (
            sa.update(tables.inbox_attachment)
            .where(_a.AttachmentId == _uuid(attachment_id))
            .values(FileData=data)
        )
        with transactions.begin(self.engine, "saving InboxAttachment data") as conn:
            if conn.execute(statement).rowcount != 1:
                raise errors.StorageError(f"no InboxAttachment {attachment_id}")

    def save_attachment_file(self, attachment_id: str, path: str) -> None:
        """Point an attachment fetched on demand into a file (SourceUri) at that file."""
        statement = (
            sa.update(tables.inbox_attachment)
            .where(_a.AttachmentId == _uuid(attachment_id))
            .values(SourceUri=path)
        )
        with transactions.begin(self.engine, "saving InboxAttachment file") as conn:
            if conn.execute(statement).rowcount != 1:
                raise errors.StorageError(f"no InboxAttachment {attachment_id}")

    def _move(
        self, rx_ids: Sequence[str] | None, to_state: states.InboxState, message_id: str | None
    ) -> int:
        """Compare-and-set 0 -> ``to_state`` for ``rx_ids`` or the rows of ``message_id``."""
        from_state = states.InboxState.NEW
        reason = states.check_inbox(from_state, to_state)
        now = timefmt.now_text(self.clock)
        with transactions.begin(self.engine, "changing Inbox state") as conn:
            if rx_ids is None:
                pick = sa.select(_i.RxMessageId).where(
                    _i.MessageId == message_id, _i.State == from_state
                )
                rx_ids = [str(rx) for rx in conn.scalars(pick)]
            params = [
                {
                    "p_rx": rx,
                    "p_expected": int(from_state),
                    "p_state": int(to_state),
                    "p_status_time": now,
                    "p_status_log": reason,
                }
                for rx in rx_ids
            ]
            moved = [rx_ids[i] for i in transactions.compare_and_set(conn, _CAS, params)]
            steps = [history.Step(rx, int(from_state), int(to_state), reason) for rx in moved]
            history.record(conn, "in", self.gateway_account, steps)
        history.log_steps("in", steps)
        return len(moved)


#: An IN list, not plans.key_in: the Inbox is the ERP's table and may hold keys of any type.
_EXISTING: Final = sa.select(_i.RxMessageId).where(
    _i.RxMessageId.in_(sa.bindparam("p_rx", expanding=True))
)


def _existing(conn: sa.Connection, rx_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(rx_ids), _IN_CHUNK):
        chunk = list(rx_ids[start : start + _IN_CHUNK])
        found.update(str(rx) for rx in conn.scalars(_EXISTING, {"p_rx": chunk}))
    return found


def _inbox_row(d: model.Delivery, now: str) -> dict[str, Any]:
    return {
        "RxMessageId": d.rx_message_id,
        "AppCode": d.app_code,
        "SourceDomain": d.source_domain,
        "AgentSender": d.agent_sender,
        "Sender": d.sender,
        "Owner": d.owner,
        "ReceiverType": d.receiver_type,
        "ReceiverList": d.receiver_list,
        "BccList": d.bcc_list,
        "Subject": d.subject,
        "Content": d.content,
        "ContentType": d.content_type,
        "AttachmentFlag": bool(d.attachments),
        "AlertFlag": d.alert_flag,
        "MessageId": d.message_id,
        "State": int(states.InboxState.NEW),
        "TransmitTime": d.transmit_time,
        "ReceiveTime": now,
        "StatusTime": now,
        "StatusLog": "received",
        "Priority": d.priority,
        "Keywords": d.keywords,
    }


def _attachment_row(
    rx_id: str,
    info: model.AttachmentInfo,
    files: Mapping[tuple[str, int], bytes | None],
    source_uris: Mapping[tuple[str, int], str],
    uri_width: int | None,
) -> dict[str, Any]:
    key = (rx_id, info.seq_no)
    return {
        "AttachmentId": uuid.uuid4(),
        "MessageId": rx_id,
        "SeqNo": info.seq_no,
        "FileName": info.file_name,
        "FileType": info.file_type,
        "FileSize": info.file_size,
        # Only DownloadFlag 1 files come with the message; the others on demand.
        "FileData": files.get(key) if info.download_flag == 1 else None,
        "SourceUri": schema.fit(source_uris.get(key), uri_width),
        "DownloadFlag": info.download_flag,
    }


def _inbox_dict(mapping: sa.RowMapping) -> dict[str, Any]:
    return {c.name: mapping[c.name] for c in tables.inbox.columns}


def _attachment_dict(mapping: sa.RowMapping) -> dict[str, Any]:
    row = {c.name: mapping[c.name] for c in _ATTACHMENT_META}
    row["AttachmentId"] = str(row["AttachmentId"])
    return row


def _uuid(attachment_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(attachment_id)
    except ValueError:
        raise errors.ValidationError("attachment_id", "not a UUID") from None
