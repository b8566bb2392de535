"""The delivery summary at the end of a device message's StatusLog.

The server records every push, fetch and read report of a message as an event
(docs/push.md, "A delivery record per device"); the sender sees them with
``mpg history``. So that the ERP sees them too, without asking, the gateway keeps a
summary at the end of the row's StatusLog, e.g.
``sent: 10 devices, 10 notified, 8 fetched, 3 read``:

* which rows: device-addressed (ReceiverType ``D``) rows in 20 (waiting) or 29 (served)
  whose StatusTime is within ``[gateway] delivery_summary_window`` seconds, until every
  device has read the message;
* how: every ``delivery_summary_interval`` seconds the gateway asks the server for
  each such row's events (the ``history`` operation ``mpg history`` uses) and counts
  them per device (:func:`count`); the StatusLog is rewritten only when the summary
  changed (and not before a first push, fetch, read or recall), by a compare-and-set
  on state and StatusLog, so a state change meanwhile wins and is summarised in the
  next round.

The summary replaces any earlier one and the receipt's own note (``sent: N
recipient(s) served``, which it repeats); any other text (``queued for 3
recipient(s); unknown recipient(s): …``) stays in front of it, cut so that the
summary always fits the column's 200 characters (:func:`status_log`).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable
from typing import Final, Protocol

import structlog

from mpg import errors
from mpg.storage import history, outbox
from mpg.wire import model

log = structlog.get_logger(__name__)

#: Rows looked at per round (newest first).
ROUND_LIMIT: Final = 200
#: What the summary starts with; text before it in the StatusLog is kept.
PREFIX: Final = "sent: "
_SEPARATOR: Final = "; "
#: The server's ``received`` event says how many recipients the message was queued for.
_QUEUED_FOR: Final = re.compile(r"queued for (\d+) recipient")
_SUMMARY: Final = re.compile(r"sent: (\d+) devices, \d+ notified, \d+ fetched, (\d+) read")


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """Devices the message was queued for, and how many of them got each step."""

    devices: int
    notified: int = 0
    fetched: int = 0
    read: int = 0
    recalled: int = 0

    @property
    def started(self) -> bool:
        """Something happened beyond the queuing (a push, fetch, read or recall)."""
        return bool(self.notified or self.fetched or self.read or self.recalled)

    def line(self) -> str:
        """``sent: 10 devices, 10 notified, 8 fetched, 3 read`` (``, 1 recalled``)."""
        text = (
            f"{PREFIX}{self.devices} devices, {self.notified} notified, "
            f"{self.fetched} fetched, {self.read} read"
        )
        return text + (f", {self.recalled} recalled" if self.recalled else "")


def count(events: Iterable[model.ServerEvent]) -> Counts | None:
    """The counts of a message's server events; None without its ``received`` event
    (a server that does not say how many it queued)."""
    devices: int | None = None
    kinds: dict[str, set[str]] = {}
    for event in events:
        if event.kind == "received":
            found = _QUEUED_FOR.search(event.detail)
            devices = int(found.group(1)) if found else devices
        kinds.setdefault(event.kind, set()).add(event.account)
    if devices is None:
        return None

    def of(kind: str) -> int:
        return len(kinds.get(kind, ()))

    return Counts(devices, of("notified"), of("fetched"), of("read"), of("withdrawn"))


def status_log(current: str | None, counts: Counts, width: int = outbox.STATUS_LOG_WIDTH) -> str:
    """``current`` with its summary replaced by the one of ``counts``, within ``width``."""
    line = counts.line()
    base = (current or "").split(_SEPARATOR + PREFIX, 1)[0]
    if base.startswith(PREFIX):
        base = ""  # the receipt's note or an earlier summary alone: the summary repeats it
    if not base:
        return line[:width]
    room = width - len(line) - len(_SEPARATOR)
    if room < 2:
        return line[:width]
    return history.truncate(base, room) + _SEPARATOR + line


def finished(current: str | None) -> bool:
    """True when the summary in ``current`` says every device read the message."""
    found = _SUMMARY.search(current or "")
    return found is not None and found.group(1) == found.group(2)


class History(Protocol):
    """What the summary needs of the server client (:class:`mpg.gateway.client.PushClient`)."""

    def history(self, tx_message_id: str) -> tuple[str, list[model.ServerEvent]]: ...


class DeliverySummaries:
    """Keeps the summaries of recent device rows up to date; :meth:`run_once` is one round."""

    def __init__(
        self,
        repository: outbox.OutboxRepository,
        server: History,
        window_seconds: float,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self._outbox = repository
        self._server = server
        self._window = window_seconds
        self._stop = stop or threading.Event()

    def run_once(self) -> int:
        """Update the summaries that changed; how many StatusLogs were written."""
        written = 0
        try:
            rows = self._outbox.delivery_rows(self._window, ROUND_LIMIT)
        except errors.StorageError as exc:
            log.warning("delivery_summary_skipped", error=str(exc))
            return 0
        for row in rows:
            if self._stop.is_set():
                break
            if finished(row.status_log):
                continue
            try:
                _, events = self._server.history(row.tx_message_id)
            except errors.RefusedByServer as exc:  # this row only (e.g. removed by retention)
                log.info("delivery_summary_refused", tx=row.tx_message_id, error=str(exc))
                continue
            except (errors.ServerError, errors.WireError) as exc:
                log.info("delivery_summary_unavailable", tx=row.tx_message_id, error=str(exc))
                return written
            counts = count(events)
            if counts is None or not counts.started:
                continue
            new = status_log(row.status_log, counts)
            if new != row.status_log and self._write(row, new):
                written += 1
        return written

    def _write(self, row: outbox.OutboxRow, new: str) -> bool:
        try:
            return self._outbox.note_delivery(row, new)
        except errors.StorageError as exc:
            log.warning("delivery_summary_not_written", tx=row.tx_message_id, error=str(exc))
            return False
