"""The HTTP face of the push server: ``POST /v1/<op>``, ``GET /healthz``, ``/readyz``
(the database takes writes) and ``/metrics`` (Prometheus; only for the client networks
in ``server.metrics_from``, since queue depths name accounts).

Handlers are thin: read the body, open the envelope (:mod:`mpg.server.auth`), call
the store, seal the answer. Database and crypto work runs in the threadpool so the
event loop never blocks; an operation that does not wait (all but ``fetch`` and
``upload``) is opened and done in one call there, as each hand-over costs about
0.1 ms of CPU. Every refusal goes through :data:`ERRORS`, the one table from exception
to HTTP status and error code of ``docs/protocol.md``; error bodies are JSON, and
every failure to authenticate has the same one (:data:`UNAUTHENTICATED`).

Reading a body is guarded (docs/security.md, "The server's network face"): the
envelope's clear header is read first and its account and key looked up before the
rest of the body is read (when the rest is still to come), so a caller without a key
sends a few hundred bytes, not 64 MiB; each operation has its own body limit
(:func:`body_limit`: only ``upload`` and ``submit`` carry bulk data); an upload's
body goes to a file as it arrives and is opened from there into a file encrypted
with the data key (:meth:`PushServer._open_upload_request`), so attachment chunks are
never held in memory, nor written to disk in clear; the body bytes held by all requests together,
in memory or spooled, are capped (``server.max_inflight_bytes``, beyond it 503); and
a body that stalls for ``server.body_timeout`` is dropped (408).

``fetch`` is a long poll: when the queue is empty it waits on an :class:`asyncio.Event`
per account, set when this process queues an entry for that account (submit, recall,
receipt) and, on PostgreSQL, when any process sharing the database does (each commit
that queues entries sends a ``NOTIFY`` naming the accounts, which every process
hears with ``LISTEN``). It re-checks the queue at least every :data:`POLL_SAFETY_SECONDS`: for
leases that run out, and as the safety net when notifications are lost or the
database cannot send them (SQLite, MariaDB).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import ipaddress
import pathlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

import httpx
import sqlalchemy as sa
import structlog
from starlette import applications, background, concurrency, requests, responses, routing

from mpg import config, errors, metrics, tlstrust
from mpg.db import notify, transactions
from mpg.ops import health, systemd
from mpg.server import (
    accounts,
    admins,
    auth,
    blobs,
    idtoken,
    mail,
    publishing,
    queues,
    receiptwakes,
    replay,
    tables,
    verification,
)
from mpg.server.api import app as api_app
from mpg.server.console import app as console_app
from mpg.server.directory import codestore, devices, registration
from mpg.server.httperrors import INTERNAL, error_for, error_response
from mpg.server.push import fileserve
from mpg.server.push import registry as push_registry
from mpg.server.push import worker as push_worker
from mpg.wire import atrest, envelope, model, payloads, xmlsafe

log = structlog.get_logger(__name__)

#: Longest a waiting fetch goes without looking at the queue itself.
POLL_SAFETY_SECONDS: Final = 5.0
#: Fetches looking at the queue at once (the others wait their turn, not a thread).
MAX_LOOKS: Final = 8
#: Most entries one fetch returns, whatever the client asks for.
MAX_FETCH_ITEMS: Final = 5000
#: Folder under ``server.data_dir`` that holds attachment files.
BLOB_DIR: Final = "blobs"
#: Folder under ``server.data_dir`` where upload bodies are spooled while they arrive.
SPOOL_DIR: Final = "incoming"
#: Body limit of the operations that carry no bulk data (fetch, ack, download, history).
SMALL_BODY_BYTES: Final = 1024 * 1024
#: What an envelope adds to its payload at most: prefix, longest header, IV and tag.
ENVELOPE_OVERHEAD: Final = envelope.PREFIX_BYTES + 0xFFFF + envelope.IV_BYTES + envelope.TAG_BYTES
#: Largest ``seq`` (the SeqNo column is a 32-bit integer).
MAX_SEQ: Final = 2**31 - 1
#: Largest ``offset``, ``size`` and ``length`` (2^53: exact in every JSON reader).
MAX_OFFSET: Final = 2**53
#: Operations whose first write transaction also writes the request's nonce (see
#: :mod:`mpg.server.replay`): the hot ones, whose only effects are in the database.
NONCE_RIDES: Final = frozenset({"submit", "fetch", "ack"})
_T = TypeVar("_T")
#: When the request being handled came in (loop time), for a long poll's deadline.
_ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived")
#: Work a request leaves for after its answer is sent (a fetch's acknowledgements).
_AFTER_ANSWER: contextvars.ContextVar[list[Callable[[], None]]] = contextvars.ContextVar(
    "after_answer"
)


def body_limit(op: str, max_request_bytes: int) -> int:
    """The largest body ``/v1/<op>`` takes: only uploads and submits carry bulk data."""
    if op == "upload":
        return max_request_bytes
    if op == "submit":
        return min(max_request_bytes, xmlsafe.MAX_BYTES + ENVELOPE_OVERHEAD)
    return min(max_request_bytes, SMALL_BODY_BYTES)


class ByteBudget:
    """Request body bytes held by all requests together; used on the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, count: int) -> None:
        """Hold ``count`` more bytes, or raise :class:`mpg.errors.Unavailable` (503)."""
        if self.held + count > self.limit:
            raise errors.Unavailable("too many request bytes in flight; retry later")
        self.held += count

    def give(self, count: int) -> None:
        """Release bytes taken for a request that is done."""
        self.held -= count


class Waiters:
    """One event per AccountId with a fetch waiting. Events are taken from any thread
    (a fetch takes its first in the worker thread that opens the request and looks);
    they are set on the event loop's thread."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._lock = threading.Lock()
        self.stopping = False

    def event(self, account: str) -> asyncio.Event:
        """The event that the next entry for ``account`` sets."""
        with self._lock:
            return self._events.setdefault(account, asyncio.Event())

    def wake_all(self) -> None:
        """Wake every waiting fetch to look at its queue (a notification may be lost)."""
        with self._lock:
            accounts_ = list(self._events)
        self.wake(accounts_)

    def wake(self, accounts_: Iterable[str]) -> None:
        """Wake the fetches waiting for these accounts."""
        for account in accounts_:
            with self._lock:
                event = self._events.pop(account, None)
            if event is not None:
                event.set()

    def stop(self) -> None:
        """Wake every waiting fetch for good: the server is stopping."""
        self.stopping = True
        with self._lock:
            events, self._events = list(self._events.values()), {}
        for event in events:
            event.set()


Handler = Callable[[auth.OpenedRequest], Awaitable[tuple[bytes, dict[str, Any]]]]
#: An operation done in one go in a worker thread, in the call that opened the request.
Work = Callable[[auth.OpenedRequest], tuple[bytes, dict[str, Any]]]
#: What a fetch's look found: its answer and whether it left the acknowledgements it
#: carried to be applied after the answer (:func:`mpg.server.queues.acks_left`); None:
#: nothing to deliver.
_Found = tuple[bytes, bool] | None


def _max_items(request: model.FetchRequest) -> int:
    """The most entries a fetch answers with: what it asks for, within the server's cap."""
    return min(request.max_items, MAX_FETCH_ITEMS)


class PushServer:
    """The stores and the operations behind the routes."""

    def __init__(
        self,
        settings: config.ServerSettings,
        engine: sa.Engine,
        master_key: bytes,
        keyring: atrest.Keyring,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keyring = keyring
        self.accounts = accounts.AccountStore(engine, master_key, keyring)
        #: Account pseudonyms and sealed columns (:mod:`mpg.server.vault`).
        self.vault = self.accounts.vault
        self.admins = admins.AdminStore(engine)
        self.codes = codestore.CodeStore(codestore.code_key(master_key), keyring)
        #: None when no mail server is configured (``server.mail_host``).
        self.mailer = (
            mail.Mailer(mail.SmtpSettings.from_server(settings)) if settings.mail_host else None
        )
        self.devices = devices.DeviceStore(engine, keyring, self.accounts)
        self.queues = queues.QueueStore(engine, self.vault, addresser=self.devices.addresser)
        #: Rate limits of verification mails and code checks (in memory, per process).
        self.limits = verification.VerificationLimits(
            verification.LimitPolicy(), clock=time.monotonic
        )
        self._id_tokens: idtoken.IdTokenVerifier | None = None
        # Made now, so that a bad CA file stops the start instead of failing requests.
        self._id_token_trust = tlstrust.context(
            settings.id_token_ca_bundle, "server.id_token_ca_bundle"
        )
        self._id_tokens_lock = threading.Lock()
        self.registrar = registration.Registrar(
            engine=engine,
            keyring=keyring,
            codes=self.codes,
            device_store=self.devices,
            limits=self.limits,
            settings=settings,
            mailer=self.mailer,
            verifier=self.id_token_verifier,
        )
        #: The push providers per group (docs/push.md) and the threads sending push jobs.
        self.providers = push_registry.Registry(settings)
        self.pusher = push_worker.PushWorker(engine, keyring, self.providers, settings)
        #: Each group's message file, served at /files/<group>.ibi.
        self.files = publishing.message_files(settings)
        self.queues.publisher = publishing.OutboxPublisher(self.files, settings)
        self.blobs = blobs.BlobStore(
            engine,
            pathlib.Path(settings.data_dir) / BLOB_DIR,
            self.vault,
            quota_bytes=settings.upload_quota_bytes,
            quota_files=settings.upload_quota_files,
        )
        self.opener = auth.RequestOpener(
            self.accounts,
            replay.SharedReplayGuard(
                engine, settings.replay_window, per_account=settings.replay_per_account
            ),
        )
        self.budget = ByteBudget(settings.max_inflight_bytes)
        self._spool = pathlib.Path(settings.data_dir) / SPOOL_DIR
        self._looks = asyncio.Semaphore(MAX_LOOKS)
        self.waiters = Waiters()
        self.registry = metrics.registry(
            [
                metrics.GaugeCollector(
                    "mpg_queue_depth",
                    "Server: entries waiting per recipient (queued or leased).",
                    "recipient",
                    self.queues.depths,
                )
            ]
        )
        self._metrics_from = [ipaddress.ip_network(n, strict=False) for n in settings.metrics_from]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: notify.ChannelListener | None = None
        self._receipt_wakes: receiptwakes.ReceiptWakes | None = None
        #: Operations that wait on the loop (a streamed upload; and the fetch, a long
        #: poll: :meth:`_open_and_fetch`) ...
        self._handlers: dict[str, Handler] = {"upload": self._upload}
        #: ... and those done in one go in a worker thread.
        self._works: dict[str, Work] = {
            "submit": self._submit,
            "ack": self._ack,
            "download": self._download,
            "history": self._history,
        }
        self._operations = frozenset({"fetch", *self._handlers, *self._works})

    def id_token_verifier(self) -> idtoken.IdTokenVerifier | None:
        """The ID token verifier of ``server.id_token_issuers``, made on first use;
        None when no issuer is configured (registration by ID token is off)."""
        if not self.settings.id_token_issuers:
            return None
        with self._id_tokens_lock:
            if self._id_tokens is None:
                client = httpx.Client(
                    verify=self._id_token_trust, timeout=10.0, follow_redirects=False
                )
                self._id_tokens = idtoken.verifier_from_settings(self.settings, client)
            return self._id_tokens

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start waking long polls on ``loop`` when entries are queued."""
        self._loop = loop
        self._receipt_wakes = receiptwakes.ReceiptWakes(self.waiters.wake, loop.call_at, loop.time)
        self.queues.set_listener(self._queued, receipts=self._receipts_queued)
        if notify.supported(self.engine):
            self._listener = notify.ChannelListener(
                self.engine,
                tables.QUEUED_CHANNEL,
                self._notified,
                self._missed,
            )
            self._listener.start()
        self.pusher.start()

    def detach(self) -> None:
        """Stop sending pushes and hearing other processes' notifications (stopping)."""
        self.pusher.stop()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def request_stop(self) -> None:
        """Answer waiting fetches now (safe from a signal handler or any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.waiters.stop)

    def _queued(self, accounts_: frozenset[str]) -> None:
        # Called from a worker thread after a commit; events belong to the loop.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.waiters.wake, accounts_)

    def _receipts_queued(self, accounts_: frozenset[str]) -> None:
        # As _queued, for the senders of messages just served: paced by ReceiptWakes.
        wakes = self._receipt_wakes
        if self._loop is not None and not self._loop.is_closed() and wakes is not None:
            self._loop.call_soon_threadsafe(wakes, accounts_)

    def _notified(self, payload: str) -> None:
        # On the LISTEN thread: some process (this one too) committed entries for it.
        log.debug("queue_notified", account=payload)
        if payload.startswith(tables.RECEIPTS_PREFIX):
            self._receipts_queued(frozenset((payload.removeprefix(tables.RECEIPTS_PREFIX),)))
        else:
            self._queued(frozenset((payload,)))

    def _missed(self) -> None:
        # The LISTEN connection dropped: entries queued meanwhile by other processes
        # sent notifications nobody heard, so every waiting fetch looks now.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.waiters.wake_all)

    async def handle(self, request: requests.Request) -> responses.Response:
        """``POST /v1/{op}``: authenticate, dispatch, seal; refusals as JSON."""
        op = request.path_params["op"]
        held = [0]
        temp: list[pathlib.Path] = []
        try:
            if op not in self._operations:
                raise errors.WireError(f"unknown operation {op[:64]!r}")
            if self.waiters.stopping:
                raise errors.Unavailable("the server is stopping")
            # Long polls promise their wait from the moment the request came in.
            _ARRIVED.set(asyncio.get_running_loop().time())
            after: list[Callable[[], None]] = []
            _AFTER_ANSWER.set(after)
            work = self._works.get(op)
            if op == "fetch":
                opened, (payload, args) = await self._open_and_fetch(request, op, held)
            elif work is not None:
                opened, (payload, args) = await self._open_and_work(request, op, held, work)
            else:
                opened = await self._open_upload_request(request, op, held, temp)
                payload, args = await self._handlers[op](opened)
            if len(payload) <= SMALL_BODY_BYTES:
                # Cheap; queued behind the threadpool it could miss a long poll's deadline.
                sealed = auth.seal_response(opened, payload, args)
            else:
                sealed = await concurrency.run_in_threadpool(
                    auth.seal_response, opened, payload, args
                )
        except Exception as exc:
            status, code = error_for(exc)
            if status == INTERNAL[0]:
                log.exception("request_failed", op=op[:64])
            else:
                log.info("request_refused", op=op[:64], status=status, error=code, detail=str(exc))
            known = op in self._operations
            metrics.SERVER_REQUESTS.labels(op if known else "unknown", status).inc()
            return error_response(exc)
        finally:
            self.budget.give(held[0])
            for path in temp:
                path.unlink(missing_ok=True)
        metrics.SERVER_REQUESTS.labels(op, 200).inc()
        return responses.Response(
            sealed,
            media_type="application/octet-stream",
            # Starlette runs it once the answer is sent, in a worker thread.
            background=background.BackgroundTask(_run_all, after) if after else None,
        )

    async def _open_upload_request(
        self, request: requests.Request, op: str, held: list[int], temp: list[pathlib.Path]
    ) -> auth.OpenedRequest:
        """Read and open an upload's envelope under the limits of the module.

        The body goes to a file as it arrives and is opened from there into another,
        encrypted with the data key (``temp`` lists them, for the caller to delete): an
        attachment chunk is never held in memory, nor on disk in clear (the first file
        is the envelope: ciphertext under the account's key). Its nonce is written as
        it is opened (an upload is not one of :data:`NONCE_RIDES`).
        """
        self._spool.mkdir(parents=True, exist_ok=True)
        sealed = self._spool / uuid.uuid4().hex
        segment = sealed.with_suffix(".seg")
        temp += [sealed, segment]
        with sealed.open("wb") as sink:
            # Writes of at most 64 KiB to the page cache: not worth a thread each.
            claim = await self._receive(request, op, held, sink.write)
        if claim is None:
            raise errors.TamperedEnvelope("envelope is malformed or was tampered with")
        return await concurrency.run_in_threadpool(self._open_upload, op, sealed, claim, segment)

    async def _open_and_work(
        self, request: requests.Request, op: str, held: list[int], work: Work
    ) -> tuple[auth.OpenedRequest, tuple[bytes, dict[str, Any]]]:
        """Read the (in-memory) body, then open it and do ``work`` in one worker-thread
        call: each hand-over to a thread and back costs about 0.1 ms of CPU."""
        body = bytearray()
        claim = await self._receive(request, op, held, body.extend, whole_first=True)

        def opened_and_done() -> tuple[auth.OpenedRequest, tuple[bytes, dict[str, Any]]]:
            opened = self.opener.open(op, body, claim, nonce_rides=op in NONCE_RIDES)
            answer = work(opened)
            self.opener.settle(opened.nonce)
            return opened, answer

        return await concurrency.run_in_threadpool(opened_and_done)

    def _open_upload(
        self, op: str, sealed: pathlib.Path, claim: auth.Claim, target: pathlib.Path
    ) -> auth.OpenedRequest:
        """Open a spooled upload body into ``target``, encrypted as a stage segment."""
        segment, writer, fh = self.blobs.spool(target)
        with fh:
            opened = self.opener.open_file(op, sealed, claim, writer)
            writer.close()
        spooled = blobs.Spooled(target, segment, writer.size)
        return dataclasses.replace(opened, payload_file=spooled)

    async def _receive(
        self,
        request: requests.Request,
        op: str,
        held: list[int],
        sink: Callable[[bytes], object],
        *,
        whole_first: bool = False,
    ) -> auth.Claim | None:
        """Pass the body to ``sink``; return who its header claims to be (None: no header).

        ``held[0]`` counts the bytes taken from the in-flight budget (the caller gives
        them back). The claim is looked up as soon as the header is in: an unknown
        account or key is refused (401) before the rest of the body is read.
        ``whole_first``: when the header came with the whole body (as its declared
        length says) there is nothing left to spare; the claim is then left to
        :meth:`mpg.server.auth.RequestOpener.open`, in the same worker-thread call
        as the opening (None is returned), which saves a hop to a thread.
        """
        limit = body_limit(op, self.settings.max_request_bytes)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise errors.TooLarge(f"body of {declared[:20]} bytes is over the {limit}-byte limit")
        start = bytearray()  # the body's first bytes, until the header is read
        claim: auth.Claim | None = None
        header_end: int | None = None
        deferred = False  # the claim is left to the opening (whole_first)
        received = 0
        chunks = request.stream().__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(anext(chunks), self.settings.body_timeout)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise errors.RequestTimeout(
                    f"the body stalled for {self.settings.body_timeout:g} s"
                ) from None
            received += len(chunk)
            if received > limit:
                raise errors.TooLarge(f"body is over the {limit}-byte limit")
            self.budget.take(len(chunk))
            held[0] += len(chunk)
            sink(chunk)
            if claim is None and not deferred:
                start += chunk
                header_end = header_end or envelope.header_end(start)
                if header_end is not None and len(start) >= header_end:
                    deferred = whole_first and declared.isdigit() and received >= int(declared)
                    if deferred:
                        continue
                    header = envelope.read_header(start)
                    claim = await concurrency.run_in_threadpool(self.opener.identify, header)
                    start = bytearray()
        return claim

    async def readyz(self, request: requests.Request) -> responses.Response:
        """``GET /readyz``: 200 when the database takes a write now, else 503."""
        failed = await concurrency.run_in_threadpool(
            health.readiness, {"database": lambda: transactions.probe_writable(self.engine)}
        )
        return responses.JSONResponse(
            {"ready": not failed, "failed": failed}, status_code=503 if failed else 200
        )

    async def metrics(self, request: requests.Request) -> responses.Response:
        """``GET /metrics``: the Prometheus text, for the allowed client networks only."""
        client = request.client.host if request.client is not None else ""
        try:
            allowed = any(ipaddress.ip_address(client) in n for n in self._metrics_from)
        except ValueError:
            allowed = False
        if not allowed:
            return responses.JSONResponse(
                {"error": "forbidden", "detail": "metrics are not served to this address"},
                status_code=403,
            )
        data, content_type = await concurrency.run_in_threadpool(metrics.render, self.registry)
        return responses.Response(data, media_type=content_type)

    async def _upload(self, req: auth.OpenedRequest) -> tuple[bytes, dict[str, Any]]:
        args = req.header.args
        final = _arg(args, "final", bool)
        status = await concurrency.run_in_threadpool(
            self.blobs.upload,
            req.account,
            _arg(args, "tx", str),
            _arg(args, "seq", int),
            _arg(args, "offset", int),
            req.payload if req.payload_file is None else req.payload_file,
            final=final,
            size=_arg(args, "size", int) if final else None,
            sha256=_arg(args, "sha256", str) if final else None,
        )
        size = len(req.payload) if req.payload_file is None else req.payload_file.length
        metrics.ATTACHMENT_BYTES.labels("upload").inc(size)
        return b"", {"received": status.received, "complete": status.complete}

    def _submit(self, req: auth.OpenedRequest) -> tuple[bytes, dict[str, Any]]:
        results = self.queues.submit(req.account, payloads.parse_submit(req.payload), req.nonce)
        return payloads.build_submitted(results), {}

    async def _open_and_fetch(
        self, request: requests.Request, op: str, held: list[int]
    ) -> tuple[auth.OpenedRequest, tuple[bytes, dict[str, Any]]]:
        """Read the body, then open it and make the fetch's first look in one
        worker-thread call (a hop to a thread and back less, as for the works); when
        that look finds nothing, wait on the loop for the account's next entries."""
        body = bytearray()
        claim = await self._receive(request, op, held, body.extend, whole_first=True)
        # The first look is always made (it carries the acknowledgements): no deadline.
        await self._looks.acquire()
        try:
            opened, fetch, event, found = await concurrency.run_in_threadpool(
                self._open_and_look, op, body, claim
            )
        finally:
            self._looks.release()
        return opened, await self._wait_and_look(opened, fetch, event, found)

    def _open_and_look(
        self, op: str, body: bytearray, claim: auth.Claim | None
    ) -> tuple[auth.OpenedRequest, model.FetchRequest, asyncio.Event, _Found]:
        """Open a fetch and look once, acknowledging what it carries (worker thread)."""
        req = self.opener.open(op, body, claim, nonce_rides=op in NONCE_RIDES)
        request = payloads.parse_fetch(req.payload)
        if self.devices.seen_due(req.account):
            # Not a write a replay may make: the nonce first, on its own.
            self.opener.settle(req.nonce)
            self.devices.write_seen(req.account)
        # Taken before looking, so an entry queued while we look still wakes us.
        event = self.waiters.event(self.vault.account_id(req.account))
        # The previous batch's acknowledgement rides on the first look. A large one
        # that look leaves, so as not to hold up the answer (QueueStore.fetch): it is
        # applied right after the answer is sent (the recipient has stored those
        # entries; should the server stop first, they are delivered again once their
        # lease runs out, and recognised).
        found = self._look_now(req.account, _max_items(request), request.acked, req.nonce)
        return req, request, event, found

    async def _wait_and_look(
        self,
        req: auth.OpenedRequest,
        request: model.FetchRequest,
        event: asyncio.Event,
        found: _Found,
    ) -> tuple[bytes, dict[str, Any]]:
        """The answer of a fetch whose first look found ``found``: that, or what a
        look finds after ``event`` (or the poll's safety interval), or nothing once
        the wait the request asked for is over."""
        loop = asyncio.get_running_loop()
        deadline = _ARRIVED.get(loop.time()) + min(request.wait, self.settings.max_long_poll)
        while found is None:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.waiters.stopping:
                return payloads.build_deliveries(model.FetchBatch()), {}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, POLL_SAFETY_SECONDS))
            event = self.waiters.event(self.vault.account_id(req.account))
            found = await self._look(req.account, _max_items(request), deadline, req.nonce)
        answer, left = found
        if left:
            _AFTER_ANSWER.get().append(
                functools.partial(self._acknowledge_later, req.account, request.acked)
            )
        return answer, {}

    def _acknowledge_later(self, account: str, entries: tuple[str, ...]) -> None:
        """A fetch's acknowledgements, once its answer is out (see :meth:`_open_and_look`)."""
        try:
            self.queues.acknowledge(account, entries)
        except Exception as exc:
            # Stored by the recipient all the same: delivered again after the lease
            # and recognised there, then acknowledged by its next fetch.
            log.warning("fetch_ack_failed", account=account, entries=len(entries), error=str(exc))

    async def _look(
        self, account: str, max_items: int, deadline: float, nonce: transactions.Rider | None
    ) -> _Found:
        """A look after the first (:meth:`_open_and_look`): the answer when it found
        entries; else None (also if no turn comes before ``deadline``).

        Under load looks queue for a turn (:data:`MAX_LOOKS` at a time); a waiting
        fetch must not answer later than it promised because its last look waited
        there. A look that has begun runs to its end (it may lease entries).
        """
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self._looks.acquire(), max(remaining, 0.0))
        except TimeoutError:
            return None
        try:
            return await concurrency.run_in_threadpool(
                self._look_now, account, max_items, (), nonce
            )
        finally:
            self._looks.release()

    def _look_now(
        self,
        account: str,
        max_items: int,
        acked: tuple[str, ...],
        nonce: transactions.Rider | None,
    ) -> _Found:
        """Lease what is there and build its answer in the same worker-thread call."""
        batch = self.queues.fetch(account, max_items, self.settings.lease_seconds, acked, nonce)
        if not batch.deliveries and not batch.receipts:
            return None
        return payloads.build_deliveries(batch), queues.acks_left(batch, acked)

    def _ack(self, req: auth.OpenedRequest) -> tuple[bytes, dict[str, Any]]:
        done = self.queues.ack(req.account, payloads.parse_ack(req.payload), req.nonce)
        return payloads.build_acked(done), {}

    def _download(self, req: auth.OpenedRequest) -> tuple[bytes, dict[str, Any]]:
        args = req.header.args
        part = self.blobs.download(
            req.account,
            _arg(args, "messageId", str),
            _arg(args, "seq", int),
            _arg(args, "offset", int),
            _arg(args, "length", int),
        )
        return part.data, {"size": part.size, "sha256": part.sha256}

    def _history(self, req: auth.OpenedRequest) -> tuple[bytes, dict[str, Any]]:
        message_id, events = self.queues.history(req.account, _arg(req.header.args, "tx", str))
        return payloads.build_history(message_id, events), {}


def _run_all(work: list[Callable[[], None]]) -> None:
    for do in work:
        do()


def _arg(args: dict[str, Any], name: str, kind: type[_T]) -> _T:
    """A required envelope argument of the given JSON type (bool is not an int).

    Integers are range-checked: ``seq`` 0..2^31-1, others 0..2^53.
    """
    value = args.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:40] + "…"
        raise errors.WireError(f"argument {name!r}: expected {kind.__name__}, got {shown}")
    if isinstance(value, int):
        top = MAX_SEQ if name == "seq" else MAX_OFFSET
        if not 0 <= value <= top:
            raise errors.WireError(f"argument {name!r}: must be from 0 to {top}")
    return value


async def _healthz(request: requests.Request) -> responses.Response:
    return responses.PlainTextResponse("ok")


async def _watchdog(notifier: systemd.Notifier) -> None:
    """Ping systemd's watchdog while the event loop runs (a blocked loop stops it)."""
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def create_app(push: PushServer) -> applications.Starlette:
    """The Starlette application serving ``push``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: applications.Starlette) -> AsyncIterator[None]:
        push.attach(asyncio.get_running_loop())
        log.info("server_started", database=push.engine.url.render_as_string())
        notifier = systemd.Notifier()
        notifier.ready("push server running")
        pinger = asyncio.create_task(_watchdog(notifier))
        try:
            yield
        finally:
            pinger.cancel()
            push.waiters.stop()
            await concurrency.run_in_threadpool(push.detach)
            log.info("server_stopped")

    app = applications.Starlette(
        routes=[
            routing.Route("/v1/{op}", push.handle, methods=["POST"]),
            routing.Route("/healthz", _healthz, methods=["GET"]),
            routing.Route("/readyz", push.readyz, methods=["GET"]),
            routing.Route("/metrics", push.metrics, methods=["GET"]),
            routing.Mount(api_app.PREFIX, app=api_app.create_api(push)),
            routing.Mount("/console", app=console_app.create_console(push)),
            *fileserve.routes(push.files, push.settings.message_file_cache_control),
        ],
        lifespan=lifespan,
    )
    app.state.push = push
    return app
