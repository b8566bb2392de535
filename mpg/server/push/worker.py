"""The push worker: threads that claim due push jobs, send them and record the outcome.

Each server process runs ``server.push_workers`` threads (docs/push.md, "Push jobs").
A thread claims a few jobs (:func:`mpg.server.push.jobs.claim`), reads each device's
platform and token (decrypted only here, just before the send), asks the registry for
the group's provider and sends; for a group in ``server.push_content_groups`` it also
opens the message's sealed subject and content here, so they are never copied into the
job; the outcome is recorded by
:func:`mpg.server.push.jobs.finish`. A configuration alarm is logged at error level
and counted (``mpg_push_outcomes_total{kind="config_alarm"}``); its job is parked until
the next start, and so is every later job for that provider entry, unsent. When a
round found nothing due, the thread waits ``server.push_poll_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import backoff, config, errors, faults, metrics
from mpg.db import transactions
from mpg.server import tables
from mpg.server.push import jobs, outcome
from mpg.server.push.base import token_tag
from mpg.server.push.outcome import OutcomeKind
from mpg.server.push.registry import Registry
from mpg.wire import atrest
from mpg.wire.push import NoticeContent, NoticeKind

log = structlog.get_logger(__name__)

#: Jobs one thread claims at a time (small: a lease should not outlive its sends).
BATCH: Final = 20
#: The first retry's own wait; doubled per try up to ``server.push_retry_max_delay``.
BASE_RETRY_SECONDS: Final = 10.0


class PushWorker:
    """Sends the due push jobs of the server's database from a few threads."""

    def __init__(
        self,
        engine: sa.Engine,
        keyring: atrest.Keyring,
        providers: Registry,
        settings: config.ServerSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._providers = providers
        self._settings = settings
        self._clock = clock
        self._stop = threading.Event()
        #: Provider entries that raised a configuration alarm, with its reason: their
        #: jobs are parked unsent until the next start (the operator fixes the entry).
        self._alarmed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Make parked jobs due again (the configuration may be fixed) and start the threads."""
        with self._lock:
            self._alarmed.clear()
        unparked = jobs.unpark(self._engine, self._clock())
        if unparked:
            log.info("push_jobs_unparked", jobs=unparked)
        for n in range(self._settings.push_workers):
            thread = threading.Thread(target=self._loop, name=f"mpg-push-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads (a send in progress finishes) and close the providers."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._providers.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except errors.StorageError as exc:
                log.warning("push_worker_database_error", error=str(exc))
                sent = 0
            if not sent:
                self._stop.wait(self._settings.push_poll_seconds)

    def run_once(self) -> int:
        """Claim and send one batch of due jobs; how many were claimed."""
        claimed = jobs.claim(self._engine, BATCH, self._settings.push_lease_seconds, self._clock())
        if claimed:
            faults.reach(faults.PUSH_CLAIMED)
        for job in claimed:
            self._send(job)
        return len(claimed)

    def _device(self, account: str) -> tuple[str, str, float | None] | None:
        """Platform, token and PushTokenAt of a device with a token; None otherwise."""
        d = tables.device.c
        with transactions.connect(self._engine, "reading a device's push token") as conn:
            row = conn.execute(
                sa.select(d.Platform, d.PushTokenEnc, d.PushTokenAt).where(d.AccountId == account)
            ).first()
        if row is None or row.PushTokenEnc is None:
            return None
        place = atrest.Place("Device", "PushTokenEnc", account)
        return (
            str(row.Platform),
            self._keyring.decrypt_text(row.PushTokenEnc, place),
            row.PushTokenAt,
        )

    def _content(self, job: jobs.Claimed) -> NoticeContent | None:
        """The subject and text of the job's message when its group shows content in
        pushes (never for a recall: its notification only withdraws); else None."""
        if (
            job.kind is NoticeKind.RECALL
            or not job.message_id
            or not self._providers.allows_content(job.group)
        ):
            return None
        t = tables.transmit_queue.c
        with transactions.connect(self._engine, "reading a message for its push") as conn:
            row = conn.execute(
                sa.select(t.Subject, t.SubjectEnc, t.Content, t.ContentEnc).where(
                    t.MessageId == job.message_id
                )
            ).first()
        if row is None:
            return None

        def opened(sealed: bytes | None, column: str, clear: str | None) -> str:
            if sealed is None:  # empty, or a row of an older version (clear column)
                return clear or ""
            place = atrest.Place("TransmitQueue", column, job.message_id)
            return self._keyring.decrypt_text(bytes(sealed), place)

        return NoticeContent(
            opened(row.SubjectEnc, "SubjectEnc", row.Subject),
            opened(row.ContentEnc, "ContentEnc", row.Content),
        )

    def _park(self, job: jobs.Claimed, reason: str, provider: str) -> None:
        """Park ``job`` without sending it: a configuration needs the operator."""
        jobs.finish(
            self._engine,
            job,
            outcome.config_alarm(reason),
            jobs.Decision(jobs.JobState.PARKED),
            self._clock(),
            token_at=None,
            provider=provider,
        )

    def _send(self, job: jobs.Claimed) -> None:
        try:
            found = self._device(job.account)
            content = self._content(job) if found is not None else None
        except errors.AtRestError as exc:
            # A data key missing from the keyring: the operator's to fix, so the job waits.
            log.error("push_secret_unreadable", job=job.job_id, error=str(exc))
            self._park(job, f"push token or message cannot be decrypted: {exc}", "-")
            return
        if found is None:
            reason = "no push token (device or token removed)"
            jobs.fail_unsendable(self._engine, job, reason, self._clock())
            return
        platform, token, token_at = found
        provider = self._providers.provider(job.group, platform)
        with self._lock:
            alarmed = self._alarmed.get(provider.name)
        if alarmed is not None:
            self._park(job, f"{provider.name} is in alarm ({alarmed}); not sent", provider.name)
            return
        result = provider.send(self._providers.request(token, job.notice(), content))
        faults.reach(faults.PUSH_SENT)
        metrics.PUSH_OUTCOMES.labels(provider.name, str(result.kind)).inc()
        wait = backoff.delay(
            job.attempts, max_delay=self._settings.push_retry_max_delay, base=BASE_RETRY_SECONDS
        )
        now = self._clock()
        decision = jobs.decide(
            result, job.attempts, now, max_attempts=self._settings.push_max_attempts, backoff=wait
        )
        recorded = jobs.finish(
            self._engine, job, result, decision, now, token_at=token_at, provider=provider.name
        )
        fields = {
            "job": job.job_id,
            "provider": provider.name,
            "outcome": str(result.kind),
            "reason": result.reason,
            "token": token_tag(token),
            "state": str(decision.state),
        }
        if not recorded:
            log.warning("push_lease_lost", **fields)
        elif result.kind is OutcomeKind.CONFIG_ALARM:
            with self._lock:
                self._alarmed[provider.name] = result.reason
            log.error("push_config_alarm", group=job.group, **fields)
        elif decision.state is jobs.JobState.SENT:
            log.debug("push_sent", **fields)  # one per device: a publication makes many
        else:
            log.info("push_not_sent", **fields)
