"""Inbound attachments as files (``inbound_attachments = "files"``), end to end over TLS."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal

from harness import Gateway, World
from test_round_trip import erp_sends_approval

#: Over several chunks of a small chunk_size, so the file is written range by range.
SIZE = 5 * 1024 * 1024 + 123


def _files_env(gw: Gateway, **extra: str) -> dict[str, str]:
    return {
        "MPG_GATEWAY__INBOUND_ATTACHMENTS": "files",
        "MPG_GATEWAY__ATTACHMENT_DIR": str(gw.world.root / f"{gw.name}-att"),
        "MPG_GATEWAY__CHUNK_SIZE": str(256 * 1024),
        **extra,
    }


def _attachment_rows(gw: Gateway) -> list[dict[str, object]]:
    rows = gw.sql('SELECT "SourceUri", "FileData", "FileSize" FROM "InboxAttachment"')
    return [dict(r) for r in rows]


def test_multi_megabyte_attachment_lands_byte_identical_on_disk_with_source_uri(
    world: World,
) -> None:
    """A 5 MB DownloadFlag-1 attachment is stored as a file: FileData NULL, SourceUri = path."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    payload = os.urandom(SIZE)
    source = world.root / "big.bin"
    source.write_bytes(payload)
    a.run()
    b.run(env=_files_env(b))
    erp_sends_approval(a, "tx-big", "erp-b", f"{source}|1")

    a.wait_state("tx-big", 29)
    [row] = _attachment_rows(b)
    assert row["FileData"] is None
    stored = pathlib.Path(str(row["SourceUri"]))
    assert stored.parent.parent == world.root / "erp-b-att"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".part-")]


def test_crash_between_writing_the_file_and_committing_leaves_one_row_and_a_good_file(
    world: World,
) -> None:
    """B dies after the file is renamed, before the Inbox commit; after restart: one row."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    payload = os.urandom(SIZE)
    source = world.root / "big.bin"
    source.write_bytes(payload)
    a.run()
    crashing = b.run(env=_files_env(b, MPG_FAILPOINTS="inbound.after_files"))
    erp_sends_approval(a, "tx-crash", "erp-b", f"{source}|1")

    assert crashing.wait(timeout=60) == -signal.SIGKILL
    assert b.inbox() == []
    orphans = list((world.root / "erp-b-att").rglob("1-*"))
    assert len(orphans) == 1  # complete and renamed, but no row names it yet

    b.run(env=_files_env(b))
    a.wait_state("tx-crash", 29)
    assert len(b.inbox()) == 1
    [row] = _attachment_rows(b)
    assert row["FileData"] is None
    stored = pathlib.Path(str(row["SourceUri"]))
    assert stored == orphans[0]
    assert stored.read_bytes() == payload


def test_fetch_on_demand_in_files_mode_streams_to_attachment_dir_and_out(
    world: World,
) -> None:
    """`mpg attachment fetch --out` of a DownloadFlag-0 file fills attachment_dir and FILE."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    payload = os.urandom(SIZE)
    source = world.root / "later.bin"
    source.write_bytes(payload)
    a.run()
    b.run()
    erp_sends_approval(a, "tx-later", "erp-b", f"{source}|0")
    a.wait_state("tx-later", 29)
    [attachment_id] = [
        r["AttachmentId"] for r in b.sql('SELECT "AttachmentId" FROM "InboxAttachment"')
    ]
    out = world.root / "out.bin"

    env = _files_env(b)
    fetched = world.mpg(
        b.config, "attachment", "fetch", str(attachment_id), "--out", str(out), env=env
    )
    assert "downloaded" in fetched.stdout
    assert out.read_bytes() == payload
    [row] = _attachment_rows(b)
    assert row["FileData"] is None
    assert pathlib.Path(str(row["SourceUri"])).read_bytes() == payload


def test_gateway_refuses_to_start_with_files_mode_and_no_folder(world: World) -> None:
    """`mpg run` in files mode without attachment_dir exits 3 naming the key."""
    world.start_server()
    b = world.gateway("erp-b")
    proc = b.run(env={"MPG_GATEWAY__INBOUND_ATTACHMENTS": "files"})
    assert proc.wait(timeout=60) == 3
    assert "attachment_dir: required" in (world.root / "erp-b.log").read_text()


def test_gateway_refuses_to_start_when_attachment_dir_cannot_be_written(world: World) -> None:
    """An attachment_dir that is a file stops `mpg run` at start, naming the key."""
    world.start_server()
    b = world.gateway("erp-b")
    blocker = world.root / "not-a-folder"
    blocker.write_text("x")
    proc = b.run(env=_files_env(b, MPG_GATEWAY__ATTACHMENT_DIR=str(blocker)))
    assert proc.wait(timeout=60) == 3
    assert "gateway.attachment_dir: cannot write into" in (world.root / "erp-b.log").read_text()


def test_attachment_over_the_inline_limit_stays_out_of_file_data_and_out_streams_it(
    world: World,
) -> None:
    """Database mode, no folder: a DownloadFlag-1 file over the limit stays metadata; --out gets it."""
    world.start_server()
    a, b = world.gateway("erp-a"), world.gateway("erp-b")
    payload = os.urandom(SIZE)
    source = world.root / "big.bin"
    source.write_bytes(payload)
    limit = {"MPG_GATEWAY__MAX_INLINE_ATTACHMENT": str(1024 * 1024)}
    a.run()
    b.run(env=limit)
    erp_sends_approval(a, "tx-over", "erp-b", f"{source}|1")
    a.wait_state("tx-over", 29)
    [row] = _attachment_rows(b)
    assert row["FileData"] is None
    assert str(row["SourceUri"]).startswith("https://")
    [attachment_id] = [
        r["AttachmentId"] for r in b.sql('SELECT "AttachmentId" FROM "InboxAttachment"')
    ]

    refused = world.mpg(b.config, "attachment", "fetch", str(attachment_id), check=False, env=limit)
    assert refused.returncode == 1
    assert "max_inline_attachment" in refused.stderr
    out = world.root / "out.bin"
    world.mpg(b.config, "attachment", "fetch", str(attachment_id), "--out", str(out), env=limit)
    assert out.read_bytes() == payload
    assert _attachment_rows(b)[0]["FileData"] is None
