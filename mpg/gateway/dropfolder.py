"""The drop folder: one XML file per message becomes one Outbox row (State 10).

The worker scans the folder at start, whenever watchdog reports a change, and every
``drop_scan_interval`` seconds (the safety net). It takes only ``*.xml`` files, and
only once they have not been modified for ``drop_settle`` seconds, so a writer that
follows the convention (write ``NAME.tmp``, then rename) and a slow one that writes
``NAME.xml`` in place are both never read half-way.

A taken file is parsed safely, validated against ``mpg-drop.xsd`` and by the same
rules as an Outbox row, and inserted with a TxMessageId that is either given in the
file or derived from the file's name and digest. The Outbox row and an
``MpgDropFile`` row are committed together (:mod:`mpg.storage.dropfiles`); only then
is the file moved to ``processed/``. After a crash in between, the file is found
again, recognised by its digest and just moved. A file that fails goes to
``failed/`` with ``NAME.xml.error.txt`` beside it naming the line and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import random
import threading
import time
import uuid
from typing import Any, Final

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from mpg import backoff, config, errors, faults, timefmt
from mpg.gateway import attachroots, files, retry, validation
from mpg.storage import database, dropfiles, outbox
from mpg.wire import dropfile

log = structlog.get_logger("mpg.dropfolder")

PROCESSED: Final = "processed"
FAILED: Final = "failed"
ATTACHMENTS: Final = "attachments"
SUFFIX: Final = ".xml"
ERROR_SUFFIX: Final = ".error.txt"
#: Namespace of the TxMessageIds derived from a drop file's name and digest.
TX_NAMESPACE: Final = uuid.UUID("5b0f7c1e-3d56-4f0e-9a57-6d2b0f4b9d31")


def attachment_folder(settings: config.GatewaySettings) -> pathlib.Path:
    """Where embedded attachments are written: always an attachment root too."""
    if settings.drop_dir is None:
        raise ValueError("gateway.drop_dir is not set")
    return settings.drop_attachment_dir or settings.drop_dir / ATTACHMENTS


def settled(mtime: float, now: float, settle: float) -> bool:
    """Whether a file last modified at ``mtime`` has been left alone for ``settle`` s."""
    return now - mtime >= settle


def derived_tx_id(account: str, file_name: str, sha256: str) -> str:
    """The TxMessageId of a drop file that gives none: the same file gives the same id."""
    return str(uuid.uuid5(TX_NAMESPACE, f"{account}\n{file_name}\n{sha256}"))


def is_drop_file(name: str) -> bool:
    """Only ``*.xml`` (any case) is taken; dot files and everything else are left alone."""
    return name.lower().endswith(SUFFIX) and not name.startswith(".")


@dataclasses.dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan did."""

    inserted: int = 0
    already_done: int = 0
    failed: int = 0
    waiting: int = 0  # files still settling, left for a later scan


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = raw if isinstance(raw, str) else raw.decode()
            if path and is_drop_file(os.path.basename(path)):
                self._wake.set()


class DropFolder:
    """Turns drop files into Outbox rows. ``run`` loops; ``scan`` is one pass."""

    def __init__(
        self,
        settings: config.GatewaySettings,
        outbox_repo: outbox.OutboxRepository,
        *,
        stop: threading.Event,
        roots: attachroots.AttachmentRoots | None = None,
        inserted: threading.Event | None = None,
    ) -> None:
        """``roots``: where ``path=`` attachments may be (the gateway passes its own);
        by default ``attachment_roots`` and this folder's attachment folder.
        ``inserted`` is set after a scan inserted rows: the outbound worker's wake-up,
        which the gateway's own writes do not trigger (:mod:`mpg.gateway.wakeup`)."""
        if settings.drop_dir is None:
            raise ValueError("gateway.drop_dir is not set")
        self._settings = settings
        self._outbox = outbox_repo
        self._drops = dropfiles.DropFileRepository(outbox_repo.engine, outbox_repo)
        self._stop = stop
        self._wake = threading.Event()
        self._inserted = inserted
        self.folder = settings.drop_dir
        self.processed = self.folder / PROCESSED
        self.failed = self.folder / FAILED
        self.attachments = attachment_folder(settings)
        self._roots = roots or attachroots.AttachmentRoots.create(
            [*settings.attachment_roots, self.attachments]
        )
        self._observer: BaseObserver | None = None
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not secrecy

    # -- lifecycle ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the folders (the drop folder too) if missing."""
        for folder in (self.folder, self.processed, self.failed, self.attachments):
            folder.mkdir(parents=True, exist_ok=True)

    def start_watching(self) -> None:
        """Wake the worker on file-system events in the drop folder (watchdog)."""
        observer = Observer()
        observer.schedule(_Wake(self._wake), str(self.folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop_watching(self) -> None:
        """Stop the watchdog thread."""
        self._wake.set()
        if self._observer is not None and self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)

    def run(self) -> None:
        """Scan until stopped: at once, on events, and every ``drop_scan_interval``."""
        log.info("dropfolder_started", folder=str(self.folder))
        attempt = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                result = self.scan()
            except Exception as exc:
                if not retry.is_transient(exc):
                    log.exception("dropfolder_scan_failed", error=str(exc))
                attempt += 1
                pause = backoff.delay(
                    attempt, max_delay=self._settings.retry_max_delay, rng=self._rng
                )
                log.warning("dropfolder_retry", error=str(exc), retry_in=round(pause, 2))
                self._stop.wait(pause)
                continue
            attempt = 0
            if result.inserted and self._inserted is not None:
                self._inserted.set()
            # A settling file is looked at again once it may have settled.
            wait = self._settings.drop_scan_interval
            if result.waiting:
                wait = min(wait, max(self._settings.drop_settle, 0.05))
            self._wake.wait(wait)
        log.info("dropfolder_stopped")

    # -- one pass ----------------------------------------------------------------------

    def scan(self) -> ScanResult:
        """Take every settled ``*.xml`` file, oldest name first."""
        inserted = already = failed = waiting = 0
        now = time.time()
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if self._stop.is_set():
                break
            if not is_drop_file(entry.name) or not entry.is_file():
                continue
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                continue  # taken away meanwhile
            if not settled(mtime, now, self._settings.drop_settle):
                waiting += 1
                continue
            try:
                outcome = self.take(pathlib.Path(entry.path))
            except FileNotFoundError:
                continue  # taken away meanwhile
            except OSError as exc:
                # One file the gateway cannot read or move must not hold up the others;
                # it stays where it is and is tried again at the next regular scan.
                log.warning("drop_file_unreadable", file=entry.name, error=str(exc))
                continue
            if outcome is dropfiles.Outcome.INSERTED:
                inserted += 1
            elif outcome is dropfiles.Outcome.ALREADY_DONE:
                already += 1
            elif outcome is None:
                failed += 1
        if inserted or already or failed:
            log.info("drop_files_taken", inserted=inserted, already_done=already, failed=failed)
        return ScanResult(inserted, already, failed, waiting)

    def take(self, path: pathlib.Path) -> dropfiles.Outcome | None:
        """Turn one file into an Outbox row and move it; None when it was rejected.

        Database and file-system errors propagate (the file stays for the next scan);
        a bad file is moved to ``failed/`` with its reason.
        """
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        try:
            outcome, tx = self._accept(path.name, data, digest)
        except errors.DropFileError as exc:
            self._reject(path, exc)
            return None
        faults.reach(faults.DROPFOLDER_AFTER_INSERT)
        os.replace(path, self.processed / path.name)
        log.info("drop_file_processed", file=path.name, tx_message_id=tx, outcome=outcome.value)
        return outcome

    # -- steps -------------------------------------------------------------------------

    def _accept(self, name: str, data: bytes, digest: str) -> tuple[dropfiles.Outcome, str]:
        doc = dropfile.parse_message(data, max_bytes=self._settings.drop_max_bytes)
        values = self._defaults(dropfile.outbox_values(doc))
        tx = str(values.get("TxMessageId") or "") or derived_tx_id(
            self._outbox.gateway_account, name, digest
        )
        values["TxMessageId"] = tx
        # Per file (id and digest): a file refused for reusing another file's id never
        # touches that file's attachments, and only a folder made here is removed.
        written = self.attachments / f"{dropfile.safe_name(tx)}-{digest[:12]}"
        made_here = not written.exists()
        try:
            self._attachment_list(doc, written, values)
            validation.validate(
                outbox.OutboxRow(**_attributes(values)),
                gateway_account=self._outbox.gateway_account,
                transmit_time=timefmt.now_text(self._settings.clock),
                file_size=self._roots.check,
                download_flag=self._settings.default_download_flag,
                validate_content_for=self._settings.validate_content,
                max_content_bytes=self._settings.max_content_bytes,
            )
            outcome = self._drops.accept(values, name, digest)
        except errors.ValidationError as exc:
            if made_here:
                files.remove_tree(written)
            if isinstance(exc, errors.DropFileError):
                raise
            field = "attachments" if exc.field == "AttachmentList" else exc.field
            raise errors.DropFileError(exc.field, exc.reason, line=doc.line_of(field)) from None
        return outcome, tx

    def _defaults(self, values: dict[str, object]) -> dict[str, object]:
        """What ``mpg send`` would fill in for a value the file leaves out."""
        account = self._outbox.gateway_account
        defaults: dict[str, object] = {
            "SourceDomain": account.partition("@")[2],
            "Sender": account,
            "AgentSender": account,
            "ReceiverType": "U",
            "ContentType": "MSG",
            "AlertFlag": True,
            "StatusLog": "inserted from a drop file",
        }
        for key, value in defaults.items():
            if values.get(key) in (None, ""):
                values[key] = value
        values["ContentType"] = str(values["ContentType"]).upper()
        values["ReceiverType"] = str(values["ReceiverType"]).upper()
        return values

    def _attachment_list(
        self, doc: dropfile.Message, folder: pathlib.Path, values: dict[str, object]
    ) -> None:
        """Fill AttachmentList; embedded files are written into ``folder`` first."""
        entries: list[str] = []
        for seq, att in enumerate(doc.attachments, 1):
            if att.file:
                raise errors.DropFileError(
                    "attachment",
                    'file= is for inbound files; give path= or encoding="base64"',
                    line=att.line,
                )
            if att.data is not None:
                # The file keeps its own name: FileName is what the recipient sees.
                target = folder / str(seq) / dropfile.safe_name(att.name)
                files.write_atomic(target, att.data)
                path = str(target.resolve())
            elif att.path:
                path = att.path
            else:
                raise errors.DropFileError(
                    "attachment", 'give path= or encoding="base64"', line=att.line
                )
            if ";" in path or "|" in path:
                raise errors.DropFileError(
                    "attachment", "a path must not contain ';' or '|'", line=att.line
                )
            entries.append(path if att.download_flag is None else f"{path}|{att.download_flag}")
        values["AttachmentList"] = ";".join(entries)

    def _reject(self, path: pathlib.Path, exc: errors.DropFileError) -> None:
        reason = f"{path.name}: {exc}\n"
        files.write_atomic(self.failed / (path.name + ERROR_SUFFIX), reason.encode("utf-8"))
        os.replace(path, self.failed / path.name)
        log.warning("drop_file_failed", file=path.name, line=exc.line, error=str(exc))


def _attributes(values: dict[str, object]) -> dict[str, Any]:
    """Column-named values as :class:`outbox.OutboxRow` keyword arguments."""
    fields = {f.name for f in dataclasses.fields(outbox.OutboxRow)}
    names = {column: database.attribute_name(column) for column in values}
    return {names[c]: v for c, v in values.items() if names[c] in fields}
