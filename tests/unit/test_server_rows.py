"""The server's row mapping: the kept answer's JSON and a delivery's size bound."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from mpg.server import rows
from mpg.wire import model

counts = st.integers(min_value=0, max_value=2**31)
results = st.builds(
    model.SubmitResult,
    tx_message_id=st.text(),
    accepted=st.booleans(),
    message_id=st.text(),
    recipients=counts,
    unknown=st.lists(st.text(), max_size=3).map(tuple),
    reason=st.text(),
    served_at_once=st.booleans(),
    recall=st.none() | st.builds(model.RecallOutcome, st.text(), counts, counts),
)


@given(results)
def test_the_kept_answer_is_the_json_of_all_its_fields_and_reads_back(
    result: model.SubmitResult,
) -> None:
    """Field by field as dataclasses.asdict has it (rows written before read alike)."""
    text = rows.result_to_json(result)
    assert json.loads(text) == json.loads(json.dumps(dataclasses.asdict(result)))
    assert rows.result_from_json(text) == result


texts = st.text(alphabet=st.sampled_from('a&<>"é請\n'), max_size=20)


@given(st.lists(texts, min_size=8, max_size=8), st.none() | texts)
def test_a_delivery_bound_counts_each_field_with_its_escapes(
    fields: list[str], bcc: str | None
) -> None:
    """UTF-8 bytes plus five per character XML escapes, field by field, plus overhead."""
    names = ("AppCode", "SourceDomain", "AgentSender", "Sender")
    names += ("ReceiverList", "Subject", "Content", "Keywords")
    msg = dict(zip(names, fields, strict=True))
    expected = rows.DELIVERY_OVERHEAD
    for text in [*fields, bcc or ""]:
        data = text.encode("utf-8")
        expected += len(data) + 5 * sum(data.count(c) for c in b'&<>"')
    assert rows.delivery_bytes(msg, bcc) == expected
