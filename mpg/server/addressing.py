"""Group and category addresses in an Outbox row's recipient lists (PURE: no I/O).

Besides device ids, a row with ``ReceiverType`` ``D`` may name a whole message group
or one category of a group, mixed freely with device ids (docs/schema.md,
"Addressing devices"):

* ``group:north`` — every registered device of group ``north``;
* ``group:north/floods`` — the devices of ``north`` subscribed to its ``floods``.

The prefix is matched in any case and the ids are lower-cased (ids are lower-case
slugs). The server expands an address when the message is submitted, from what the
directory holds at that moment; a device of another group is never reached, because
the lookup is by group. An entry that is not a well-formed address is a device id.

How a list is resolved (:func:`resolve`): a device id becomes the account of the
device registered with it, or stays as written (a hand-made device account of that
name, as before issue 11); an address becomes the accounts it reaches, or, when it
reaches none, stays as written, so that the fan-out reports it among the unknown
recipients (and refuses the message when nothing else is known).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from mpg.wire import model

#: What starts a group or category address (any case).
PREFIX: Final = "group:"
#: Ids people choose (groups, categories): lower-case slugs.
SLUG: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A group (``category`` None) or one category of a group."""

    group: str
    category: str | None = None

    def __str__(self) -> str:
        suffix = "" if self.category is None else f"/{self.category}"
        return f"{PREFIX}{self.group}{suffix}"


def parse(entry: str) -> Address | None:
    """The address ``entry`` names, or None when it is a device id."""
    text = entry.strip()
    if text[: len(PREFIX)].lower() != PREFIX:
        return None
    group, slash, category = text[len(PREFIX) :].lower().partition("/")
    if not SLUG.fullmatch(group) or (slash and not SLUG.fullmatch(category)):
        return None
    return Address(group, category if slash else None)


@dataclasses.dataclass(frozen=True, slots=True)
class Wanted:
    """What the directory must look up for a batch of messages."""

    device_ids: frozenset[str]
    addresses: frozenset[Address]


def wanted(messages: Iterable[model.OutgoingMessage]) -> Wanted:
    """The device ids and addresses named by the device-addressed ``messages``."""
    ids: set[str] = set()
    found: set[Address] = set()
    for msg in messages:
        if msg.receiver_type != "D":
            continue
        for entry in (*msg.receivers, *msg.bcc):
            address = parse(entry)
            if address is None:
                ids.add(entry.strip())
            else:
                found.add(address)
    return Wanted(frozenset(ids), frozenset(found))


def resolve(
    entries: Sequence[str],
    devices: Mapping[str, str],
    members: Mapping[Address, Sequence[str]],
) -> tuple[str, ...]:
    """The accounts ``entries`` stand for, in list order (repeats are left to the fan-out).

    ``devices`` maps device ids to the accounts registered with them; ``members``
    maps each address to the accounts it reaches.
    """
    out: list[str] = []
    for entry in entries:
        address = parse(entry)
        if address is None:
            out.append(devices.get(entry.strip(), entry))
        else:
            out.extend(members.get(address) or (entry,))
    return tuple(out)


def expanded(
    msg: model.OutgoingMessage,
    devices: Mapping[str, str],
    members: Mapping[Address, Sequence[str]],
) -> model.OutgoingMessage:
    """``msg`` with its To and Bcc lists resolved to accounts (a ``U`` message as is)."""
    if msg.receiver_type != "D":
        return msg
    return dataclasses.replace(
        msg,
        receivers=resolve(msg.receivers, devices, members),
        bcc=resolve(msg.bcc, devices, members),
    )
