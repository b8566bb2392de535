"""The drop-file errors docs/dropfolders.md shows are the ones the gateway writes."""

from __future__ import annotations

import pathlib
import re

import pytest

from mpg import errors
from mpg.wire import dropfile

DOCS = pathlib.Path(__file__).parents[2] / "docs" / "dropfolders.md"

CASES = [
    (
        "evil.xml",
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x "y">]><message>&x;</message>',
    ),
    (
        "order-17.xml",
        b"<message>\n<ReceiverList>b</ReceiverList>\n\n<Subjekt>x</Subjekt></message>",
    ),
]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize(("name", "document"), CASES)
def test_the_documented_error_lines_are_the_gateways_own(name: str, document: bytes) -> None:
    """The `.error.txt` line (NAME: [line N: ]field: reason) appears in the docs as is."""
    with pytest.raises(errors.DropFileError) as caught:
        dropfile.outbox_values(dropfile.parse_message(document))
    line = f"{name}: {caught.value}"
    assert line in _flat(DOCS.read_text(encoding="utf-8"))
