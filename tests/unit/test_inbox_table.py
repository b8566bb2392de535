"""`mpg inbox list`: a header line, then the rows in aligned columns."""

from __future__ import annotations

from mpg.cli import inbox


def test_inbox_list_has_a_header_and_aligned_columns() -> None:
    rows = [
        {
            "RxMessageId": "rx-1",
            "State": 0,
            "ReceiveTime": "2026-11-30 16:00:00 ",
            "AppCode": "BPM",
            "ContentType": "MSG",
            "Sender": "erp-a@example.com",
            "Subject": "請假單",
        },
        {"RxMessageId": "rx-2", "State": 29, "Subject": None},
    ]
    header, first, second = inbox.table_lines(rows)
    assert header.split() == list(inbox.LIST_COLUMNS)
    assert first.split() == [
        "rx-1", "0", "2026-11-30", "16:00:00", "BPM", "MSG", "erp-a@example.com", "請假單"
    ]  # fmt: skip
    # Every column starts where its header does.
    for column in ("State", "Sender", "Subject"):
        at = header.index(column)
        assert first[at - 2 : at] == "  "
        assert first[at] != " "
    assert second.index("29") == header.index("State")
    assert header.index("State") == len("RxMessageId") + 2
    assert not second.endswith(" ")
