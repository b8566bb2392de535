"""Recipient lists: splitting, qualifying with SourceDomain, To/Bcc expansion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpg.wire import model, recipients
from mpg.wire.recipients import Recipient


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ()),
        ("", ()),
        (" ; ;, ", ()),
        ("bob", ("bob",)),
        (" bob ; carol ,dave;", ("bob", "carol", "dave")),
        ("Bob;bob;BOB@x;bob@X", ("Bob", "BOB@x")),
        ("王小明;李四;王小明", ("王小明", "李四")),
    ],
)
def test_split_list_trims_drops_empties_and_repeats(
    text: str | None, expected: tuple[str, ...]
) -> None:
    """';' and ',' separate; entries trimmed; empties and case-insensitive repeats dropped."""
    assert recipients.split_list(text) == expected


@given(st.lists(st.text(st.characters(exclude_characters=";,"), min_size=1), max_size=6))
def test_split_list_keeps_order_and_first_spelling(names: list[str]) -> None:
    """Joining with ';' and splitting gives each trimmed name once, first spelling kept."""
    expected: list[str] = []
    for name in (n.strip() for n in names):
        if name and name.casefold() not in {e.casefold() for e in expected}:
            expected.append(name)
    assert recipients.split_list(";".join(names)) == tuple(expected)


@pytest.mark.parametrize(
    ("account", "domain", "expected"),
    [
        ("alice", "example.com", "alice@example.com"),
        (" alice ", " example.com ", "alice@example.com"),
        ("alice", "@example.com", "alice@example.com"),
        ("alice@other.org", "example.com", "alice@other.org"),
        ("psereceiver", "example.com", "psereceiver"),
        ("PSEreceiver", "example.com", "PSEreceiver"),
        ("alice", "", "alice"),
        ("alice", "  ", "alice"),
        ("", "example.com", ""),
    ],
)
def test_qualify(account: str, domain: str, expected: str) -> None:
    """Only a bare account gets @domain; qualified, reserved and domainless stay."""
    assert recipients.qualify(account, domain) == expected


def test_server_agent_is_the_reserved_name() -> None:
    """The reserved name is the model's SERVER_AGENT."""
    assert recipients.qualify(model.SERVER_AGENT, "example.com") == model.SERVER_AGENT


def test_expand_to_sees_no_bcc_and_bcc_sees_itself() -> None:
    """To recipients see an empty BccList; each Bcc recipient sees only itself."""
    assert recipients.expand(("bob", "carol"), ("dave", "erin")) == [
        Recipient("bob", ""),
        Recipient("carol", ""),
        Recipient("dave", "dave"),
        Recipient("erin", "erin"),
    ]


def test_expand_to_wins_over_bcc() -> None:
    """An account in both lists (any case) is delivered once, as a To recipient."""
    assert recipients.expand(["bob@x"], ["BOB@X", "carol@x"]) == [
        Recipient("bob@x", ""),
        Recipient("carol@x", "carol@x"),
    ]


def test_expand_drops_repeats_within_a_list() -> None:
    """Repeated accounts in To or Bcc are expanded once."""
    assert recipients.expand(["a", "A", "a"], ["b", "B"]) == [
        Recipient("a", ""),
        Recipient("b", "b"),
    ]


def test_expand_splits_strings() -> None:
    """A ';' string is split, not iterated character by character."""
    assert recipients.expand("bob;carol", "dave") == [
        Recipient("bob", ""),
        Recipient("carol", ""),
        Recipient("dave", "dave"),
    ]


@given(
    st.lists(st.sampled_from(["a", "A", "b", "c", "C", "d"]), max_size=6),
    st.lists(st.sampled_from(["a", "b", "B", "e", "E"]), max_size=6),
)
def test_expand_gives_each_account_once(to: list[str], bcc: list[str]) -> None:
    """Every account appears exactly once; To accounts see '' and Bcc ones themselves."""
    result = recipients.expand(to, bcc)
    folded = [r.account.casefold() for r in result]
    assert len(folded) == len(set(folded))
    assert set(folded) == {a.casefold() for a in to + bcc}
    to_folded = {a.casefold() for a in to}
    for r in result:
        assert r.visible_bcc == ("" if r.account.casefold() in to_folded else r.account)
