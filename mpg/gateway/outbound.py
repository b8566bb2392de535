"""The outbound worker: Outbox rows -> push server, walking State 10 -> 20.

One cycle takes a batch of ready rows (State 10, most urgent first), validates them
(invalid rows go to 99 at once, the rest keep flowing), claims them (10 -> 11 with
attachments, 10 -> 12 without), streams their files (11 -> 12), submits them in as few
requests as fit ``max_request_bytes`` and records the answers (12 -> 19 -> 20, or -> 99
when refused).

Under a backlog (the claim came back full) the next batch is claimed while the
current one is at the server: the request goes out from a thread of its own, the claim
runs meanwhile, and the answer is recorded once both are done. The next cycle submits
that batch at once. Idle, nothing is claimed ahead, so a lone row costs no extra look.

Whatever belongs to one row fails only that row: a value of the wrong type, a message
too large for any request, a file outside ``attachment_roots`` (:mod:`attachroots`).
When the server refuses a whole request as malformed or too large, the batch is split
in halves and sent again until the rows at fault stand alone; they go to 99, the
others go on.
Every state change is a batched compare-and-set through the repository, so a row the
ERP voided meanwhile is simply left alone.

Transient failures leave rows where they are; the next cycle, after a backoff,
resumes the rows in flight (11/12/19) before taking new ones. Submitting is
idempotent on the server, so resuming after a crash never sends a row twice.

Several gateway processes may share one Outbox: rows are claimed (see
:mod:`mpg.storage.outbox`), and every ``claim_lease / 2`` seconds a worker also takes
over rows in flight whose claim ran out, i.e. whose gateway died.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

import structlog

from mpg import backoff, config, errors, faults, metrics, timefmt
from mpg.gateway import attachroots, batching, retry, validation, voiding
from mpg.gateway import client as client_mod
from mpg.storage import outbox
from mpg.storage.states import OUTBOX_TRANSITIONS
from mpg.storage.states import OutboxState as S
from mpg.wire import model, payloads, xmlsafe

log = structlog.get_logger("mpg.outbound")

_T = TypeVar("_T")

_HASH_CHUNK: Final = 1024 * 1024
#: Seconds between looks for rows the ERP voided itself (see :mod:`voiding`).
VOID_SWEEP_SECONDS: Final = 5.0
#: Seconds between looks for States that are not codes (a scan of the whole Outbox).
ODD_STATE_SWEEP_SECONDS: Final = 300.0

#: Shortest poll pause, right after a cycle that found rows (seconds).
ADAPTIVE_MIN_POLL: Final = 0.05
#: HTTP statuses by which the server refuses a request for what it carries (malformed,
#: too large): a row of the batch is at fault, so the batch is narrowed down.
ROW_FAULT_STATUS: Final = frozenset({400, 413, 422})
#: A digest as the submit carries it, to measure a message before its upload.
_DIGEST_PLACEHOLDER: Final = "0" * 64


@dataclasses.dataclass(slots=True)
class _Work:
    """A row on its way: its current state, validated message and files."""

    state: S
    valid: validation.ValidRow
    # The message's piece of a submit payload (payloads.build_message), built once at
    # validation; for a row with files the digests in it are placeholders until known.
    xml: bytes
    digests: dict[int, str] = dataclasses.field(default_factory=dict)
    # When this process took the row in hand (delivery latency runs from here).
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def tx(self) -> str:
        return self.valid.message.tx_message_id

    @property
    def size(self) -> int:
        """Bytes of the message's piece of a submit (digests are of fixed length)."""
        return len(self.xml)

    def piece(self) -> bytes:
        """The message's piece of a submit, with its files' digests."""
        if not self.valid.attachments:
            return self.xml
        return payloads.build_message(self.message())

    def message(self) -> model.OutgoingMessage:
        infos = tuple(
            model.AttachmentInfo(
                seq_no=a.seq_no,
                file_name=a.file_name,
                file_type=a.file_type,
                file_size=a.file_size,
                download_flag=a.download_flag,
                sha256=self.digests[a.seq_no],
            )
            for a in self.valid.attachments
        )
        return dataclasses.replace(self.valid.message, attachments=infos)


class OutboundWorker:
    """Moves Outbox rows to the server. ``run`` loops; ``run_once`` is one cycle."""

    def __init__(
        self,
        settings: config.GatewaySettings,
        repo: outbox.OutboxRepository,
        push: client_mod.PushClient,
        *,
        roots: attachroots.AttachmentRoots,
        stop: threading.Event,
        wake: threading.Event,
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._push = push
        self._roots = roots
        self._stop = stop
        self._wake = wake
        self._resume = True  # rows left in flight by an earlier run or a failure
        self._next_take_over = 0.0  # monotonic time of the next look for expired claims
        self._pause = settings.poll_interval  # the adaptive poll pause (see _next_pause)
        self._batch = settings.batch_size  # the adaptive batch size (see batching)
        #: Whether the last claim came back full: more rows are waiting.
        self._backlog = False
        #: Rows claimed while the previous batch was at the server, to submit next.
        self._ahead: list[_Work] | None = None
        self._attempt = 0
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not secrecy
        self._voider = voiding.Voider(repo, push)
        # monotonic start of the cycle in progress, None between cycles (the watchdog
        # tells a stalled cycle from an idle wait by it).
        self.cycle_started: float | None = None
        self._next_void_sweep = 0.0
        self._next_odd_sweep = 0.0
        self._odd_reported: set[tuple[str, str]] = set()

    def reconfigure(self, settings: config.GatewaySettings) -> None:
        """Use new settings from the next cycle on (a reload; see ``runner.RELOADABLE``)."""
        self._settings = settings
        self._batch = settings.batch_size

    def run(self) -> None:
        """Cycle until stopped; the batch in hand is always finished first."""
        log.info("outbound_started", account=self._push.account)
        while not self._stop.is_set():
            self.cycle_started = time.monotonic()
            try:
                handled = self.run_once()
            except Exception as exc:
                self.cycle_started = None
                if not retry.is_transient(exc):
                    log.exception("outbound_cycle_failed", error=str(exc))
                self._attempt += 1
                metrics.RETRIES.labels("outbound").inc()
                pause = backoff.delay(
                    self._attempt, max_delay=self._settings.retry_max_delay, rng=self._rng
                )
                log.warning(
                    "outbound_retry",
                    error=str(exc),
                    attempt=self._attempt,
                    retry_in=round(pause, 2),
                )
                self._stop.wait(pause)
                continue
            self.cycle_started = None
            self._attempt = 0
            if handled < self._settings.batch_size:
                self._wake.wait(self._next_pause(handled))
                self._wake.clear()
        if self._ahead:
            self._finish_ahead()
        log.info("outbound_stopped")

    def _finish_ahead(self) -> None:
        """Submit the rows claimed ahead when the stop came: they are in hand too."""
        work, self._ahead = self._ahead or [], None
        try:
            self._advance(work)
        except Exception as exc:
            # Claimed by this process, they are resumed at its next start.
            log.warning("outbound_stopped_in_flight", error=str(exc), rows=len(work))

    def _next_pause(self, handled: int) -> float:
        self._pause = next_pause(self._pause, handled, self._settings.poll_interval)
        return self._pause

    def run_once(self) -> int:
        """One cycle: resume rows in flight if needed, then take a batch of new ones."""
        handled = 0
        if time.monotonic() >= self._next_void_sweep:
            # In this thread, not the scheduler's: a void seen here can never race
            # the submit of the same row.
            self._voider.sweep()
            self._next_void_sweep = time.monotonic() + VOID_SWEEP_SECONDS
        if time.monotonic() >= self._next_odd_sweep:
            self._report_odd_states()
            self._next_odd_sweep = time.monotonic() + ODD_STATE_SWEEP_SECONDS
        try:
            # Not while rows claimed ahead wait: being this process's, they would be
            # taken over too and sent twice.
            due = not self._ahead and time.monotonic() >= self._next_take_over
            if self._resume or due:
                handled += self._advance(
                    self._load(self._repo.take_over(self._settings.batch_size))
                )
                self._resume = False
                self._repo.sweep_claims()
                # Half the lease: a dead gateway's rows wait at most 1.5 leases.
                self._next_take_over = time.monotonic() + self._settings.claim_lease / 2
            work, self._ahead = self._ahead, None
            if not work:
                work = self._claim(self._batch)
            ahead = self._backlog and not self._stop.is_set()
            handled += self._advance(work, self._claim_ahead if ahead else None)
        except Exception:
            # Whatever was claimed, ahead too, is picked up again next cycle.
            self._resume = True
            self._ahead = None
            raise
        return handled

    def _claim_ahead(self) -> None:
        self._ahead = self._claim(self._batch)

    def expire(self) -> int:
        """Move rows not sent within the send timeout to 97; returns how many."""
        timeout = self._settings.send_timeout
        moved = 0
        for row in self._repo.timed_out(timeout):
            note = f"timed out: not sent within {timeout:g} s"
            if row.status_log:
                note += f" (last: {row.status_log})"
            moved += len(
                self._repo.transition([(row.tx_message_id, note)], row.state or 0, S.TIMED_OUT)
            )
        return moved

    def _report_odd_states(self) -> None:
        """Log, once per row and value, rows whose State is not a state code.

        The pickup query never sees them, so without this they would wait silently.
        """
        for tx, value in self._repo.odd_states():
            key = (str(tx), repr(value))
            if key not in self._odd_reported:
                self._odd_reported.add(key)
                log.error(
                    "outbox_state_not_a_code",
                    tx_message_id=str(tx),
                    state=repr(value),
                    effect="the row is never picked up; set State to 10 to send it",
                )

    # -- steps -------------------------------------------------------------------------

    @property
    def request_budget(self) -> int:
        """Most payload bytes one request may carry: the server's request limit less
        the envelope, and never more than the XML parser on the other side takes."""
        return min(self._settings.max_request_bytes - config.REQUEST_MARGIN, xmlsafe.MAX_BYTES)

    @property
    def pieces_budget(self) -> int:
        """Most bytes of message pieces one request may carry (the budget less the
        ``submit`` element around them)."""
        return self.request_budget - payloads.SUBMIT_FRAME_BYTES

    def _validate(self, rows: Iterable[outbox.OutboxRow]) -> tuple[list[_Work], list[Failure]]:
        """Each row as work in its current state, or (tx, reason) when it cannot be sent."""
        transmit_time = timefmt.now_text(self._settings.clock)
        good, bad = [], []
        for row in rows:
            try:
                valid = validation.validate(
                    row,
                    gateway_account=self._push.account,
                    transmit_time=transmit_time,
                    file_size=self._roots.check,
                    download_flag=self._settings.default_download_flag,
                    validate_content_for=self._settings.validate_content,
                    max_content_bytes=self._settings.max_content_bytes,
                )
                xml = _first_piece(valid)
            except errors.ValidationError as exc:
                bad.append((row.tx_message_id, f"invalid {exc.field}: {exc.reason}"))
                continue
            except errors.WireError as exc:
                bad.append((row.tx_message_id, f"cannot be sent: {exc}"))
                continue
            except Exception as exc:
                # Whatever else one row's values cause stays that row's failure: the
                # rows behind it must not wait for ever.
                log.exception("row_not_buildable", tx_message_id=str(row.tx_message_id))
                bad.append((row.tx_message_id, f"cannot be sent: {type(exc).__name__}: {exc}"))
                continue
            size = len(xml) + payloads.SUBMIT_FRAME_BYTES
            if size > self.request_budget:
                bad.append(
                    (
                        row.tx_message_id,
                        f"too large: the message is {size} bytes, one request carries at most "
                        f"{self.request_budget} (gateway.max_request_bytes)",
                    )
                )
                continue
            good.append(_Work(S(row.state or 0), valid, xml))
        return good, bad

    def _claim(self, limit: int) -> list[_Work]:
        """Claim ready rows, validate them and move them on, in one transaction: invalid
        rows to 99, rows with files to 11 (with their OutboxAttachment rows), others
        to 12. Returns the work of the rows now in flight, in pickup order."""
        planned: dict[str, _Work] = {}  # a row planned again (it changed) keeps the last

        def plan(rows: Sequence[outbox.OutboxRow]) -> list[outbox.Start]:
            _observe_pickup(rows, self._settings.clock)
            good, bad = self._validate(rows)
            planned.update((w.tx, w) for w in good)
            starts = [outbox.Start(tx, S.FAILED, note) for tx, note in bad]
            for w in good:
                files = w.valid.attachments
                if files:
                    note = f"uploading {len(files)} attachment(s)"
                    paths = [a.path for a in files]
                    starts.append(
                        outbox.Start(
                            w.tx, S.ATTACHMENTS_UPLOADING, note, _infos(w.valid, sha256=""), paths
                        )
                    )
                else:
                    starts.append(
                        outbox.Start(w.tx, S.ATTACHMENTS_UPLOADED, "claimed; no attachments")
                    )
            return starts

        moved = self._repo.claim_and_start(limit, plan)
        self._backlog = len(moved) >= limit
        self._batch = batching.next_size(limit, len(moved), self._settings.batch_size)
        work = []
        for w in planned.values():
            if w.tx in moved:
                w.state = S(moved[w.tx])
                work.append(w)
        if S.ATTACHMENTS_UPLOADED in moved.values():
            faults.reach(faults.OUTBOUND_CLAIMED_12)
        if S.ATTACHMENTS_UPLOADING in moved.values():
            faults.reach(faults.OUTBOUND_CLAIMED_11)
        return work

    def _load(self, rows: Sequence[outbox.OutboxRow]) -> list[_Work]:
        """Rebuild work for rows found in flight (after a restart or a failure)."""
        good, bad = self._validate(rows)
        states = {row.tx_message_id: S(row.state or 0) for row in rows}
        for tx, note in bad:
            self._fail([(tx, note)], states[tx])
        return good

    def _advance(self, work: list[_Work], meanwhile: Callable[[], None] | None = None) -> int:
        """Upload what needs uploading, then submit everything ready in one request;
        ``meanwhile`` runs while the (first) request is at the server."""
        uploaded = []
        for item in work:
            if item.state == S.ATTACHMENTS_UPLOADING:
                if self._upload(item):
                    uploaded.append(item)
            elif item.valid.attachments:
                self._hash_files(item)
        if uploaded:
            notes = [
                (
                    i.tx,
                    f"{len(i.valid.attachments)} attachment(s) uploaded, "
                    f"{sum(a.file_size for a in i.valid.attachments)} bytes",
                )
                for i in uploaded
            ]
            moved = set(
                self._repo.transition(notes, S.ATTACHMENTS_UPLOADING, S.ATTACHMENTS_UPLOADED)
            )
            for item in uploaded:
                if item.tx in moved:
                    item.state = S.ATTACHMENTS_UPLOADED
            if moved:
                faults.reach(faults.OUTBOUND_UPLOADED_12)
        ready = [
            i
            for i in work
            if i.state in (S.ATTACHMENTS_UPLOADED, S.UPLOADED)
            and len(i.digests) == len(i.valid.attachments)
        ]
        if ready:
            self._submit(ready, meanwhile)
        elif meanwhile is not None:
            meanwhile()
        return len(work)

    def _upload(self, item: _Work) -> bool:
        """Stream the row's files; a refused or vanished file fails only this row."""
        att = None
        try:
            for att in item.valid.attachments:
                with self._roots.open(att.path) as (fh, size):
                    _same_size(att, size)
                    item.digests[att.seq_no] = self._push.upload_attachment(
                        item.tx, att.seq_no, fh, size, self._settings.chunk_size
                    )
        except errors.RefusedByServer as exc:
            self._fail([(item.tx, f"attachment refused: {exc.detail}")], item.state)
            return False
        except (errors.AttachmentRefused, OSError) as exc:
            self._fail_file(item, att, exc)
            return False
        return True

    def _hash_files(self, item: _Work) -> None:
        """Digests of files uploaded by an earlier run (needed again to submit)."""
        att = None
        try:
            for att in item.valid.attachments:
                digest = hashlib.sha256()
                with self._roots.open(att.path) as (fh, size):
                    _same_size(att, size)
                    while chunk := fh.read(_HASH_CHUNK):
                        digest.update(chunk)
                item.digests[att.seq_no] = digest.hexdigest()
        except (errors.AttachmentRefused, OSError) as exc:
            self._fail_file(item, att, exc)

    def _fail_file(
        self, item: _Work, att: validation.PlannedAttachment | None, exc: Exception
    ) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f"file {att.seq_no} {att.path!r}" if att is not None else "a file"
        self._fail([(item.tx, f"AttachmentList: {where} {reason}")], item.state)

    def _fail(self, failures: Sequence[Failure], state: S) -> None:
        """Move rows to 99 where the transition table allows it from ``state``.

        A row at 19 was already accepted by the server, so it cannot fail any more; one
        that can no longer be rebuilt (its file refused or gone) stays there, logged,
        until the send timeout moves it to 97, and never holds up the rows behind it.
        """
        if (state, S.FAILED) in OUTBOX_TRANSITIONS:
            self._repo.transition(failures, state, S.FAILED)
            return
        for tx, note in failures:
            log.error(
                "row_cannot_be_resumed",
                tx_message_id=str(tx),
                state=int(state),
                reason=note,
                effect="left in place; the send timeout moves it to 97",
            )

    def _submit(self, ready: list[_Work], meanwhile: Callable[[], None] | None = None) -> None:
        """Submit in requests that fit the server's limit, in pickup order; ``meanwhile``
        runs while the first is at the server."""
        for batch in cut(ready, [i.size for i in ready], self.pieces_budget):
            self._submit_narrowing(batch, meanwhile)
            meanwhile = None

    def _submit_narrowing(
        self, batch: list[_Work], meanwhile: Callable[[], None] | None = None
    ) -> None:
        """Submit ``batch``; a refusal of the request for what it carries is narrowed
        down by halves until the rows at fault stand alone, and only they go to 99."""
        try:
            self._submit_batch(batch, meanwhile)
        except errors.RefusedByServer as exc:
            if exc.status not in ROW_FAULT_STATUS:
                raise
            if len(batch) > 1:
                log.warning("batch_refused_narrowing", count=len(batch), error=str(exc))
                half = len(batch) // 2
                self._submit_narrowing(batch[:half])
                self._submit_narrowing(batch[half:])
                return
            [item] = batch
            self._fail([(item.tx, f"refused by server: {exc.code}: {exc.detail}")], item.state)

    def _submit_batch(
        self, ready: list[_Work], meanwhile: Callable[[], None] | None = None
    ) -> None:
        started = time.monotonic()
        messages, pieces = [i.valid.message for i in ready], [i.piece() for i in ready]
        trouble = None
        if meanwhile is None:
            results = self._push.submit(messages, pieces)
        else:
            results, trouble = overlapped(lambda: self._push.submit(messages, pieces), meanwhile)
        faults.reach(faults.OUTBOUND_SUBMITTED)
        log.debug("batch_submitted", count=len(ready), seconds=round(time.monotonic() - started, 4))
        by_tx = {i.tx: i for i in ready}
        done = time.monotonic()
        for result in results:
            if result.accepted:
                metrics.DELIVERY_LATENCY.observe(done - by_tx[result.tx_message_id].started)
        moved: set[str] = set()
        for state in (S.ATTACHMENTS_UPLOADED, S.UPLOADED):
            moved |= self._record(
                [r for r in results if by_tx[r.tx_message_id].state == state], state
            )
        for result in results:
            if result.accepted and not result.served_at_once and result.tx_message_id not in moved:
                self._check_voided(result, by_tx[result.tx_message_id].state)
        if trouble is not None:
            raise trouble

    def _check_voided(self, result: model.SubmitResult, sent_from: S) -> None:
        """An accepted row that did not move was voided meanwhile: recall it."""
        row = self._repo.get(result.tx_message_id)
        if row is not None and row.state == S.VOIDED and not row.message_id:
            self._voider.accepted_after_void(row, sent_from, result.message_id)

    def _record(self, results: list[model.SubmitResult], state: S) -> set[str]:
        """Record the answers for rows sent from ``state``; returns the accepted that moved."""
        moved: set[str] = set()
        if not results:
            return moved
        queued = [r for r in results if r.accepted and not r.served_at_once]
        at_once = [r for r in results if r.accepted and r.served_at_once]
        refused = [
            (r.tx_message_id, f"refused by server: {r.reason}") for r in results if not r.accepted
        ]
        if refused:
            self._fail(refused, state)
        if queued:
            moved |= set(
                self._repo.transition(
                    [(r.tx_message_id, _queued_note(r)) for r in queued],
                    state,
                    S.WAITING,
                    message_ids={r.tx_message_id: r.message_id for r in queued},
                    set_transmit_time=True,
                )
            )
            faults.reach(faults.OUTBOUND_AT_20)
        if at_once:
            ids = {r.tx_message_id: r.message_id for r in at_once}
            if state != S.UPLOADED:
                self._repo.transition(
                    [(r.tx_message_id, "accepted by the server") for r in at_once],
                    state,
                    S.UPLOADED,
                    message_ids=ids,
                    set_transmit_time=True,
                )
                faults.reach(faults.OUTBOUND_AT_19)
            moved |= set(
                self._repo.transition(
                    [(r.tx_message_id, _served_note(r)) for r in at_once],
                    S.UPLOADED,
                    S.SENT,
                    message_ids=ids,
                )
            )
        return moved


#: (TxMessageId, reason) of a row that goes to 99.
Failure = tuple[str, str]


def overlapped(
    send: Callable[[], _T], meanwhile: Callable[[], None]
) -> tuple[_T, Exception | None]:
    """``send()`` in a thread of its own while ``meanwhile()`` runs in this one.

    Returns what ``send`` returned, with what ``meanwhile`` raised (None when it did
    not), so the caller records the answer before it deals with that; raises what
    ``send`` raised once ``meanwhile`` is done.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def sending() -> None:
        try:
            outcome.append(send())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=sending, name="mpg-submit", daemon=True)
    thread.start()
    trouble = None
    try:
        meanwhile()
    except Exception as exc:
        trouble = exc
    thread.join()
    if failure:
        if trouble is not None:
            # The claim that failed wrote nothing (one transaction); the next cycle
            # claims again. The request's failure decides what happens now.
            log.warning("claim_ahead_failed", error=str(trouble))
        raise failure[0]
    return outcome[0], trouble


def cut(items: Sequence[_T], sizes: Sequence[int], budget: int) -> list[list[_T]]:
    """``items`` in order, in runs whose ``sizes`` add up to at most ``budget`` each.

    An item larger than the budget on its own still gets a run of its own (the caller
    refuses such rows before; the server's answer then fails only that row).
    """
    runs: list[list[_T]] = []
    total = 0
    for item, size in zip(items, sizes, strict=True):
        if not runs or total + size > budget:
            runs.append([])
            total = 0
        runs[-1].append(item)
        total += size
    return runs


def _first_piece(valid: validation.ValidRow) -> bytes:
    """The row's piece of a submit payload, with placeholder digests for its files
    (WireError if it cannot be built at all)."""
    if not valid.attachments:
        return payloads.build_message(valid.message)
    message = dataclasses.replace(
        valid.message, attachments=_infos(valid, sha256=_DIGEST_PLACEHOLDER)
    )
    return payloads.build_message(message)


def _infos(valid: validation.ValidRow, *, sha256: str) -> tuple[model.AttachmentInfo, ...]:
    """The row's attachments as the wire describes them, with ``sha256`` for each."""
    return tuple(
        model.AttachmentInfo(
            a.seq_no, a.file_name, a.file_type, a.file_size, a.download_flag, sha256
        )
        for a in valid.attachments
    )


def _same_size(att: validation.PlannedAttachment, size: int) -> None:
    if size != att.file_size:
        raise errors.AttachmentRefused(
            f"changed after it was checked ({size} bytes now, {att.file_size} before)"
        )


def _observe_pickup(rows: Iterable[outbox.OutboxRow], clock: timefmt.Clock) -> None:
    """Pickup latency: from the StatusTime the ERP gave the row in 10 to now."""
    now = timefmt.now(clock)
    for row in rows:
        if row.status_time is None:
            continue
        try:
            waited = (now - timefmt.parse_text(row.status_time)).total_seconds()
        except ValueError:
            continue  # an unreadable StatusTime has no age to report
        metrics.PICKUP_LATENCY.observe(max(0.0, waited))


def next_pause(previous: float, handled: int, poll_interval: float) -> float:
    """Adaptive polling: short while rows arrive, doubling up to poll_interval when idle.

    Databases that cannot wake the gateway (MariaDB, SQL Server, PostgreSQL without
    the trigger) then pick up a steady stream quickly and cost near nothing idle.
    """
    if handled:
        return min(ADAPTIVE_MIN_POLL, poll_interval)
    return min(previous * 2, poll_interval)


def _queued_note(result: model.SubmitResult) -> str:
    note = f"queued for {result.recipients} recipient(s)"
    if result.unknown:
        note += "; unknown recipient(s): " + ", ".join(result.unknown)
    return note


def _served_note(result: model.SubmitResult) -> str:
    if result.recall is not None:
        r = result.recall
        return (
            f"recall of {r.recalled_message_id}: withdrawn from {r.withdrawn}, "
            f"notified {r.notified}"
        )
    return "served by the server"
