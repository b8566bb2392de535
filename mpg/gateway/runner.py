"""Run the gateway in the foreground: both workers, the sweeps, clean shutdown, reload.

SIGHUP re-reads the configuration file and applies what is safe to change while
running (:data:`RELOADABLE`: intervals, batch sizes, timeouts, retention, logging);
a change to anything else (database, server, account, credential, ports) is logged
as needing a restart and ignored until then.

SIGTERM or Ctrl-C stop taking new work; the outbound batch in hand is finished and a
fetched inbound batch is stored and acknowledged before the process exits (within
``SHUTDOWN_GRACE`` seconds). A second signal exits at once; nothing is lost either
way, because every step is recorded before the next one starts.
"""

from __future__ import annotations

import signal
import threading
import time
import types
from typing import Final

import sqlalchemy as sa
import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from mpg import config, errors, logs, metrics
from mpg.db import checkpoints, notify, statistics, transactions
from mpg.gateway import (
    attachfiles,
    attachroots,
    deliverysummary,
    dropfolder,
    folders,
    inbound,
    outbound,
    wakeup,
)
from mpg.gateway import client as client_mod
from mpg.ops import health, heap, systemd
from mpg.storage import database, history, inbox, outbox, outbox_trigger, schema, tables
from mpg.wire import keys

log = structlog.get_logger("mpg.gateway")

SHUTDOWN_GRACE: Final = 30.0
#: Gateway settings a reload applies to the running process.
RELOADABLE: Final = (
    "poll_interval",
    "batch_size",
    "send_timeout",
    "long_poll_wait",
    "retry_max_delay",
    "default_download_flag",
    "max_inline_attachment",
    "stuck_after",
    "history_retention_days",
)
#: An outbound cycle running longer than this (or ``10 * request_timeout`` if more)
#: counts as stalled: the watchdog pings stop and systemd restarts the service.
STALL_AFTER: Final = 300.0
EXPIRE_EVERY: Final = 30.0
#: Seconds between catch-up runs of the folder writers (receipts of rows that failed or
#: timed out are written by this; inbound files right after each stored batch).
FOLDER_EVERY: Final = 2.0
EXIT_OK: Final = 0
EXIT_INTERRUPTED: Final = 130


class Gateway:
    """The gateway's parts wired together; ``start``/``stop`` for tests and the CLI."""

    def __init__(self, settings: config.Settings) -> None:
        gw = settings.gateway
        try:
            credential = keys.parse_credential(gw.credential_text())
        except errors.WireError as exc:
            raise errors.ConfigError(f"gateway.secret: {exc}") from exc
        self.engine = database.create_engine(gw.database_url)
        found = _require_tables(self.engine)
        #: What runs beside the workers for the database: SQLite's checkpointer,
        #: PostgreSQL's analyzer (mpg.db.checkpoints, mpg.db.statistics).
        self._upkeep: list[checkpoints.Checkpointer | statistics.Analyzer] = []
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.push = client_mod.PushClient(gw, credential)
        self.outbox = outbox.OutboxRepository(
            self.engine,
            gw.account,
            gw.clock,
            instance=gw.instance or None,
            lease_seconds=gw.claim_lease,
            source_uri_width=found.uri_width(tables.outbox_attachment),
        )
        self.inbox = inbox.InboxRepository(
            self.engine,
            gw.account,
            gw.clock,
            source_uri_width=found.uri_width(tables.inbox_attachment),
        )
        # The drop folder's own attachment folder is written by the gateway: a root too.
        own = [dropfolder.attachment_folder(gw)] if gw.drop_dir is not None else []
        self.roots = attachroots.AttachmentRoots.from_settings(settings, extra=own)
        self.outbound = outbound.OutboundWorker(
            gw, self.outbox, self.push, roots=self.roots, stop=self.stop_event, wake=self.wake
        )
        if gw.attachment_dir is not None:
            attachfiles.prepare(gw.attachment_dir)
        # The XML document interface (docs/dropfolders.md), each part only when configured.
        self.folders: list[folders.InboundFolder | folders.ReceiptFolder] = []
        if gw.inbound_dir is not None:
            self.folders.append(folders.InboundFolder(self.engine, gw.inbound_dir, self.inbox))
        if gw.receipt_dir is not None:
            self.folders.append(
                folders.ReceiptFolder(self.engine, gw.receipt_dir, self.outbox, gw.receipt_states)
            )
        self.drop = (
            dropfolder.DropFolder(
                gw, self.outbox, stop=self.stop_event, roots=self.roots, inserted=self.wake
            )
            if gw.drop_dir is not None
            else None
        )
        self.inbound = inbound.InboundWorker(
            gw,
            self.inbox,
            self.outbox,
            self.push,
            stop=self.stop_event,
            exporters=[f.export for f in self.folders],
        )
        self.summaries = deliverysummary.DeliverySummaries(
            self.outbox, self.push, gw.delivery_summary_window, stop=self.stop_event
        )
        self._watcher = (
            wakeup.DatabaseWatcher(self.engine, self.wake)
            if gw.watch_database and wakeup.watchable(gw.database_url)
            else None
        )
        self.listener = (
            outbox_trigger.OutboxListener(self.engine, self.wake)
            if gw.watch_database and notify.supported(self.engine)
            else None
        )
        self._settings = gw
        self.health = (
            None
            if gw.health_port is None
            else health.HealthServer(
                gw.health_host,
                gw.health_port,
                {
                    "database": lambda: transactions.probe_writable(self.engine),
                    "server": self.push.ping,
                },
                metrics.registry(self._collectors()),
            )
        )
        self._scheduler = BackgroundScheduler(daemon=True)
        self._threads = [
            threading.Thread(target=self.outbound.run, name="mpg-outbound"),
            threading.Thread(target=self.inbound.run, name="mpg-inbound", daemon=True),
        ]
        if self.drop is not None:
            self._threads.append(threading.Thread(target=self.drop.run, name="mpg-dropfolder"))

    def start(self) -> None:
        """Start the workers, the database watcher and the timeout sweep."""
        upkeep = (
            checkpoints.start(self.engine),
            statistics.start(self.engine, list(tables.metadata.tables)),
        )
        self._upkeep = [helper for helper in upkeep if helper is not None]
        if self._watcher is not None:
            self._watcher.start()
        if self.listener is not None:
            self.listener.start()
        for folder in self.folders:
            # Catch up on files a crash left unwritten before anything new arrives.
            folder.prepare()
            folder.export()
            self._scheduler.add_job(
                folder.export,
                "interval",
                seconds=FOLDER_EVERY,
                id=f"export-{folder.name}",
                max_instances=1,
                coalesce=True,
            )
        if self.drop is not None:
            self.drop.prepare()
            self.drop.start_watching()
        self._scheduler.add_job(
            self.outbound.expire,
            "interval",
            seconds=EXPIRE_EVERY,
            id="send-timeout",
            max_instances=1,
            coalesce=True,
        )
        if self._settings.delivery_summary_interval > 0:
            self._scheduler.add_job(
                self.summaries.run_once,
                "interval",
                seconds=self._settings.delivery_summary_interval,
                id="delivery-summary",
                max_instances=1,
                coalesce=True,
            )
        self._scheduler.add_job(
            self.housekeeping,
            "interval",
            seconds=self._settings.housekeeping_interval,
            id="housekeeping",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.start()
        if self.health is not None:
            self.health.start()
        for thread in self._threads:
            thread.start()
        log.info("gateway_started", account=self.push.account)

    def stop(self) -> None:
        """Finish the work in hand and release everything."""
        self.stop_event.set()
        self.wake.set()
        if self._threads[0].is_alive():
            self._threads[0].join(SHUTDOWN_GRACE)
        if self.drop is not None:
            self.drop.stop_watching()
            for thread in self._threads[2:]:
                if thread.is_alive():
                    thread.join(SHUTDOWN_GRACE)
        # The inbound thread may be parked in a long poll; only a batch being stored
        # must be waited for, and it holds ``busy`` while it is.
        if self.inbound.busy.acquire(timeout=SHUTDOWN_GRACE):
            self.inbound.busy.release()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._watcher is not None:
            self._watcher.stop()
        if self.listener is not None:
            self.listener.stop()
        if self.health is not None:
            self.health.stop()
        self.push.close()
        for helper in self._upkeep:
            helper.stop()
        self.engine.dispose()
        if self._watcher is not None:
            self._watcher.close()
        log.info("gateway_stopped")

    def reload(self, new: config.Settings) -> list[str]:
        """Apply the safe part of ``new``; returns the keys that changed and were applied."""
        old = self._settings
        changed = {
            key: getattr(new.gateway, key)
            for key in RELOADABLE
            if getattr(new.gateway, key) != getattr(old, key)
        }
        pending = [
            key
            for key in config.GatewaySettings.model_fields
            if key not in RELOADABLE and getattr(new.gateway, key) != getattr(old, key)
        ]
        self._settings = old.model_copy(update=changed)
        self.outbound.reconfigure(self._settings)
        self.inbound.reconfigure(self._settings)
        # Logged before the new log settings apply, so it is seen at the old level too.
        log.warning(
            "config_reloaded", applied=sorted(changed), restart_needed=pending, log=new.log.level
        )
        logs.configure(new.log, "gateway")
        return sorted(changed)

    def alive(self) -> bool:
        """True unless a worker thread died or an outbound cycle is stalled."""
        if not all(thread.is_alive() for thread in self._threads):
            return False
        limit = max(STALL_AFTER, 10 * self._settings.request_timeout)
        return not stalled(self.outbound.cycle_started, time.monotonic(), limit)

    def housekeeping(self) -> int:
        """Delete MPG's own history past the retention; returns the rows deleted."""
        keep_days = self._settings.history_retention_days
        if not keep_days:
            return 0  # set to 0 (keep forever) by a reload
        deleted = history.purge(self.engine, keep_days)
        if deleted:
            log.info("history_purged", rows=deleted, keep_days=keep_days)
        return deleted

    def _collectors(self) -> list[metrics.GaugeCollector]:
        def outbox_counts() -> dict[str, int]:
            return {str(state): n for state, n in self.outbox.counts().items()}

        def inbox_counts() -> dict[str, int]:
            return {str(state): n for state, n in self.inbox.counts().items()}

        return [
            metrics.GaugeCollector(
                "mpg_outbox_messages", "Outbox rows per State.", "state", outbox_counts
            ),
            metrics.GaugeCollector(
                "mpg_inbox_messages", "Inbox rows per State.", "state", inbox_counts
            ),
        ]


def stalled(cycle_started: float | None, now: float, limit: float) -> bool:
    """Whether a cycle that began at ``cycle_started`` (None: idle) has run past ``limit``.

    Waiting between cycles (for work, or before a retry) is never a stall.
    """
    return cycle_started is not None and now - cycle_started >= limit


def _require_tables(engine: sa.Engine) -> schema.Report:
    """Check the tables at start: all present and fit (names every problem), or raise."""
    with transactions.connect(engine, "checking the gateway's tables") as conn:
        found = schema.check(conn)
    if found.missing_tables:
        raise errors.StorageError(
            f"table(s) {', '.join(found.missing_tables)} missing; run `mpg init-db` first"
        )
    for name, width in found.source_uri_width.items():
        if width is not None and width < tables.SOURCE_URI_WIDTH:
            log.warning(
                "source_uri_narrow",
                table=name,
                width=width,
                effect="paths and URIs longer than this are stored as NULL",
            )
    return found


def run(settings: config.Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    gateway = Gateway(settings)
    signals_seen = 0

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            raise SystemExit(EXIT_INTERRUPTED)
        log.info("gateway_stopping", signal=signal.Signals(signum).name)
        gateway.stop_event.set()
        gateway.wake.set()

    reload_wanted = threading.Event()

    def on_hangup(signum: int, frame: types.FrameType | None) -> None:
        reload_wanted.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGHUP"):  # not on Windows
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    notifier = systemd.Notifier()
    ping_every = notifier.watchdog_interval()
    heap.settle()
    try:
        gateway.start()
        notifier.ready(f"gateway of {gateway.push.account} running")
        next_ping = 0.0
        while not gateway.stop_event.wait(min(1.0, ping_every or 1.0)):
            if reload_wanted.is_set():
                reload_wanted.clear()
                _reload(gateway, settings.source)
            if ping_every and time.monotonic() >= next_ping and gateway.alive():
                notifier.watchdog()
                next_ping = time.monotonic() + ping_every
        notifier.stopping()
        gateway.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _reload(gateway: Gateway, source: str) -> None:
    """Re-read the configuration; a bad file keeps the running settings."""
    try:
        gateway.reload(config.load(source or None))
    except errors.ConfigError as exc:
        log.error("config_reload_failed", error=str(exc))
