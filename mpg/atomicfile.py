"""Writing files so that a reader never sees half of one, and a crash leaves no trace.

:func:`write_atomic` writes a temporary file in the target's folder, flushes it to
disk, renames it over the target and flushes the folder entry: the target is either
absent, the old file, or the whole new one. The gateway's folders and the server's
message files both write this way.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Final

#: Suffix of the temporary files (never ``.xml`` or ``.ibi``, so no reader takes one).
TMP_SUFFIX: Final = ".tmp"


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename (+ fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name[:60], suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_folder(path.parent)


def sync_folder(folder: pathlib.Path) -> None:
    """Make renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename still happened
    finally:
        os.close(fd)
