"""The drop/inbound file format and receipts: round trips, and errors naming the line."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpg import errors
from mpg.wire import content, dropfile, xsd

ROOT = pathlib.Path(__file__).parents[2]
_NOT_XML = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\ufffe\uffff"
xml_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters=_NOT_XML + "\r"))

FIELDS: dict[str, object] = {
    "TxMessageId": "tx-1",
    "AppCode": "BPM",
    "SourceDomain": "example.com",
    "Sender": "alvin",
    "ReceiverType": "U",
    "ReceiverList": "erp-b;bob@other.org",
    "Subject": "請假單 <AF1> & co",
    "Content": content.build_recall("02b2ae73"),
    "ContentType": "RECALL",
    "AlertFlag": False,
    "Priority": "H",
    "Keywords": "leave;hr",
}


def error(document: bytes) -> errors.DropFileError:
    with pytest.raises(errors.DropFileError) as caught:
        dropfile.parse_message(document)
    return caught.value


def test_message_round_trips_columns_and_every_attachment_kind() -> None:
    """Build -> parse gives back the columns as text and each attachment's source."""
    attachments = [
        dropfile.Attachment(name="a.pdf", path="/data/a.pdf", download_flag=1),
        dropfile.Attachment(name="附件.bin", data=b"\x00\xff" * 10, download_flag=0),
        dropfile.Attachment(name="c.txt", file="x.files/3-c.txt", seq_no=3, size=5),
        dropfile.Attachment(name="d.txt", attachment_id="id-1", source_uri="https://s/x"),
    ]
    parsed = dropfile.parse_message(dropfile.build_message(FIELDS, attachments))
    assert parsed.fields == {k: ("0" if v is False else str(v)) for k, v in FIELDS.items()}
    assert [dataclasses.replace(a, line=0) for a in parsed.attachments] == attachments


@given(subject=xml_text, body=xml_text)
def test_any_xml_text_round_trips(subject: str, body: str) -> None:
    """Whatever XML can carry in Subject and Content comes back unchanged."""
    parsed = dropfile.parse_message(dropfile.build_message({"Subject": subject, "Content": body}))
    assert parsed.fields["Subject"] == subject
    assert parsed.fields["Content"] == body


def test_inline_xml_content_is_taken_as_its_text() -> None:
    """<Content> holding a <content> element gives that element's XML as Content."""
    doc = b"<message><Content>\n  <content contenttype='reply'><params/></content>\n</Content></message>"
    parsed = dropfile.parse_message(doc)
    assert content.parse_content(parsed.fields["Content"]).content_type == "reply"
    assert parsed.fields["Content"].startswith("<content")


def test_receipt_round_trips() -> None:
    """Build -> parse of a receipt gives the same receipt."""
    receipt = dropfile.Receipt(
        "tx-1", 29, 20, "m-1", "2026-11-23 06:00:00", "sent", "2026-11-23T06:00:00.000001Z"
    )
    assert dropfile.parse_receipt(dropfile.build_receipt(receipt)) == receipt


def test_unknown_element_is_named_with_its_line() -> None:
    """A misspelt column fails naming the line, the element and the XSD's reason."""
    err = error(b"<message>\n<Subject>x</Subject>\n<Subjekt>y</Subjekt>\n</message>")
    assert err.line == 3
    assert err.field == "Subjekt"
    assert str(err).startswith("line 3: Subjekt: ")


def test_malformed_xml_names_the_line() -> None:
    """A syntax error names the line lxml found it on."""
    err = error(b"<message>\n<Subject>x</Subject>\n<Content>oops</Contnt>\n</message>")
    assert err.line == 3
    assert "malformed XML" in str(err)


def test_wrong_root_is_refused() -> None:
    """A Content document dropped by mistake is refused as such."""
    assert "expected a <message> document, got <content>" in str(error(b"<content/>"))


def test_bad_base64_names_the_attachment_line() -> None:
    """Embedded bytes that are not base64 fail naming the attachment's line."""
    err = error(
        b'<message>\n<attachments>\n<attachment name="a" encoding="base64">***</attachment>\n'
        b"</attachments></message>"
    )
    assert (err.line, err.field) == (3, "attachment")
    assert "base64" in err.reason


def test_two_sources_for_one_attachment_are_refused() -> None:
    """path= together with embedded bytes is ambiguous and refused."""
    err = error(
        b'<message><attachments><attachment name="a" path="/x" encoding="base64">AA==</attachment>'
        b"</attachments></message>"
    )
    assert "only one of" in err.reason


def test_flag_and_receiver_type_are_checked_by_the_schema() -> None:
    """AlertFlag must be a boolean and ReceiverType U or D."""
    assert error(b"<message><AlertFlag>yes</AlertFlag></message>").field == "AlertFlag"
    assert error(b"<message><ReceiverType>X</ReceiverType></message>").field == "ReceiverType"


def test_outbox_values_refuse_columns_the_gateway_sets() -> None:
    """State or RxMessageId in a drop file is refused naming its line."""
    doc = dropfile.parse_message(b"<message>\n<Subject>x</Subject>\n<State>29</State>\n</message>")
    with pytest.raises(errors.DropFileError) as caught:
        dropfile.outbox_values(doc)
    assert (caught.value.line, caught.value.field) == (3, "State")


def test_outbox_values_convert_the_flag() -> None:
    """AlertFlag text becomes a bool; other columns are trimmed, Content is kept as is."""
    doc = dropfile.parse_message(
        b"<message><AlertFlag> true </AlertFlag><Subject> s </Subject><Content> c </Content></message>"
    )
    assert dropfile.outbox_values(doc) == {"AlertFlag": True, "Subject": "s", "Content": " c "}


def test_file_names_sort_like_time_and_hold_no_separators() -> None:
    """The stamp is digits in time order; unsafe characters are replaced, Chinese kept."""
    assert dropfile.file_stamp("2026-11-23T06:30:00.123456Z") == "20261123063000123456"
    assert dropfile.safe_name("../etc/passwd") == "_etc_passwd"
    assert dropfile.safe_name("a;b|c 附件.txt") == "a_b_c 附件.txt"
    assert dropfile.safe_name("..") == "_"


@pytest.mark.parametrize("name", xsd.NAMES)
def test_schema_folder_holds_the_shipped_xsds(name: str) -> None:
    """schema/NAME is the same file the package ships and validates with."""
    assert (ROOT / "schema" / name).read_bytes() == xsd.text(name)


def test_examples_in_the_docs_are_valid_drop_files() -> None:
    """Every <message> example in docs/dropfolders.md parses and passes the XSD."""
    text = (ROOT / "docs" / "dropfolders.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```xml\n")[1:]]
    messages = [b for b in blocks if b.lstrip().startswith(("<?xml", "<message"))]
    assert messages
    for block in messages:
        if "<receipt" in block:
            dropfile.parse_receipt(block.encode())
        else:
            dropfile.parse_message(block.encode())
