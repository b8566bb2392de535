"""Group and category addresses in recipient lists (mpg.server.addressing, pure)."""

from __future__ import annotations

import dataclasses

import pytest

from mpg.server import addressing, fanout
from mpg.server.addressing import Address
from mpg.wire import model

MSG = model.OutgoingMessage(
    tx_message_id="tx-1",
    app_code="ALERT",
    source_domain="example.com",
    agent_sender="erp@example.com",
    sender="erp@example.com",
    receiver_type="D",
    receivers=(),
    bcc=(),
    subject="Flood warning",
    content="Rhine at 7.2 m",
    content_type="MSG",
    alert_flag=True,
    priority="H",
    keywords="",
    transmit_time="2026-11-30 18:00:00",
)


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("group:north", Address("north")),
        ("group:north/floods", Address("north", "floods")),
        ("GROUP:North/Floods", Address("north", "floods")),
        ("  group:north  ", Address("north")),
        ("group:a-b_c/x_1", Address("a-b_c", "x_1")),
    ],
)
def test_a_group_or_category_address_is_recognised_in_any_case(
    entry: str, address: Address
) -> None:
    assert addressing.parse(entry) == address
    assert str(address) == entry.strip().lower()


@pytest.mark.parametrize(
    "entry",
    [
        "SERIAL-0042",
        "group:",
        "group:north/",
        "group:/floods",
        "group:north region",
        "group:north/floods/extra",
        "group:-north",
        "group:" + "n" * 51,
        "groups:north",
    ],
)
def test_anything_else_is_a_device_id(entry: str) -> None:
    assert addressing.parse(entry) is None


def test_device_ids_become_their_registered_accounts_or_stay_as_written() -> None:
    resolved = addressing.resolve(["SERIAL-1", "SERIAL-2"], {"SERIAL-1": "dev-aaa"}, members={})
    assert resolved == ("dev-aaa", "SERIAL-2")


def test_an_address_becomes_the_accounts_it_reaches_in_list_order() -> None:
    members = {Address("north", "floods"): ["dev-a", "dev-b"], Address("south"): ["dev-c"]}
    resolved = addressing.resolve(["SERIAL-1", "group:north/floods", "group:south"], {}, members)
    assert resolved == ("SERIAL-1", "dev-a", "dev-b", "dev-c")


def test_an_address_reaching_no_device_stays_so_the_fan_out_lists_it_unknown() -> None:
    msg = dataclasses.replace(MSG, receivers=("group:north/floods",))
    target = addressing.expanded(msg, {}, {Address("north", "floods"): []})
    assert target.receivers == ("group:north/floods",)
    plan = fanout.plan(target, kinds={}, stages={})
    assert plan.unknown == ("group:north/floods",)
    assert plan.reason == "no known recipient: group:north/floods"


def test_a_device_in_to_and_in_a_bcc_category_gets_one_copy_as_a_to_recipient() -> None:
    msg = dataclasses.replace(MSG, receivers=("group:north",), bcc=("group:north/floods",))
    members = {Address("north"): ["dev-a", "dev-b"], Address("north", "floods"): ["dev-b", "dev-c"]}
    target = addressing.expanded(msg, {}, members)
    kinds = {"dev-a": "device", "dev-b": "device", "dev-c": "device"}
    plan = fanout.plan(target, kinds, stages={})
    assert [(r.account, r.visible_bcc) for r in plan.known] == [
        ("dev-a", ""),
        ("dev-b", ""),
        ("dev-c", "dev-c"),
    ]


def test_a_user_addressed_message_is_left_alone() -> None:
    msg = dataclasses.replace(MSG, receiver_type="U", receivers=("group:north@example.com",))
    assert addressing.expanded(msg, {}, {Address("north"): ["dev-a"]}) is msg
    assert addressing.wanted([msg]) == addressing.Wanted(frozenset(), frozenset())


def test_wanted_collects_what_a_batch_looks_up() -> None:
    one = dataclasses.replace(MSG, receivers=("SERIAL-1", "group:north"), bcc=("group:north",))
    two = dataclasses.replace(MSG, tx_message_id="tx-2", receivers=("group:south/storms",))
    assert addressing.wanted([one, two]) == addressing.Wanted(
        frozenset({"SERIAL-1"}), frozenset({Address("north"), Address("south", "storms")})
    )
