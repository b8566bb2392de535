"""Which provider reaches a device of a group, built from ``[[server.push_providers]]``.

The one place that decides whether a push may carry content: :meth:`Registry.request`
drops it unless the group is listed in ``server.push_content_groups``.
"""

from __future__ import annotations

import threading
from typing import Final

from mpg import config, tlstrust
from mpg.server.push import apnstoken, fcm
from mpg.server.push.apns import ApnsProvider
from mpg.server.push.base import Provider, PushRequest
from mpg.server.push.logprovider import LogProvider
from mpg.server.push.webhook import WebhookProvider
from mpg.wire.push import Notice, NoticeContent

#: Serves every group and platform no entry names.
DEFAULT: Final = "log"


def build(entry: config.PushProvider) -> Provider:
    """The provider one entry configures; ConfigError names the entry and key at fault."""
    verify = tlstrust.httpx_verify(
        entry.ca_bundle, f"server.push_providers[{entry.name}].ca_bundle"
    )
    where = f"server.push_providers[{entry.name}]"
    if entry.kind == "fcm":
        text = entry.secret_text("service_account_file", "service_account_env")
        info = fcm.load_service_account(text, f"{where}.service_account")
        endpoint = entry.endpoint or fcm.DEFAULT_ENDPOINT
        return fcm.FcmProvider(
            entry.name, info, endpoint=endpoint, verify=verify, timeout=entry.timeout
        )
    if entry.kind == "apns":
        tokens = apnstoken.ProviderTokens(
            entry.key_id,
            entry.team_id,
            lambda: entry.secret_text("key_file", "key_env").encode(),
            window=entry.token_window,
            where=f"{where}.key",
        )
        return ApnsProvider(
            entry.name,
            tokens,
            entry.topic,
            environment=entry.environment,
            endpoint=entry.endpoint,
            time_to_live=entry.time_to_live,
            verify=verify,
            timeout=entry.timeout,
        )
    if entry.kind == "webhook":
        secret = entry.secret_text("secret_file", "secret_env").encode()
        return WebhookProvider(entry.name, entry.url, secret, verify=verify, timeout=entry.timeout)
    return LogProvider(entry.name)


def choose(
    entries: tuple[config.PushProvider, ...], group: str, platform: str
) -> config.PushProvider | None:
    """The first entry naming ``group`` that serves ``platform``, else the first ``*`` one."""
    wanted = platform.lower()
    for named in (True, False):
        for entry in entries:
            in_group = group in entry.groups if named else "*" in entry.groups
            platforms = entry.served_platforms()
            if in_group and (wanted in platforms or "*" in platforms):
                return entry
    return None


class Registry:
    """The configured providers, each built on first use and kept (its connections too)."""

    def __init__(self, settings: config.ServerSettings) -> None:
        self._entries = settings.push_providers
        self._content_groups = frozenset(settings.push_content_groups)
        self._built: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def check(self) -> None:
        """Build every provider now, so a bad key or missing secret stops the start."""
        for entry in self._entries:
            self._get(entry)

    def _get(self, entry: config.PushProvider | None) -> Provider:
        name = DEFAULT if entry is None else entry.name
        with self._lock:
            if name not in self._built:
                self._built[name] = LogProvider() if entry is None else build(entry)
            return self._built[name]

    def provider(self, group: str, platform: str) -> Provider:
        """The provider for a device of ``group`` on ``platform`` (the log if none fits)."""
        return self._get(choose(self._entries, group, platform))

    def allows_content(self, group: str) -> bool:
        """Whether pushes to ``group`` may show the message's subject and text."""
        return group in self._content_groups

    def request(
        self, token: str, notice: Notice, content: NoticeContent | None = None
    ) -> PushRequest:
        """The push request; ``content`` kept only for a group that allows it."""
        allowed = self.allows_content(notice.group)
        return PushRequest(token, notice, content if allowed else None)

    def close(self) -> None:
        """Close every built provider."""
        with self._lock:
            for provider in self._built.values():
                provider.close()
            self._built.clear()
