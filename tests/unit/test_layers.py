"""The import arrows of docs/architecture.md point one way: down.

Parsed from the source (every ``import`` statement, also those inside functions), so
a lazy import that runs only on some path counts as much as one at the top.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "mpg"

#: Each layer and the mpg packages it must never import (the layers above it; for
#: ``wire`` and ``db`` also the I/O layers beside them).
FORBIDDEN: dict[str, frozenset[str]] = {
    "wire": frozenset({"cli", "service", "server", "gateway", "ops", "storage", "db", "agent"}),
    "db": frozenset({"cli", "service", "server", "gateway", "ops", "storage", "agent"}),
    "storage": frozenset({"cli", "service", "server", "gateway", "ops", "agent"}),
    "ops": frozenset({"cli", "service", "server", "gateway", "agent"}),
    "gateway": frozenset({"cli", "service", "server", "agent"}),
    "server": frozenset({"cli", "service", "gateway", "storage", "agent"}),
    "service": frozenset({"cli", "agent"}),
    # The phone agent is a client like the gateway, and uses its client and Inbox.
    "agent": frozenset({"cli", "service", "server", "ops"}),
}


def imported_packages(path: pathlib.Path) -> set[str]:
    """The ``mpg`` subpackages (first name below ``mpg``) a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "mpg":
                names += [f"mpg.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mpg" and len(parts) > 1:
                found.add(parts[1])
    return found


def modules_of(layer: str) -> list[pathlib.Path]:
    """Every module file of one layer."""
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    """No module of ``layer`` imports a package above it."""
    assert modules_of(layer), f"no modules found for mpg/{layer}"
    wrong = {
        str(path.relative_to(PACKAGE.parent)): sorted(imported_packages(path) & FORBIDDEN[layer])
        for path in modules_of(layer)
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_top_level_modules_import_no_layer() -> None:
    """errors, config, exitcodes, logs, metrics, ... are the floor everything stands on."""
    layers = {*FORBIDDEN, "cli"}
    wrong = {path.name: sorted(imported_packages(path) & layers) for path in PACKAGE.glob("*.py")}
    assert {name: names for name, names in wrong.items() if names} == {}


def test_the_checker_sees_a_lazy_upward_import(tmp_path: pathlib.Path) -> None:
    """An import inside a function is found like one at the top of the module."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mpg.cli import exitcodes\n    from mpg import server\n")
    assert imported_packages(module) == {"cli", "server"}
