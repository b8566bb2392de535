"""Prometheus metrics of the gateway and the server (prometheus-client).

The counters and histograms below are module-level and are updated where the thing
happens (every state step goes through :func:`mpg.storage.history.log_steps`, every
HTTP call through :class:`mpg.gateway.client.PushClient`). They are created
unregistered: each process builds its own :func:`registry` with them plus the
collectors that read current values from its database at scrape time (messages per
state, queue depth per recipient), so two apps in one test process never clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

import prometheus_client
import structlog
from prometheus_client import core
from prometheus_client import registry as prom_registry

from mpg import errors

log = structlog.get_logger(__name__)

#: Latency buckets in seconds: sub-second up to a day (the default send timeout).
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)

TRANSITIONS: Final = prometheus_client.Counter(
    "mpg_transitions",
    "State transitions recorded, by box (out/in) and from/to state.",
    ["box", "from_state", "to_state"],
    registry=None,
)
PICKUP_LATENCY: Final = prometheus_client.Histogram(
    "mpg_pickup_latency_seconds",
    "Gateway: time from an Outbox row's StatusTime in state 10 to its claim.",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
DELIVERY_LATENCY: Final = prometheus_client.Histogram(
    "mpg_delivery_latency_seconds",
    "Gateway: time from claiming an Outbox row to the server accepting it.",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
RETRIES: Final = prometheus_client.Counter(
    "mpg_retries",
    "Gateway: cycles retried after a failure, by worker.",
    ["worker"],
    registry=None,
)
DATABASE_ERRORS: Final = prometheus_client.Counter(
    "mpg_database_errors",
    "Database operations that failed (driver errors mapped to StorageError).",
    registry=None,
)
HTTP_ERRORS: Final = prometheus_client.Counter(
    "mpg_http_errors",
    "Gateway: failed calls to the server, by operation and kind (transient/refused).",
    ["op", "kind"],
    registry=None,
)
ATTACHMENT_BYTES: Final = prometheus_client.Counter(
    "mpg_attachment_bytes",
    "Attachment bytes moved, by direction (upload/download).",
    ["direction"],
    registry=None,
)
SERVER_REQUESTS: Final = prometheus_client.Counter(
    "mpg_server_requests",
    "Server: requests answered, by operation and HTTP status.",
    ["op", "status"],
    registry=None,
)
PUSH_OUTCOMES: Final = prometheus_client.Counter(
    "mpg_push_outcomes",
    "Server: push attempts, by provider entry and outcome (config_alarm: the operator must act).",
    ["provider", "kind"],
    registry=None,
)

_SHARED: Final = (
    TRANSITIONS,
    PICKUP_LATENCY,
    DELIVERY_LATENCY,
    RETRIES,
    DATABASE_ERRORS,
    HTTP_ERRORS,
    ATTACHMENT_BYTES,
    SERVER_REQUESTS,
    PUSH_OUTCOMES,
)


class GaugeCollector(prom_registry.Collector):
    """A labelled gauge whose values are read by ``read`` at every scrape.

    A database that cannot be read at scrape time leaves the gauge out of that
    scrape (and counts a database error) instead of failing the whole page.
    """

    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._read = read

    def collect(self) -> Iterator[core.Metric]:
        """One gauge family with a sample per label value."""
        try:
            values = self._read()
        except errors.StorageError as exc:
            log.warning("metrics_read_failed", metric=self._name, error=str(exc))
            return
        family = core.GaugeMetricFamily(self._name, self._documentation, labels=[self._label])
        for key, value in sorted(values.items()):
            family.add_metric([key], value)
        yield family


def registry(
    collectors: Iterable[prom_registry.Collector] = (),
) -> prometheus_client.CollectorRegistry:
    """A registry with the shared metrics and this process's own collectors."""
    reg = prometheus_client.CollectorRegistry(auto_describe=True)
    for metric in (*_SHARED, *collectors):
        reg.register(metric)
    return reg


def render(reg: prometheus_client.CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of ``reg`` and its content type."""
    return prometheus_client.generate_latest(reg), prometheus_client.CONTENT_TYPE_LATEST
