"""Validation of Outbox rows (pure: the file check is injected)."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from mpg import errors
from mpg.gateway import attachroots, validation


@dataclasses.dataclass
class Row:
    tx_message_id: str = "tx-1"
    app_code: str | None = "BPM"
    source_domain: str | None = "example.com"
    agent_sender: str | None = None
    sender: str | None = "alice"
    receiver_type: str | None = "U"
    receiver_list: str | None = "bob;carol@other.org"
    bcc_list: str | None = None
    subject: str | None = "請假單 approval"
    content: str | None = "<content/>"
    content_type: str | None = "MSG"
    attachment_list: str | None = None
    alert_flag: bool | None = True
    priority: str | None = None
    keywords: str | None = None


def sizes(table: dict[str, int]) -> validation.FileChecker:
    def check(path: str) -> int:
        if path not in table:
            raise ValueError("does not exist")
        return table[path]

    return check


def check(row: Row, files: dict[str, int] | None = None) -> validation.ValidRow:
    return validation.validate(
        row,
        gateway_account="erp-a@example.com",
        transmit_time="2026-11-23 05:00:00",
        file_size=sizes(files or {}),
    )


def refusal(row: Row, files: dict[str, int] | None = None) -> errors.ValidationError:
    with pytest.raises(errors.ValidationError) as info:
        check(row, files)
    return info.value


def test_accounts_without_domain_are_qualified_with_source_domain() -> None:
    """'bob' becomes bob@example.com; accounts with a domain keep theirs."""
    message = check(Row()).message
    assert message.receivers == ("bob@example.com", "carol@other.org")
    assert message.sender == "alice@example.com"


def test_empty_agent_sender_becomes_the_gateway_account() -> None:
    """The gateway stamps its own account when the ERP leaves AgentSender empty."""
    assert check(Row()).message.agent_sender == "erp-a@example.com"


def test_missing_source_domain_names_the_field_and_row() -> None:
    """SourceDomain is required by the document."""
    err = refusal(Row(source_domain=" "))
    assert (err.field, err.row) == ("SourceDomain", "tx-1")
    assert "required" in str(err)


@pytest.mark.parametrize("value", ["X", "", None, "UD"])
def test_receiver_type_must_be_u_or_d(value: str | None) -> None:
    """Only U (accounts) and D (devices) are known."""
    assert refusal(Row(receiver_type=value)).field == "ReceiverType"


def test_empty_receiver_list_is_refused() -> None:
    """A message must go to someone."""
    assert refusal(Row(receiver_list=" ; ;")).field == "ReceiverList"


def test_unknown_content_type_lists_the_known_ones() -> None:
    """The reason names the allowed values."""
    err = refusal(Row(content_type="MAIL"))
    assert err.field == "ContentType"
    assert "RECALL" in err.reason


def test_content_type_is_case_insensitive() -> None:
    """'msg' is MSG."""
    assert check(Row(content_type="msg")).message.content_type == "MSG"


def test_priority_defaults_to_n_and_rejects_others() -> None:
    """Empty priority is normal; anything but E/H/N/L is refused."""
    assert check(Row(priority=None)).message.priority == "N"
    assert check(Row(priority="e")).message.priority == "E"
    assert refusal(Row(priority="Z")).field == "Priority"


def test_over_wide_subject_is_refused_with_its_length() -> None:
    """SQLite would store 201 characters; the contract says 200."""
    err = refusal(Row(subject="x" * 201))
    assert err.field == "Subject"
    assert "201" in err.reason


def test_control_characters_that_xml_cannot_carry_are_refused() -> None:
    """U+0001 in Content could never be serialized."""
    err = refusal(Row(content="a\x01b"))
    assert err.field == "Content"
    assert "U+0001" in err.reason


def test_device_serials_are_not_qualified() -> None:
    """D recipients are device serial numbers, not accounts."""
    assert check(Row(receiver_type="D", receiver_list="SN1;SN2")).message.receivers == (
        "SN1",
        "SN2",
    )


def test_attachments_are_numbered_and_typed_from_the_path() -> None:
    """SeqNo follows AttachmentList order; FileType is the extension."""
    row = Row(attachment_list="/data/Report.PDF; /data/photo.jpg|1")
    valid = check(row, {"/data/Report.PDF": 10, "/data/photo.jpg": 20})
    first, second = valid.attachments
    assert (first.seq_no, first.file_name, first.file_type, first.file_size) == (
        1,
        "Report.PDF",
        "pdf",
        10,
    )
    assert (first.download_flag, second.download_flag) == (0, 1)


def test_missing_attachment_file_fails_the_row_naming_the_file() -> None:
    """An unreadable file is the row's fault, reported in AttachmentList."""
    err = refusal(Row(attachment_list="/nope/missing.txt"))
    assert err.field == "AttachmentList"
    assert "/nope/missing.txt" in err.reason


def test_bad_download_flag_suffix_is_refused() -> None:
    """Only |0 and |1 are understood."""
    err = refusal(Row(attachment_list="/data/a.txt|7"), {"/data/a.txt": 1})
    assert err.field == "AttachmentList"


def test_real_file_check_refuses_relative_and_missing_paths(tmp_path: pathlib.Path) -> None:
    """The gateway's file check wants a full path to an existing file."""
    roots = attachroots.AttachmentRoots.create([tmp_path])
    with pytest.raises(ValueError, match="full path"):
        roots.check("relative.txt")
    with pytest.raises(ValueError, match="does not exist"):
        roots.check(str(tmp_path / "not-here"))


def test_content_is_free_text_unless_the_channel_opts_in() -> None:
    """Content that is not a Content document passes, except on a channel listed in
    validate_content_for, where it fails naming the reason."""
    row = Row(content="just text")
    check(row)
    with pytest.raises(errors.ValidationError) as caught:
        validation.validate(
            row,
            gateway_account="erp-a@example.com",
            transmit_time="2026-11-23 05:00:00",
            file_size=sizes({}),
            validate_content_for=("bpm",),
        )
    assert caught.value.field == "Content"
    assert "mpg-content.xsd" in caught.value.reason
    other = dataclasses.replace(row, app_code="BULLTIN")
    validation.validate(
        other,
        gateway_account="erp-a@example.com",
        transmit_time="2026-11-23 05:00:00",
        file_size=sizes({}),
        validate_content_for=("BPM",),
    )


@pytest.mark.parametrize(
    ("column", "attribute"),
    [("TxMessageId", "tx_message_id"), ("ReceiverList", "receiver_list"), ("Content", "content")],
)
def test_binary_data_in_a_text_column_is_refused_naming_the_column(
    column: str, attribute: str
) -> None:
    """SQLite stores a BLOB in any column; such a row fails alone, naming the column."""
    err = refusal(dataclasses.replace(Row(), **{attribute: b"\x00\xff"}))
    assert (err.field, err.reason) == (column, "holds binary data (2 bytes), not text")


def test_content_over_the_limit_is_refused_with_its_size() -> None:
    """Content is measured in UTF-8 bytes against max_content_bytes."""
    row = Row(content="中" * 400)
    with pytest.raises(errors.ValidationError) as caught:
        validation.validate(
            row,
            gateway_account="erp-a@example.com",
            transmit_time="2026-11-23 05:00:00",
            file_size=sizes({}),
            max_content_bytes=1199,
        )
    assert caught.value.field == "Content"
    assert "is 1200 bytes" in caught.value.reason
