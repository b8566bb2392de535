"""The server's row mapping: the kept answer's JSON and a delivery's size bound."""

from __future__ import annotations

import collections
import dataclasses
import json
import types

from hypothesis import given
from hypothesis import strategies as st
from payload_strategies import messages

from mpg.server import rows, vault
from mpg.server.states import MessageState
from mpg.wire import atrest, model

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


VAULT = vault.Vault(bytes(32), atrest.Keyring({"k": bytes(range(32))}, "k"))
OUTGOING = model.OutgoingMessage(
    tx_message_id="t1",
    app_code="BPM",
    source_domain="example.com",
    agent_sender="erp@example.com",
    sender="erp@example.com",
    receiver_type="U",
    receivers=("bob",),
    bcc=(),
    subject="s",
    content="c",
    content_type="MSG",
    alert_flag=False,
    priority="N",
    keywords="",
    transmit_time="2026-12-01 00:00:00",
)


@given(results, st.booleans())
def test_every_answer_comes_back_from_its_row_whether_kept_or_said_by_the_row(
    result: model.SubmitResult, plain: bool
) -> None:
    """Only a plain acceptance is left to the row's own columns; any other is kept."""
    if plain:
        result = model.SubmitResult(
            result.tx_message_id, True, message_id=result.message_id, recipients=result.recipients
        )
    message_id = result.message_id or "m1"
    row, _ = rows.message(
        VAULT,
        OUTGOING,
        "erp@example.com",
        message_id,
        0.0,
        result.recipients,
        MessageState.QUEUED,
        result,
        "d" * 64,
    )
    if plain and result.message_id:
        assert row["SubmitResultEnc"] is None
    stored = types.SimpleNamespace(**row)
    stored.TxMessageId = result.tx_message_id
    assert rows.submit_result(VAULT, stored) == result


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


#: A TransmitQueue row as the fetch's SELECT returns it.
_Stored = collections.namedtuple("_Stored", rows.DELIVERED_COLUMNS)


@given(messages)
def test_a_new_message_s_opened_form_is_what_its_stored_row_opens_to(
    msg: model.OutgoingMessage,
) -> None:
    """What a submit keeps in memory for the fetch (mpg.server.openedcache) is what
    the fetch would read back from the row: the same columns, the same values."""
    result = model.SubmitResult(msg.tx_message_id, True, message_id="m1", recipients=1)
    row, opened = rows.message(
        VAULT, msg, "erp@example.com", "m1", 0.0, 1, MessageState.QUEUED, result, "d" * 64
    )
    stored = _Stored(*(row[name] for name in rows.DELIVERED_COLUMNS))
    read_back = rows.opened_message(VAULT, stored, rows.DELIVERED_COLUMNS)
    assert opened == {name: read_back[name] for name in opened}
    assert set(opened) == {name for name in rows.DELIVERED_COLUMNS if not name.endswith("Enc")}
