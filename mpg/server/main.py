"""Running the push server: uvicorn with TLS on a socket we bind ourselves.

Binding the socket here (not in uvicorn) lets ``port = 0`` work: the kernel picks a
free port and :func:`serve` announces the real address on standard output as
``listening on https://HOST:PORT`` before serving, so tests and scripts can find it.

SIGHUP re-reads the configuration file for the ``[log]`` settings; everything else
the server reads once at start (a restart applies it).

Shutdown: the first SIGTERM or SIGINT stops accepting connections, answers waiting
long polls at once (empty) and lets requests in progress finish within
:data:`GRACE_SECONDS`; a second signal exits at once. The exit code is 0 either way.

``python -m mpg.server.main --config FILE`` runs the server without the ``mpg``
command line (``mpg server`` is the same thing).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
import socket
import ssl
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Final

import structlog
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from mpg import config, errors, exitcodes, logs
from mpg.db import checkpoints, statistics
from mpg.ops import systemd
from mpg.server import accounts, app, connections, datakeys, housekeeping, rekey, tables

log = structlog.get_logger(__name__)

#: Seconds requests in progress may take to finish after the first stop signal.
GRACE_SECONDS: Final = 10
#: Connections the kernel queues before the server accepts them.
BACKLOG: Final = 2048


class _Server(uvicorn.Server):
    """uvicorn's server, with our stop signal handling (no re-raise after shutdown)."""

    def __init__(
        self,
        uv_config: uvicorn.Config,
        on_stop: Callable[[], None],
        loop_factory: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        super().__init__(uv_config)
        self._on_stop = on_stop
        self._loop_factory = loop_factory

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve on our event loop (its TLS handshakes have a deadline)."""
        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            runner.run(self.serve(sockets=sockets))

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        """First signal: drain and stop; second: stop at once."""
        if self.should_exit:
            self.force_exit = True
        else:
            self.should_exit = True
            systemd.Notifier().stopping()
            log.info("server_stopping", signal=sig)
        self._on_stop()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drop idle keep-alive connections at once, then uvicorn's graceful shutdown.

        uvicorn closes an idle connection politely, and over TLS that waits for the
        client's close_notify, which a client idling in its pool never sends: every
        stop would last the whole grace period. An idle connection has nothing in
        flight, so aborting it loses nothing.
        """
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is None or cycle.response_complete:
                connection.transport.abort()
        await super().shutdown(sockets)


def build(settings: config.ServerSettings) -> app.PushServer:
    """Check the settings, open the database (creating missing tables), load the keys."""
    settings.check_listen()
    master_key = accounts.load_master_key(settings)
    keyring = datakeys.load_keyring(settings)
    engine = tables.create_engine(settings.database_url)
    created = tables.create_tables(engine)
    if created:
        log.info("tables_created", tables=created)
    legacy = rekey.legacy_accounts(engine)
    if legacy:
        # Their requests would all fail: their rows are not under their pseudonyms yet.
        engine.dispose()
        raise errors.ConfigError(
            f"{legacy} account(s) of an older version are stored with their names in "
            "clear; run `mpg server rekey` once with the servers stopped (docs/devices.md, "
            '"Upgrading")'
        )
    server = app.PushServer(settings, engine, master_key, keyring)
    server.providers.check()
    return server


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(
            f"server.port: cannot listen on {host}:{port}: {exc.strerror}"
        ) from exc
    return sock


def serve(
    settings: config.Settings,
    *,
    announce: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set); return the exit code.

    ``stop`` is how a host without signals stops it (the Windows service runs it in a
    thread, where uvicorn installs no signal handlers): setting it is a first SIGTERM.
    """
    server_settings = settings.server
    push = build(server_settings)
    uv_config = uvicorn.Config(
        app.create_app(push),
        ssl_certfile=_path(server_settings.tls_cert),
        ssl_keyfile=_path(server_settings.tls_key),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        backlog=BACKLOG,
        http=connections.protocol_factory(  # type: ignore[arg-type]
            server_settings.header_timeout, server_settings.max_header_bytes
        ),
        limit_concurrency=server_settings.max_connections,
        timeout_keep_alive=server_settings.idle_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    try:
        uv_config.load()
    except (OSError, ssl.SSLError) as exc:
        push.engine.dispose()
        raise errors.ConfigError(f"server.tls_cert / server.tls_key: {exc}") from exc
    sock = bind(server_settings.host, server_settings.port)
    host, port = sock.getsockname()[:2]
    scheme = "https" if server_settings.tls_cert is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    line = f"listening on {scheme}://{shown}:{port}"
    log.info("server_listening", url=f"{scheme}://{shown}:{port}")
    (announce or _print)(line)
    connections.raise_open_file_limit(server_settings.max_connections)
    scheduler = _housekeeping(server_settings, push)
    checkpointer = checkpoints.start(push.engine)
    analyzer = statistics.start(push.engine, list(tables.metadata.tables))
    in_main = threading.current_thread() is threading.main_thread()
    if hasattr(signal, "SIGHUP") and in_main:  # not on Windows, nor in a service thread
        signal.signal(signal.SIGHUP, lambda signum, frame: _reload_logging(settings.source))
    uv_server = _Server(
        uv_config, push.request_stop, connections.loop_factory(server_settings.header_timeout)
    )
    if stop is not None:

        def stop_when_asked() -> None:
            stop.wait()
            uv_server.handle_exit(signal.SIGTERM, None)

        threading.Thread(target=stop_when_asked, name="mpg-server-stop", daemon=True).start()
    try:
        uv_server.run(sockets=[sock])
    finally:
        scheduler.shutdown(wait=False)
        sock.close()
        if checkpointer is not None:
            checkpointer.stop()
        if analyzer is not None:
            analyzer.stop()
        push.engine.dispose()
    return exitcodes.OK


def _reload_logging(source: str) -> None:
    """SIGHUP: apply the ``[log]`` settings of the file; a bad file changes nothing."""
    try:
        new = config.load(source or None)
    except errors.ConfigError as exc:
        log.error("config_reload_failed", error=str(exc))
        return
    log.warning("config_reloaded", applied=["log"], log=new.log.level)
    logs.configure(new.log, "server")


def _housekeeping(settings: config.ServerSettings, push: app.PushServer) -> BackgroundScheduler:
    """Start the purge of abandoned uploads and the retention job (none when
    ``retention_days`` is 0: keep everything)."""
    scheduler = BackgroundScheduler(daemon=True)

    def every(seconds: float, job: Callable[..., object], *args: object, **kw: object) -> None:
        # One run at a time; runs missed while one was busy are one run, not a burst.
        scheduler.add_job(
            job,
            "interval",
            args=[push.engine, *args],
            kwargs=kw,
            seconds=seconds,
            id=job.__name__,
            max_instances=1,
            coalesce=True,
        )

    every(
        min(settings.housekeeping_interval, settings.upload_stage_ttl),
        housekeeping.purge_stages,
        settings.upload_stage_ttl,
        spool=pathlib.Path(settings.data_dir) / app.SPOOL_DIR,
    )
    if settings.push_token_max_age_days:
        every(
            settings.housekeeping_interval,
            housekeeping.expire_push_tokens,
            settings.push_token_max_age_days,
        )
    if settings.retention_days:
        every(settings.housekeeping_interval, housekeeping.purge, settings.retention_days)
    scheduler.start()
    return scheduler


def _path(value: object) -> str | None:
    return None if value is None else str(value)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mpg.server.main [--config FILE]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m mpg.server.main", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $MPG_CONFIG)")
    options = parser.parse_args(argv)
    try:
        settings = config.load(options.config)
        logs.configure(settings.log, "server")
        return serve(settings)
    except errors.MpgError as exc:
        print(f"mpg server: error: {exc}", file=sys.stderr)
        return exitcodes.for_exception(exc)


if __name__ == "__main__":
    sys.exit(main())
