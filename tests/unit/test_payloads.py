"""Payload builders and parsers: exact round trips, schema conformance, clear refusals."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from payload_strategies import (
    counts,
    deliveries,
    messages,
    receipts,
    results,
    some_text,
    xml_text,
)

from mpg import errors
from mpg.wire import model, payloads

SCHEMA = etree.XMLSchema(
    etree.parse(str(pathlib.Path(__file__).parents[2] / "schema" / "mpg-wire.xsd"))
)

SHA = "a" * 64


def chinese_message(**changes: object) -> model.OutgoingMessage:
    """An approval message with Chinese text and awkward whitespace."""
    msg = model.OutgoingMessage(
        tx_message_id="c7cd8812-8c0f-4c5e-a8e6-402aa6f44534",
        app_code="BPM",
        source_domain="example.com",
        agent_sender="erp-a@example.com",
        sender="alice@example.com",
        receiver_type="U",
        receivers=("bob@example.com", "王小明@example.com"),
        bcc=("carol@example.com",),
        subject="  请审批：事假 2 天  ",
        content='\n  <?xml version="1.0"?>\r\n<content>审批 &amp; <b>意见</b></content>\t\n\n',
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords="请假;事假",
        transmit_time="2026-11-23 05:41:07",
        attachments=(model.AttachmentInfo(1, "报告 final.pdf", "pdf", 1234, 1, SHA),),
    )
    return dataclasses.replace(msg, **changes)


def assert_valid(document: bytes) -> None:
    """The payload conforms to schema/mpg-wire.xsd."""
    root = etree.fromstring(document)
    assert SCHEMA.validate(root), SCHEMA.error_log


# ------------------------------------------------------------------ round trips


@given(st.lists(messages, max_size=4))
def test_submit_round_trips_and_matches_the_schema(msgs: list[model.OutgoingMessage]) -> None:
    """Any valid list of messages comes back equal and the payload matches the XSD."""
    data = payloads.build_submit(msgs)
    assert_valid(data)
    assert payloads.parse_submit(data) == msgs


@given(st.lists(messages, min_size=1, max_size=4))
def test_a_submit_joined_from_pieces_is_the_submit_built_whole(
    msgs: list[model.OutgoingMessage],
) -> None:
    """Messages built one by one (once, by the gateway) and joined make the same bytes."""
    pieces = [payloads.build_message(m) for m in msgs]
    data = payloads.join_submit(pieces)
    assert data == payloads.build_submit(msgs)
    assert len(data) == sum(map(len, pieces)) + payloads.SUBMIT_FRAME_BYTES


@given(st.lists(results, max_size=4))
def test_submitted_round_trips_and_matches_the_schema(res: list[model.SubmitResult]) -> None:
    """Any valid list of submit results comes back equal and matches the XSD."""
    data = payloads.build_submitted(res)
    assert_valid(data)
    assert payloads.parse_submitted(data) == res


@given(
    st.builds(
        model.FetchBatch,
        deliveries=st.lists(deliveries, max_size=3).map(tuple),
        receipts=st.lists(receipts, max_size=3).map(tuple),
    )
)
def test_deliveries_round_trip_and_match_the_schema(batch: model.FetchBatch) -> None:
    """Any fetch batch comes back equal and matches the XSD."""
    data = payloads.build_deliveries(batch)
    assert_valid(data)
    assert payloads.parse_deliveries(data) == batch


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0, max_value=10**6))
def test_fetch_round_trips_and_matches_the_schema(max_items: int, wait: float) -> None:
    """max and wait come back exactly."""
    data = payloads.build_fetch(max_items, wait)
    assert_valid(data)
    assert payloads.parse_fetch(data) == model.FetchRequest(max_items, wait)


@given(
    st.integers(min_value=1, max_value=10**6),
    st.floats(min_value=0, max_value=10**6),
    st.lists(some_text, min_size=1, max_size=5),
)
def test_a_fetch_that_acknowledges_round_trips_and_matches_the_schema(
    max_items: int, wait: float, acked: list[str]
) -> None:
    """The entries a fetch acknowledges come back in order with max and wait."""
    data = payloads.build_fetch(max_items, wait, acked)
    assert_valid(data)
    assert payloads.parse_fetch(data) == model.FetchRequest(max_items, wait, tuple(acked))


@given(st.lists(some_text, max_size=5))
def test_ack_round_trips_and_matches_the_schema(entries: list[str]) -> None:
    """Entry ids come back in order."""
    data = payloads.build_ack(entries)
    assert_valid(data)
    assert payloads.parse_ack(data) == entries


@given(
    some_text,
    st.lists(st.builds(model.ServerEvent, some_text, some_text, xml_text, xml_text), max_size=4),
)
def test_history_round_trips_and_matches_the_schema(
    message_id: str, events: list[model.ServerEvent]
) -> None:
    """A message's server-side events come back equal, in order, and match the XSD."""
    data = payloads.build_history(message_id, events)
    assert_valid(data)
    assert payloads.parse_history(data) == (message_id, events)


@given(counts)
def test_acked_round_trips_and_matches_the_schema(count: int) -> None:
    """The count comes back."""
    data = payloads.build_acked(count)
    assert_valid(data)
    assert payloads.parse_acked(data) == count


def test_chinese_text_and_whitespace_survive_exactly() -> None:
    """Chinese, markup-like content, CR, tabs and leading/trailing newlines are kept."""
    msg = chinese_message()
    (back,) = payloads.parse_submit(payloads.build_submit([msg]))
    assert back.content == msg.content
    assert back.subject == msg.subject
    assert back.receivers == msg.receivers
    assert back.attachments[0].file_name == "报告 final.pdf"


def test_whitespace_only_content_survives() -> None:
    """Content made only of whitespace is not dropped or trimmed."""
    msg = chinese_message(content=" \r\n\t ", subject="", keywords="", bcc=(), attachments=())
    assert payloads.parse_submit(payloads.build_submit([msg])) == [msg]


def test_protocol_example_result_parses_with_defaults() -> None:
    """A refused result with only tx, accepted and reason gets the model defaults."""
    (res,) = payloads.parse_submitted(
        b'<submitted><result tx="t1" accepted="false" reason="no known recipient: x@y"/>'
        b"</submitted>"
    )
    assert res == model.SubmitResult("t1", accepted=False, reason="no known recipient: x@y")


def test_unknown_attributes_are_ignored() -> None:
    """An attribute added later within version 1 does not break an older parser."""
    assert payloads.parse_acked(b'<acked count="3" extra="yes"/>') == 3


def test_fetch_wait_is_written_without_a_fraction_when_whole() -> None:
    """20 seconds travel as wait="20", as in the protocol example."""
    assert payloads.build_fetch(500, 20.0) == b'<fetch max="500" wait="20"/>'


def test_a_batch_of_2000_messages_round_trips_in_order() -> None:
    """A submit of 2000 messages parses back to the same messages, in order."""
    msgs = [chinese_message(tx_message_id=f"tx-{n}") for n in range(2000)]
    parsed = payloads.parse_submit(payloads.build_submit(msgs))
    assert parsed == msgs


# ---------------------------------------------------------------- building errors


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("subject", "bad\x01", r"submit/message\[1\] \(tx c7cd.*\)/subject: character U\+0001"),
        ("content", "\x00", r"/content: character U\+0000"),
        ("sender", "a\x1bb", r"/@sender: character U\+001B"),
        ("keywords", "\ufffe", r"/keywords: character U\+FFFE"),
    ],
)
def test_non_xml_character_names_the_field(field: str, value: str, where: str) -> None:
    """A character XML 1.0 cannot carry raises WireError naming message and field."""
    with pytest.raises(errors.WireError, match=where):
        payloads.build_submit([chinese_message(**{field: value})])


def test_non_xml_character_names_the_message_index() -> None:
    """The error names which message of the batch is at fault."""
    msgs = [chinese_message(), chinese_message(tx_message_id="t2", receivers=("b\x02",))]
    with pytest.raises(errors.WireError, match=r"submit/message\[2\] \(tx t2\)/receivers/r\[1\]"):
        payloads.build_submit(msgs)


def test_building_one_message_validates_its_row() -> None:
    """build_message accepts a good message and refuses a bad one, naming the field."""
    payloads.build_message(chinese_message())
    with pytest.raises(errors.WireError, match="content"):
        payloads.build_message(chinese_message(content="\x07"))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"tx_message_id": ""}, "@tx: must not be empty"),
        ({"receiver_type": "X"}, "receiverType"),
        ({"priority": "Z"}, "priority"),
        ({"transmit_time": "2026/11/23 05:41:07"}, "transmitTime"),
        ({"receivers": ("",)}, r"receivers/r\[1\]: must not be empty"),
        (
            {"attachments": (model.AttachmentInfo(1, "a", "pdf", -1, 1, SHA),)},
            "@size: expected an integer >= 0",
        ),
        (
            {"attachments": (model.AttachmentInfo(1, "a", "pdf", 1, 2, SHA),)},
            "@download: expected 0 or 1",
        ),
        (
            {"attachments": (model.AttachmentInfo(1, "a", "pdf", 1, 1, "ABC"),)},
            "@sha256",
        ),
    ],
)
def test_invalid_message_is_refused_when_built(changes: dict[str, object], match: str) -> None:
    """Values the parser would refuse are refused already when building."""
    with pytest.raises(errors.WireError, match=match):
        payloads.build_submit([chinese_message(**changes)])


@given(st.data())
def test_a_delivery_that_cannot_go_names_its_place_in_the_answer(data: st.DataObject) -> None:
    """One bad field of any delivery of a batch is refused naming delivery and field."""
    batch = data.draw(st.lists(deliveries, min_size=1, max_size=3))
    n = data.draw(st.integers(0, len(batch) - 1))
    field, bad, where = data.draw(
        st.sampled_from(
            [
                ("subject", "a\x01", "/subject: character U\\+0001"),
                ("sender", "\x1b", "/@sender: character U\\+001B"),
                ("owner", "\ufffe", "/@owner: character U\\+FFFE"),
                ("keywords", "\x00", "/keywords: character U\\+0000"),
                ("rx_message_id", "", "/@rx: must not be empty"),
                ("priority", "Z", "/@priority: expected one of"),
                ("transmit_time", "2026-12-01", "/@transmitTime: expected"),
            ]
        )
    )
    batch[n] = dataclasses.replace(batch[n], **{field: bad})
    with pytest.raises(errors.WireError, match=rf"^deliveries/delivery\[{n + 1}\]{where}"):
        payloads.build_deliveries(model.FetchBatch(tuple(batch), ()))


def test_accepted_result_without_message_id_is_refused() -> None:
    """An accepted result must carry the server's MessageId."""
    with pytest.raises(errors.WireError, match="messageId"):
        payloads.build_submitted([model.SubmitResult("t", accepted=True)])


@pytest.mark.parametrize(("max_items", "wait"), [(0, 1.0), (-1, 1.0), (5, -1.0), (5, float("nan"))])
def test_invalid_fetch_is_refused_when_built(max_items: int, wait: float) -> None:
    """max must be >= 1 and wait a finite number >= 0."""
    with pytest.raises(errors.WireError):
        payloads.build_fetch(max_items, wait)


def test_bool_is_not_a_count() -> None:
    """True is not silently written as 1."""
    with pytest.raises(errors.WireError):
        payloads.build_acked(True)


# ----------------------------------------------------------------- parsing errors


GOOD_MESSAGE = (
    '<message tx="t1" appCode="BPM" sourceDomain="d" agentSender="a" sender="s" '
    'receiverType="U" contentType="MSG" alertFlag="1" priority="N" '
    'transmitTime="2026-11-23 05:41:07"><receivers><r>b</r></receivers></message>'
)


def submit_with(second: str) -> bytes:
    """A submit payload whose second message is ``second``."""
    return f"<submit>{GOOD_MESSAGE}{second}</submit>".encode()


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (GOOD_MESSAGE.replace('tx="t1" ', ""), r"^submit/message\[2\]: attribute 'tx' missing$"),
        (GOOD_MESSAGE.replace('tx="t1"', 'tx=""'), r"submit/message\[2\]: attribute 'tx' is empty"),
        (GOOD_MESSAGE.replace('alertFlag="1"', 'alertFlag="yes"'), "'alertFlag' must be"),
        (GOOD_MESSAGE.replace('priority="N"', 'priority="X"'), "'priority' has unknown value"),
        (GOOD_MESSAGE.replace('receiverType="U"', 'receiverType="u"'), "receiverType"),
        (GOOD_MESSAGE.replace("2026-11-23 05:41:07", "yesterday"), "transmitTime"),
        (GOOD_MESSAGE.replace("<receivers><r>b</r></receivers>", ""), "<receivers> missing"),
        (
            GOOD_MESSAGE.replace(
                "</message>", "<subject>a</subject><subject>b</subject></message>"
            ),
            "<subject> repeated",
        ),
        (GOOD_MESSAGE.replace("</message>", "<surprise/></message>"), "unexpected element"),
        (
            GOOD_MESSAGE.replace("</message>", "<subject>a<b/></subject></message>"),
            r"message\[2\]/subject: must hold text only",
        ),
        (GOOD_MESSAGE.replace("<r>b</r>", "<r></r>"), r"receivers/r\[1\]: empty account"),
        (GOOD_MESSAGE.replace("<r>b</r>", "<x>b</x>"), "unexpected element <x>"),
        ("<other/>", r"submit: unexpected element <other>"),
    ],
)
def test_malformed_submit_names_message_and_problem(second: str, match: str) -> None:
    """Each structural or type problem raises WireError naming the message and reason."""
    with pytest.raises(errors.WireError, match=match):
        payloads.parse_submit(submit_with(second))


@pytest.mark.parametrize(
    ("attachment", "match"),
    [
        ('seq="x" name="a" type="" size="1" download="1" sha256="' + SHA + '"', "'seq' must be"),
        ('seq="1" name="a" type="" size="-1" download="1" sha256="' + SHA + '"', "'size' must"),
        ('seq="1" name="a" type="" size="+1" download="1" sha256="' + SHA + '"', "'size' must"),
        ('seq="1" name="a" type="" size="1" download="2" sha256="' + SHA + '"', "'download'"),
        ('seq="1" name="a" type="" size="1" download="1" sha256="XYZ"', "'sha256'"),
        ('seq="1" type="" size="1" download="1" sha256="' + SHA + '"', "'name' missing"),
    ],
)
def test_malformed_attachment_is_refused(attachment: str, match: str) -> None:
    """Attachment attributes are type-checked and name the attachment."""
    second = GOOD_MESSAGE.replace(
        "</message>", f"<attachments><attachment {attachment}/></attachments></message>"
    )
    with pytest.raises(errors.WireError, match=r"attachments/attachment\[1\]: .*" + match):
        payloads.parse_submit(submit_with(second))


def test_wrong_root_is_refused() -> None:
    """A payload for another op is refused by its root element."""
    with pytest.raises(errors.WireError, match="expected a <submit> document, got <ack>"):
        payloads.parse_submit(b"<ack/>")


def test_unsafe_payload_is_refused() -> None:
    """Payload parsing goes through the safe parser."""
    with pytest.raises(errors.UnsafeXml):
        payloads.parse_ack(b'<!DOCTYPE ack [<!ENTITY x "y">]><ack/>')


def test_accepted_result_without_message_id_is_malformed() -> None:
    """An accepted result lacking messageId is refused."""
    with pytest.raises(errors.WireError, match=r"submitted/result\[1\]: attribute 'messageId'"):
        payloads.parse_submitted(b'<submitted><result tx="t" accepted="true"/></submitted>')


@pytest.mark.parametrize(
    "document",
    [
        b'<fetch max="0" wait="1"/>',
        b'<fetch max="5" wait="-1"/>',
        b'<fetch max="5" wait="inf"/>',
        b'<fetch max="5" wait="nan"/>',
        b'<fetch max="5" wait="1e999"/>',
        b'<fetch wait="1"/>',
        b'<fetch max="5"/>',
        b'<fetch max="5" wait="1"><x/></fetch>',
        b'<fetch max="5" wait="1"><ack/><ack/></fetch>',
        b'<fetch max="5" wait="1"><ack><x/></ack></fetch>',
        b'<fetch max="5" wait="1"><ack><entry id=""/></ack></fetch>',
    ],
)
def test_malformed_fetch_is_refused(document: bytes) -> None:
    """fetch needs max >= 1 and a finite, non-negative wait."""
    with pytest.raises(errors.WireError, match="fetch"):
        payloads.parse_fetch(document)


def test_malformed_receipt_is_refused() -> None:
    """A receipt without its served count names the receipt."""
    with pytest.raises(errors.WireError, match=r"deliveries/receipt\[1\]: attribute 'served'"):
        payloads.parse_deliveries(
            b'<deliveries><receipt entry="e" tx="t" messageId="m" recalled="0"/></deliveries>'
        )


def test_deliveries_and_receipts_may_interleave() -> None:
    """The parser keeps each kind in document order whatever the interleaving."""
    receipt = '<receipt entry="e{n}" tx="t" messageId="m" served="1" recalled="0"/>'
    document = f"<deliveries>{receipt.format(n=1)}{receipt.format(n=2)}</deliveries>"
    batch = payloads.parse_deliveries(document.encode())
    assert [r.entry_id for r in batch.receipts] == ["e1", "e2"]
    assert batch.deliveries == ()


def test_empty_ack_entry_is_refused() -> None:
    """An ack entry must name an entry id."""
    with pytest.raises(errors.WireError, match=r"ack/entry\[1\]: attribute 'id' is empty"):
        payloads.parse_ack(b'<ack><entry id=""/></ack>')
