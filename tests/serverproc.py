"""A real ``mpg server`` process over TLS on loopback, with the settings a test asks for.

Used by the tests that attack the server's network face: they need their own limits
(timeouts, quotas, caps) and the process id (its memory is read from ``/proc``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import pathlib
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

import trustme

from mpg import config
from mpg.server import accounts, datakeys, tables, vault
from mpg.wire import envelope, keys, payloads

START_TIMEOUT = 30.0


@dataclasses.dataclass
class ServerProcess:
    """A running server: its process, address, CA, database and accounts' credentials."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    ca_file: pathlib.Path
    database_url: str
    credentials: dict[str, keys.Credential]
    log_file: pathlib.Path
    data_dir: pathlib.Path
    #: The server's pseudonyms and sealed columns, to look at its rows as it does.
    vault: vault.Vault

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def connect(self, timeout: float = 30.0) -> ssl.SSLSocket:
        """A TLS connection to the server (handshake done)."""
        raw = socket.create_connection((self.host, self.port), timeout=timeout)
        return self.tls_context().wrap_socket(raw, server_hostname=self.host)

    def seal(self, account: str, op: str, payload: bytes = b"", **args: Any) -> bytes:
        """A request envelope sealed with ``account``'s key."""
        cred = self.credentials[account]
        header = envelope.request_header(account, cred.key_id, op, args)
        return envelope.seal(cred.secret, header, payload)

    def memory_kib(self, field: str) -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the server process, in KiB."""
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def log_lines(self) -> list[str]:
        """What the server has logged so far."""
        return self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        return terminate(self.proc)


def terminate(proc: subprocess.Popen[str]) -> int:
    """SIGTERM a server process, and its exit code (killed if it does not end in 30 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):  # an inline table, e.g. console_oidc
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return str(value)


def start(
    root: pathlib.Path,
    accounts_: Mapping[str, str],
    *,
    disabled: tuple[str, ...] = (),
    open_files: int | None = None,
    **settings: object,
) -> ServerProcess:
    """Start ``python -m mpg.server.main`` with TLS on a free port.

    ``accounts_`` maps names to kinds; ``disabled`` are disabled after creation;
    ``settings`` are ``[server]`` keys; ``open_files`` sets the process's soft
    open-file limit (a service's default is 1,024).
    """
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "server.pem")
    )
    values: dict[str, object] = {
        "database_url": f"sqlite:///{root / 'server.db'}",
        "host": "127.0.0.1",
        "port": 0,
        "tls_cert": str(root / "server.pem"),
        "tls_key": str(root / "server.pem"),
        "data_dir": str(root / "data"),
        **settings,
    }
    config_file = root / "server.toml"
    config_file.write_text(
        "[server]\n"
        + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())
        + '[log]\nformat = "json"\n'
    )
    server_settings = config.load(config_file).server
    accounts.create_master_key_file(accounts.master_key_path(server_settings))
    datakeys.create_data_keys_file(datakeys.data_keys_path(server_settings))
    engine = tables.create_engine(server_settings.database_url)
    tables.create_tables(engine)
    store = accounts.AccountStore(
        engine,
        accounts.load_master_key(server_settings),
        datakeys.load_keyring(server_settings),
    )
    credentials = {name: store.add(name, kind)[1] for name, kind in accounts_.items()}
    for name in disabled:
        store.disable(name)
    engine.dispose()

    def limit_files() -> None:
        if open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    log_file = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpg.server.main", "--config", str(config_file)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=root,  # not the checkout: `-m` puts the working folder first on the path
            preexec_fn=limit_files,
        )
    address = announced(proc, log_file)
    host, port = address.removeprefix("https://").rsplit(":", 1)
    return ServerProcess(
        proc,
        host,
        int(port),
        ca_file,
        server_settings.database_url,
        credentials,
        log_file,
        server_settings.data_dir,
        store.vault,
    )


def announced(proc: subprocess.Popen[str], log_file: pathlib.Path) -> str:
    """The URL of the 'listening on ...' line; the log in the error if it never comes."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("listening on "):
                found.append(line.removeprefix("listening on ").strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if not found:
        proc.kill()
        raise AssertionError(f"server did not start:\n{log_file.read_text()}")
    return found[0]


def read_response(sock: ssl.SSLSocket) -> bytes:
    """What the server answered before it closed (or stopped sending)."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and len(data) > data.index(b"\r\n\r\n") + 4:
                break
    return data


def stream_post(srv: ServerProcess, op: str, first: bytes, total: int, chunk: bytes) -> bytes:
    """POST ``total`` bytes (``first``, then ``chunk`` repeated) and read the answer.

    Stops sending as soon as the server answers or closes, as a client would.
    """
    sock = srv.connect()
    try:
        sock.sendall(
            f"POST /v1/{op} HTTP/1.1\r\nHost: {srv.host}\r\n"
            f"Content-Length: {total}\r\n\r\n".encode()
            + first
        )
        sent = len(first)
        with contextlib.suppress(OSError):
            while sent < total:
                part = chunk[: total - sent]
                sock.sendall(part)
                sent += len(part)
        return read_response(sock)
    finally:
        sock.close()


def status_of(answer: bytes) -> int | None:
    """The status code of a raw HTTP answer; None when the server sent nothing."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def forged(account: str, op: str = "fetch", *, key_id: str = "") -> bytes:
    """An envelope naming ``account`` (and ``key_id``, else a new one) sealed with a key
    nobody was given; its payload is a fetch."""
    cred = keys.new_credential()
    header = envelope.request_header(account, key_id or cred.key_id, op, {})
    return envelope.seal(cred.secret, header, payloads.build_fetch(10, 0))


def flood_of_bodies(
    srv: ServerProcess, first: bytes, count: int = 12, size: int = 63 * 1024 * 1024
) -> list[int | None]:
    """``count`` concurrent bodies of ``size`` bytes starting with ``first``; the statuses."""
    chunk = bytes(1024 * 1024)
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        answers = list(
            pool.map(lambda _: stream_post(srv, "upload", first, size, chunk), range(count))
        )
    return [status_of(answer) for answer in answers]
