"""A plain SMTP server on loopback (aiosmtpd) that keeps every mail it is handed, and
the verification code read out of the newest one: what a person reading the mail does."""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import re
from collections.abc import Iterator
from typing import Any

from aiosmtpd.controller import Controller
from harness import free_port

from mpg import config


class Sink:
    """Keeps the raw bytes of every mail accepted."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(envelope.original_content)
        return "250 Message accepted for delivery"

    def code(self) -> str:
        """The 6-digit code in the plain-text part of the newest mail."""
        message = email.message_from_bytes(self.received[-1], policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        body = message.get_body(("plain",))
        assert body is not None
        found = re.search(r"\b(\d{6})\b", body.get_content())
        assert found, body.get_content()
        return found.group(1)


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    """A sink listening on a free loopback port (no TLS, no AUTH) for the block."""
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def mail_settings(port: int, **changes: Any) -> config.ServerSettings:
    """Server settings that mail through the sink on ``port`` (plain SMTP, loopback)."""
    return config.ServerSettings(
        mail_host="127.0.0.1",
        mail_port=port,
        mail_security="plain",
        mail_from="noreply@mpg.example",
        mail_attempts=1,
        **changes,
    )
