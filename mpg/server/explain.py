"""Why a message did (not) reach one recipient: the chain of delivery, walked (PURE).

``mpg server explain MESSAGEID RECIPIENT`` and the admin API's
``/messages/{id}/explain`` answer one question: where did the delivery of this
message to this recipient stop? :mod:`mpg.server.deliveryfacts` reads what the
server's tables know (:class:`Facts`); :func:`walk` turns it into the chain of
:class:`Link` s in the order a delivery passes them (docs/push.md, "Explaining a
non-delivery"):

``message`` (known) → ``accepted`` → ``recipient`` (an account or a registered device)
→ ``device`` (not removed, not disabled; ``account`` for others) → ``group`` →
``subscribed`` → ``queued`` (an entry for the recipient) → ``recall`` → ``token`` →
``push`` → ``fetched`` → ``acknowledged`` → ``read`` (devices only: gateways do not
report reads).

Links that do not apply are left out: no device links for a gateway, no ``token``
and ``push`` for a message without AlertFlag, ``recall`` only for a recalled
message. The walk stops at the first broken link: what comes after it did not happen
because of it. A step that happened anyway (a device that fetched without a push)
keeps the chain whole.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Final

from mpg.server import addressing
from mpg.server.states import EntryState

#: Link names, in chain order.
MESSAGE: Final = "message"
ACCEPTED: Final = "accepted"
RECIPIENT: Final = "recipient"
ACCOUNT: Final = "account"
DEVICE: Final = "device"
GROUP: Final = "group"
SUBSCRIBED: Final = "subscribed"
QUEUED: Final = "queued"
RECALL: Final = "recall"
TOKEN: Final = "token"  # noqa: S105 (a link's name, no secret)
PUSH: Final = "push"
FETCHED: Final = "fetched"
ACKNOWLEDGED: Final = "acknowledged"
READ: Final = "read"

#: ``Device.PushTokenState`` values (as :mod:`mpg.server.push.jobs` writes them).
TOKEN_REMOVED: Final = "removed"  # noqa: S105
TOKEN_FLAGGED: Final = "flagged"  # noqa: S105


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """One step of a delivery: whether it happened (``ok``) and what is known of it."""

    name: str
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class Explanation:
    """The chain of one message to one recipient, up to its first broken link."""

    message_id: str
    recipient: str
    links: tuple[Link, ...]

    @property
    def first_broken(self) -> Link | None:
        """The first link that did not hold, or None: nothing is missing."""
        return next((link for link in self.links if not link.ok), None)

    @property
    def unknown(self) -> str | None:
        """``message`` or ``recipient`` when the server knows no such one, else None."""
        broken = self.first_broken
        if broken is not None and broken.name in (MESSAGE, RECIPIENT):
            return broken.name
        return None

    def summary(self) -> str:
        """One sentence for people: where the delivery stopped, or that it did not."""
        broken = self.first_broken
        if broken is None:
            last = self.links[-1].detail if self.links else "nothing to explain"
            return f"{self.message_id} to {self.recipient}: no broken link ({last})."
        return f"{self.message_id} to {self.recipient} stopped at '{broken.name}': {broken.detail}."

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (CLI ``--json`` and the admin API)."""
        broken = self.first_broken
        return {
            "message_id": self.message_id,
            "recipient": self.recipient,
            "delivered": broken is None,
            "first_broken": None if broken is None else broken.name,
            "summary": self.summary(),
            "links": [dataclasses.asdict(link) for link in self.links],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """What the chain needs of the message (its ``TransmitQueue`` row and events)."""

    received_at: float
    #: The reason it was refused at submit; "" when accepted.
    refusal: str = ""
    alert: bool = False
    #: The recipient is named in the To or Bcc list itself (not through an address).
    direct: bool = False
    #: The group and category addresses of its To and Bcc lists.
    addresses: tuple[addressing.Address, ...] = ()
    recalled_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    """A device's push token as the ``Device`` row holds it now."""

    present: bool
    set_at: float | None = None
    #: ``removed`` / ``flagged`` (for the token of that time), or None.
    state: str | None = None
    state_at: float | None = None
    reason: str = ""

    @property
    def verdict(self) -> str | None:
        """The hygiene state that holds for the current token (a newer token clears it)."""
        if self.state is None or self.state_at is None:
            return None
        if self.set_at is not None and self.set_at > self.state_at:
            return None
        return self.state


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """A registered device (its ``Device`` and ``Subscription`` rows)."""

    group: str
    registered_at: float
    token: Token
    #: Category -> Unix time subscribed.
    subscriptions: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Removal:
    """When and why a device was removed (``DeviceRemoval``)."""

    at: float
    reason: str
    group: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Push:
    """The newest push job of the message for the device (``PushJob``)."""

    #: ``PushJob.State`` (mpg.server.push.jobs.JobState, which imports the database):
    #: pending | leased | sent | failed | parked | cancelled.
    state: str
    attempts: int = 0
    last_error: str = ""
    not_before: float | None = None
    done_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Facts:
    """Everything the server knows of one message and one recipient."""

    message_id: str
    recipient: str
    #: None: no such message.
    message: Message | None = None
    #: The recipient's AccountId; None: no account and no device of that name.
    account: str | None = None
    disabled: bool = False
    device: Device | None = None
    removal: Removal | None = None
    #: ``ReceiveQueue.State`` of the recipient's entry; None: no entry.
    entry: str | None = None
    push: Push | None = None
    fetched_at: float | None = None
    acked_at: float | None = None
    read_at: float | None = None
    withdrawn_at: float | None = None

    @property
    def is_device(self) -> bool:
        """A registered device (or one that was, until removed)."""
        return self.device is not None or self.removal is not None

    @property
    def fetched(self) -> bool:
        """The recipient fetched the message (leased or acknowledged it)."""
        return self.fetched_at is not None or self.entry in (EntryState.LEASED, EntryState.ACKED)

    @property
    def acked(self) -> bool:
        """The recipient stored the message."""
        return self.entry == EntryState.ACKED or self.acked_at is not None

    @property
    def complete(self) -> bool:
        """Nothing more is to happen: read by a device, stored by anyone else."""
        return self.read_at is not None if self.is_device else self.acked


def when(at: float | None) -> str:
    """A Unix time as people read it (UTC), or ``?``."""
    if at is None:
        return "?"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def unknown_message(message_id: str) -> str:
    """The detail of the ``message`` link when the server has no such message."""
    return f"no message {message_id} on this server (never accepted, or removed by retention)"


class _Chain:
    """Links added in order; :meth:`add` says whether to go on."""

    def __init__(self) -> None:
        self.links: list[Link] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.links.append(Link(name, ok, detail))
        return ok


def walk(facts: Facts) -> Explanation:
    """The chain of ``facts``, up to and including its first broken link."""
    chain = _Chain()
    steps: tuple[Callable[[Facts, _Chain], bool], ...] = (
        _message,
        _recipient,
        _device,
        _reach,
        _queued,
        _recall,
        _push,
        _received,
    )
    for step in steps:
        if not step(facts, chain):
            break
    return Explanation(facts.message_id, facts.recipient, tuple(chain.links))


def _message(facts: Facts, chain: _Chain) -> bool:
    msg = facts.message
    if msg is None:
        return chain.add(MESSAGE, False, unknown_message(facts.message_id))
    chain.add(MESSAGE, True, f"received at {when(msg.received_at)}")
    if msg.refusal:
        return chain.add(ACCEPTED, False, f"refused at submit: {msg.refusal}")
    return chain.add(ACCEPTED, True, "accepted")


def _recipient(facts: Facts, chain: _Chain) -> bool:
    if facts.account is None:
        return chain.add(
            RECIPIENT, False, f"{facts.recipient} is no account or registered device here"
        )
    what = "device" if facts.is_device else "account"
    return chain.add(RECIPIENT, True, f"{what} {facts.account}")


def _device(facts: Facts, chain: _Chain) -> bool:
    """Removed or disabled: broken unless the delivery was complete before."""
    complete = facts.complete
    after = ", after the message was read" if facts.is_device else ", after it was stored"
    if facts.device is None and facts.removal is not None:
        removal = facts.removal
        text = f"removed at {when(removal.at)}: {removal.reason}"
        return chain.add(DEVICE, complete, text + (after if complete else ""))
    if facts.disabled:
        name = DEVICE if facts.is_device else ACCOUNT
        return chain.add(name, complete, "its account is disabled" + (after if complete else ""))
    if facts.device is not None:
        chain.add(DEVICE, True, f"registered at {when(facts.device.registered_at)}")
    return True


def _reach(facts: Facts, chain: _Chain) -> bool:
    """How the message's lists reached a device; without an entry, why they did not."""
    device, msg = facts.device, facts.message
    if device is None or msg is None:
        return True
    if facts.entry is not None:
        how = "named in the list" if msg.direct else _reached_by(msg, device)
        return chain.add(GROUP, True, f"in group {device.group}, {how}")
    if msg.direct:
        return True  # named but no entry: the queued link says so
    mine = [a for a in msg.addresses if a.group == device.group]
    if not mine:
        sent = ", ".join(str(a) for a in msg.addresses) or "no group address"
        return chain.add(
            GROUP, False, f"the device is in group {device.group}; the message went to {sent}"
        )
    if device.registered_at > msg.received_at:
        return chain.add(
            GROUP,
            False,
            f"the device registered at {when(device.registered_at)}, "
            f"after the message was sent at {when(msg.received_at)}",
        )
    chain.add(GROUP, True, f"in group {device.group}")
    if any(a.category is None for a in mine):
        return True
    wanted = sorted(str(a.category) for a in mine)
    held = [c for c in wanted if c in device.subscriptions]
    if not held:
        cats = ", ".join(f"{device.group}/{c}" for c in wanted)
        return chain.add(SUBSCRIBED, False, f"not subscribed to {cats}")
    first = min(held, key=lambda c: device.subscriptions[c])
    at = device.subscriptions[first]
    if at <= msg.received_at:
        return chain.add(SUBSCRIBED, True, f"subscribed to {device.group}/{first}")
    return chain.add(
        SUBSCRIBED,
        False,
        f"subscribed to {device.group}/{first} only at {when(at)}, "
        f"after the message was sent at {when(msg.received_at)}",
    )


def _reached_by(msg: Message, device: Device) -> str:
    mine = [str(a) for a in msg.addresses if a.group == device.group]
    return "reached through " + ", ".join(mine) if mine else "reached"


def _queued(facts: Facts, chain: _Chain) -> bool:
    if facts.entry is None:
        return chain.add(QUEUED, False, f"{facts.recipient} is not among the message's recipients")
    return chain.add(QUEUED, True, "queued for it")


def _recall(facts: Facts, chain: _Chain) -> bool:
    msg = facts.message
    if msg is None or msg.recalled_at is None:
        return True
    if facts.entry == EntryState.WITHDRAWN:
        at = facts.withdrawn_at if facts.withdrawn_at is not None else msg.recalled_at
        return chain.add(
            RECALL, False, f"recalled by the sender at {when(at)}, before it was stored"
        )
    return chain.add(RECALL, True, f"recalled at {when(msg.recalled_at)}, after it was stored")


def _push(facts: Facts, chain: _Chain) -> bool:
    """Token and push: needed only for an AlertFlag message to a device not yet fetched."""
    msg, device = facts.message, facts.device
    if msg is None or not facts.is_device:
        return True
    if not msg.alert:
        return chain.add(PUSH, True, "no push asked (AlertFlag 0)")
    push = facts.push
    if push is not None and push.state == "sent":
        return chain.add(PUSH, True, f"accepted by the provider at {when(push.done_at)}")
    anyway = facts.fetched
    if device is not None and not _token(device.token, msg, push, anyway, chain):
        return False
    if push is None:
        return chain.add(PUSH, anyway, "no push job was made for this device" + _anyway(anyway))
    return chain.add(PUSH, anyway, _push_state(push) + _anyway(anyway))


def _token(token: Token, msg: Message, push: Push | None, anyway: bool, chain: _Chain) -> bool:
    verdict = token.verdict
    if verdict == TOKEN_REMOVED:
        text = f"push token removed at {when(token.state_at)}: {token.reason}"
    elif verdict == TOKEN_FLAGGED:
        text = f"push token flagged at {when(token.state_at)} (not pushed to): {token.reason}"
    elif not token.present and token.state is None:
        text = "the device never gave a push token"
    elif not token.present:
        text = f"no push token (removed at {when(token.state_at)}: {token.reason})"
    elif push is None and token.set_at is not None and token.set_at > msg.received_at:
        text = (
            f"no push token when the message was sent; the device set one at {when(token.set_at)}"
        )
    else:
        return chain.add(TOKEN, True, f"push token set at {when(token.set_at)}")
    return chain.add(TOKEN, anyway, text + _anyway(anyway))


def _anyway(fetched: bool) -> str:
    return "; the device fetched the message anyway" if fetched else ""


def _push_state(push: Push) -> str:
    tries = f"{push.attempts} attempt(s)"
    error = push.last_error or "no reason recorded"
    if push.state == "pending" and push.attempts:
        return f"push still retrying after {tries}: {error}; next try at {when(push.not_before)}"
    if push.state == "pending":
        return f"push waiting to be sent (due at {when(push.not_before)})"
    if push.state == "leased":
        return f"push being sent now ({tries})"
    if push.state == "parked":
        return f"push parked by a provider configuration alarm: {error}"
    if push.state == "cancelled":
        return f"push cancelled: {error}"
    return f"push failed at {when(push.done_at)} after {tries}: {error}"


def _received(facts: Facts, chain: _Chain) -> bool:
    """Fetched, acknowledged and (devices) read."""
    pushed = facts.push is not None and facts.push.state == "sent"
    if not facts.fetched:
        if pushed and facts.push is not None:
            why = f"push accepted at {when(facts.push.done_at)} but the message was never fetched"
        else:
            why = "the message was never fetched"
        return chain.add(FETCHED, False, why)
    if not chain.add(FETCHED, True, f"fetched at {when(facts.fetched_at)}"):
        return False
    if not facts.acked:
        return chain.add(
            ACKNOWLEDGED,
            False,
            f"fetched at {when(facts.fetched_at)} but never acknowledged "
            "(it is delivered again when the lease runs out)",
        )
    if not chain.add(ACKNOWLEDGED, True, f"acknowledged at {when(facts.acked_at)}"):
        return False
    if not facts.is_device:
        return True
    if facts.read_at is None:
        return chain.add(
            READ, False, f"acknowledged at {when(facts.acked_at)} but never reported read"
        )
    return chain.add(READ, True, f"read at {when(facts.read_at)}")
