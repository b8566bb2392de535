"""The message model shared by the gateway and the server (pure data, no I/O).

Field names follow the Outbox/Inbox columns in snake_case. Lists that the tables hold
as ``;``-separated text (``ReceiverList``, ``BccList``) are tuples here.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Final

#: The ContentType values of reference §3.
CONTENT_TYPES: Final = frozenset({"CMD", "MSG", "REPLY", "UPDATE", "DELETE", "STATUS", "RECALL"})
#: Priority codes, most urgent first; ``N`` is the default.
PRIORITIES: Final = ("E", "H", "N", "L")
DEFAULT_PRIORITY: Final = "N"
RECEIVER_TYPES: Final = frozenset({"U", "D"})
#: The server-side receiving agent that RECALL rows are addressed to (reference §3).
SERVER_AGENT: Final = "psereceiver"


class DeliveryKind(enum.StrEnum):
    """What a recipient's queue entry carries."""

    MESSAGE = "message"  # a message for the recipient's Inbox
    RECEIPT = "receipt"  # for a sender: all recipients of one of its messages were served


@dataclasses.dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """One attachment's metadata as it travels with a message."""

    seq_no: int
    file_name: str
    file_type: str
    file_size: int
    download_flag: int  # 1: fetched with the message; 0: fetched on demand
    sha256: str  # lowercase hex of the file's bytes


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message a gateway submits (one Outbox row, validated and qualified)."""

    tx_message_id: str
    app_code: str
    source_domain: str
    agent_sender: str
    sender: str
    receiver_type: str
    receivers: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    content: str
    content_type: str
    alert_flag: bool
    priority: str
    keywords: str
    transmit_time: str  # yyyy-MM-dd HH:mm:ss, when the gateway sent it
    attachments: tuple[AttachmentInfo, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class RecallOutcome:
    """What a RECALL did to the recalled message's recipients."""

    recalled_message_id: str
    withdrawn: int  # entries removed before their recipient fetched them
    notified: int  # recipients that had it already and got a RECALL message


@dataclasses.dataclass(frozen=True, slots=True)
class SubmitResult:
    """The server's answer for one submitted message."""

    tx_message_id: str
    accepted: bool
    message_id: str = ""
    recipients: int = 0  # queue entries created (To + Bcc, known accounts only)
    unknown: tuple[str, ...] = ()  # recipients the server does not know
    reason: str = ""  # why it was refused (when not accepted)
    served_at_once: bool = False  # nothing left to deliver (e.g. a RECALL): 19 -> 29
    recall: RecallOutcome | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A message as a recipient receives it (one future Inbox row)."""

    rx_message_id: str  # the queue entry's id: unique per recipient
    message_id: str
    app_code: str
    source_domain: str
    agent_sender: str
    sender: str
    owner: str  # the recipient this copy belongs to
    receiver_type: str
    receiver_list: str  # ';'-joined
    bcc_list: str  # '' for To recipients, the recipient itself for a Bcc recipient
    subject: str
    content: str
    content_type: str
    alert_flag: bool
    priority: str
    keywords: str
    transmit_time: str
    attachments: tuple[AttachmentInfo, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """Tells a sender that every recipient of its message has been served."""

    entry_id: str  # the queue entry to acknowledge
    tx_message_id: str
    message_id: str
    served: int
    recalled: int


@dataclasses.dataclass(frozen=True, slots=True)
class FetchRequest:
    """A ``fetch``: up to ``max_items`` entries, waiting up to ``wait`` seconds, after
    acknowledging ``acked`` (the entries of the caller's previous batch, if stored)."""

    max_items: int
    wait: float
    acked: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class FetchBatch:
    """One answer to a fetch: deliveries and receipts, oldest first within priority."""

    deliveries: tuple[Delivery, ...] = ()
    receipts: tuple[Receipt, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ServerEvent:
    """One thing that happened to a message on the server (``history`` op)."""

    at: str  # ISO-8601 UTC with microseconds, like the gateway's history
    kind: str  # received, fetched, acknowledged, withdrawn, recalled, served, ...
    account: str  # the account that did it or got it
    detail: str = ""
