"""The time text the tables hold: ``yyyy-MM-dd HH:mm:ss`` in nchar(20)."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

TEXT_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_ACCEPTED: Final = (TEXT_FORMAT, "%Y/%m/%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")

Clock = Literal["local", "utc"]


def now(clock: Clock = "local") -> dt.datetime:
    """The current time, naive, on the chosen clock (what the tables store)."""
    if clock == "utc":
        return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    return dt.datetime.now().replace(microsecond=0)


def to_text(value: dt.datetime) -> str:
    """Format for a TransmitTime/StatusTime/ReceiveTime column."""
    return value.strftime(TEXT_FORMAT)


def now_text(clock: Clock = "local") -> str:
    """``to_text(now(clock))``."""
    return to_text(now(clock))


def parse_text(text: str) -> dt.datetime:
    """Read a time column; tolerates nchar padding and the document's ``yyyy/MM/dd``."""
    value = text.strip()
    for fmt in _ACCEPTED:
        try:
            return dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ValueError(f"not a yyyy-MM-dd HH:mm:ss time: {text!r}")


def utc_stamp(offset_seconds: float = 0.0) -> str:
    """ISO-8601 UTC with microseconds (now, or ``offset_seconds`` from now).

    Fixed width, so the text sorts in time order: the transition history's ordering
    and the claim leases compare it as text on every database.
    """
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
