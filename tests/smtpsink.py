"""A plain SMTP server (aiosmtpd) on loopback that keeps every mail it accepts, and
the verification code read back out of a mail, for tests of flows that mail codes."""

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
    """An aiosmtpd handler that keeps (recipients, raw bytes) of every mail."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"

    def code_for(self, address: str) -> str:
        """The code in the newest mail to ``address`` (from its plain-text part)."""
        for rcpt, raw in reversed(self.received):
            if address in rcpt:
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(parsed, email.message.EmailMessage)
                plain = parsed.get_body(("plain",))
                assert plain is not None
                found = re.search(r"code is: (\d{6})", plain.get_content())
                assert found, "no code in the mail"
                return found.group(1)
        raise AssertionError(f"no mail to {address}")


@contextlib.contextmanager
def serving() -> Iterator[tuple[Sink, int]]:
    """A sink on a free loopback port for the block."""
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def server_settings(port: int, **changes: Any) -> config.ServerSettings:
    """Server settings that mail through the sink on ``port`` (plain SMTP, loopback)."""
    values: dict[str, Any] = {
        "mail_host": "127.0.0.1",
        "mail_port": port,
        "mail_security": "plain",
        "mail_from": "noreply@mpg.example",
        "mail_attempts": 1,
    }
    values.update(changes)
    return config.ServerSettings(**values)
