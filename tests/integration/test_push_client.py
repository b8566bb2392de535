"""The gateway's client of the push server at the edges of its life: after ``close``."""

from __future__ import annotations

import socket

import pytest

from mpg import config, errors
from mpg.gateway.client import PushClient
from mpg.wire import keys


def test_a_closed_client_refuses_requests_as_transient_without_connecting() -> None:
    """A long poll's thread may ask once more while the gateway stops: the request fails
    as a transient error and no connection is opened (nothing would ever close it)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        settings = config.GatewaySettings(
            account="erp-a@example.com", server_url=f"https://127.0.0.1:{port}"
        )
        client = PushClient(settings, keys.new_credential())
        client.close()
        with pytest.raises(errors.TransientServerError, match="closed"):
            client.fetch(10, 5.0)
        with pytest.raises(errors.TransientServerError, match="closed"):
            client.ping()
        with pytest.raises(TimeoutError):
            listener.accept()
