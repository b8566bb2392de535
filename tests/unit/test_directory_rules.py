"""The rules for what admins name and type: slugs, names, message file addresses,
domains, and where a registration code stands."""

from __future__ import annotations

import pytest

from mpg import errors
from mpg.server.directory import domains, regcodes, rules


@pytest.mark.parametrize("value", ["north", "n", "0", "north-2_b", "a" * 50])
def test_a_slug_is_lower_case_letters_digits_hyphen_and_underscore(value: str) -> None:
    assert rules.slug("group", value) == value


@pytest.mark.parametrize("value", ["", "North", "-north", "_n", "a" * 51, "nörth", "a b", "a\n"])
def test_anything_else_is_no_slug_and_the_refusal_names_the_field(value: str) -> None:
    with pytest.raises(errors.ValidationError) as refused:
        rules.slug("category", value)
    assert refused.value.field == "category"


def test_names_are_stripped_and_must_be_printable_and_short() -> None:
    assert rules.name("  Nord-Süd  ") == "Nord-Süd"
    for bad, reason in (
        ("", "must not be empty"),
        ("x" * 201, "at most 200"),
        ("a\x00b", "control"),
        ("a\u202eb", "control"),
    ):
        with pytest.raises(errors.ValidationError, match=reason):
            rules.name(bad)


def test_a_note_may_have_line_breaks_but_no_other_control_characters() -> None:
    assert rules.note("gate 2\r\nask Anna") == "gate 2\r\nask Anna"
    with pytest.raises(errors.ValidationError, match="control"):
        rules.note("bell\x07")


@pytest.mark.parametrize(
    "value", ["https://files.example/north.xml", "http://10.0.0.1:8080/f?x=1", ""]
)
def test_a_file_url_is_empty_or_http_with_a_host(value: str) -> None:
    assert rules.file_url(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "ftp://files.example/x",
        "https:///nohost",
        "files.example/x",
        "https://a b.example/",
        "https://user:pw@files.example/x",
        "https://files.example/" + "x" * 1024,
        "javascript:alert(1)",
    ],
)
def test_other_file_urls_are_refused(value: str) -> None:
    with pytest.raises(errors.ValidationError) as refused:
        rules.file_url(value)
    assert refused.value.field == "file_url"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("Firma.Example", "firma.example"),
        ("firma.example.", "firma.example"),
        ("mail.firma.example", "mail.firma.example"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_a_domain_is_stored_lower_case_in_its_ascii_form(value: str, stored: str) -> None:
    assert rules.domain(value) == stored


@pytest.mark.parametrize(
    "value",
    [
        "",
        "example",
        "firma..example",
        "-firma.example",
        "firma.example/x",
        "a@firma.example",
        "10.0.0.1",
        "x" * 64 + ".example",
        ("a." * 127) + "example",
    ],
)
def test_anything_else_is_no_domain(value: str) -> None:
    with pytest.raises(errors.ValidationError) as refused:
        rules.domain(value)
    assert refused.value.field == "domain"


def test_the_domain_of_an_address_is_taken_after_the_last_at() -> None:
    assert domains.address_domain("IT@Firma.Example") == "firma.example"
    with pytest.raises(errors.ValidationError) as refused:
        domains.address_domain("firma.example")
    assert refused.value.field == "email"


def test_a_domain_code_proves_one_address_for_one_row() -> None:
    one = domains.subject("firma.example", "north", "it@firma.example")
    assert one != domains.subject("firma.example", "south", "it@firma.example")
    assert one != domains.subject("firma.example", "north", "boss@firma.example")


@pytest.mark.parametrize(
    ("deleted", "valid_until", "expected"),
    [
        (False, None, regcodes.Status.VALID),
        (False, 101.0, regcodes.Status.VALID),
        (False, 100.0, regcodes.Status.EXPIRED),
        (True, None, regcodes.Status.DELETED),
        (True, 50.0, regcodes.Status.DELETED),
    ],
)
def test_a_code_is_valid_until_its_end_and_deleted_wins(
    deleted: bool, valid_until: float | None, expected: regcodes.Status
) -> None:
    assert regcodes.status(deleted=deleted, valid_until=valid_until, now=100.0) is expected


@pytest.mark.parametrize("valid_until", [99.0, 100.0, regcodes.MAX_VALID_UNTIL + 1])
def test_a_new_end_must_lie_ahead_and_before_the_year_10000(valid_until: float) -> None:
    with pytest.raises(errors.ValidationError, match="valid_until"):
        regcodes.checked_valid_until(valid_until, now=100.0)
