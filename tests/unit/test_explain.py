"""The chain of a delivery (mpg.server.explain): each kind of broken link, named first."""

from __future__ import annotations

import dataclasses

import pytest

from mpg.server import addressing, explain
from mpg.server.explain import Device, Facts, Message, Push, Removal, Token

T0 = 1_800_000_000.0
NORTH = addressing.Address("north")
FLOODS = addressing.Address("north", "floods")


def device(**changes: object) -> Device:
    base = Device(
        group="north",
        registered_at=T0 - 1000,
        token=Token(present=True, set_at=T0 - 900),
        subscriptions={"floods": T0 - 800},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def facts(**changes: object) -> Facts:
    """A device reached through group:north/floods that was pushed, fetched and read."""
    base = Facts(
        "m-1",
        "phone-1",
        Message(received_at=T0, alert=True, addresses=(FLOODS,)),
        account="dev-" + "a" * 32,
        device=device(),
        entry="acked",
        push=Push("sent", attempts=1, done_at=T0 + 1),
        fetched_at=T0 + 2,
        acked_at=T0 + 3,
        read_at=T0 + 60,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def broken(f: Facts) -> explain.Link:
    link = explain.walk(f).first_broken
    assert link is not None
    return link


def test_a_read_message_has_no_broken_link() -> None:
    found = explain.walk(facts())
    assert found.first_broken is None
    assert [link.name for link in found.links][-4:] == ["push", "fetched", "acknowledged", "read"]
    assert "no broken link" in found.summary()
    assert found.as_dict()["delivered"] is True


def test_an_unknown_message_is_the_first_broken_link() -> None:
    found = explain.walk(Facts("m-x", "phone-1"))
    assert found.unknown == "message"
    assert found.links == (explain.Link("message", False, explain.unknown_message("m-x")),)


def test_a_message_refused_at_submit_names_the_refusal() -> None:
    link = broken(facts(message=Message(received_at=T0, refusal="no known recipient")))
    assert (link.name, link.detail) == ("accepted", "refused at submit: no known recipient")


def test_an_unknown_recipient_is_named() -> None:
    found = explain.walk(facts(account=None, device=None))
    assert found.unknown == "recipient"
    assert "phone-1" in found.links[-1].detail


def test_a_removed_device_says_when_and_why() -> None:
    link = broken(
        facts(device=None, removal=Removal(T0 - 10, "removed by ops"), entry=None, read_at=None)
    )
    assert link.name == "device"
    assert "removed at 2027-01-15 07:59:50 UTC: removed by ops" in link.detail


def test_a_removal_after_the_message_was_read_breaks_nothing() -> None:
    found = explain.walk(facts(device=None, removal=Removal(T0 + 99, "removed by ops")))
    assert found.first_broken is None
    [device_link] = [link for link in found.links if link.name == "device"]
    assert device_link.detail.endswith("removed by ops, after the message was read")


def test_a_disabled_account_is_broken() -> None:
    link = broken(facts(disabled=True, read_at=None))
    assert (link.name, link.detail) == ("device", "its account is disabled")


def test_a_disabled_gateway_account_is_named_account() -> None:
    gateway = facts(
        device=None, disabled=True, entry="queued", push=None, fetched_at=None, acked_at=None
    )
    assert broken(gateway).name == "account"


def test_a_device_of_another_group_is_not_in_the_group() -> None:
    link = broken(facts(device=device(group="south"), entry=None))
    assert link.name == "group"
    assert "group south" in link.detail
    assert "group:north/floods" in link.detail


def test_a_device_registered_after_the_message_is_named() -> None:
    link = broken(facts(device=device(registered_at=T0 + 5), entry=None))
    assert link.name == "group"
    assert "after the message was sent" in link.detail


def test_an_unsubscribed_device_is_not_subscribed() -> None:
    link = broken(facts(device=device(subscriptions={}), entry=None))
    assert (link.name, link.detail) == ("subscribed", "not subscribed to north/floods")


def test_a_subscription_made_after_the_message_is_named() -> None:
    link = broken(facts(device=device(subscriptions={"floods": T0 + 30}), entry=None))
    assert link.name == "subscribed"
    assert "only at" in link.detail


def test_a_subscription_held_in_time_is_not_the_broken_link() -> None:
    link = broken(facts(device=device(subscriptions={"floods": T0 - 1}), entry=None))
    assert link.name == "queued"


def test_a_whole_group_address_needs_no_subscription() -> None:
    msg = Message(received_at=T0, alert=True, addresses=(NORTH,))
    link = broken(facts(message=msg, device=device(subscriptions={}), entry=None))
    assert link.name == "queued"


def test_a_recipient_without_entry_is_not_among_the_recipients() -> None:
    gateway = facts(device=None, entry=None)
    link = broken(gateway)
    assert (link.name, link.detail) == ("queued", "phone-1 is not among the message's recipients")


def test_a_recall_before_the_fetch_is_named() -> None:
    msg = Message(received_at=T0, alert=True, addresses=(FLOODS,), recalled_at=T0 + 5)
    link = broken(facts(message=msg, entry="withdrawn", fetched_at=None, acked_at=None))
    assert link.name == "recall"
    assert "before it was stored" in link.detail


def test_a_token_removed_by_hygiene_says_when_and_why() -> None:
    token = Token(
        present=False,
        set_at=T0 - 900,
        state="removed",
        state_at=T0 + 1,
        reason="fcm: token_gone UNREGISTERED",
    )
    f = facts(
        device=device(token=token),
        push=Push("failed", attempts=1, last_error="fcm: token_gone", done_at=T0 + 1),
        entry="queued",
        fetched_at=None,
        acked_at=None,
        read_at=None,
    )
    link = broken(f)
    assert link.name == "token"
    assert link.detail.endswith("fcm: token_gone UNREGISTERED")


def test_a_flagged_token_is_broken_until_a_new_one_is_set() -> None:
    flagged = Token(present=True, set_at=T0 - 900, state="flagged", state_at=T0 - 10, reason="bad")
    waiting = {"push": None, "entry": "queued", "fetched_at": None, "acked_at": None}
    assert broken(facts(device=device(token=flagged), **waiting)).name == "token"
    renewed = dataclasses.replace(flagged, set_at=T0 - 5)
    assert broken(facts(device=device(token=renewed), **waiting)).name == "push"


def test_a_device_without_a_token_never_gave_one() -> None:
    f = facts(device=device(token=Token(present=False)), push=None, entry="queued")
    f = dataclasses.replace(f, fetched_at=None, acked_at=None, read_at=None)
    assert broken(f).detail == "the device never gave a push token"


def test_a_device_that_fetched_without_push_keeps_the_chain_whole() -> None:
    f = facts(device=device(token=Token(present=False)), push=None)
    found = explain.walk(f)
    assert found.first_broken is None
    assert "fetched the message anyway" in found.links[-5].detail


def test_a_retrying_push_says_when_it_tries_again() -> None:
    retrying = Push("pending", attempts=2, last_error="fcm: retry 503", not_before=T0 + 120)
    f = facts(push=retrying, entry="queued", fetched_at=None, acked_at=None, read_at=None)
    link = broken(f)
    assert link.name == "push"
    assert "still retrying after 2 attempt(s): fcm: retry 503" in link.detail


def test_a_failed_push_names_the_provider_error() -> None:
    failed = Push("failed", attempts=1, last_error="apns: message_error 400", done_at=T0 + 1)
    f = facts(push=failed, entry="queued", fetched_at=None, acked_at=None, read_at=None)
    assert "push failed" in broken(f).detail


def test_a_message_without_alert_flag_needs_no_push() -> None:
    msg = Message(received_at=T0, alert=False, addresses=(FLOODS,))
    f = facts(message=msg, push=None, entry="queued", fetched_at=None, acked_at=None, read_at=None)
    found = explain.walk(f)
    assert found.links[-2] == explain.Link("push", True, "no push asked (AlertFlag 0)")
    assert found.links[-1].name == "fetched"


def test_a_push_accepted_but_never_fetched() -> None:
    link = broken(facts(entry="queued", fetched_at=None, acked_at=None, read_at=None))
    assert link.name == "fetched"
    assert link.detail.startswith("push accepted at 2027-01-15 08:00:01 UTC")


def test_a_fetch_never_acknowledged() -> None:
    link = broken(facts(entry="leased", acked_at=None, read_at=None))
    assert link.name == "acknowledged"


def test_a_device_that_stored_but_never_read() -> None:
    link = broken(facts(read_at=None))
    assert link.name == "read"
    assert "never reported read" in link.detail


def test_a_gateway_is_delivered_when_it_acknowledged() -> None:
    msg = Message(received_at=T0, alert=False, direct=True)
    found = explain.walk(facts(message=msg, device=None, push=None, read_at=None))
    assert found.first_broken is None
    assert found.links[-1].name == "acknowledged"


def test_the_summary_names_the_broken_link() -> None:
    text = explain.walk(facts(read_at=None)).summary()
    assert text.startswith("m-1 to phone-1 stopped at 'read': ")


@pytest.mark.parametrize(
    ("push", "expected"),
    [
        (Push("pending", not_before=T0 + 5), "push waiting to be sent (due at "),
        (Push("leased", attempts=1), "push being sent now (1 attempt(s))"),
        (Push("parked", last_error="hook: config_alarm 401"), "push parked by a provider"),
        (Push("cancelled", last_error="recalled before it was sent"), "push cancelled: recalled"),
        (None, "no push job was made for this device"),
    ],
)
def test_each_unsent_push_state_is_named(push: Push | None, expected: str) -> None:
    f = facts(push=push, entry="queued", fetched_at=None, acked_at=None, read_at=None)
    link = broken(f)
    assert link.name == "push"
    assert link.detail.startswith(expected)


def test_a_token_set_only_after_the_message_is_named() -> None:
    token = Token(present=True, set_at=T0 + 10)
    f = facts(device=device(token=token), push=None, entry="queued")
    f = dataclasses.replace(f, fetched_at=None, acked_at=None, read_at=None)
    link = broken(f)
    assert link.name == "token"
    assert "the device set one at" in link.detail
