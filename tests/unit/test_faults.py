"""Every failpoint the code reaches is listed in faults.POINTS, and every listed one is
reached somewhere: the crash tests iterate over POINTS and PUSH_POINTS, so none can be
forgotten."""

from __future__ import annotations

import pathlib
import re

from mpg import faults

PACKAGE = pathlib.Path(faults.__file__).parent
REACH = re.compile(r"faults\.reach\(([^)]*)\)")
LISTED = faults.POINTS + faults.PUSH_POINTS


def reached() -> dict[str, list[str]]:
    """The argument of every ``faults.reach(...)`` call in the package, by file."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for argument in REACH.findall(path.read_text(encoding="utf-8")):
            found.setdefault(argument.strip(), []).append(str(path.relative_to(PACKAGE)))
    return found


def test_every_reached_failpoint_is_a_listed_constant() -> None:
    """``faults.reach`` is called with a constant of mpg.faults that POINTS lists."""
    for argument, where in reached().items():
        name = argument.removeprefix("faults.")
        assert argument.startswith("faults."), f"{argument} in {where}"
        assert name.isupper(), f"{argument} in {where}"
        assert getattr(faults, name) in LISTED, f"{argument} in {where}"


def test_every_listed_failpoint_is_reached_somewhere() -> None:
    """No name in POINTS is left without the place that reaches it."""
    values = {getattr(faults, a.removeprefix("faults.")) for a in reached()}
    assert values == set(LISTED)
