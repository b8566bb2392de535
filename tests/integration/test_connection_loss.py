"""The database restarts under a running gateway: it keeps running, retries and
resumes, and every row is still sent exactly once (PostgreSQL, MariaDB)."""

from __future__ import annotations

import dbservers
import erp
from harness import World, wait_for


def test_gateway_survives_a_database_restart(
    world: World, database_server: tuple[dbservers.Server, str]
) -> None:
    """Rows inserted before and after a server restart all reach 20, each claimed once."""
    server, url = database_server
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
