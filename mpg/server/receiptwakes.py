"""When a sender's waiting fetch is woken for its receipts: at once, then at most once
per :data:`LINGER_SECONDS` while they keep coming.

A receipt only moves the sender's Outbox row from 20 to 29. Woken for each one, a
gateway sending at a steady pace makes a fetch request per message for its receipts
alone, and such a request costs the server, the gateway and its database more than
the receipt. So the first receipt after a quiet spell wakes the sender's fetch at
once (nothing waits when there is nothing to batch), and receipts that follow within
the linger wake it once at its end, together. Deliveries never wait: they wake their
recipient at once (:class:`mpg.server.app.Waiters`), and a fetch woken for them takes
the receipts queued by then as well. A fetch that is not waiting finds its receipts
when it next looks, as before.

This runs on the server's event loop; ``schedule`` and ``clock`` are the loop's
``call_at`` and ``time``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

#: Seconds a sender's receipts wait for company once one has woken it.
LINGER_SECONDS: Final = 0.05
#: Senders remembered before those quiet for a whole linger are forgotten.
_REMEMBERED: Final = 1024


class ReceiptWakes:
    """Passes receipt wake-ups on to ``wake``, one per account per linger at most."""

    def __init__(
        self,
        wake: Callable[[Iterable[str]], None],
        schedule: Callable[[float, Callable[[str], None], str], Any],
        clock: Callable[[], float],
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._wake = wake
        self._schedule = schedule
        self._clock = clock
        self._linger = linger
        self._last: dict[str, float] = {}  # account -> when it was last woken for receipts
        self._pending: set[str] = set()  # accounts with a wake-up scheduled

    def __call__(self, accounts: Iterable[str]) -> None:
        """Receipts were queued for ``accounts``: wake each now or at its linger's end."""
        now = self._clock()
        due: list[str] = []
        for account in accounts:
            if account in self._pending:
                continue
            last = self._last.get(account)
            if last is None or now - last >= self._linger:
                self._last[account] = now
                due.append(account)
            else:
                self._pending.add(account)
                self._schedule(last + self._linger, self._fire, account)
        if len(self._last) > _REMEMBERED:
            self._last = {a: t for a, t in self._last.items() if now - t < self._linger}
        if due:
            self._wake(due)

    def _fire(self, account: str) -> None:
        self._pending.discard(account)
        self._last[account] = self._clock()
        self._wake((account,))
