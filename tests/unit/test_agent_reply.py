"""The phone agent's answer to an approval (mpg.agent.agent.reply_message): pure."""

from __future__ import annotations

from typing import Any

import pytest

from mpg import errors
from mpg.agent import agent
from mpg.wire import content

APPROVAL = content.build_approval(
    {"sheetno": "AF1"},
    [content.Page("p1", "Summary", "text")],
    [
        content.Input("note", "Note", type="textbox", isnullable=False, defaultvalue="ok"),
        content.Input(
            "decision",
            "Decision",
            type="submit",
            options=(content.Option("b1", "Yes", "Approve"), content.Option("b2", "No", "Reject")),
        ),
    ],
)


def row(**overrides: Any) -> dict[str, Any]:
    return {
        "RxMessageId": "rx-1",
        "AgentSender": "erp",
        "AppCode": "BPM",
        "Subject": "leave request",
        "Content": APPROVAL,
        **overrides,
    }


def test_the_reply_goes_to_the_senders_account_unqualified_with_the_approvals_ids() -> None:
    msg = agent.reply_message(row(), "dev-1", "approve", None, "utc")
    assert (msg.receivers, msg.source_domain, msg.agent_sender) == (("erp",), "", "dev-1")
    assert (msg.content_type, msg.app_code, msg.subject) == ("REPLY", "BPM", "Re: leave request")
    parsed = content.parse_content(msg.content)
    assert parsed.params == {"sheetno": "AF1"}
    # The option's own spelling; a required comment left out is the form's default.
    assert parsed.result_values == {"decision": "Approve", "note": "ok"}


def test_the_reply_id_is_the_same_for_the_same_message_and_device_only() -> None:
    first = agent.reply_message(row(), "dev-1", "approve", None, "utc").tx_message_id
    assert agent.reply_message(row(), "dev-1", "reject", "x", "utc").tx_message_id == first
    assert agent.reply_tx_id("dev-2", "rx-1") != first
    assert agent.reply_tx_id("dev-1", "rx-2") != first


def test_without_replyinfo_the_reference_ids_are_used() -> None:
    bare = content.build_approval({"k": "v"}, [], [])
    msg = agent.reply_message(row(Content=bare), "dev-1", "drop", "later", "utc")
    assert content.parse_content(msg.content).result_values == {
        "result": "drop",
        "comment": "later",
    }


def test_a_long_subject_is_cut_to_the_column_with_an_ellipsis() -> None:
    msg = agent.reply_message(row(Subject="x" * 300), "dev-1", "approve", None, "utc")
    assert len(msg.subject) == agent.SUBJECT_WIDTH
    assert msg.subject.endswith("…")


@pytest.mark.parametrize(
    ("changes", "answer", "reason"),
    [
        ({"Content": "plain text"}, "approve", "Content: not an approval"),
        ({}, "maybe", "'maybe' is not offered; choose one of Approve, Reject"),
        ({"AgentSender": ""}, "approve", "AgentSender: is empty: no one to reply to"),
    ],
    ids=["not-xml", "not-offered", "no-sender"],
)
def test_a_reply_that_cannot_be_built_names_the_row_and_the_reason(
    changes: dict[str, Any], answer: str, reason: str
) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        agent.reply_message(row(**changes), "dev-1", answer, None, "utc")
    assert str(caught.value).startswith("row rx-1: ")
    assert reason in str(caught.value)
