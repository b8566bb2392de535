"""The inbound folder and the receipt folder: files the gateway writes for the ERP.

Both follow the transition history (``MpgTransition``) from their position in
``MpgExport`` (:mod:`mpg.storage.exports`). The history row of a stored message is
written in the same transaction as its Inbox row, and the history row of an Outbox
state change in the same transaction as the change, so following the history
misses nothing that was committed and sees nothing that was not:

* a message is stored, then its file is written, then the position moves on; the
  inbound worker does this before it acknowledges the batch;
* after a crash anywhere in between, the next export (at start, or after the next
  batch) writes the files after the position again. A file name depends only on
  the history row, so a file written twice is the same file replaced atomically:
  the folder holds each message exactly once.

File names start with the history row's time (``yyyyMMddHHmmssffffff``, UTC) and id,
so they sort in the order things happened.
"""

from __future__ import annotations

import abc
import pathlib
import threading
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa
import structlog

from mpg import errors, faults
from mpg.gateway import files
from mpg.storage import exports, history, inbox, outbox
from mpg.storage.states import InboxState
from mpg.wire import dropfile

log = structlog.get_logger("mpg.folders")

#: History rows read per round.
BATCH: Final = 500
#: Suffix of the folder holding a message's attachments, beside its XML file.
FILES_SUFFIX: Final = ".files"
#: Inbox time columns, padded to nchar(20) by SQL Server.
_PADDED: Final = frozenset({"TransmitTime", "ReceiveTime", "StatusTime"})


def file_name(transition: history.Transition) -> str:
    """``<yyyyMMddHHmmssffffff>-<history id>-<message key>.xml``: sorts in order."""
    stamp = dropfile.file_stamp(transition.at)
    return f"{stamp}-{transition.id:010d}-{dropfile.safe_name(transition.message_key)}.xml"


class _HistoryFolder(abc.ABC):
    """Writes one file per wanted history row, then moves its position on."""

    #: The writer's name in ``MpgExport``.
    name = ""

    def __init__(self, engine: sa.Engine, folder: pathlib.Path) -> None:
        self.engine = engine
        self.folder = folder
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Create the folder and fix the starting point (the newest history row, the
        first time this folder is configured)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        exports.position(self.engine, self.name)

    def export(self) -> int:
        """Write the files of every wanted history row after the position; return how many."""
        written = 0
        with self._lock:
            while True:
                rows = exports.pending(self.engine, self.name, BATCH)
                for row in rows:
                    if self.wanted(row):
                        written += self._write_one(row)
                if rows:
                    exports.advance(self.engine, self.name, rows[-1].id)
                if len(rows) < BATCH:
                    break
        if written:
            log.info("folder_files_written", folder=self.name, files=written)
        return written

    def _write_one(self, transition: history.Transition) -> int:
        try:
            return self.write(transition)
        except errors.WireError as exc:
            # A row XML cannot carry (a control character the ERP wrote into it) can
            # never be written; retrying would stop every later file, so it is logged.
            log.error(
                "folder_file_unwritable",
                folder=self.name,
                message_key=transition.message_key,
                error=str(exc),
            )
            return 0

    @abc.abstractmethod
    def wanted(self, transition: history.Transition) -> bool:
        """Whether ``transition`` gets a file."""

    @abc.abstractmethod
    def write(self, transition: history.Transition) -> int:
        """Write the file of ``transition``; return 1, or 0 if there was nothing to write."""


class InboundFolder(_HistoryFolder):
    """One ``<message>`` file per message stored in Inbox, attachments beside it."""

    name = "inbound-files"

    def __init__(
        self, engine: sa.Engine, folder: pathlib.Path, inbox_repo: inbox.InboxRepository
    ) -> None:
        super().__init__(engine, folder)
        self._inbox = inbox_repo

    def wanted(self, transition: history.Transition) -> bool:
        """The step that created an Inbox row."""
        return (
            transition.box == "in"
            and transition.from_state is None
            and transition.to_state == InboxState.NEW
        )

    def write(self, transition: history.Transition) -> int:
        """Attachments first (a reader that sees the XML finds them), the XML last."""
        row = self._inbox.get(transition.message_key)
        if row is None:
            log.warning("inbound_file_skipped", rx_message_id=transition.message_key)
            return 0  # the ERP deleted the row already: nothing left to write
        target = self.folder / file_name(transition)
        folder = self.folder / (target.stem + FILES_SUFFIX)
        attachments = self._attachments(row["attachments"], folder)
        fields = {
            name: (value.strip() if name in _PADDED and isinstance(value, str) else value)
            for name, value in row.items()
            if name in dropfile.FIELDS
        }
        files.write_atomic(target, dropfile.build_message(fields, attachments))
        faults.reach(faults.INBOUND_FOLDER_WRITTEN)
        return 1

    def _attachments(
        self, metas: Sequence[dict[str, Any]], folder: pathlib.Path
    ) -> list[dropfile.Attachment]:
        out = []
        for meta in metas:
            seq = int(meta["SeqNo"] or 0)
            name = str(meta["FileName"] or "")
            local = ""
            if meta["HasFileData"]:
                stored = self._inbox.attachment(str(meta["AttachmentId"]))
                data = stored["FileData"] if stored is not None else None
                if data is not None:
                    local = f"{folder.name}/{seq}-{dropfile.safe_name(name)}"
                    files.write_atomic(self.folder / local, bytes(data))
            out.append(
                dropfile.Attachment(
                    name=name,
                    file=local,
                    download_flag=int(meta["DownloadFlag"] or 0),
                    seq_no=seq,
                    size=None if meta["FileSize"] is None else int(meta["FileSize"]),
                    attachment_id=str(meta["AttachmentId"]),
                    source_uri=str(meta["SourceUri"] or ""),
                )
            )
        return out


class ReceiptFolder(_HistoryFolder):
    """One ``<receipt>`` file per Outbox state change into one of ``states``."""

    name = "receipt-files"

    def __init__(
        self,
        engine: sa.Engine,
        folder: pathlib.Path,
        outbox_repo: outbox.OutboxRepository,
        states: Sequence[int],
    ) -> None:
        super().__init__(engine, folder)
        self._outbox = outbox_repo
        self._states = frozenset(states)

    def wanted(self, transition: history.Transition) -> bool:
        """An Outbox step into one of the configured states."""
        return transition.box == "out" and transition.to_state in self._states

    def write(self, transition: history.Transition) -> int:
        """The receipt of one step; MessageId and StatusTime as the row has them now."""
        row = self._outbox.get(transition.message_key)
        receipt = dropfile.Receipt(
            tx_message_id=transition.message_key,
            state=transition.to_state,
            from_state=transition.from_state,
            message_id=(row.message_id or "") if row else "",
            status_time=(row.status_time or "").strip() if row else "",
            status_log=transition.reason,
            at=transition.at,
        )
        files.write_atomic(self.folder / file_name(transition), dropfile.build_receipt(receipt))
        faults.reach(faults.RECEIPT_FOLDER_WRITTEN)
        return 1
