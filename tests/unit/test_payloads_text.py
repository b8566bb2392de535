"""The fetch answer written as text has the bytes lxml writes for the same tree.

build_deliveries writes the items that pass its fast checks as text, escaping as lxml
escapes. The oracle here builds the same tree with lxml, with no checks, and
serializes it: whatever characters the fields hold, the two agree byte for byte.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from payload_strategies import deliveries, receipts

from mpg.wire import model, payloads


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
        if d.attachments:
            holder = etree.SubElement(el, "attachments")
            for info in d.attachments:
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
    awkward = 'a&b<c>d"e\'f\ng\rh\ti ]]> é 請'
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
    assert b'rx="a&amp;b&lt;c&gt;d&quot;e\'f&#10;g&#13;h&#9;i ]]&gt;' in built
    assert "<subject>a&amp;b&lt;c&gt;d\"e'f\ng&#13;h\ti ]]&gt; é 請</subject>".encode() in built
    assert payloads.parse_deliveries(built) == batch
