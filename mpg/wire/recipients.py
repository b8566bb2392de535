"""Recipient lists: split the ``;`` lists, qualify accounts, expand To and Bcc.

Accounts compare case-insensitively everywhere (:func:`fold`), but keep the spelling
they were first written with.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Final

from mpg.wire import model

_SEPARATORS: Final = re.compile(r"[;,]")


@dataclasses.dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a message and the BccList its copy shows."""

    account: str
    visible_bcc: str  # '' for a To recipient; the recipient itself for a Bcc recipient


def fold(account: str) -> str:
    """The form in which two accounts are compared (case-insensitive)."""
    return account.casefold()


def split_list(text: str | None) -> tuple[str, ...]:
    """Split a ``ReceiverList``/``BccList`` value.

    ``;`` and ``,`` both separate; entries are trimmed, empty ones dropped, order kept,
    and repeats (case-insensitive) dropped after the first.
    """
    if not text:
        return ()
    return _unique(_SEPARATORS.split(text))


def _unique(accounts: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept: list[str] = []
    for raw in accounts:
        account = raw.strip()
        key = fold(account)
        if account and key not in seen:
            seen.add(key)
            kept.append(account)
    return tuple(kept)


def qualify(account: str, domain: str) -> str:
    """Add ``@domain`` to an account written without one (``alice`` -> ``alice@example.com``).

    Left as is: an account that already has an ``@``, the reserved server agent
    (``psereceiver``), and any account when ``domain`` is empty.
    """
    account = account.strip()
    domain = domain.strip().lstrip("@")
    if not account or not domain or "@" in account or fold(account) == model.SERVER_AGENT:
        return account
    return f"{account}@{domain}"


def expand(to: str | Iterable[str], bcc: str | Iterable[str]) -> list[Recipient]:
    """The recipients of a message, each once: To first, then Bcc, in list order.

    An account in both lists is a To recipient (To wins). To recipients see an empty
    BccList; each Bcc recipient sees only itself. A string is split with
    :func:`split_list`.
    """
    to_accounts = split_list(to) if isinstance(to, str) else _unique(to)
    bcc_accounts = split_list(bcc) if isinstance(bcc, str) else _unique(bcc)
    recipients = [Recipient(account, "") for account in to_accounts]
    seen = {fold(account) for account in to_accounts}
    for account in bcc_accounts:
        if fold(account) not in seen:
            seen.add(fold(account))
            recipients.append(Recipient(account, account))
    return recipients
