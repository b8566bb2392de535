"""The inbound worker: the account's server queue -> Inbox, receipts -> State 29.

Each cycle long-polls the queue, downloads the attachments that travel with their
message (``DownloadFlag`` 1), stores every new message with its attachments in ONE
transaction and only then acknowledges: the acknowledgement rides on the next fetch
(one request per batch; on its own when stopping). A crash between storing and
acknowledging makes the server deliver the entries again once their lease runs out;
``RxMessageId`` is the key, so the second copy is recognised and only acknowledged:
each message lands exactly once.

With an inbound or receipt folder configured, their files are written after storing
and before acknowledging (:mod:`mpg.gateway.folders`).

Receipts say that every recipient of one of our messages was served: the Outbox row
moves to 29. A receipt may overtake the outbound worker's own record of the submit,
so it is applied from 12 and 19 too, along the normal walk.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable, Sequence

import structlog

from mpg import backoff, config, errors, faults, metrics
from mpg.gateway import attachfiles, batching, retry
from mpg.gateway import client as client_mod
from mpg.storage import inbox, outbox
from mpg.storage.states import OutboxState as S
from mpg.wire import content, model

log = structlog.get_logger("mpg.inbound")


def to_file(settings: config.GatewaySettings, size: int) -> bool:
    """Whether an inbound attachment of ``size`` bytes is kept as a file, not in FileData."""
    if settings.attachment_dir is None:
        return False
    return settings.inbound_attachments == "files" or size > settings.max_inline_attachment


class InboundWorker:
    """Fetches, stores and acknowledges. ``run`` loops; ``handle`` is one batch."""

    def __init__(
        self,
        settings: config.GatewaySettings,
        inbox_repo: inbox.InboxRepository,
        outbox_repo: outbox.OutboxRepository,
        push: client_mod.PushClient,
        *,
        stop: threading.Event,
        exporters: Sequence[Callable[[], int]] = (),
    ) -> None:
        self._settings = settings
        #: Folder writers (docs/dropfolders.md) run after storing, before acknowledging.
        self._exporters = tuple(exporters)
        self._inbox = inbox_repo
        self._outbox = outbox_repo
        self._push = push
        self._stop = stop
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not secrecy
        #: Held while a fetched batch is being stored, so shutdown can wait for it.
        self.busy = threading.Lock()
        self._batch = settings.batch_size  # the adaptive fetch size (see batching)
        #: Entries stored and not yet acknowledged: the next fetch acknowledges them.
        self._stored: list[str] = []

    def reconfigure(self, settings: config.GatewaySettings) -> None:
        """Use new settings from the next cycle on (a reload; see ``runner.RELOADABLE``)."""
        self._settings = settings
        self._batch = settings.batch_size

    def run(self) -> None:
        """Poll until stopped."""
        log.info("inbound_started", account=self._push.account)
        attempt = 0
        while not self._stop.is_set():
            try:
                asked = self._batch
                batch = self._push.fetch(asked, self._settings.long_poll_wait, self._stored)
                self._stored = []
                self._batch = batching.next_size(
                    asked, len(batch.deliveries) + len(batch.receipts), self._settings.batch_size
                )
                with self.busy:
                    if self._stop.is_set():
                        break  # not acknowledged: the server delivers it again later
                    self._stored = self.store(batch)
                    if self._stop.is_set():
                        self._acknowledge()
            except Exception as exc:
                if not retry.is_transient(exc):
                    log.exception("inbound_cycle_failed", error=str(exc))
                attempt += 1
                metrics.RETRIES.labels("inbound").inc()
                pause = backoff.delay(
                    attempt, max_delay=self._settings.retry_max_delay, rng=self._rng
                )
                log.warning(
                    "inbound_retry", error=str(exc), attempt=attempt, retry_in=round(pause, 2)
                )
                self._stop.wait(pause)
                continue
            attempt = 0
        with self.busy:
            self._acknowledge()
        log.info("inbound_stopped")

    def _acknowledge(self) -> None:
        """Acknowledge what was stored on its own (stopping: no next fetch carries it)."""
        if not self._stored:
            return
        try:
            self._push.ack(self._stored)
        except Exception as exc:
            # Delivered again once the lease runs out, and recognised then.
            log.warning("inbound_ack_failed", error=str(exc), entries=len(self._stored))
        self._stored = []

    def handle(self, batch: model.FetchBatch) -> None:
        """Store deliveries, apply receipts, then acknowledge both."""
        self._push.ack(self.store(batch))

    def store(self, batch: model.FetchBatch) -> list[str]:
        """Store deliveries and apply receipts; return the entries to acknowledge."""
        if batch.deliveries:
            files, uris = self._attachments(batch.deliveries)
            faults.reach(faults.INBOUND_AFTER_FILES)
            new = set(self._inbox.store(batch.deliveries, files, uris))
            for delivery in batch.deliveries:
                if delivery.rx_message_id in new and delivery.content_type == "RECALL":
                    self._apply_recall(delivery)
            log.info("messages_stored", new=len(new), repeated=len(batch.deliveries) - len(new))
            # Only after a store: an empty fetch reaching it would kill a test's
            # receiver before its message arrived.
            faults.reach(faults.INBOUND_AFTER_STORE)
        if batch.receipts:
            self._apply_receipts(batch.receipts)
            faults.reach(faults.INBOUND_AFTER_RECEIPTS)
        # The files of what was just stored are written before the acknowledgement; a
        # crash before they are written is caught up from the history at restart.
        for export in self._exporters:
            export()
        entries = [d.rx_message_id for d in batch.deliveries]
        entries += [r.entry_id for r in batch.receipts]
        return entries

    def _attachments(
        self, deliveries: tuple[model.Delivery, ...]
    ) -> tuple[dict[tuple[str, int], bytes | None], dict[tuple[str, int], str]]:
        """Fetch the DownloadFlag-1 attachments: bytes for FileData, or files on disk.

        No driver streams FileData (docs/databases.md), so bytes are held in memory
        only up to ``max_inline_attachment`` in "database" mode; bigger ones go to
        ``attachment_dir`` when set, else stay metadata for ``mpg attachment fetch``.
        A file's path replaces the server URI as its SourceUri.
        """
        files: dict[tuple[str, int], bytes | None] = {}
        uris: dict[tuple[str, int], str] = {}
        settings = self._settings
        # A repeated delivery is not stored again, so its files need no second download.
        carrying = [d.rx_message_id for d in deliveries if d.attachments]
        stored = self._inbox.existing(carrying) if carrying else set()
        for d in deliveries:
            for att in d.attachments:
                key = (d.rx_message_id, att.seq_no)
                uris[key] = client_mod.attachment_uri(settings.server_url, d.message_id, att.seq_no)
                files[key] = None
                if att.download_flag != 1 or d.rx_message_id in stored:
                    continue
                if to_file(settings, att.file_size):
                    assert settings.attachment_dir is not None  # to_file checked it
                    target = attachfiles.path_for(
                        settings.attachment_dir, d.rx_message_id, att.seq_no, att.file_name
                    )
                    uris[key] = self._fitting(str(target))
                    attachfiles.download(
                        self._push,
                        target,
                        d.message_id,
                        att.seq_no,
                        settings.chunk_size,
                        expected_size=att.file_size,
                        expected_sha256=att.sha256,
                    )
                elif att.file_size <= settings.max_inline_attachment:
                    sink = io.BytesIO()
                    self._push.download(d.message_id, att.seq_no, sink, settings.chunk_size)
                    files[key] = sink.getvalue()
        return files, uris

    def _fitting(self, path: str) -> str:
        # A path cut to NULL would lose the file; refuse before anything is stored.
        width = self._inbox.source_uri_width
        if width is not None and len(path) > width:
            raise errors.ConfigError(
                f"gateway.attachment_dir: {path} is longer than InboxAttachment.SourceUri"
                f" ({width} characters); choose a shorter folder"
            )
        return path

    def _apply_recall(self, delivery: model.Delivery) -> None:
        try:
            recalled = content.parse_recall(delivery.content)
        except errors.WireError as exc:
            log.warning("recall_unreadable", rx_message_id=delivery.rx_message_id, error=str(exc))
            return
        count = self._inbox.mark_recalled(recalled)
        log.info("message_recalled", message_id=recalled, inbox_rows=count)

    def _apply_receipts(self, receipts: tuple[model.Receipt, ...]) -> None:
        """Move the receipts' rows to 29: one batch per state they may be found in.

        Rows are mostly at 20, so that comes first. The rest are then tried along the
        walk (12, 19, 20 again): the outbound thread may be recording the submit
        meanwhile, and a row it moves on between two tries is found at a later one
        (tried only backwards, a row moved from 12 to 20 after the try at 20 was
        missed, and its receipt acknowledged unapplied).
        """
        notes = [(r.tx_message_id, _sent_note(r)) for r in receipts]
        ids = {r.tx_message_id: r.message_id for r in receipts}
        pending = dict(notes)
        for state in (S.WAITING, S.ATTACHMENTS_UPLOADED, S.UPLOADED, S.WAITING):
            moved = self._outbox.transition(
                list(pending.items()),
                state,
                S.SENT,
                message_ids=ids,
                set_transmit_time=state != S.WAITING,
            )
            for tx in moved:
                del pending[tx]
            if not pending:
                return
        # Already final (a repeated receipt) or voided meanwhile: nothing to change.
        log.debug("receipts_without_row", tx_message_ids=sorted(pending))


def _sent_note(receipt: model.Receipt) -> str:
    note = f"sent: {receipt.served} recipient(s) served"
    if receipt.recalled:
        note += f", recalled from {receipt.recalled}"
    return note
