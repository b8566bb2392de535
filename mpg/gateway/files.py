"""The gateway's file helpers: atomic writes (:mod:`mpg.atomicfile`) and removing a tree."""

from __future__ import annotations

import pathlib
import shutil

from mpg.atomicfile import TMP_SUFFIX, sync_folder, write_atomic

__all__ = ["TMP_SUFFIX", "remove_tree", "sync_folder", "write_atomic"]


def remove_tree(folder: pathlib.Path | None) -> None:
    """Remove ``folder`` and what it holds, if it exists."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
