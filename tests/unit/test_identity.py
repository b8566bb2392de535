"""Who a message may claim to be from, and when two submissions are the same message."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from payload_strategies import messages

from mpg.server import identity
from mpg.wire import model

GATEWAY = "erp-a@example.com"


def message(
    agent: str = GATEWAY, sender: str = "alice", **changes: object
) -> model.OutgoingMessage:
    """A message as the gateway of ``GATEWAY`` submits it (SourceDomain example.com)."""
    msg = model.OutgoingMessage(
        tx_message_id="tx-1",
        app_code="BPM",
        source_domain="example.com",
        agent_sender=agent,
        sender=sender,
        receiver_type="U",
        receivers=("bob@example.com",),
        bcc=(),
        subject="subject",
        content="<content/>",
        content_type="MSG",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 05:41:07",
        attachments=(model.AttachmentInfo(1, "a.pdf", "pdf", 3, 1, "ab" * 32),),
    )
    return dataclasses.replace(msg, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("agent", "sender"),
    [
        (GATEWAY, "alice"),  # qualified with SourceDomain
        ("ERP-A@Example.COM", "Alice@EXAMPLE.com"),  # case does not matter
        ("erp-a", ""),  # AgentSender qualified too; empty Sender is the account
        (GATEWAY, GATEWAY),
    ],
)
def test_gateway_may_name_itself_and_users_of_its_domain(agent: str, sender: str) -> None:
    """Allowed: the account as AgentSender, a user of the account's domain as Sender."""
    assert identity.refusal(GATEWAY, "gateway", message(agent, sender)) == ""


def test_another_agent_sender_is_refused_naming_both_accounts() -> None:
    """AgentSender must be the authenticated account, whatever else is right."""
    assert identity.refusal(GATEWAY, "gateway", message("erp-b@example.com")) == (
        "AgentSender 'erp-b@example.com' is not the authenticated account 'erp-a@example.com'"
    )


def test_empty_agent_sender_is_refused() -> None:
    """A client must say who it is; an empty AgentSender is not the account."""
    reason = identity.refusal(GATEWAY, "gateway", message("", source_domain=""))
    assert reason.startswith("AgentSender '(empty)' is not")


def test_sender_of_another_domain_is_refused_saying_what_is_allowed() -> None:
    """The CEO of another company is not a user of this gateway's domain."""
    reason = identity.refusal(GATEWAY, "gateway", message(sender="ceo@other.example"))
    assert reason == (
        "Sender 'ceo@other.example' is not allowed for account 'erp-a@example.com': "
        "it may name itself or a user of @example.com"
    )


def test_sourcedomain_does_not_widen_the_senders_allowed() -> None:
    """Qualifying with another SourceDomain gives a Sender of that domain: refused."""
    msg = message(GATEWAY, "ceo", source_domain="other.example")
    assert "Sender 'ceo@other.example' is not allowed" in identity.refusal(GATEWAY, "gateway", msg)


@pytest.mark.parametrize(("account", "kind"), [("bob@example.com", "user"), ("SN-1", "device")])
def test_users_and_devices_may_name_only_themselves(account: str, kind: str) -> None:
    """Only a gateway acts for others."""
    assert identity.refusal(account, kind, message(account, account)) == ""
    reason = identity.refusal(account, kind, message(account, "carol@example.com"))
    assert reason.endswith("it may name only itself")


def test_gateway_without_a_domain_may_name_only_itself() -> None:
    """An account without '@' has no domain whose users it could stand for."""
    msg = message("gw", "alice@example.com", source_domain="")
    assert identity.refusal("gw", "gateway", msg).endswith("it may name only itself")


def test_sender_shown_is_qualified_or_the_account() -> None:
    """Recipients see the Sender qualified with SourceDomain, or the account itself."""
    assert identity.sender_shown(GATEWAY, message(sender="alice")) == "alice@example.com"
    assert identity.sender_shown(GATEWAY, message(sender="")) == GATEWAY
    assert identity.sender_shown("SN-1", message("SN-1", "sn-1")) == "SN-1"


def test_digest_ignores_transmit_time_and_download_flag() -> None:
    """A retry of the same row (new TransmitTime, another default flag) is the same."""
    msg = message()
    retry = dataclasses.replace(
        msg,
        transmit_time="2026-11-24 00:00:00",
        attachments=(dataclasses.replace(msg.attachments[0], download_flag=0),),
    )
    assert identity.digest(retry) == identity.digest(msg)


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "other"},
        {"content": "<other/>"},
        {"receivers": ("carol@example.com",)},
        {"bcc": ("carol@example.com",)},
        {"sender": "carol"},
        {"priority": "E"},
        {"alert_flag": True},
        {"attachments": ()},
        {"attachments": (model.AttachmentInfo(1, "a.pdf", "pdf", 3, 1, "cd" * 32),)},
    ],
)
def test_digest_changes_with_the_content(change: dict[str, object]) -> None:
    """Anything the ERP wrote, or an attachment's bytes, makes another message."""
    assert identity.digest(message(**change)) != identity.digest(message())


def test_digest_is_the_one_stored_rows_hold() -> None:
    """Stored ContentDigest values were made with this exact form: a change of it would
    refuse every resubmission of a message accepted before the upgrade."""
    assert identity.digest(message()) == (
        "d0ba1fa8a2ad2b4cf6179ea3a649b9ca54f8b1702e971b0fb73d01edb1ad8265"
    )
    assert identity.digest(message(subject='請假 "x" \\ \t', sender="Ålice")) == (
        "5ce9b738b9c61eac80392108ec81c8ffc0775c98c694ad61a6608aa1a91af0fe"
    )


@given(messages)
def test_digest_text_is_the_sorted_compact_json_of_the_identifying_fields(
    msg: model.OutgoingMessage,
) -> None:
    """The text written directly is byte for byte what ``json.dumps`` makes of the
    fields (the form every stored ContentDigest was made from), for any text."""
    fields = {
        "tx": msg.tx_message_id,
        "app_code": msg.app_code,
        "source_domain": msg.source_domain,
        "agent_sender": msg.agent_sender.casefold(),
        "sender": msg.sender.casefold(),
        "receiver_type": msg.receiver_type,
        "receivers": [name.casefold() for name in msg.receivers],
        "bcc": [name.casefold() for name in msg.bcc],
        "subject": msg.subject,
        "content": msg.content,
        "content_type": msg.content_type,
        "alert_flag": msg.alert_flag,
        "priority": msg.priority,
        "keywords": msg.keywords,
        "attachments": [
            [a.seq_no, a.file_name, a.file_type, a.file_size, a.sha256.lower()]
            for a in msg.attachments
        ],
    }
    expected = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert identity.canonical_text(msg) == expected
