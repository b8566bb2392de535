"""One exception tree, rooted in MpgError, defined and drawn in mpg/errors.py."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import mpg
from mpg import errors, exitcodes

#: Modules that cannot be imported off Windows (pywin32).
_WINDOWS_ONLY = {"mpg.service.windows"}


def _all_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(mpg.__path__, "mpg.")
        if info.name not in _WINDOWS_ONLY
    ]


def test_every_exception_class_is_defined_in_errors() -> None:
    """No module but mpg.errors defines an exception class."""
    elsewhere = set()
    for name in _all_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name != "mpg.errors":
                elsewhere.add(f"{name}.{cls.__name__}")
    assert elsewhere == set()


def test_every_error_derives_from_mpg_error_and_is_drawn_in_the_docstring() -> None:
    """The tree in the module docstring names every class of the module."""
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == "mpg.errors"
    ]
    assert all(issubclass(cls, errors.MpgError) for cls in classes)
    doc = errors.__doc__ or ""
    assert [
        c.__name__
        for c in classes
        if not re.search(rf"── {c.__name__} |^    {c.__name__}$", doc, re.M)
    ] == []


def test_command_error_defaults_to_the_failure_exit_code() -> None:
    """CommandError's default code is exitcodes.FAILURE, and the mapping passes it on."""
    assert errors.CommandError("no").code == exitcodes.FAILURE
    assert exitcodes.for_exception(errors.CommandError("no", exitcodes.CONFIG)) == exitcodes.CONFIG
