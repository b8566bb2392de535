"""Replay protection shared by every server process on one database.

The in-process :class:`mpg.wire.envelope.ReplayGuard` refuses stale timestamps and
nonces this process has seen, without touching the database. A replay sent to
*another* process sharing the database passes that check, so each accepted
(account, nonce) is also inserted into ``SeenNonce``: the primary key makes the
database the arbiter, and a unique violation means some process already accepted
that envelope. Rows are deleted once their timestamp has left the window, after
which the timestamp check alone refuses a replay.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import errors
from mpg.db import transactions
from mpg.server import tables
from mpg.wire import envelope

log = structlog.get_logger(__name__)

#: How often a process deletes expired nonces (any process may; it is idempotent).
PRUNE_EVERY_SECONDS: Final = 60.0


class SharedReplayGuard:
    """Refuses stale, future and repeated request envelopes across processes."""

    def __init__(
        self,
        engine: sa.Engine,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._local = envelope.ReplayGuard(window_seconds)
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def check(self, header: envelope.EnvelopeHeader) -> None:
        """Remember the request's nonce, or raise :class:`mpg.errors.ReplayedEnvelope`."""
        now = self._clock()
        self._local.check(header, now)
        self._prune(now)
        key = hashlib.sha256(f"{header.account}\0{header.nonce}".encode()).hexdigest()
        try:
            with transactions.begin(self._engine, "recording a request nonce") as conn:
                conn.execute(
                    tables.seen_nonce.insert().values(
                        NonceKey=key, ExpiresAt=header.timestamp + self._window
                    )
                )
        except errors.StorageError as exc:
            if isinstance(exc.__cause__, sa.exc.IntegrityError):
                raise errors.ReplayedEnvelope("nonce already used") from None
            raise

    def _prune(self, now: float) -> None:
        with self._lock:
            if now < self._next_prune:
                return
            self._next_prune = now + PRUNE_EVERY_SECONDS
        n = tables.seen_nonce.c
        with transactions.begin(self._engine, "pruning request nonces") as conn:
            deleted = conn.execute(tables.seen_nonce.delete().where(n.ExpiresAt < now)).rowcount
        if deleted:
            log.debug("nonces_pruned", count=deleted)
