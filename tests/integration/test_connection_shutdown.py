"""The server's connection protocol while the server stops (mpg.server.connections).

Found by the many-gateways test under load: the server stopped while gateways still
sent requests on kept-alive connections, and bytes that arrived after uvicorn had
closed the event loop raised "Event loop is closed" from the header clock, logged as
a fatal transport error. They are now dropped: nothing can answer them any more.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from mpg.server import connections


async def _no_content(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_a_request_arriving_as_the_loop_closes_is_dropped_not_raised() -> None:
    """A kept-alive connection answered one request; the next one's first bytes come
    after the loop closed: no error, and no clock started on the closed loop."""
    # log_config=None: uvicorn's own would take its loggers from MPG's logging for the
    # rest of this test process.
    config = uvicorn.Config(_no_content, lifespan="off", log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    ours, theirs = socket.socketpair()
    try:
        factory = connections.protocol_factory(5.0, 8192)
        transport, protocol = loop.run_until_complete(
            loop.connect_accepted_socket(
                lambda: factory(config=config, server_state=ServerState(), app_state={}), ours
            )
        )
        assert isinstance(protocol, connections.GuardedHttpToolsProtocol)

        async def first_request() -> None:
            protocol.data_received(b"GET / HTTP/1.1\r\nHost: mpg\r\n\r\n")
            await asyncio.sleep(0.1)

        loop.run_until_complete(first_request())
        assert theirs.recv(100).startswith(b"HTTP/1.1 204")
        # What the protocol sees once uvicorn has closed the loop it ran on.
        gone = asyncio.new_event_loop()
        gone.close()
        protocol.loop = gone
        protocol.data_received(b"GET / HTTP/1.1\r\n")
        assert protocol._header_timer is None
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
        ours.close()
        theirs.close()
