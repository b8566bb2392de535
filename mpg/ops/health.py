"""Health, readiness and metrics over HTTP.

``/healthz`` answers 200 while the process runs; ``/readyz`` 200 only when every
readiness check passes (503 with the failures as JSON otherwise); ``/metrics`` the
Prometheus text. The server mounts these on its Starlette app; the gateway, which
has no HTTP server of its own, runs :class:`HealthServer` (the standard library's
threading HTTP server: three GET routes do not justify another framework).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Mapping

import prometheus_client
import structlog

from mpg import errors, metrics

log = structlog.get_logger(__name__)

#: A readiness check returns nothing when ready and raises (any exception) when not.
Check = Callable[[], None]


def readiness(checks: Mapping[str, Check]) -> dict[str, str]:
    """Run every check; return ``{name: reason}`` of those that failed (empty: ready)."""
    failed = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:
            failed[name] = str(exc) or type(exc).__name__
    return failed


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        checks: Mapping[str, Check],
        registry: prometheus_client.CollectorRegistry,
    ) -> None:
        handler = _handler_class(checks, registry)
        try:
            self._httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise errors.ConfigError(
                f"gateway.health_port: cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="mpg-health", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound (port 0 in the settings: any free port)."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        host, port = self.address
        log.info("health_listening", url=f"http://{host}:{port}")

    def stop(self) -> None:
        """Stop serving and release the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler_class(
    checks: Mapping[str, Check], registry: prometheus_client.CollectorRegistry
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                failed = readiness(checks)
                body = json.dumps({"ready": not failed, "failed": failed}).encode()
                self._send(503 if failed else 200, body, "application/json")
            elif path == "/metrics":
                data, content_type = metrics.render(registry)
                self._send(200, data, content_type)
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would flood the log; errors surface as metrics.
            return

    return Handler
