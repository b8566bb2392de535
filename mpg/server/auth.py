"""Opening request envelopes and sealing their answers.

A request is trusted only after these steps, in this order: the clear header names
the account and key id, read from the first bytes of the body before the rest is
read (:func:`mpg.wire.envelope.read_header`); the key comes from the
:class:`~mpg.server.accounts.AccountStore` (:meth:`RequestOpener.identify`); the
envelope opens under it; a disabled account or key is refused (403) only now, so
that only the key's holder learns it; and the replay guard
(:class:`~mpg.server.replay.SharedReplayGuard`) finds its timestamp fresh and its
nonce unseen by every server process sharing the database (409). The guard is asked
last so that forged envelopes cannot fill its memory.

Every failure before the envelope opens (no envelope, bad framing, an unknown
account or key id, a tag that does not verify) is one and the same 401 to the
client; the log names the reason.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Final

from mpg import errors
from mpg.db import transactions
from mpg.server import accounts, blobs, replay
from mpg.wire import envelope

#: Longest account name and key id looked up; longer ones are unknown without a query.
MAX_ACCOUNT_CHARS: Final = 100
MAX_KEY_ID_CHARS: Final = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """Who a request's clear header says it comes from, and that account's key."""

    account: str  # the stored account name
    key: bytes = dataclasses.field(repr=False)
    disabled: str  # why the account or key is disabled; '' when usable


@dataclasses.dataclass(frozen=True, slots=True)
class OpenedRequest:
    """An authenticated request: who sent it, with which key, and what it carries."""

    header: envelope.EnvelopeHeader
    account: str  # the stored account name (lower-cased unless a device serial)
    key: bytes = dataclasses.field(repr=False)
    payload: bytes = dataclasses.field(repr=False)
    #: Where the payload is instead, encrypted, when it was opened to a file (uploads).
    payload_file: blobs.Spooled | None = None
    #: The nonce's record when it rides on the operation's first write transaction
    #: (:meth:`RequestOpener.open` with ``nonce_rides``); None once written.
    nonce: transactions.Rider | None = None


class RequestOpener:
    """Authenticates request envelopes against the account store."""

    def __init__(self, store: accounts.AccountStore, guard: replay.SharedReplayGuard) -> None:
        self._store = store
        self._guard = guard

    def identify(self, header: envelope.EnvelopeHeader) -> Claim:
        """The key of the account and key id a (not yet opened) header names.

        Raises :class:`mpg.errors.UnknownKey` when there is no such key.
        """
        if len(header.account) > MAX_ACCOUNT_CHARS or len(header.key_id) > MAX_KEY_ID_CHARS:
            raise errors.UnknownKey("unknown account or key: name too long")
        account, key, disabled = self._store.key_state(header.account, header.key_id)
        return Claim(account, key, disabled)

    def open(
        self,
        op: str,
        body: bytes | bytearray,
        claim: Claim | None = None,
        *,
        nonce_rides: bool = False,
    ) -> OpenedRequest:
        """Authenticate ``body`` posted to ``/v1/<op>``; ``claim`` if already identified.

        Raises :class:`mpg.errors.TamperedEnvelope` (no envelope, bad framing or tag),
        :class:`mpg.errors.UnknownKey`, :class:`mpg.errors.AccountDisabled`,
        :class:`mpg.errors.ReplayedEnvelope`, :class:`mpg.errors.TooManyRequests`, or
        :class:`mpg.errors.WireError` when the envelope was sealed for another operation.
        ``nonce_rides``: the nonce is not written here but handed over as
        :attr:`OpenedRequest.nonce`, for the operation's own transaction (a replay
        sent to another process is then refused there, its writes rolled back).
        """
        if claim is None:
            claim = self.identify(envelope.peek(body))
        header, payload = envelope.open_sealed(claim.key, body)
        nonce: transactions.Rider | None = self._admit(op, header, claim)
        if not nonce_rides:
            self.settle(nonce)
            nonce = None
        return OpenedRequest(header, claim.account, claim.key, payload, nonce=nonce)

    def open_file(
        self, op: str, sealed: pathlib.Path, claim: Claim, sink: envelope.Sink
    ) -> OpenedRequest:
        """:meth:`open` for a body spooled to the file ``sealed``; the payload goes to
        ``sink`` (trustworthy only if this returns)."""
        with sealed.open("rb") as source:
            header = envelope.open_sealed_stream(claim.key, source, sealed.stat().st_size, sink)
        self.settle(self._admit(op, header, claim))
        return OpenedRequest(header, claim.account, claim.key, b"")

    def settle(self, nonce: transactions.Rider | None) -> None:
        """Write a request's nonce unless a transaction of the request already did
        (raises :class:`mpg.errors.ReplayedEnvelope` if another process had it)."""
        if nonce is not None and not nonce.done:
            self._guard.record(nonce)

    def _admit(self, op: str, header: envelope.EnvelopeHeader, claim: Claim) -> transactions.Rider:
        """The checks after the envelope opened: disabled, operation, replay; the
        nonce's record still to be written."""
        if claim.disabled:
            raise errors.AccountDisabled(claim.disabled)
        if header.op != op:
            raise errors.WireError(f"envelope is for '{header.op}', posted to /v1/{op}")
        return self._guard.admit(header)


def seal_response(
    request: OpenedRequest, payload: bytes, args: dict[str, Any] | None = None
) -> bytes:
    """The answer envelope to ``request``: same key, ``re`` = the request's nonce."""
    return envelope.seal(request.key, envelope.response_header(request.header, args), payload)
