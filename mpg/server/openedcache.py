"""Messages kept opened in memory from their submit to their recipients' fetch.

A message's personal columns are stored sealed (:mod:`mpg.server.vault`), so handing
it out means reading its ``TransmitQueue`` row and opening seven fields: a tenth of the
server's work on a burst. The process that accepted the message had it in the clear a
moment before, and its recipients usually fetch it from that same process moments
later. :class:`OpenedMessages` keeps what :func:`mpg.server.rows.opened_message` would
read back, for the most recent messages only; a fetch takes what it finds there and
reads the rest from the database, as it always can (another server process, a restart,
an older message). The columns kept never change after the insert, so an entry is
never stale.

Bounded by the characters it holds (:data:`MAX_CHARS`, oldest out first), so its memory
stays under about 20 MiB however large the messages. Only a committed submit puts its
messages in (the store calls :meth:`OpenedMessages.put` after the commit).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

#: Characters of text the cache holds at most (at most 16 MiB of text, with its dicts
#: under about 20 MiB).
MAX_CHARS: Final = 4_000_000
#: What one entry counts besides its text: the dict and its small values.
ENTRY_OVERHEAD: Final = 600


class Kept(NamedTuple):
    """One message as kept: its opened row and how many attachments it has."""

    #: What :func:`mpg.server.rows.opened_message` reads back (shared: never change it).
    opened: Mapping[str, Any]
    #: 0: the fetch need not look for its ``TransmitAttachment`` rows.
    attachments: int


def _size(kept: Kept) -> int:
    return ENTRY_OVERHEAD + sum(len(v) for v in kept.opened.values() if isinstance(v, str))


class OpenedMessages:
    """Opened ``TransmitQueue`` rows by MessageId, most recent first kept (thread-safe)."""

    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self._max = max_chars
        self._lock = threading.Lock()
        self._held: collections.OrderedDict[str, tuple[Kept, int]] = collections.OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._held)

    def put(self, kept: Iterable[tuple[str, Kept]]) -> None:
        """Keep each ``(message_id, kept)``; the oldest go when over the bound. A
        message larger than the whole bound is not kept."""
        with self._lock:
            for message_id, one in kept:
                size = _size(one)
                if size > self._max:
                    continue
                self._held[message_id] = (one, size)
                self._chars += size
            while self._chars > self._max:
                _, (_, size) = self._held.popitem(last=False)
                self._chars -= size

    def get(self, message_ids: Iterable[str]) -> dict[str, Kept]:
        """The kept messages among ``message_ids``."""
        with self._lock:
            return {mid: held[0] for mid in message_ids if (held := self._held.get(mid))}
