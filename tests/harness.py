"""A throwaway MPG world for integration and end-to-end tests: a push server and
gateways as real processes started through the CLI, talking HTTPS with a throwaway CA
(trustme). The ``world`` fixture in ``conftest.py`` hands one to a test.

An integration test that only talks HTTPS to the server takes ``local_world`` instead:
the same world, but the server runs in this process (:class:`InProcessServer`, the
``serve`` that ``mpg server`` runs, in a thread) and accounts and gateway tables are
created by the library calls behind ``mpg server account add`` and ``mpg init-db``,
which saves an interpreter start per step. Processes stay where they are the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trustme

from mpg import config as mpg_config
from mpg.server import accounts, datakeys, tables, vault
from mpg.server import main as server_main
from mpg.storage import database
from mpg.wire import keys

DEADLINE = 60.0  # seconds a test waits for something before it gives up (not a speed check)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


class World:
    """Files, configs and processes of one test."""

    def __init__(self, root: pathlib.Path, *, in_process: bool = False) -> None:
        self.root = root
        self.in_process = in_process
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.local_servers: list[InProcessServer] = []
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
        self.server_config = self._server_config(
            "server", self.port, f"sqlite:///{root / 'server.db'}", max_long_poll=2
        )

    def _server_config(
        self, name: str, port: int, database_url: str, *, max_long_poll: float, extra: str = ""
    ) -> pathlib.Path:
        """Write a server config; every server of the world shares data_dir (blobs, key)."""
        path = self.root / f"{name}.toml"
        path.write_text(
            "[server]\n"
            f'database_url = "{database_url}"\n'
            'host = "127.0.0.1"\n'
            f"port = {port}\n"
            f'tls_cert = "{self.root / "server.pem"}"\n'
            f'tls_key = "{self.root / "server.pem"}"\n'
            f'data_dir = "{self.root / "server-data"}"\n'
            "lease_seconds = 2\n"
            f"max_long_poll = {max_long_poll}\n" + extra
        )
        return path

    def mpg(
        self,
        config: pathlib.Path,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one CLI command to completion, as a user would."""
        result = subprocess.run(
            [sys.executable, "-m", "mpg.cli.main", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(env),
        )
        if check and result.returncode != 0:
            pytest.fail(f"mpg {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def start(
        self,
        config: pathlib.Path,
        *args: str,
        env: dict[str, str] | None = None,
        name: str = "proc",
    ) -> subprocess.Popen[bytes]:
        """Start a long-running CLI command in the background."""
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mpg.cli.main", "--config", str(config), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(env),
            )
        self.procs.append(proc)
        return proc

    def init_server(self) -> None:
        """``mpg server init``: the server's tables and master key."""
        if not self.in_process:
            self.mpg(self.server_config, "server", "init")
            return
        settings = mpg_config.load(self.server_config).server
        engine = tables.create_engine(settings.database_url)
        try:
            tables.create_tables(engine)
        finally:
            engine.dispose()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        accounts.create_master_key_file(accounts.master_key_path(settings))
        datakeys.create_data_keys_file(datakeys.data_keys_path(settings))

    def start_server(self) -> subprocess.Popen[bytes] | InProcessServer:
        """Initialise and start the push server; returns once it accepts connections.

        A process (``mpg server``), or in a local world a thread of this process.
        """
        self.init_server()
        server: subprocess.Popen[bytes] | InProcessServer
        if self.in_process:
            server = InProcessServer(self.server_config)
            self.local_servers.append(server)
            server.start()
        else:
            server = self.start(self.server_config, "server", name="server")
        wait_for("the server to listen", self.listening)
        if self.in_process:
            # Its startup (which logs ``server_started``) runs in the server's thread
            # after the socket listens; a test's own output capture must not catch that.
            wait_for("the server to start", self.answering)
        return server

    def start_servers(
        self,
        database_url: str,
        count: int,
        *,
        max_long_poll: float,
        env: dict[str, str] | None = None,
    ) -> list[int]:
        """Start ``count`` server processes sharing one database; return their ports.

        The first is the world's own server (``self.port``, ``self.server_config``, so
        accounts are managed through it); the others are ``server-2`` ... on ports
        of their own. Their logs are JSON at debug level (``server-<n>.log``).
        """
        ports = [self.port] + [free_port() for _ in range(count - 1)]
        log_section = '[log]\nformat = "json"\nlevel = "debug"\n'
        configs = [
            self._server_config(
                "server" if n == 0 else f"server-{n + 1}",
                port,
                database_url,
                max_long_poll=max_long_poll,
                extra=log_section,
            )
            for n, port in enumerate(ports)
        ]
        self.server_config = configs[0]
        # One init creates the tables and the master key all of them use.
        self.mpg(configs[0], "server", "init")
        for n, (config, port) in enumerate(zip(configs, ports, strict=True)):
            self.start(config, "server", env=env, name="server" if n == 0 else f"server-{n + 1}")
            wait_for(f"server {n + 1} to listen", lambda p=port: self.listening(p))
        return ports

    def listening(self, port: int | None = None) -> bool:
        """True once the server (on ``port``, else the world's own) accepts connections."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port or self.port), timeout=0.5),
        ):
            return True
        return False

    def answering(self) -> bool:
        """True once the world's own server answers ``GET /healthz`` (startup done)."""
        with contextlib.suppress(httpx.HTTPError):
            url = f"https://127.0.0.1:{self.port}/healthz"
            trust = ssl.create_default_context(cafile=str(self.ca_file))
            return httpx.get(url, verify=trust, timeout=2.0).status_code == 200
        return False

    def gateway(
        self,
        name: str,
        *,
        kind: str = "gateway",
        database_url: str | None = None,
        port: int | None = None,
        long_poll_wait: float = 1,
    ) -> Gateway:
        """Create an account on the server and a gateway config and database for it.

        The database is a SQLite file of its own unless ``database_url`` names one;
        the gateway talks to the server on ``port`` (default: the world's own).
        """
        account = f"{name}@example.com"
        cred = self.root / f"{name}.cred"
        if self.in_process:
            self._add_account(account, kind, cred)
        else:
            self.mpg(
                self.server_config,
                "server",
                "account",
                "add",
                account,
                "--kind",
                kind,
                "--credential-file",
                str(cred),
            )
        config_path = self.root / f"{name}.toml"
        db = self.root / f"{name}.db"
        config_path.write_text(
            "[gateway]\n"
            f'account = "{account}"\n'
            f'database_url = "{database_url or f"sqlite:///{db}"}"\n'
            f'server_url = "https://127.0.0.1:{port or self.port}"\n'
            f'ca_bundle = "{self.ca_file}"\n'
            f'secret_file = "{cred}"\n'
            f'attachment_roots = ["{self.root}"]\n'
            "poll_interval = 0.2\n"
            f"long_poll_wait = {long_poll_wait}\n"
            "retry_max_delay = 1\n"
            'clock = "utc"\n'
            "[log]\n"
            'format = "json"\n'
            'level = "debug"\n'
        )
        if self.in_process:
            engine = database.create_engine(mpg_config.load(config_path).gateway.database_url)
            try:
                database.init_db(engine)
            finally:
                engine.dispose()
        else:
            self.mpg(config_path, "init-db")
        return Gateway(self, name, account, config_path, db)

    def account_id(self, account: str) -> str:
        """The AccountId (pseudonym) the server keeps ``account`` under."""
        settings = mpg_config.load(self.server_config).server
        names = vault.Vault(accounts.load_master_key(settings), datakeys.load_keyring(settings))
        return names.account_id(accounts.normalize(account))

    def _add_account(self, account: str, kind: str, cred: pathlib.Path) -> None:
        """``mpg server account add ACCOUNT --kind KIND --credential-file CRED``."""
        settings = mpg_config.load(self.server_config).server
        engine = tables.create_engine(settings.database_url)
        try:
            store = accounts.AccountStore(
                engine, accounts.load_master_key(settings), datakeys.load_keyring(settings)
            )
            _, credential = store.add(account, kind)
        finally:
            engine.dispose()
        cred.write_text(keys.format_credential(credential))
        cred.chmod(0o600)

    def stop_all(self) -> None:
        # Clients first: a server stopped under them leaves their kept-alive
        # connections open until its graceful shutdown gives up on them.
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in self.local_servers:
            server.stop()


class InProcessServer:
    """``mpg server`` in a thread of this process, on the configured host, port and TLS.

    It is :func:`mpg.server.main.serve`, as the command runs it; ``stop`` is what the
    first SIGTERM does (the Windows service stops it the same way).
    """

    def __init__(self, config_file: pathlib.Path) -> None:
        self._settings = mpg_config.load(config_file)
        self._stop = threading.Event()
        self._announced = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="mpg-test-server", daemon=True)

    def _serve(self) -> None:
        try:
            server_main.serve(
                self._settings, announce=lambda _line: self._announced.set(), stop=self._stop
            )
        except BaseException as exc:  # handed to the test's thread by start()
            self._failure.append(exc)
            self._announced.set()

    def start(self) -> None:
        """Start serving; returns once the socket listens (connections queue meanwhile)."""
        self._thread.start()
        if not self._announced.wait(DEADLINE):
            pytest.fail("gave up waiting for the in-process server to listen")
        if self._failure:
            raise self._failure[0]

    def stop(self) -> None:
        """Stop as on SIGTERM and wait until the server has shut down."""
        self._stop.set()
        self._thread.join(DEADLINE)
        if self._thread.is_alive():
            pytest.fail("the in-process server did not stop")


class Gateway:
    """One gateway account: its config, its database, its process."""

    def __init__(
        self, world: World, name: str, account: str, config: pathlib.Path, db: pathlib.Path
    ) -> None:
        self.world = world
        self.name = name
        self.account = account
        self.config = config
        self.db = db
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``mpg run`` for this gateway."""
        self.proc = self.world.start(self.config, "run", env=env, name=self.name)
        return self.proc

    def mpg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a CLI command with this gateway's config."""
        return self.world.mpg(self.config, *args, check=check)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """What the ERP would do: plain SQL on the gateway's database."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows

    def inbox(self) -> list[dict[str, Any]]:
        """``mpg inbox list --state all --json``."""
        out = self.mpg("inbox", "list", "--state", "all", "--json").stdout
        data = json.loads(out)
        assert isinstance(data, list)
        return data

    def outbox_row(self, tx: str) -> sqlite3.Row | None:
        rows = self.sql('SELECT * FROM "Outbox" WHERE "TxMessageId" = ?', (tx,))
        return rows[0] if rows else None

    def wait_state(self, tx: str, state: int) -> sqlite3.Row:
        """Wait until the Outbox row reaches ``state``."""

        def probe() -> sqlite3.Row | None:
            row = self.outbox_row(tx)
            return row if row is not None and row["State"] == state else None

        return wait_for(f"{self.name} row {tx} to reach State {state}", probe)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
    env.update(extra or {})
    return env
