"""The gateway's client of the push server: sealed envelopes over HTTPS (httpcore).

Each call seals its payload for the gateway's account, posts it to ``/v1/<op>`` and
opens the sealed answer, checking that it answers this very request. Failures are
sorted once, here: connection problems, timeouts, 429 and 5xx become
:class:`~mpg.errors.TransientServerError` (the caller retries later); other refusals
become :class:`~mpg.errors.RefusedByServer` (retrying cannot help).

The requests go through httpcore, httpx's own connection layer, without httpx's
request and response models on top: a gateway at a steady pace sends a request or two
per message, and those models were about a third of the client's CPU per request
(docs/benchmarks.md, "2026-12-02 (3)").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO, Final, Protocol

import httpcore

from mpg import config, errors, metrics, tlstrust
from mpg.wire import envelope, keys, model, payloads

CONTENT_TYPE: Final = "application/vnd.mpg.envelope"
CONTENT_TYPE_HEADER: Final = CONTENT_TYPE.encode("ascii")
#: Seconds a new connection (TCP and TLS) may take.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds the readiness check waits for the server's /healthz.
PING_TIMEOUT: Final = 3.0
#: Answers worth trying again later (the server is busy, down or starting).
TRANSIENT_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
#: httpcore's failures other than a timeout: the server could not be reached or broke
#: off the exchange. Worth trying again later, as a timeout is.
TRANSPORT_ERRORS: Final = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


class PushClient:
    """Talks to the push server as one account. Thread-safe (httpcore's pool is)."""

    def __init__(self, settings: config.GatewaySettings, credential: keys.Credential) -> None:
        if not settings.account:
            raise errors.ConfigError("gateway.account: missing; the gateway's own account")
        self._account = settings.account
        self._credential = credential
        self._base = settings.server_url.rstrip("/")
        self._timeout = settings.request_timeout
        self._http = httpcore.ConnectionPool(
            ssl_context=tlstrust.client_context(settings.ca_bundle, "gateway.ca_bundle"),
            http2=True,
            # httpx's defaults, which this client had before.
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
        )
        self._long_poll_margin = 10.0
        self._closed = False
        #: Whether acknowledgements ride on the next fetch (False once a server refused it).
        self._fold_acks = True

    @property
    def account(self) -> str:
        """The account this client authenticates as."""
        return self._account

    def close(self) -> None:
        """Close the connection pool; a request made after that fails as transient."""
        self._closed = True
        self._http.close()

    def call(
        self,
        op: str,
        payload: bytes,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[envelope.EnvelopeHeader, bytes]:
        """Seal ``payload``, post it as ``op`` and return the opened answer."""
        header = envelope.request_header(
            self._account, self._credential.key_id, op, dict(args or {})
        )
        body = envelope.seal(self._credential.secret, header, payload)
        try:
            response = self._send(
                "POST", f"/v1/{op}", body, self._timeout if timeout is None else timeout
            )
        except httpcore.TimeoutException as exc:
            metrics.HTTP_ERRORS.labels(op, "transient").inc()
            raise errors.TransientServerError(f"{op}: server did not answer in time") from exc
        except TRANSPORT_ERRORS as exc:
            metrics.HTTP_ERRORS.labels(op, "transient").inc()
            raise errors.TransientServerError(f"{op}: server unreachable: {exc}") from exc
        if response.status != 200:
            refusal = _refusal(op, response.status, response.content)
            kind = "transient" if isinstance(refusal, errors.TransientServerError) else "refused"
            metrics.HTTP_ERRORS.labels(op, kind).inc()
            raise refusal
        try:
            answer, plain = envelope.open_sealed(self._credential.secret, response.content)
            envelope.check_response(header, answer)
        except errors.EnvelopeError as exc:
            raise errors.RefusedByServer(200, "bad_response", f"{op}: {exc}") from exc
        return answer, plain

    def ping(self) -> None:
        """Raise :class:`~mpg.errors.TransientServerError` unless the server answers
        ``GET /healthz`` (the gateway's readiness check)."""
        try:
            response = self._send("GET", "/healthz", b"", PING_TIMEOUT)
        except (httpcore.TimeoutException, *TRANSPORT_ERRORS) as exc:
            raise errors.TransientServerError(f"server unreachable: {exc}") from exc
        if response.status != 200:
            raise errors.TransientServerError(f"server /healthz answered {response.status}")

    def _send(self, method: str, path: str, body: bytes, timeout: float) -> httpcore.Response:
        """One request on the pool, its answer read whole; connecting may take up to
        :data:`CONNECT_TIMEOUT`, each read and write up to ``timeout``."""
        if self._closed:
            # httpcore's pool would open a new connection that nothing closes.
            raise httpcore.ConnectError("the client is closed")
        limits = {"connect": CONNECT_TIMEOUT, "read": timeout, "write": timeout, "pool": timeout}
        try:
            return self._http.request(
                method,
                self._base + path,
                headers=[(b"Content-Type", CONTENT_TYPE_HEADER)] if body else [],
                content=body,
                extensions={"timeout": limits},
            )
        finally:
            if self._closed:
                # Closed by another thread while this request was on its way (a long
                # poll at shutdown): its connection goes too.
                self._http.close()

    def submit(
        self, messages: list[model.OutgoingMessage], pieces: Sequence[bytes] | None = None
    ) -> list[model.SubmitResult]:
        """Submit messages whose attachments are uploaded; one result per message.

        ``pieces``: each message already built by ``payloads.build_message`` (the
        gateway builds a message once); by default they are built here.
        """
        payload = (
            payloads.build_submit(messages) if pieces is None else payloads.join_submit(pieces)
        )
        _, plain = self.call("submit", payload)
        results = payloads.parse_submitted(plain)
        if [r.tx_message_id for r in results] != [m.tx_message_id for m in messages]:
            raise errors.RefusedByServer(200, "bad_response", "submit: results do not match")
        return results

    def history(self, tx_message_id: str) -> tuple[str, list[model.ServerEvent]]:
        """The server-side events of a message this account sent: ``(MessageId, events)``."""
        _, plain = self.call("history", b"", {"tx": tx_message_id})
        return payloads.parse_history(plain)

    def fetch(self, max_items: int, wait: float, acked: Sequence[str] = ()) -> model.FetchBatch:
        """Long-poll this account's queue for up to ``wait`` seconds, after acknowledging
        ``acked`` (the previous batch's entries, stored) in the same request.

        A server older than that refuses a fetch that acknowledges (400): the entries
        are then acknowledged on their own, this time and from then on.
        """
        if acked and not self._fold_acks:
            self.ack(list(acked))
            acked = ()
        try:
            _, plain = self.call(
                "fetch",
                payloads.build_fetch(max_items, wait, acked),
                timeout=wait + self._long_poll_margin,
            )
        except errors.RefusedByServer as exc:
            if not acked or exc.status != 400:
                raise
            self._fold_acks = False
            return self.fetch(max_items, wait, acked)
        return payloads.parse_deliveries(plain)

    def ack(self, entry_ids: list[str]) -> int:
        """Acknowledge queue entries that are safely stored."""
        if not entry_ids:
            return 0
        _, plain = self.call("ack", payloads.build_ack(entry_ids))
        return payloads.parse_acked(plain)

    def upload_attachment(
        self, tx_id: str, seq_no: int, source: BinaryIO, size: int, chunk_size: int
    ) -> str:
        """Stream ``size`` bytes of an opened file to the server; returns their SHA-256.

        The file is read one chunk at a time and never held whole in memory (the
        caller opened and checked it: :mod:`mpg.gateway.attachroots`). A chunk the
        server already has is ignored by it, so an interrupted upload can simply be
        repeated.
        """
        digest = hashlib.sha256()
        offset = 0
        for chunk in _chunks(source, chunk_size, size):
            digest.update(chunk)
            final = offset + len(chunk) >= size
            args: dict[str, Any] = {"tx": tx_id, "seq": seq_no, "offset": offset, "final": final}
            if final:
                args.update(size=size, sha256=digest.hexdigest())
            answer, _ = self.call("upload", chunk, args)
            metrics.ATTACHMENT_BYTES.labels("upload").inc(len(chunk))
            offset += len(chunk)
            if final and not answer.args.get("complete"):
                raise errors.RefusedByServer(200, "upload_incomplete", f"{tx_id}/{seq_no}")
        return digest.hexdigest()

    def download(self, message_id: str, seq_no: int, sink: Sink, chunk_size: int) -> int:
        """Copy one attachment into ``sink`` range by range; returns the byte count.

        The digest announced by the server is checked at the end.
        """
        offset = 0
        digest = hashlib.sha256()
        while True:
            args = {"messageId": message_id, "seq": seq_no, "offset": offset, "length": chunk_size}
            answer, data = self.call("download", b"", args)
            sink.write(data)
            metrics.ATTACHMENT_BYTES.labels("download").inc(len(data))
            digest.update(data)
            offset += len(data)
            size = int(answer.args.get("size", 0))
            if offset >= size or not data:
                break
        expected = str(answer.args.get("sha256", ""))
        if offset != size or (expected and expected != digest.hexdigest()):
            raise errors.RefusedByServer(
                200, "bad_download", f"attachment {message_id}/{seq_no} arrived damaged"
            )
        return offset


class Sink(Protocol):
    """Where :meth:`PushClient.download` writes: a file, a buffer, a checking wrapper."""

    def write(self, data: bytes, /) -> int:
        """Take one chunk."""
        ...


def _chunks(source: BinaryIO, chunk_size: int, size: int) -> Iterator[bytes]:
    """At most ``size`` bytes in chunks (one empty chunk for an empty file); a file that
    grew meanwhile is cut at the size that was checked and announced."""
    if size == 0:
        yield b""
        return
    left = size
    while left and (chunk := source.read(min(chunk_size, left))):
        left -= len(chunk)
        yield chunk


def error_parts(content: bytes) -> tuple[str, str]:
    """The machine code and detail of a refusal's ``{"error", "detail"}`` body (the
    start of the body as detail when it is not that)."""
    try:
        body = json.loads(content)
        return str(body.get("error", "")), str(body.get("detail", ""))
    except (ValueError, AttributeError):
        return "", content[:200].decode("utf-8", "replace")


def _refusal(op: str, status: int, content: bytes) -> errors.ServerError:
    code, detail = error_parts(content)
    if status in TRANSIENT_STATUS:
        return errors.TransientServerError(f"{op}: server answered {status} {code} {detail}")
    return errors.RefusedByServer(status, code or "refused", f"{op}: {detail}")


def attachment_uri(server_url: str, message_id: str, seq_no: int) -> str:
    """The ``SourceUri`` of an inbound attachment: where ``mpg attachment fetch`` gets it."""
    return f"{server_url.rstrip('/')}/v1/attachments/{message_id}/{seq_no}"
