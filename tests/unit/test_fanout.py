"""The server's fan-out and recall rules, without a database."""

from __future__ import annotations

import dataclasses

from mpg.server import fanout
from mpg.server.states import EntryState, MessageState
from mpg.wire import content, model
from mpg.wire.recipients import Recipient

MESSAGE = model.OutgoingMessage(
    tx_message_id="tx-1",
    app_code="APP",
    source_domain="example.com",
    agent_sender="erp",
    sender="boss",
    receiver_type="U",
    receivers=("Alice", "bob"),
    bcc=("carol", "alice"),
    subject="s",
    content="c",
    content_type="TEXT",
    alert_flag=False,
    priority="N",
    keywords="",
    transmit_time="2026-11-30 12:00:00",
)
USERS = {"alice@example.com": "user", "bob@example.com": "user", "carol@example.com": "user"}
PHOTO = model.AttachmentInfo(1, "a.png", "png", 10, 1, "ab" * 32)


def message(**changes: object) -> model.OutgoingMessage:
    return dataclasses.replace(MESSAGE, **changes)  # type: ignore[arg-type]


def test_every_known_recipient_gets_one_entry_and_bcc_sees_only_itself() -> None:
    """To wins over Bcc; names are qualified with SourceDomain and lower-cased."""
    plan = fanout.plan(MESSAGE, USERS, {})
    assert plan.accepted
    assert plan.known == (
        Recipient("alice@example.com", ""),
        Recipient("bob@example.com", ""),
        Recipient("carol@example.com", "carol@example.com"),
    )
    assert plan.unknown == ()


def test_unknown_names_are_reported_and_the_known_still_served() -> None:
    """A name without an enabled account is named in the answer, not fatal."""
    plan = fanout.plan(message(receivers=("alice", "nobody"), bcc=()), USERS, {})
    assert [r.account for r in plan.known] == ["alice@example.com"]
    assert plan.unknown == ("nobody@example.com",)


def test_a_message_without_a_known_recipient_is_refused_naming_them() -> None:
    """Nobody to deliver to: refused, the unknown names in the reason."""
    plan = fanout.plan(message(receivers=("x",), bcc=()), USERS, {})
    assert not plan.accepted
    assert plan.reason == "no known recipient: x@example.com"


def test_a_user_message_does_not_reach_a_device_account_of_that_name() -> None:
    """Receiver type U looks up user and gateway accounts only."""
    plan = fanout.plan(message(receivers=("alice",), bcc=()), {"alice@example.com": "device"}, {})
    assert plan.reason.startswith("no known recipient")


def test_device_messages_keep_serials_as_given() -> None:
    """Receiver type D: device serials are neither qualified nor lower-cased."""
    plan = fanout.plan(
        message(receiver_type="D", receivers=("SN-01",), bcc=()), {"SN-01": "device"}, {}
    )
    assert [r.account for r in plan.known] == ["SN-01"]


def test_attachments_must_be_staged_complete_and_match_the_announcement() -> None:
    """Missing, incomplete or different uploads refuse the message."""
    msg = message(attachments=(PHOTO,))
    good = fanout.Staged(True, 10, "ab" * 32, "/blobs/x")
    assert fanout.plan(msg, USERS, {("tx-1", 1): good}).accepted
    assert "not uploaded completely" in fanout.plan(msg, USERS, {}).reason
    partial = dataclasses.replace(good, complete=False)
    assert "not uploaded completely" in fanout.plan(msg, USERS, {("tx-1", 1): partial}).reason
    other = dataclasses.replace(good, size=11)
    assert "does not match" in fanout.plan(msg, USERS, {("tx-1", 1): other}).reason


def test_priority_ranks_e_h_n_l_and_unknown_as_n() -> None:
    """Queue order: E before H before N before L; anything else ranks as N."""
    assert [fanout.rank(p) for p in "EHNL"] == [0, 1, 2, 3]
    assert fanout.rank("") == fanout.rank(None) == fanout.rank("X") == fanout.rank("N")


def test_only_a_recall_addressed_to_psereceiver_alone_is_accepted() -> None:
    """The server agent takes RECALL content from one address line only."""
    recall = message(
        receivers=(model.SERVER_AGENT,),
        bcc=(),
        content_type="RECALL",
        content=content.build_recall("m-1"),
    )
    assert fanout.is_server_agent(recall)
    assert fanout.recall_request(recall) == ("m-1", "")
    assert fanout.recall_request(dataclasses.replace(recall, content_type="TEXT"))[1]
    assert fanout.recall_request(dataclasses.replace(recall, bcc=("bob",)))[1]
    assert fanout.recall_request(dataclasses.replace(recall, content="<x/>"))[1].startswith(
        "RECALL content"
    )


def test_a_sender_may_recall_only_its_own_accepted_message() -> None:
    """Unknown, refused or someone else's message: refused with the reason."""
    assert fanout.recall_refusal("m", "gw-a", "gw-a", MessageState.QUEUED) == ""
    assert fanout.recall_refusal("m", "gw-a", None, None) == "no message m to recall"
    assert fanout.recall_refusal("m", "gw-a", "gw-a", MessageState.REFUSED) == (
        "no message m to recall"
    )
    assert fanout.recall_refusal("m", "gw-a", "gw-b", MessageState.SERVED) == (
        "message m was not sent by gw-a"
    )


def test_recall_withdraws_unfetched_and_leased_and_notifies_who_fetched_it() -> None:
    """Queued: withdrawn silently; leased: withdrawn and notified; acked: notified."""
    split = fanout.recall(
        [
            ("e1", "alice", EntryState.QUEUED),
            ("e2", "bob", EntryState.LEASED),
            ("e3", "carol", EntryState.ACKED),
            ("e4", "dave", EntryState.WITHDRAWN),
            ("e5", "bob", EntryState.ACKED),
        ]
    )
    assert split.withdrawn == ("e1",)
    assert split.leased == ("e2",)
    assert split.notified == ("bob", "carol")
    assert split.taken == {"e1", "e2"}
