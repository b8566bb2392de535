"""What the stand-ins share: scripted answers and a threaded HTTPS server on loopback."""

from __future__ import annotations

import collections
import dataclasses
import http.server
import json
import pathlib
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import trustme

from mpg import config
from mpg.server.push import registry
from mpg.server.push.base import PushRequest
from mpg.server.push.outcome import OutcomeKind
from mpg.wire.push import Notice


@dataclasses.dataclass(frozen=True)
class Scripted:
    """One answer a test told the stand-in to give."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


class Script:
    """Answers to give next, in order; when none is left the stand-in accepts."""

    def __init__(self) -> None:
        self._answers: collections.deque[Scripted] = collections.deque()
        self._lock = threading.Lock()

    def then(self, status: int, body: Any = b"", **headers: str) -> Script:
        """Queue one answer (a dict or list body is sent as JSON)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        pairs = tuple((name.replace("_", "-"), value) for name, value in headers.items())
        with self._lock:
            self._answers.append(Scripted(status, data, pairs))
        return self

    def next(self) -> Scripted | None:
        """The next scripted answer, or None (accept)."""
        with self._lock:
            return self._answers.popleft() if self._answers else None


Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


def serve_https(ca: trustme.CA, handle: Handler) -> Iterator[str]:
    """Serve ``handle(method, path, headers, body)`` over HTTPS/1.1 on loopback; yields the base URL."""

    class RequestHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, data = handle(self.command, self.path, headers, body)
            self.send_response(status)
            for name, value in out_headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client TLS context trusting only the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def json_answer(status: int, body: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """An answer with a JSON body."""
    return status, {"content-type": "application/json", **headers}, json.dumps(body).encode()


def configured_send(
    entry: config.PushProvider, platform: str, token: str, notice: Notice
) -> OutcomeKind:
    """Send one push the way the server will: a Registry built from ``entry`` picks the
    provider for the notice's group and ``platform``."""
    reg = registry.Registry(config.ServerSettings(push_providers=(entry,)))
    try:
        return reg.provider(notice.group, platform).send(PushRequest(token, notice)).kind
    finally:
        reg.close()


def ca_file(ca: trustme.CA, folder: pathlib.Path) -> pathlib.Path:
    """The test CA's certificate as a file (for ``ca_bundle``)."""
    path = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path
