"""Hypothesis strategies for the wire payloads' items (tests/unit/test_payloads*.py).

Texts are any XML 1.0 text, with the characters a serializer most easily gets wrong
(whitespace XML would normalise, markup characters, non-BMP ones) drawn often.
"""

from __future__ import annotations

import time

from hypothesis import strategies as st

from mpg.wire import model

_NOT_XML = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\ufffe\uffff"
#: Characters that XML would normalise or that must be escaped, and non-BMP ones.
AWKWARD = " \t\r\n&<>\"']]>\U0001f600\U00010000\U0010ffff\u2028\x7f請"
_XML_CHARS = st.one_of(
    st.sampled_from(AWKWARD),
    st.characters(exclude_categories=("Cs",), exclude_characters=_NOT_XML),
)
xml_text = st.text(_XML_CHARS)
some_text = st.text(_XML_CHARS, min_size=1)
#: Characters XML 1.0 cannot carry, a lone surrogate included.
bad_chars = st.sampled_from(["\x00", "\x01", "\x08", "\x0b", "\x1f", "\ufffe", "\uffff", "\ud800"])
counts = st.integers(min_value=0, max_value=2**40)
times = st.builds(
    lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)),
    st.integers(min_value=0, max_value=4_000_000_000),
)
attachments = st.builds(
    model.AttachmentInfo,
    seq_no=counts,
    file_name=some_text,
    file_type=xml_text,
    file_size=counts,
    download_flag=st.sampled_from([0, 1]),
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
)
messages = st.builds(
    model.OutgoingMessage,
    tx_message_id=some_text,
    app_code=xml_text,
    source_domain=xml_text,
    agent_sender=xml_text,
    sender=xml_text,
    receiver_type=st.sampled_from(sorted(model.RECEIVER_TYPES)),
    receivers=st.lists(some_text, max_size=3).map(tuple),
    bcc=st.lists(some_text, max_size=3).map(tuple),
    subject=xml_text,
    content=xml_text,
    content_type=xml_text,
    alert_flag=st.booleans(),
    priority=st.sampled_from(model.PRIORITIES),
    keywords=xml_text,
    transmit_time=times,
    attachments=st.lists(attachments, max_size=3).map(tuple),
)
recalls = st.builds(
    model.RecallOutcome, recalled_message_id=some_text, withdrawn=counts, notified=counts
)
results = st.builds(
    model.SubmitResult,
    tx_message_id=some_text,
    accepted=st.booleans(),
    message_id=some_text,
    recipients=counts,
    unknown=st.lists(some_text, max_size=3).map(tuple),
    reason=xml_text,
    served_at_once=st.booleans(),
    recall=st.none() | recalls,
) | st.builds(model.SubmitResult, tx_message_id=some_text, accepted=st.just(False), reason=xml_text)
deliveries = st.builds(
    model.Delivery,
    rx_message_id=some_text,
    message_id=some_text,
    app_code=xml_text,
    source_domain=xml_text,
    agent_sender=xml_text,
    sender=xml_text,
    owner=xml_text,
    receiver_type=st.sampled_from(sorted(model.RECEIVER_TYPES)),
    receiver_list=xml_text,
    bcc_list=xml_text,
    subject=xml_text,
    content=xml_text,
    content_type=xml_text,
    alert_flag=st.booleans(),
    priority=st.sampled_from(model.PRIORITIES),
    keywords=xml_text,
    transmit_time=times,
    attachments=st.lists(attachments, max_size=2).map(tuple),
)
receipts = st.builds(
    model.Receipt,
    entry_id=some_text,
    tx_message_id=some_text,
    message_id=some_text,
    served=counts,
    recalled=counts,
)
