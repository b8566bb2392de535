"""Content documents of reference §3: approval, reply and recall."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from mpg import errors
from mpg.wire import content, xsd
from mpg.wire.content import Input, Option, Page, Result

SCHEMA = etree.XMLSchema(
    etree.parse(str(pathlib.Path(__file__).parents[2] / "schema" / "mpg-content.xsd"))
)
_NOT_XML = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\ufffe\uffff"
xml_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters=_NOT_XML))

PARAMS = {"sheetno": "AF20261123001", "sheettype": "absentform"}
PAGES = [
    Page("page1", "摘要", "王小明 申请事假 2 天，请审批。"),
    Page("page2", "表单", "<p>假别：事假<br/>天数：2</p>"),
    Page("page3", "History", "\n  2026-11-23 09:00 提交\r\n  "),
]
INPUTS = [
    Input("comment", "Comment", type="textbox", isnullable=True, defaultvalue="No comment"),
    Input(
        "result",
        type="submit",
        defaultvalue="Approve",
        options=(
            Option("btn1", "Approve", "approve"),
            Option("btn2", "Disapprove", "disapprove"),
            Option("btn3", "Reject", "reject"),
            Option("btn4", "Drop", "drop"),
        ),
    ),
]

REFERENCE_APPROVAL = """<?xml version="1.0" encoding="utf-8"?>
<content contenttype="msg">
  <params>
    <param name="sheetno" value="AF..."/>
    <param name="sheettype" value="absentform"/>
  </params>
  <view>
    <page id="page1" name="Summary">free text (HTML or XML)</page>
    <page id="page2" name="Form"><table><tr><td>a</td></tr></table> tail</page>
  </view>
  <replyinfo>
    <input id="comment" name="Comment" isnullable="true" type="textbox" defaultvalue="No comment"/>
    <input id="result" type="submit" defaultvalue="Approve">
      <option id="btn1" name="Approve" value="approve"/>
      <option id="btn2" name="Disapprove" value="disapprove"/>
    </input>
  </replyinfo>
</content>"""


def assert_valid(document: str) -> None:
    """The document conforms to schema/mpg-content.xsd."""
    root = etree.fromstring(document.encode())
    assert SCHEMA.validate(root), SCHEMA.error_log


def test_approval_round_trips() -> None:
    """build_approval output parses back to the same params, pages and inputs."""
    text = content.build_approval(PARAMS, PAGES, INPUTS)
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<content contenttype="msg">')
    assert_valid(text)
    parsed = content.parse_content(text)
    assert parsed.content_type == "msg"
    assert parsed.params == PARAMS
    assert list(parsed.pages) == PAGES
    assert list(parsed.inputs) == INPUTS
    assert parsed.results == ()


def test_reply_round_trips_with_results_as_list_and_dict() -> None:
    """A reply's results come back in order and as an id -> value mapping."""
    results = [
        Result("result", "Result", "approve"),
        Result("comment", "Comment", "同意，no problem"),
    ]
    text = content.build_reply(PARAMS, results)
    assert_valid(text)
    parsed = content.parse_content(text)
    assert parsed.content_type == "reply"
    assert parsed.params == PARAMS
    assert list(parsed.results) == results
    assert parsed.result_values == {"result": "approve", "comment": "同意，no problem"}


def test_recall_round_trips() -> None:
    """build_recall's message id is what parse_recall reads."""
    text = content.build_recall("02b2ae73-1111-2222-3333-444455556666")
    assert_valid(text)
    assert content.parse_content(text).content_type == "recall"
    assert content.parse_recall(text) == "02b2ae73-1111-2222-3333-444455556666"


@given(
    st.dictionaries(xml_text, xml_text, max_size=4),
    st.lists(st.builds(Page, xml_text, xml_text, xml_text), max_size=3),
)
def test_any_params_and_pages_round_trip(params: dict[str, str], pages: list[Page]) -> None:
    """Any XML-legal text in params and pages, whitespace included, comes back exactly."""
    parsed = content.parse_content(content.build_approval(params, pages, []))
    assert parsed.params == params
    assert list(parsed.pages) == pages


def test_reference_example_parses() -> None:
    """The reference document's approval, with markup inside a page, parses."""
    parsed = content.parse_content(REFERENCE_APPROVAL)
    assert parsed.params == {"sheetno": "AF...", "sheettype": "absentform"}
    assert parsed.pages[0] == Page("page1", "Summary", "free text (HTML or XML)")
    assert parsed.pages[1].text == "<table><tr><td>a</td></tr></table> tail"
    assert parsed.inputs[1].isnullable is None
    assert [o.value for o in parsed.inputs[1].options] == ["approve", "disapprove"]
    assert_valid(REFERENCE_APPROVAL)


def test_content_type_is_lowercased() -> None:
    """contenttype="RECALL" reads as 'recall'."""
    assert content.parse_content('<content contenttype="RECALL"/>').content_type == "recall"


def test_bytes_content_parses() -> None:
    """Content given as bytes parses like text."""
    assert content.parse_recall(content.build_recall("m1").encode()) == "m1"


@pytest.mark.parametrize(
    "text",
    [
        '<content contenttype="recall"><params/></content>',
        '<content contenttype="recall"><params><param name="recallmessageid" value=" "/>'
        "</params></content>",
        '<content contenttype="recall"/>',
    ],
)
def test_recall_without_message_id_is_refused(text: str) -> None:
    """parse_recall needs a non-empty recallmessageid param."""
    with pytest.raises(errors.WireError, match="recallmessageid"):
        content.parse_recall(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("plain words, not XML", "malformed XML"),
        ("<message/>", "expected a <content> document"),
        ('<content><params><param value="x"/></params></content>', "attribute 'name' missing"),
        (
            '<content><params><param name="a"/><param name="a"/></params></content>',
            "param 'a' repeated",
        ),
        ("<content><view><page>x</page></view></content>", r"page\[1\]: attribute 'id'"),
        (
            '<content><replyinfo><input id="i" isnullable="maybe"/></replyinfo></content>',
            "isnullable",
        ),
    ],
)
def test_malformed_content_is_refused(text: str, match: str) -> None:
    """Non-XML text, another root and missing ids raise WireError naming the place."""
    with pytest.raises(errors.WireError, match=match):
        content.parse_content(text)


def test_unsafe_content_is_refused() -> None:
    """Content goes through the safe parser: no entities."""
    with pytest.raises(errors.UnsafeXml):
        content.parse_content('<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]><content/>')


def test_non_xml_character_in_a_page_names_the_page() -> None:
    """A control character in page text raises WireError naming the page."""
    with pytest.raises(errors.WireError, match=r"content/view/page\[2\]"):
        content.build_approval({}, [Page("a", "A", "ok"), Page("b", "B", "\x01")], [])


def test_empty_recall_id_is_refused_when_built() -> None:
    """build_recall needs a message id."""
    with pytest.raises(errors.WireError):
        content.build_recall("")


# -- plain data, the recall row, opt-in validation ------------------------------------


def test_approval_survives_data_round_trip() -> None:
    """parse -> as_data -> from_data -> parse gives the same approval."""
    doc = content.build_approval(PARAMS, PAGES, INPUTS)
    data = content.as_data(content.parse_content(doc))
    assert content.parse_content(content.from_data(data)) == content.parse_content(doc)


def test_reply_results_are_plain_data() -> None:
    """A reply's results come out as {id: value} for an ERP script, in order as a list."""
    doc = content.build_reply(
        PARAMS, [Result("result", "Result", "approve"), Result("comment", "C", "ok")]
    )
    data = content.as_data(content.parse_content(doc))
    assert data["results"] == {"result": "approve", "comment": "ok"}
    assert data["params"] == PARAMS
    assert content.parse_content(content.from_data(data)) == content.parse_content(doc)


def test_reply_can_be_built_from_a_results_mapping() -> None:
    """from_data accepts just {id: value} results."""
    doc = content.from_data(
        {"content_type": "reply", "params": {"a": "1"}, "results": {"result": "reject"}}
    )
    assert content.parse_content(doc).result_values == {"result": "reject"}


def test_recall_survives_data_round_trip() -> None:
    """A recall built from data names the same message id."""
    data = content.as_data(content.parse_content(content.build_recall("m-1")))
    assert content.parse_recall(content.from_data(data)) == "m-1"


def test_unknown_data_type_is_refused() -> None:
    """from_data says which content types it builds."""
    with pytest.raises(errors.WireError, match="msg, reply or recall"):
        content.from_data({"content_type": "status"})


def test_recall_row_is_the_documents_row() -> None:
    """SYS, U, psereceiver, '[Recall]: id', AlertFlag 0, RECALL, State 10 (reference §3)."""
    row = content.recall_row("02b2ae73", source_domain="example.com", agent_sender="pcagent")
    assert (row["AppCode"], row["ReceiverType"], row["ReceiverList"]) == ("SYS", "U", "psereceiver")
    assert row["Subject"] == "[Recall]: 02b2ae73"
    assert (row["AlertFlag"], row["ContentType"], row["State"]) == (False, "RECALL", 10)
    assert content.parse_recall(str(row["Content"])) == "02b2ae73"


def test_content_check_names_line_and_reason() -> None:
    """Validation against mpg-content.xsd passes the built formats and names the line
    and element of the first problem otherwise."""
    xsd.check_content(content.build_approval(PARAMS, PAGES, INPUTS))
    xsd.check_content(content.build_recall("m-1"))
    with pytest.raises(errors.WireError, match=r"line 3: Element 'bogus'"):
        xsd.check_content("<content contenttype='msg'>\n<params/>\n<bogus/>\n</content>")
