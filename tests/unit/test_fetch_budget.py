"""A fetch answer is cut to what the receiving side's parser takes (pure rules)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mpg.server import queues, rows
from mpg.wire import model, payloads, xmlsafe


def _message(**fields: str) -> dict[str, str]:
    """An opened TransmitQueue row (rows.opened_message) with these text fields."""
    base = dict.fromkeys(
        ("AppCode", "SourceDomain", "AgentSender", "Sender", "ReceiverList", "Keywords"), ""
    )
    return {**base, "Subject": "", "Content": "", **fields}


def test_the_prefix_that_fits_is_taken() -> None:
    assert rows.within_budget("abcd", [4, 4, 4, 4], 9) == ["a", "b"]


def test_a_first_item_over_the_budget_still_goes_alone() -> None:
    assert rows.within_budget("ab", [20, 1], 9) == ["a"]


def test_everything_fits() -> None:
    assert rows.within_budget("abc", [1, 1, 1], 9) == ["a", "b", "c"]


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=30), st.integers(1, 100))
def test_the_taken_prefix_fits_or_is_one_item(sizes: list[int], budget: int) -> None:
    taken = rows.within_budget(list(range(len(sizes))), sizes, budget)
    assert taken == list(range(len(taken)))
    assert len(taken) <= 1 or sum(sizes[: len(taken)]) <= budget
    if len(taken) < len(sizes):
        assert sum(sizes[: len(taken) + 1]) > budget


@given(st.text(max_size=300), st.text(max_size=60))
def test_the_size_bound_holds_for_the_built_answer(content: str, subject: str) -> None:
    """The upper bound is never below what the delivery's XML really takes."""
    content = xmlsafe_text(content)
    subject = xmlsafe_text(subject)
    msg = _message(Content=content, Subject=subject, ReceiverList="bob;carol")
    delivery = model.Delivery(
        rx_message_id="e" * 36,
        message_id="m" * 36,
        app_code="",
        source_domain="",
        agent_sender="",
        sender="",
        owner="bob@example.com",
        receiver_type="U",
        receiver_list="bob;carol",
        bcc_list="",
        subject=subject,
        content=content,
        content_type="TEXT",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time="2026-11-30 12:00:00",
        attachments=(),
    )
    built = payloads.build_deliveries(model.FetchBatch((delivery,), ()))
    empty = payloads.build_deliveries(model.FetchBatch((), ()))
    assert len(built) - len(empty) <= rows.delivery_bytes(msg, "")


def test_three_large_messages_never_share_an_answer_over_the_parser_limit() -> None:
    assert queues.MAX_FETCH_BYTES * 2 <= xmlsafe.MAX_BYTES
    big = rows.delivery_bytes(_message(Content="y" * 7_000_000), "")
    assert rows.within_budget("abc", [big] * 3, queues.MAX_FETCH_BYTES) == ["a"]


def xmlsafe_text(text: str) -> str:
    """Only characters XML 1.0 can carry (the gateway refuses the others up front)."""
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r" or ("\x20" <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd")
    )
