"""Throwaway PostgreSQL and MariaDB servers for the integration tests.

Each server gets a temporary data directory, a free port on 127.0.0.1 and its socket
in that directory; it runs with durability off (a test database is thrown away) and
is stopped at the end of the session. No service manager is involved: the server
binaries from Debian's ``postgresql`` and ``mariadb-server`` packages are enough.

An environment variable names an existing server instead (its database is emptied
before every test): ``MPG_TEST_POSTGRES_URL``, ``MPG_TEST_MARIADB_URL`` and
``MPG_TEST_MSSQL_URL`` (SQL Server has no throwaway form; see docs/sqlserver.md).

Under pytest-xdist each worker starts servers of its own (:func:`database_name` keeps
workers apart on a server given by URL); a port another worker grabbed between our
probe and the server's bind is retried on a fresh one.

When a server cannot be had, :class:`Unavailable` says why and how to get it; the
fixtures turn it into a skip on a developer machine and into a failure under CI
(``CI=true``), where a database test that silently skipped would prove nothing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Final

import sqlalchemy as sa

#: How long a server may take to accept connections after it was started.
START_TIMEOUT: Final = 60.0
#: Free ports tried before a server that cannot bind is given up.
PORT_ATTEMPTS: Final = 3

HOW_TO: Final = (
    "install the server binaries (Debian: apt-get install postgresql mariadb-server) "
    "or point MPG_TEST_POSTGRES_URL / MPG_TEST_MARIADB_URL at a server you own"
)


class Unavailable(Exception):
    """A database server needed by a test cannot be started or reached."""


class Exited(Unavailable):
    """The server process ended before it accepted connections (e.g. its port was taken)."""


def in_ci() -> bool:
    """True under CI, where a database test must run rather than skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_name() -> str:
    """The test database's name: one per pytest-xdist worker (``mpg_test_gw0``, ...)."""
    return f"mpg_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def _on_a_free_port(start: Callable[[int], Server], workdir: pathlib.Path) -> Server:
    """``start(port)`` on a free port, again on another if the server exited at once.

    The files in ``workdir`` are removed when no attempt succeeds.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return start(_free_port())
        except Exited:
            if attempt == PORT_ATTEMPTS:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        except Unavailable:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    raise AssertionError("unreachable")


def _wait_until(what: str, probe: Callable[[], None], proc: subprocess.Popen[bytes]) -> None:
    """Retry ``probe`` until it stops raising; fail if the server process exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            probe()
            return
        except sa.exc.OperationalError as exc:
            if proc.poll() is not None:
                raise Exited(f"{what} exited with code {proc.returncode}") from exc
            if time.monotonic() > deadline:
                raise Unavailable(f"{what} did not accept connections: {exc}") from exc
            time.sleep(0.1)


def _ping(url: str) -> Callable[[], None]:
    def probe() -> None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()

    return probe


class Server:
    """A throwaway server (or one given by URL): its admin URL, restart and stop."""

    def __init__(
        self,
        url: str,
        launch: Callable[[], subprocess.Popen[bytes]] | None = None,
        workdir: pathlib.Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.url = url
        self._launch = launch
        self._workdir = workdir
        self._signal = stop_signal
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        """Launch the server process and wait until it accepts connections."""
        if self._launch is not None:
            self._proc = self._launch()
            try:
                _wait_until(f"the server at {self.url}", _ping(self.url), self._proc)
            except Unavailable:
                self._halt()
                raise
        return self

    def restart(self) -> None:
        """Stop the server, dropping every connection, and start it again on its data."""
        self.halt()
        self.start()

    def halt(self) -> None:
        """Stop the server process, keeping its data (``start`` brings it back)."""
        if self._launch is None:
            raise Unavailable("a server given by URL cannot be stopped by the tests")
        self._halt()

    def stop(self) -> None:
        """Stop the server and remove its files."""
        self._halt()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _halt(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(self._signal)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _launcher(
    argv: list[str], log: pathlib.Path, demote: Callable[[], None] | None = None
) -> Callable[[], subprocess.Popen[bytes]]:
    """Start ``argv`` with its output appended to ``log`` (again on each restart)."""

    def launch() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(argv, preexec_fn=demote, stdout=out, stderr=subprocess.STDOUT)

    return launch


# -- PostgreSQL ------------------------------------------------------------------------


def _postgres_bindir() -> pathlib.Path:
    found = shutil.which("initdb")
    if found:
        return pathlib.Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise Unavailable(f"PostgreSQL binaries (initdb, postgres) not found; {HOW_TO}")
    return pathlib.Path(candidates[0]).parent


def _postgres_demotion() -> Callable[[], None] | None:
    """initdb and postgres refuse to run as root: a pre-exec that drops to ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise Unavailable("running as root and there is no 'postgres' account") from exc

    def demote() -> None:
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return demote


def start_postgres() -> Server:
    """initdb into a temporary directory and start postgres on a free port."""
    if os.environ.get("MPG_TEST_POSTGRES_URL"):
        return Server(os.environ["MPG_TEST_POSTGRES_URL"])
    bindir = _postgres_bindir()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="mpg-pg-"))
    data = workdir / "data"
    demote = _postgres_demotion()
    if demote is not None:
        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
    options = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]
    initdb = [str(bindir / "initdb"), "-D", str(data), *options]
    done = subprocess.run(initdb, preexec_fn=demote, capture_output=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise Unavailable(f"initdb failed: {done.stderr.decode(errors='replace').strip()}")

    def start(port: int) -> Server:
        # Durability off: the data is thrown away, and tests should not wait on fsync.
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir)]
        for setting in (
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=200",
        ):
            argv += ["-c", setting]
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        launch = _launcher(argv, workdir / "server.log", demote)
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
        return Server(url, launch, workdir, signal.SIGINT).start()

    return _on_a_free_port(start, workdir)


# -- MariaDB ---------------------------------------------------------------------------


def _mariadb_binaries() -> tuple[str, str]:
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not server or not install:
        raise Unavailable(f"MariaDB binaries (mariadbd, mariadb-install-db) not found; {HOW_TO}")
    return server, install


def start_mariadb() -> Server:
    """mariadb-install-db into a temporary directory and start mariadbd on a free port.

    ``--skip-grant-tables`` lets the test connect as root without any account setup;
    the server listens on 127.0.0.1 only and lives as long as the test session.
    """
    if os.environ.get("MPG_TEST_MARIADB_URL"):
        return Server(os.environ["MPG_TEST_MARIADB_URL"])
    server_bin, install_bin = _mariadb_binaries()
    user = ["--user=root"] if os.geteuid() == 0 else []
    # mariadb-install-db now and then fails its bootstrap ("Unknown table
    # 'mysql.tmp_user_sys'") when other instances start at the same moment (the test
    # workers each start one): it is tried again in a fresh folder.
    for attempt in range(1, 4):
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="mpg-mariadb-"))
        data = workdir / "data"
        done = subprocess.run(
            [
                install_bin,
                "--no-defaults",
                f"--datadir={data}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                *user,
            ],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            break
        shutil.rmtree(workdir, ignore_errors=True)
        if attempt == 3:
            raise Unavailable(
                f"mariadb-install-db failed: {done.stderr.decode(errors='replace').strip()}"
            )

    def start(port: int) -> Server:
        argv = [
            server_bin,
            "--no-defaults",
            f"--datadir={data}",
            f"--port={port}",
            f"--socket={workdir / 'mysqld.sock'}",
            f"--pid-file={workdir / 'mysqld.pid'}",
            "--bind-address=127.0.0.1",
            "--skip-grant-tables",
            "--skip-log-bin",
            # Durability off: the data is thrown away, and tests should not wait on fsync.
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-buffer-pool-size=128M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=300",
            *user,
        ]
        url = f"mysql+pymysql://root@127.0.0.1:{port}/mysql?charset=utf8mb4"
        return Server(url, _launcher(argv, workdir / "server.log"), workdir).start()

    return _on_a_free_port(start, workdir)


# -- one empty database per test ---------------------------------------------------------


def fresh_database(admin_url: str, name: str = "mpg_test") -> str:
    """An empty database on the server behind ``admin_url``; returns its URL.

    PostgreSQL and MariaDB get the database ``name`` dropped and created again (fast:
    both create an empty database in milliseconds); on SQL Server, whose URL names
    the database to use, every table in it is dropped instead.
    """
    url = sa.make_url(admin_url)
    backend = url.get_backend_name()
    if backend == "mssql":
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                found = sa.MetaData()
                found.reflect(conn)
                found.drop_all(conn)
        finally:
            engine.dispose()
        return url.render_as_string(hide_password=False)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                # Sessions left by a test (e.g. a killed gateway) would block the drop.
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
                conn.exec_driver_sql(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8'")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                conn.exec_driver_sql(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def running(start: Callable[[], Server]) -> Iterator[Server]:
    """Start a server for the duration of the block."""
    server = start()
    try:
        yield server
    finally:
        server.stop()
