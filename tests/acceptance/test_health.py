"""Health, readiness and metrics of a running gateway and server (real processes)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import ssl
from collections.abc import Iterator

import httpx
from harness import Gateway, World, free_port, wait_for


def get(url: str, verify: ssl.SSLContext | bool = True) -> tuple[int, str]:
    """GET ``url``: (status, body), also for error statuses; (0, reason) if unreachable."""
    try:
        response = httpx.get(url, timeout=10, verify=verify)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return response.status_code, response.text


def with_health(gw: Gateway) -> str:
    """Give the gateway a health endpoint; returns its base URL."""
    port = free_port()
    text = gw.config.read_text().replace("[gateway]\n", f"[gateway]\nhealth_port = {port}\n", 1)
    gw.config.write_text(text)
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def exclusive_lock(path: object) -> Iterator[None]:
    """Hold an exclusive SQLite lock on the database file, as a stuck ERP job would."""
    conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def readiness(base: str) -> tuple[int, dict[str, object]]:
    status, body = get(base + "/readyz")
    return status, (json.loads(body) if status in (200, 503) else {})


def test_gateway_readyz_follows_database_lock_and_server_outage(world: World) -> None:
    """/readyz turns 503 while the database is locked or the server is down, 200 after."""
    server = world.start_server()
    gw = world.gateway("erp")
    base = with_health(gw)
    gw.run()
    wait_for("the gateway to be ready", lambda: readiness(base)[0] == 200)
    assert get(base + "/healthz") == (200, "ok\n")

    with exclusive_lock(gw.db):
        status, body = readiness(base)
        assert status == 503
        assert "database" in body["failed"]  # type: ignore[operator]
    wait_for("ready after the lock", lambda: readiness(base)[0] == 200)

    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    status, body = readiness(base)
    assert status == 503
    assert list(body["failed"]) == ["server"]  # type: ignore[call-overload]
    assert get(base + "/healthz")[0] == 200  # alive all the same

    world.start(world.server_config, "server", name="server-again")
    wait_for("ready after the server is back", lambda: readiness(base)[0] == 200)


def test_server_readyz_follows_database_lock(world: World) -> None:
    """The server's /readyz is 503 while its database file is locked, 200 after."""
    world.start_server()
    base = f"https://127.0.0.1:{world.port}"
    ctx = ssl.create_default_context(cafile=str(world.ca_file))

    def server_ready() -> int:
        return get(base + "/readyz", ctx)[0]

    assert server_ready() == 200
    with exclusive_lock(world.root / "server.db"):
        assert server_ready() == 503
    assert server_ready() == 200


def test_metrics_show_states_transitions_and_queue_depth(world: World) -> None:
    """Gateway /metrics counts rows per state and transitions; server /metrics queues."""
    world.start_server()
    sender = world.gateway("erp")
    world.gateway("bob", kind="user")
    base = with_health(sender)
    sender.run()
    tx = sender.mpg("send", "--to", "bob@example.com", "--subject", "hi", "--content", "x")
    tx_id = tx.stdout.strip().split()[-1]
    sender.wait_state(tx_id, 20)

    text = wait_for("metrics", lambda: get(base + "/metrics")[1])
    assert 'mpg_outbox_messages{state="20"} 1.0' in text
    assert 'mpg_transitions_total{box="out",from_state="19",to_state="20"} 1.0' in text
    assert "mpg_pickup_latency_seconds_count 1.0" in text
    assert "mpg_delivery_latency_seconds_count 1.0" in text

    ctx = ssl.create_default_context(cafile=str(world.ca_file))
    status, server_text = get(f"https://127.0.0.1:{world.port}/metrics", ctx)
    assert status == 200
    assert 'mpg_queue_depth{recipient="bob@example.com"} 1.0' in server_text
    assert 'mpg_server_requests_total{op="submit",status="200"} 1.0' in server_text
