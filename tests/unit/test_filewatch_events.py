"""Reading inotify(7) events out of one read's bytes (mpg/gateway/filewatch.py)."""

from __future__ import annotations

import struct

from mpg.gateway import filewatch

IN_MODIFY = 0x2
IN_CREATE = 0x100


def event(wd: int, mask: int, name: bytes = b"", padded_to: int = 0) -> bytes:
    """One struct inotify_event as the kernel writes it (name NUL-padded)."""
    name = name.ljust(padded_to, b"\0") if name else b""
    return struct.pack("iIII", wd, mask, 0, len(name)) + name


def test_events_of_a_file_and_of_its_folder_come_out_in_order_with_names() -> None:
    data = event(2, IN_MODIFY) + event(1, IN_CREATE, b"erp.db-wal", 16) + event(2, IN_MODIFY)
    assert list(filewatch.parse_events(data)) == [
        (2, IN_MODIFY, ""),
        (1, IN_CREATE, "erp.db-wal"),
        (2, IN_MODIFY, ""),
    ]


def test_a_name_that_is_not_utf8_is_kept_as_the_file_system_spells_it() -> None:
    [(_, _, name)] = filewatch.parse_events(event(1, IN_CREATE, b"caf\xe9.db", 16))
    assert name.encode("utf-8", "surrogateescape") == b"caf\xe9.db"
