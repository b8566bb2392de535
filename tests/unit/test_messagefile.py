"""The message file format: what goes in, in which order, and the 100 KB policy."""

from __future__ import annotations

import datetime as dt
import pathlib

import pytest
from lxml import etree

from mpg import errors
from mpg.wire import messagefile, xsd
from mpg.wire.messagefile import PublishedMessage

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 30, 18, 0, tzinfo=dt.UTC)


def msg(n: int, *, text: str = "", **changes: object) -> PublishedMessage:
    fields: dict[str, object] = {
        "message_id": f"m-{n}",
        "published": NOW - dt.timedelta(minutes=n),
        "title": f"Notice {n}",
        "text": text,
    }
    fields.update(changes)
    return PublishedMessage(**fields)  # type: ignore[arg-type]


def test_the_file_reads_back_as_it_was_published() -> None:
    published = [
        msg(1, priority="H", category="alerts", expires=NOW + dt.timedelta(days=1)),
        msg(2, text="<b>bold</b> & more"),
    ]
    rendered = messagefile.render("acme", published, now=NOW)
    parsed = messagefile.parse(rendered.data)
    assert parsed.group == "acme"
    assert parsed.messages == tuple(published)
    assert b"&lt;b&gt;bold&lt;/b&gt; &amp; more" in rendered.data


def test_messages_are_newest_first() -> None:
    rendered = messagefile.render("acme", [msg(3), msg(1), msg(2)], now=NOW)
    assert rendered.kept == ("m-1", "m-2", "m-3")


def test_the_same_messages_give_the_same_bytes() -> None:
    first = messagefile.render("acme", [msg(1), msg(2)], now=NOW)
    later = messagefile.render("acme", [msg(2), msg(1)], now=NOW + dt.timedelta(hours=1))
    assert first.data == later.data


def test_expired_messages_leave_the_file() -> None:
    rendered = messagefile.render(
        "acme", [msg(1, expires=NOW), msg(2, expires=NOW + dt.timedelta(seconds=1))], now=NOW
    )
    assert (rendered.kept, rendered.expired) == (("m-2",), ("m-1",))


def test_the_oldest_messages_are_dropped_to_stay_under_the_limit() -> None:
    many = [msg(n, text="x" * 2000) for n in range(1, 200)]
    rendered = messagefile.render("acme", many, now=NOW)
    assert len(rendered.data) <= messagefile.MAX_BYTES
    assert rendered.kept == tuple(f"m-{n}" for n in range(1, len(rendered.kept) + 1))
    assert rendered.dropped == tuple(f"m-{n}" for n in range(len(rendered.kept) + 1, 200))
    assert len(rendered.kept) > 40


def test_no_gap_after_a_large_message_is_dropped() -> None:
    """A smaller older message does not slip in after a larger newer one was left out."""
    rendered = messagefile.render(
        "acme", [msg(1, text="x" * 3000), msg(2, text="y" * 3000), msg(3)], now=NOW, max_bytes=4096
    )
    assert (rendered.kept, rendered.dropped) == (("m-1",), ("m-2", "m-3"))


def test_a_newest_message_too_large_alone_is_refused_naming_it() -> None:
    with pytest.raises(errors.ValidationError, match=r"row m-1: size: .* exceed"):
        messagefile.render("acme", [msg(1, text="x" * 5000)], now=NOW, max_bytes=4096)


def test_a_character_xml_cannot_carry_is_refused_naming_message_and_field() -> None:
    with pytest.raises(errors.ValidationError, match=r"row m-1: title: .*XML 1.0"):
        messagefile.render("acme", [msg(1, title="bell \x07")], now=NOW)


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(errors.ValidationError, match="published: a time without a time zone"):
        messagefile.render("acme", [msg(1, published=dt.datetime(2026, 1, 1))], now=NOW)


def test_an_empty_group_file_is_valid() -> None:
    rendered = messagefile.render("acme", [], now=NOW)
    assert messagefile.parse(rendered.data).messages == ()


def test_a_file_breaking_the_schema_is_refused() -> None:
    data = b'<messagefile version="1" group="acme"><message id="m" published="yesterday" priority="N"><title/><text/></message></messagefile>'
    with pytest.raises(errors.WireError, match="published"):
        messagefile.parse(data)


def test_every_rendered_file_conforms_to_the_shipped_schema() -> None:
    schema = etree.XMLSchema(etree.parse(str(ROOT / "schema" / xsd.MESSAGE_FILE)))
    rendered = messagefile.render("acme", [msg(1, category="c"), msg(2)], now=NOW)
    assert schema.validate(etree.fromstring(rendered.data))


def test_schema_folder_holds_the_shipped_schema() -> None:
    assert (ROOT / "schema" / xsd.MESSAGE_FILE).read_bytes() == xsd.text(xsd.MESSAGE_FILE)
