"""Connections under attack: deadlines and limits uvicorn does not set, and the open-file limit.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503
beyond ``limit_concurrency`` connections or requests, but it has no deadline for
*reading* a request: a client that sends one header byte every few seconds holds its
connection (and a file descriptor) for ever, and a client that never finishes the
TLS handshake holds one for asyncio's default 60 s. Its httptools protocol (a C
parser) also takes request headers of any size. Small pieces close that:

* :class:`GuardedHttpToolsProtocol`, uvicorn's httptools protocol with a header
  deadline and a header size limit: the request line and headers must arrive within
  ``header_timeout`` of the connection (or of the first byte of the next request on a
  kept-alive connection), else the connection is aborted; more than
  ``max_header_bytes`` before they are complete get 400 and the connection is closed.
  The body has its own stall timeout in :mod:`mpg.server.app`.
* :func:`loop_factory`, the event loop uvicorn would use (uvloop when installed),
  whose ``create_server`` bounds the TLS handshake by the same ``header_timeout``.

Why httptools and not uvicorn's h11 protocol: h11 is pure Python; with the C parser
the server's CPU per request is 0.68× for ``GET /healthz``, 0.84× for an empty fetch
and 0.90× for a submit of one message (docs/benchmarks.md, "2026-12-02 (2)"). h11
had the size limit built in; httptools needs the few lines here. Why not another
server: hypercorn has these timeouts, but uvicorn is what the server, its shutdown
handling and its tests are built on (docs/security.md).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from typing import Any, Final

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

#: Open files the process needs besides its connections (database, log, blobs).
SPARE_FILES: Final = 256


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit for request headers."""

    def __init__(
        self, *args: Any, header_timeout: float, max_header_bytes: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_header_bytes = max_header_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        # Between one request's end and the next one's complete headers: bytes read.
        self._awaiting_headers = True
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Count what arrives before the headers are complete; the first byte of a
        kept-alive connection's next request starts the clock again. Bytes that come
        as the server's loop closes (a client still sending while the server stops)
        are dropped: nothing can answer them any more."""
        if self.transport.is_closing() or self.loop.is_closed():
            return
        if self._awaiting_headers:
            if self._header_timer is None:
                self._arm()
            self._header_bytes += len(data)
        super().data_received(data)
        # Checked after the parser saw the bytes: a chunk that completes the headers
        # may carry much of the body with them.
        if (
            self._awaiting_headers
            and self._header_bytes > self._max_header_bytes
            and not self.transport.is_closing()
        ):
            self._disarm()
            log.debug("connection_dropped", reason="headers too large", client=self.client)
            self.send_400_response("Request headers too large.")

    def on_headers_complete(self) -> None:
        """Stop the clock: the headers are in."""
        self._awaiting_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next bytes on this connection are the next request's headers."""
        super().on_message_complete()
        self._awaiting_headers = True
        self._header_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the clock with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport is not None and not self.transport.is_closing():
            # abort, not close: a polite TLS close waits for the slow client's reply.
            log.debug("connection_dropped", reason="headers late", client=self.client)
            self.transport.abort()


def protocol_factory(
    header_timeout: float, max_header_bytes: int
) -> Callable[..., asyncio.Protocol]:
    """What uvicorn's ``http`` setting takes: builds a :class:`GuardedHttpToolsProtocol`."""
    return functools.partial(
        GuardedHttpToolsProtocol, header_timeout=header_timeout, max_header_bytes=max_header_bytes
    )


def _base_loop() -> type[asyncio.AbstractEventLoop]:
    """The loop class uvicorn's ``loop="auto"`` would pick."""
    try:
        import uvloop
    except ImportError:
        if sys.platform == "win32":
            return asyncio.ProactorEventLoop
        return asyncio.SelectorEventLoop
    return uvloop.Loop


def loop_factory(handshake_timeout: float) -> Callable[[], asyncio.AbstractEventLoop]:
    """An event loop factory whose servers drop TLS handshakes slower than the timeout."""
    base = _base_loop()

    async def create_server(self: Any, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", handshake_timeout)
        return await base.create_server(self, *args, **kwargs)

    loop_class = type("HandshakeBoundLoop", (base,), {"create_server": create_server})
    return loop_class


def raise_open_file_limit(connections: int) -> int:
    """Raise the soft open-file limit to what ``connections`` need (up to the hard limit).

    A service gets 1,024 open files by default; every connection is one. Returns the
    limit now in force (0 where there is no such limit, on Windows). Logs a warning when
    the hard limit is too low: ``LimitNOFILE`` in the systemd unit sets it.
    """
    try:
        import resource
    except ImportError:
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_FILES
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft != resource.RLIM_INFINITY and soft < connections + SPARE_FILES:
        log.warning(
            "open_file_limit_low",
            limit=soft,
            needed=connections + SPARE_FILES,
            hint="raise LimitNOFILE (systemd) or lower server.max_connections",
        )
    return int(soft)
