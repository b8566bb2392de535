"""Payload builders and parsers: a bad character is named in whatever field it is.

The builders and parsers check each item on a fast path and fall back to field-by-field
checks for the error message; these properties hold whichever path an item takes (the
round trips are in test_payloads.py, with the same strategies).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from payload_strategies import (
    attachments,
    bad_chars,
    deliveries,
    messages,
    receipts,
    results,
    some_text,
    xml_text,
)

from mpg import errors
from mpg.wire import model, payloads

#: Text fields of each item and where the builder's error names them.
DELIVERY_FIELDS = {
    "rx_message_id": "/@rx",
    "message_id": "/@messageId",
    "app_code": "/@appCode",
    "source_domain": "/@sourceDomain",
    "agent_sender": "/@agentSender",
    "sender": "/@sender",
    "owner": "/@owner",
    "content_type": "/@contentType",
    "receiver_list": "/receiverList",
    "bcc_list": "/bccList",
    "subject": "/subject",
    "keywords": "/keywords",
    "content": "/content",
}
MESSAGE_FIELDS = {
    "app_code": "/@appCode",
    "source_domain": "/@sourceDomain",
    "agent_sender": "/@agentSender",
    "sender": "/@sender",
    "content_type": "/@contentType",
    "subject": "/subject",
    "keywords": "/keywords",
    "content": "/content",
}
RECEIPT_FIELDS = {"entry_id": "/@entry", "tx_message_id": "/@tx", "message_id": "/@messageId"}
RESULT_FIELDS = {"tx_message_id": "/@tx", "message_id": "/@messageId", "reason": "/@reason"}
ATTACHMENT_FIELDS = {"file_name": "/@name", "file_type": "/@type"}


def refusal(path: str, bad: str, position: int) -> str:
    """The exact error text for ``bad`` at ``position`` of the field at ``path``."""
    return re.escape(
        f"{path}: character U+{ord(bad):04X} at position {position} is not allowed in XML 1.0"
    )


@st.composite
def spoiled(draw: st.DrawFn, text: st.SearchStrategy[str]) -> tuple[str, str, int]:
    """``(value, bad character, its position)``: a valid text with one bad character."""
    before, after, bad = draw(text), draw(text), draw(bad_chars)
    return before + bad + after, bad, len(before)


# ------------------------------------------------------------------ round trips


def test_lists_of_accounts_round_trip_like_tuples() -> None:
    """Accounts given as a list are written like a tuple's."""
    msg = model.OutgoingMessage(
        "t",
        "BPM",
        "d",
        "a",
        "s",
        "U",
        ("b",),
        ("c",),
        "",
        "",
        "MSG",
        True,
        "N",
        "",
        "2026-12-01 00:00:00",
    )
    as_list = dataclasses.replace(msg, receivers=["b"], bcc=["c"])  # type: ignore[arg-type]
    assert payloads.build_message(as_list) == payloads.build_message(msg)


# ------------------------------------------------------------ refusals when building


@given(st.data(), st.lists(deliveries, min_size=1, max_size=3))
def test_a_bad_character_in_any_delivery_field_is_refused_naming_the_field(
    data: st.DataObject, ds: list[model.Delivery]
) -> None:
    """The error names the delivery, the field and the character's position in it."""
    n = data.draw(st.integers(0, len(ds) - 1))
    field = data.draw(st.sampled_from(sorted(DELIVERY_FIELDS)))
    value, bad, position = data.draw(spoiled(xml_text))
    ds[n] = dataclasses.replace(ds[n], **{field: value})
    path = f"deliveries/delivery[{n + 1}]{DELIVERY_FIELDS[field]}"
    with pytest.raises(errors.WireError, match=f"^{refusal(path, bad, position)}$"):
        payloads.build_deliveries(model.FetchBatch(tuple(ds), ()))


@given(st.data(), st.lists(receipts, min_size=1, max_size=3))
def test_a_bad_character_in_any_receipt_field_is_refused_naming_the_field(
    data: st.DataObject, rs: list[model.Receipt]
) -> None:
    """The error names the receipt, the field and the character's position in it."""
    n = data.draw(st.integers(0, len(rs) - 1))
    field = data.draw(st.sampled_from(sorted(RECEIPT_FIELDS)))
    value, bad, position = data.draw(spoiled(xml_text))
    rs[n] = dataclasses.replace(rs[n], **{field: value})
    path = f"deliveries/receipt[{n + 1}]{RECEIPT_FIELDS[field]}"
    with pytest.raises(errors.WireError, match=f"^{refusal(path, bad, position)}$"):
        payloads.build_deliveries(model.FetchBatch((), tuple(rs)))


@given(st.data(), st.lists(messages, min_size=1, max_size=3))
def test_a_bad_character_in_any_message_field_is_refused_naming_message_and_field(
    data: st.DataObject, msgs: list[model.OutgoingMessage]
) -> None:
    """The error names the message with its tx id, the field and the position."""
    n = data.draw(st.integers(0, len(msgs) - 1))
    field = data.draw(st.sampled_from(sorted(MESSAGE_FIELDS)))
    value, bad, position = data.draw(spoiled(xml_text))
    msgs[n] = dataclasses.replace(msgs[n], **{field: value})
    place = f"(tx {msgs[n].tx_message_id}){MESSAGE_FIELDS[field]}"
    in_batch = refusal(f"submit/message[{n + 1}] {place}", bad, position)
    with pytest.raises(errors.WireError, match=f"^{in_batch}$"):
        payloads.build_submit(msgs)
    alone = refusal(f"submit/message[1] {place}", bad, position)
    with pytest.raises(errors.WireError, match=f"^{alone}$"):
        payloads.build_message(msgs[n])


@given(messages, spoiled(xml_text))
def test_a_bad_character_in_the_tx_id_is_named_without_quoting_it(
    msg: model.OutgoingMessage, spoilt: tuple[str, str, int]
) -> None:
    """A tx id XML cannot carry is not repeated in the error that names it."""
    value, bad, position = spoilt
    expected = refusal("submit/message[1]/@tx", bad, position)
    with pytest.raises(errors.WireError, match=f"^{expected}$"):
        payloads.build_message(dataclasses.replace(msg, tx_message_id=value))


@given(st.data(), messages)
def test_a_bad_character_in_an_account_is_refused_naming_the_account(
    data: st.DataObject, msg: model.OutgoingMessage
) -> None:
    """Receivers and Bcc accounts are named by list and position."""
    field = data.draw(st.sampled_from(["receivers", "bcc"]))
    accounts = list(data.draw(st.lists(some_text, min_size=1, max_size=3)))
    k = data.draw(st.integers(0, len(accounts) - 1))
    accounts[k], bad, position = data.draw(spoiled(xml_text))
    msg = dataclasses.replace(msg, **{field: tuple(accounts)})
    path = f"submit/message[1] (tx {msg.tx_message_id})/{field}/r[{k + 1}]"
    with pytest.raises(errors.WireError, match=f"^{refusal(path, bad, position)}$"):
        payloads.build_message(msg)


@given(st.data(), st.lists(deliveries, min_size=1, max_size=2))
def test_a_bad_character_in_an_attachment_is_refused_naming_the_attachment(
    data: st.DataObject, ds: list[model.Delivery]
) -> None:
    """The error names delivery, attachment and field."""
    infos = list(data.draw(st.lists(attachments, min_size=1, max_size=3)))
    k = data.draw(st.integers(0, len(infos) - 1))
    field = data.draw(st.sampled_from(sorted(ATTACHMENT_FIELDS)))
    value, bad, position = data.draw(spoiled(xml_text))
    infos[k] = dataclasses.replace(infos[k], **{field: value})
    ds[-1] = dataclasses.replace(ds[-1], attachments=tuple(infos))
    attachment = f"attachments/attachment[{k + 1}]{ATTACHMENT_FIELDS[field]}"
    path = f"deliveries/delivery[{len(ds)}]/{attachment}"
    with pytest.raises(errors.WireError, match=f"^{refusal(path, bad, position)}$"):
        payloads.build_deliveries(model.FetchBatch(tuple(ds), ()))


@given(st.data(), st.lists(results, min_size=1, max_size=3))
def test_a_bad_character_in_any_result_field_is_refused_naming_the_field(
    data: st.DataObject, res: list[model.SubmitResult]
) -> None:
    """The error names the result, the field and the character's position in it."""
    n = data.draw(st.integers(0, len(res) - 1))
    field = data.draw(st.sampled_from(sorted(RESULT_FIELDS)))
    value, bad, position = data.draw(spoiled(xml_text))
    res[n] = dataclasses.replace(res[n], **{field: value})
    path = f"submitted/result[{n + 1}]{RESULT_FIELDS[field]}"
    with pytest.raises(errors.WireError, match=f"^{refusal(path, bad, position)}$"):
        payloads.build_submitted(res)


@pytest.mark.parametrize("value", [7, 1.5, b"bytes"])
def test_a_value_that_is_not_text_is_refused_naming_the_field(value: object) -> None:
    """A non-text value where text belongs is refused, not written as its repr."""
    receipt = model.Receipt("e", "t", "m", 1, 0)
    with pytest.raises(
        errors.WireError,
        match=rf"^deliveries/receipt\[1\]/@tx: expected text, got {type(value).__name__}$",
    ):
        payloads.build_deliveries(
            model.FetchBatch((), (dataclasses.replace(receipt, tx_message_id=value),))
        )


# -------------------------------------------------------------- refusals when parsing

RECEIPT = '<receipt entry="e" tx="t" messageId="m" served="1" recalled="0"/>'
RESULT = '<result tx="t" accepted="true" messageId="m" recipients="2"/>'


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (RECEIPT.replace(' served="1"', ""), "attribute 'served' missing"),
        (RECEIPT.replace('entry="e"', 'entry=""'), "attribute 'entry' is empty"),
        (RECEIPT.replace('recalled="0"', 'recalled="-1"'), "attribute 'recalled' must be"),
        (RECEIPT.replace("/>", "><x/></receipt>"), "must be empty"),
    ],
)
def test_a_bad_receipt_among_good_ones_is_named_by_its_position(bad: str, problem: str) -> None:
    """Only the receipt at fault is named, counted among receipts alone."""
    document = f"<deliveries>{RECEIPT}{RECEIPT}{bad}{RECEIPT}</deliveries>"
    with pytest.raises(errors.WireError, match=rf"^deliveries/receipt\[3\]: {problem}"):
        payloads.parse_deliveries(document.encode())


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (RESULT.replace(' messageId="m"', ""), ": attribute 'messageId' missing"),
        (RESULT.replace('recipients="2"', 'recipients="two"'), ": attribute 'recipients' must be"),
        (RESULT.replace('accepted="true"', 'accepted="yes"'), ": attribute 'accepted' must be"),
        (RESULT.replace("/>", "><unknown/></result>"), r"/unknown\[1\]: empty account"),
    ],
)
def test_a_bad_result_among_good_ones_is_named_by_its_position(bad: str, problem: str) -> None:
    """Only the result at fault is named."""
    document = f"<submitted>{RESULT}{bad}{RESULT}</submitted>"
    with pytest.raises(errors.WireError, match=rf"^submitted/result\[2\]{problem}"):
        payloads.parse_submitted(document.encode())


def test_a_stranger_after_a_bad_result_is_reported_first() -> None:
    """The document's structure is judged before any one result's attributes."""
    without_tx = RESULT.replace(' tx="t"', "")
    document = f"<submitted>{without_tx}<other/></submitted>"
    with pytest.raises(errors.WireError, match=r"^submitted: unexpected element <other>$"):
        payloads.parse_submitted(document.encode())


def test_a_stranger_after_a_bad_message_is_reported_first() -> None:
    """The document's structure is judged before any one message's attributes."""
    with pytest.raises(errors.WireError, match=r"^submit: unexpected element <other>$"):
        payloads.parse_submit(b'<submit><message tx=""/><other/></submit>')
