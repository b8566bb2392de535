"""The database restarts under a running gateway: it keeps running, retries and
resumes, and every row is still sent exactly once (PostgreSQL, MariaDB). The gateway
is a process; the push server, only its counterpart, runs in this one (``local_world``)."""

from __future__ import annotations

import dbservers
import erp
import httpx
from harness import World, free_port, wait_for


def _readiness(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return None


def test_gateway_survives_a_database_restart(
    local_world: World, database_server: tuple[dbservers.Server, str]
) -> None:
    """Rows inserted before and after a server restart all reach 20, each claimed once."""
    server, url = database_server
    world = local_world
    world.start_server()
    world.gateway("erp-b")
    sender = world.gateway("erp-a", database_url=url)
    proc = world.start(sender.config, "run", env={"MPG_GATEWAY__INSTANCE": "gw-0"}, name="gw-0")
    erp.seed(url, 100)
    wait_for("the first rows to reach 20", lambda: erp.progress(url)[0].get(20, 0) > 0)
    server.restart()
    erp.seed(url, 100, start=100)
    wait_for("all rows to reach 20", lambda: erp.progress(url)[0] == {20: 200}, timeout=120)
    assert proc.poll() is None, "the gateway exited"
    _, steps = erp.progress(url)
    for tx in (f"tx-{i:05d}" for i in range(200)):
        assert steps[(tx, 10, 12)] == 1, tx
        assert steps[(tx, 19, 20)] == 1, tx


def test_readiness_and_status_show_a_lost_database(
    local_world: World, database_server: tuple[dbservers.Server, str]
) -> None:
    """While the database is down /readyz answers 503 and `mpg status` fails with the
    database exit code; both recover when it is back, and the gateway kept running."""
    server, url = database_server
    world = local_world
    world.start_server()
    world.gateway("erp-b")
    sender = world.gateway("erp-a", database_url=url)
    port = free_port()
    proc = world.start(
        sender.config, "run", env={"MPG_GATEWAY__HEALTH_PORT": str(port)}, name="gw-health"
    )
    wait_for("the gateway to be ready", lambda: _readiness(port) == 200)
    server.halt()
    try:
        wait_for("the gateway to turn unready", lambda: _readiness(port) == 503)
        status = sender.mpg("status", check=False)
        assert status.returncode == 4, status.stderr
        assert "connect" in status.stderr.lower()  # the driver says why
    finally:
        server.start()
    wait_for("the gateway to be ready again", lambda: _readiness(port) == 200, timeout=120)
    assert proc.poll() is None, "the gateway exited"
    erp.seed(url, 20)
    wait_for("rows to flow again", lambda: erp.progress(url)[0] == {20: 20}, timeout=120)
