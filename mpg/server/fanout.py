"""The server's rules for fan-out and recall, as pure functions (no database, no clock).

The store (:mod:`mpg.server.queues`) reads what the rules need (which accounts
exist, which uploads are staged, which entries a message has), asks these
functions what to do and writes the answer. So the rules are tested without a
database (``tests/unit/test_fanout.py``), and a change of rule is a change here.

* Fan-out: To and Bcc names are qualified with the message's SourceDomain (user
  messages), looked up among the enabled accounts of the right kind, and each known
  recipient gets one entry; a message with no known recipient, or whose attachments
  are not uploaded completely as announced, is refused.
* Recall: a message to ``psereceiver`` must be a RECALL addressed to it alone,
  naming a message the same sender sent. Entries not yet fetched are withdrawn;
  those leased are withdrawn too, and whoever fetched it (leased or acknowledged)
  gets the RECALL, since they may hold the message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from mpg import errors
from mpg.server import accounts
from mpg.server.states import EntryState, MessageState
from mpg.wire import content, model, recipients

#: Unknown recipients a submit result names at most (a reason names ten and the count).
MAX_LISTED: Final = 100
#: Queue order of the priority codes: E, H, N, L.
PRIORITY_RANK: Final = {code: rank for rank, code in enumerate(model.PRIORITIES)}
DEFAULT_RANK: Final = PRIORITY_RANK[model.DEFAULT_PRIORITY]


def rank(priority: str | None) -> int:
    """The queue rank of a Priority code; an unknown or missing one ranks as N."""
    return PRIORITY_RANK.get(priority or "", DEFAULT_RANK)


def is_server_agent(msg: model.OutgoingMessage) -> bool:
    """True for a message addressed to the server's own receiving agent."""
    return any(name.strip().lower() == model.SERVER_AGENT for name in (*msg.receivers, *msg.bcc))


def qualified(msg: model.OutgoingMessage) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """To and Bcc lists with user accounts qualified by the message's SourceDomain."""
    if msg.receiver_type == "D":
        return msg.receivers, msg.bcc
    return (
        tuple(recipients.qualify(name, msg.source_domain) for name in msg.receivers),
        tuple(recipients.qualify(name, msg.source_domain) for name in msg.bcc),
    )


def stored_name(name: str, receiver_type: str) -> str:
    """The Account row a recipient name is looked up as."""
    return accounts.normalize(name, "device" if receiver_type == "D" else "user")


def lookup_names(msg: model.OutgoingMessage) -> list[str]:
    """Every account name the fan-out of ``msg`` looks up."""
    to, bcc = qualified(msg)
    return [stored_name(name, msg.receiver_type) for name in (*to, *bcc)]


@dataclasses.dataclass(frozen=True, slots=True)
class Staged:
    """What the store knows of one staged attachment upload."""

    complete: bool
    size: int
    sha256: str | None
    path: str
    #: The data key the staged file is encrypted under; None: a clear file of an
    #: older version.
    key_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The decision on one plain message: who gets it, who is unknown, or why not."""

    known: tuple[recipients.Recipient, ...]
    unknown: tuple[str, ...]
    reason: str  # '' when accepted

    @property
    def accepted(self) -> bool:
        """Whether the message is queued (else refused for ``reason``)."""
        return not self.reason


def plan(
    msg: model.OutgoingMessage,
    kinds: Mapping[str, str],
    stages: Mapping[tuple[str, int], Staged],
) -> Plan:
    """Decide a plain message: its known recipients, the unknown names, or a refusal.

    ``kinds`` maps enabled account names to their kind; ``stages`` maps
    ``(TxMessageId, SeqNo)`` to the sender's staged uploads.
    """
    allowed = accounts.DEVICE_KINDS if msg.receiver_type == "D" else accounts.USER_KINDS
    to, bcc = qualified(msg)
    known: list[recipients.Recipient] = []
    unknown: list[str] = []
    for rcpt in recipients.expand(to, bcc):
        name = stored_name(rcpt.account, msg.receiver_type)
        if kinds.get(name) in allowed:
            known.append(recipients.Recipient(name, rcpt.visible_bcc))
        else:
            unknown.append(rcpt.account)
    reason = ""
    if not known:
        reason = "no known recipient: " + listed(unknown) if unknown else "no recipient"
    for info in msg.attachments:
        stage = stages.get((msg.tx_message_id, info.seq_no))
        if stage is None or not stage.complete:
            reason = reason or f"attachment {info.seq_no} is not uploaded completely"
        elif stage.size != info.file_size or stage.sha256 != info.sha256:
            reason = reason or f"attachment {info.seq_no} does not match the upload"
    return Plan(tuple(known), tuple(unknown), reason)


def listed(names: Sequence[str], shown: int = 10) -> str:
    """The first ``shown`` names joined with ';', and how many more there are."""
    text = ";".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def recall_request(msg: model.OutgoingMessage) -> tuple[str, str]:
    """``(MessageId to recall, '')`` for a valid RECALL, else ``('', reason)``."""
    if msg.content_type != "RECALL" or len(msg.receivers) + len(msg.bcc) != 1:
        return "", f"{model.SERVER_AGENT} accepts only a RECALL addressed to it alone"
    try:
        return content.parse_recall(msg.content), ""
    except (errors.WireError, errors.ValidationError) as exc:
        return "", f"RECALL content: {exc}"


def recall_refusal(
    recalled_id: str, sender: str, target_sender: str | None, target_state: str | None
) -> str:
    """Why ``sender`` may not recall ``recalled_id`` ('' when it may).

    ``target_sender``/``target_state`` are those of the message found (``None``:
    no such message).
    """
    if target_sender is None or target_state == MessageState.REFUSED:
        return f"no message {recalled_id} to recall"
    if target_sender != sender:
        return f"message {recalled_id} was not sent by {sender}"
    return ""


@dataclasses.dataclass(frozen=True, slots=True)
class Recall:
    """What a recall does to a message's entries."""

    withdrawn: tuple[str, ...]  # EntryIds not yet fetched
    leased: tuple[str, ...]  # EntryIds fetched but not acknowledged (withdrawn too)
    notified: tuple[str, ...]  # recipients who get the RECALL, each once, in entry order

    @property
    def taken(self) -> frozenset[str]:
        """Every EntryId the recall withdraws."""
        return frozenset((*self.withdrawn, *self.leased))


def recall(entries: Iterable[tuple[str, str, str]]) -> Recall:
    """Split a message's ``(EntryId, Recipient, State)`` entries for a recall."""
    rows = list(entries)
    return Recall(
        withdrawn=tuple(e for e, _, s in rows if s == EntryState.QUEUED),
        leased=tuple(e for e, _, s in rows if s == EntryState.LEASED),
        notified=tuple(
            dict.fromkeys(r for _, r, s in rows if s in (EntryState.LEASED, EntryState.ACKED))
        ),
    )
