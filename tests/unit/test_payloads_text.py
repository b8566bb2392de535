"""Payloads written as text have the bytes lxml writes for the same tree.

build_deliveries and the submit builders write the items that pass their fast checks
as text, escaping as lxml escapes. The oracle here builds the same tree with lxml, with no checks, and
serializes it: whatever characters the fields hold, the two agree byte for byte.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from payload_strategies import deliveries, messages, receipts, results

from mpg.wire import model, payloads


def _lxml_attachments(parent: etree._Element, infos: tuple[model.AttachmentInfo, ...]) -> None:
    if not infos:
        return
    holder = etree.SubElement(parent, "attachments")
    for info in infos:
        etree.SubElement(
            holder,
            "attachment",
            {
                "seq": str(info.seq_no),
                "name": info.file_name,
                "type": info.file_type,
                "size": str(info.file_size),
                "download": str(info.download_flag),
                "sha256": info.sha256,
            },
        )


def _lxml_message(root: etree._Element, msg: model.OutgoingMessage) -> etree._Element:
    el = etree.SubElement(root, "message")
    for name, value in (
        ("tx", msg.tx_message_id),
        ("appCode", msg.app_code),
        ("sourceDomain", msg.source_domain),
        ("agentSender", msg.agent_sender),
        ("sender", msg.sender),
        ("receiverType", msg.receiver_type),
        ("contentType", msg.content_type),
        ("alertFlag", "1" if msg.alert_flag else "0"),
        ("priority", msg.priority),
        ("transmitTime", msg.transmit_time),
    ):
        el.set(name, value)
    holder = etree.SubElement(el, "receivers")
    for account in msg.receivers:
        etree.SubElement(holder, "r").text = account
    if msg.bcc:
        holder = etree.SubElement(el, "bcc")
        for account in msg.bcc:
            etree.SubElement(holder, "r").text = account
    etree.SubElement(el, "subject").text = msg.subject
    if msg.keywords:
        etree.SubElement(el, "keywords").text = msg.keywords
    etree.SubElement(el, "content").text = msg.content
    _lxml_attachments(el, msg.attachments)
    return el


def _lxml_answer(batch: model.FetchBatch) -> bytes:
    root = etree.Element("deliveries")
    for d in batch.deliveries:
        el = etree.SubElement(root, "delivery")
        for name, value in (
            ("rx", d.rx_message_id),
            ("messageId", d.message_id),
            ("appCode", d.app_code),
            ("sourceDomain", d.source_domain),
            ("agentSender", d.agent_sender),
            ("sender", d.sender),
            ("owner", d.owner),
            ("receiverType", d.receiver_type),
            ("contentType", d.content_type),
            ("alertFlag", "1" if d.alert_flag else "0"),
            ("priority", d.priority),
            ("transmitTime", d.transmit_time),
        ):
            el.set(name, value)
        for name, text in (
            ("receiverList", d.receiver_list),
            ("bccList", d.bcc_list),
            ("subject", d.subject),
            ("keywords", d.keywords),
            ("content", d.content),
        ):
            if name != "keywords" or text:
                etree.SubElement(el, name).text = text
        _lxml_attachments(el, d.attachments)
    for r in batch.receipts:
        etree.SubElement(
            root,
            "receipt",
            {
                "entry": r.entry_id,
                "tx": r.tx_message_id,
                "messageId": r.message_id,
                "served": str(r.served),
                "recalled": str(r.recalled),
            },
        )
    return bytes(etree.tostring(root, encoding="utf-8"))


@given(st.lists(deliveries, max_size=3), st.lists(receipts, max_size=3))
def test_the_answer_has_the_bytes_lxml_writes_for_the_same_items(
    ds: list[model.Delivery], rs: list[model.Receipt]
) -> None:
    batch = model.FetchBatch(tuple(ds), tuple(rs))
    assert payloads.build_deliveries(batch) == _lxml_answer(batch)


def test_every_character_xml_escapes_is_escaped_in_attributes_and_in_text() -> None:
    awkward = "a&b<c>d\"e'f\ng\rh\ti ]]> é 請"
    delivery = model.Delivery(
        rx_message_id=awkward,
        message_id=awkward,
        app_code=awkward,
        source_domain=awkward,
        agent_sender=awkward,
        sender=awkward,
        owner=awkward,
        receiver_type="U",
        receiver_list=awkward,
        bcc_list=awkward,
        subject=awkward,
        content=awkward,
        content_type=awkward,
        alert_flag=True,
        priority="N",
        keywords=awkward,
        transmit_time="2026-12-01 08:00:00",
    )
    receipt = model.Receipt(awkward, awkward, awkward, 1, 0)
    batch = model.FetchBatch((delivery,), (receipt,))
    built = payloads.build_deliveries(batch)
    assert built == _lxml_answer(batch)
    assert b"rx=\"a&amp;b&lt;c&gt;d&quot;e'f&#10;g&#13;h&#9;i ]]&gt;" in built
    assert "<subject>a&amp;b&lt;c&gt;d\"e'f\ng&#13;h\ti ]]&gt; é 請</subject>".encode() in built
    assert payloads.parse_deliveries(built) == batch


@given(st.lists(messages, max_size=3))
def test_a_submit_has_the_bytes_lxml_writes_for_the_same_messages(
    msgs: list[model.OutgoingMessage],
) -> None:
    root = etree.Element("submit")
    pieces = [etree.tostring(_lxml_message(root, msg), encoding="utf-8") for msg in msgs]
    assert payloads.build_submit(msgs) == etree.tostring(root, encoding="utf-8")
    assert [payloads.build_message(msg) for msg in msgs] == pieces


def test_every_character_xml_escapes_is_escaped_in_a_message() -> None:
    awkward = "a&b<c>d\"e'f\ng\rh\ti ]]> é 請"
    msg = model.OutgoingMessage(
        tx_message_id=awkward,
        app_code=awkward,
        source_domain=awkward,
        agent_sender=awkward,
        sender=awkward,
        receiver_type="U",
        receivers=(awkward, "b"),
        bcc=(awkward,),
        subject=awkward,
        content=awkward,
        content_type=awkward,
        alert_flag=False,
        priority="H",
        keywords=awkward,
        transmit_time="2026-12-01 08:00:00",
    )
    built = payloads.build_submit([msg])
    root = etree.Element("submit")
    _lxml_message(root, msg)
    assert built == etree.tostring(root, encoding="utf-8")
    assert payloads.parse_submit(built) == [msg]


def _lxml_submitted(answers: list[model.SubmitResult]) -> bytes:
    root = etree.Element("submitted")
    for res in answers:
        attrib = {
            "tx": res.tx_message_id,
            "accepted": "true" if res.accepted else "false",
            "recipients": str(res.recipients),
            "servedAtOnce": "true" if res.served_at_once else "false",
        }
        if res.message_id:
            attrib["messageId"] = res.message_id
        if res.reason:
            attrib["reason"] = res.reason
        el = etree.SubElement(root, "result", attrib)
        for account in res.unknown:
            etree.SubElement(el, "unknown").text = account
        if res.recall is not None:
            etree.SubElement(
                el,
                "recall",
                {
                    "messageId": res.recall.recalled_message_id,
                    "withdrawn": str(res.recall.withdrawn),
                    "notified": str(res.recall.notified),
                },
            )
    return bytes(etree.tostring(root, encoding="utf-8"))


@given(st.lists(results, max_size=3))
def test_a_submit_answer_has_the_bytes_lxml_writes_for_the_same_results(
    answers: list[model.SubmitResult],
) -> None:
    answers = [a for a in answers if a.message_id or not a.accepted]
    assert payloads.build_submitted(answers) == _lxml_submitted(answers)
