"""Opening request envelopes and sealing their answers.

A request is trusted only after four steps, in this order: the clear header names
the account and key id (:func:`mpg.wire.envelope.peek`); the key comes from the
:class:`~mpg.server.accounts.AccountStore` (unknown: 401, disabled: 403); the
envelope opens under it (tag: 401); and the replay guard
(:class:`~mpg.server.replay.SharedReplayGuard`) finds its timestamp fresh and its
nonce unseen by every server process sharing the database (409). The guard is asked last
so that forged envelopes cannot fill its memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mpg import errors
from mpg.server import accounts, replay
from mpg.wire import envelope


@dataclasses.dataclass(frozen=True, slots=True)
class OpenedRequest:
    """An authenticated request: who sent it, with which key, and what it carries."""

    header: envelope.EnvelopeHeader
    account: str  # the stored account name (lower-cased unless a device serial)
    key: bytes = dataclasses.field(repr=False)
    payload: bytes = dataclasses.field(repr=False)


class RequestOpener:
    """Authenticates request envelopes against the account store."""

    def __init__(self, store: accounts.AccountStore, guard: replay.SharedReplayGuard) -> None:
        self._store = store
        self._guard = guard

    def open(self, op: str, body: bytes) -> OpenedRequest:
        """Authenticate ``body`` posted to ``/v1/<op>``.

        Raises :class:`mpg.errors.TamperedEnvelope` (no envelope, bad framing or tag),
        :class:`mpg.errors.UnknownKey`, :class:`mpg.errors.AccountDisabled`,
        :class:`mpg.errors.ReplayedEnvelope`, or :class:`mpg.errors.WireError` when
        the envelope was sealed for another operation.
        """
        claimed = envelope.peek(body)
        account, key = self._store.key_for(claimed.account, claimed.key_id)
        header, payload = envelope.open_sealed(key, body)
        if header.op != op:
            raise errors.WireError(f"envelope is for '{header.op}', posted to /v1/{op}")
        self._guard.check(header)
        return OpenedRequest(header, account, key, payload)


def seal_response(
    request: OpenedRequest, payload: bytes, args: dict[str, Any] | None = None
) -> bytes:
    """The answer envelope to ``request``: same key, ``re`` = the request's nonce."""
    return envelope.seal(request.key, envelope.response_header(request.header, args), payload)
