"""One call to the JSON API of a push server in this process (ASGI, no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from mpg.server import app


def call(
    push: app.PushServer,
    method: str,
    path: str,
    token: str | None = None,
    *,
    client: tuple[str, int] = ("192.0.2.9", 4711),
    **kw: Any,
) -> httpx.Response:
    """``method /api/v1<path>`` with ``token`` as bearer; ``client``: the caller's address."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app.create_app(push), client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as http:
            return await http.request(method, "/api/v1" + path, headers=headers, **kw)

    return asyncio.run(go())
