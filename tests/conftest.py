"""Fixtures shared by every test tier."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from harness import World


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[World]:
    """A fresh world of real processes; every process it started is stopped afterwards."""
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.stop_all()
