"""Replay protection shared by every server process on one database.

The in-process :class:`mpg.wire.envelope.ReplayGuard` refuses stale timestamps and
nonces this process has seen, without touching the database. A replay sent to
*another* process sharing the database passes that check, so each accepted
(account, nonce) is also inserted into ``SeenNonce``: the primary key makes the
database the arbiter, and a unique violation means some process already accepted
that envelope. Rows are deleted once their timestamp has left the window, after
which the timestamp check alone refuses a replay.

The insert is a :class:`mpg.db.transactions.Rider`: the hot operations (submit,
fetch, ack) carry it in their own first transaction instead of one of its own, which
cost a sixth of a small request. A replay there rolls the operation's writes back
with the nonce, and no answer leaves the server, so the outcome is the same.

The in-process cache is kept per account, each holding at most
``server.replay_per_account`` nonces: an account that sends more requests within
one window is refused (429, retry later) without locking any other account out.
Only authenticated accounts get a cache, so memory is bounded by the number of
accounts times that cap.
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


#: Built once: every request runs it.
_RECORD: Final = tables.seen_nonce.insert()


class SharedReplayGuard:
    """Refuses stale, future and repeated request envelopes across processes."""

    def __init__(
        self,
        engine: sa.Engine,
        window_seconds: float,
        *,
        per_account: int = envelope.MAX_REMEMBERED_NONCES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._per_account = per_account
        self._local: dict[str, envelope.ReplayGuard] = {}
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def admit(self, header: envelope.EnvelopeHeader) -> transactions.Rider:
        """Refuse what this process can tell without the database: a stale, future or
        repeated envelope (:class:`mpg.errors.ReplayedEnvelope`), an account whose cache
        is full (:class:`mpg.errors.TooManyRequests`). Return the nonce's record still
        to be written, a rider of the request's first write transaction (or of
        :meth:`record`): it raises :class:`mpg.errors.ReplayedEnvelope` there, rolling
        the request's writes back, when some process has recorded the nonce already.
        """
        now = self._clock()
        with self._lock:
            local = self._local.get(header.account)
            if local is None:
                local = envelope.ReplayGuard(self._window, max_entries=self._per_account)
                self._local[header.account] = local
        try:
            local.check(header, now)
        except errors.ReplayedEnvelope:
            if len(local) >= self._per_account:
                raise errors.TooManyRequests(
                    f"{header.account} sent more than {self._per_account} requests "
                    f"within {self._window:g} s; retry later"
                ) from None
            raise
        self._prune(now)
        values = {
            "NonceKey": hashlib.sha256(f"{header.account}\0{header.nonce}".encode()).hexdigest(),
            "ExpiresAt": header.timestamp + self._window,
        }

        def write(conn: sa.Connection) -> None:
            try:
                conn.execute(_RECORD, values)
            except sa.exc.IntegrityError:
                raise errors.ReplayedEnvelope("nonce already used") from None

        return transactions.Rider(write)

    def record(self, nonce: transactions.Rider) -> None:
        """Write a nonce from :meth:`admit` in a transaction of its own."""
        with transactions.begin(self._engine, "recording a request nonce", nonce):
            pass

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
