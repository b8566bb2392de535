"""``mpg attachment fetch``: download an attachment the gateway did not fetch with its message.

Attachments sent with ``DownloadFlag`` 0 (or too big for ``FileData``) arrive as
metadata and a ``SourceUri``; this command downloads the bytes from the push server,
streaming range by range. Where they go follows ``[gateway] inbound_attachments``:
a file under ``attachment_dir`` (SourceUri then points at it), or ``FileData`` up to
``max_inline_attachment``. ``--out`` also writes them to a file, never holding more
than one chunk in memory when the bytes are not bound for FileData.
"""

from __future__ import annotations

import io
import pathlib
import shutil
from typing import Any

import click

from mpg import errors
from mpg.cli import context
from mpg.gateway import attachfiles, client, inbound
from mpg.storage import inbox
from mpg.wire import keys


@click.group("attachment")
def attachment() -> None:
    """Inbox attachments."""


@attachment.command("fetch")
@click.argument("attachment_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=pathlib.Path),
    default=None,
    help="Also write the bytes to this file (streamed).",
)
@click.pass_obj
def fetch(obj: context.CliContext, attachment_id: str, out: pathlib.Path | None) -> None:
    """Download attachment ATTACHMENT_ID into FileData or attachment_dir (and --out)."""
    repo = obj.inbox()
    meta = repo.attachment(attachment_id)
    if meta is None:
        raise errors.CommandError(f"no Inbox attachment {attachment_id}")
    data = meta.get("FileData")
    stored = _stored_file(meta)
    if data is not None:
        click.echo(f"InboxAttachment {attachment_id} already holds its {len(data)} bytes")
        if out is not None:
            out.write_bytes(bytes(data))
    elif stored is not None:
        click.echo(f"InboxAttachment {attachment_id} is already stored in {stored}")
        if out is not None:
            shutil.copyfile(stored, out)
    else:
        _download(obj, repo, meta, out)
    if out is not None:
        click.echo(f"wrote {out}")


def _stored_file(meta: dict[str, Any]) -> pathlib.Path | None:
    """The file an earlier download stored the attachment in, if it is still there."""
    uri = meta.get("SourceUri") or ""
    if "://" in uri or not uri:
        return None
    path = pathlib.Path(uri)
    return path if path.is_file() else None


def _download(
    obj: context.CliContext,
    repo: inbox.InboxRepository,
    meta: dict[str, Any],
    out: pathlib.Path | None,
) -> None:
    attachment_id = str(meta["AttachmentId"])
    rx_id = str(meta["MessageId"])
    message = repo.get(rx_id)
    if message is None:
        raise errors.CommandError(f"attachment {attachment_id}: its Inbox row is gone")
    gateway = obj.settings.gateway
    size = int(meta["FileSize"] or 0)
    to_file = inbound.to_file(gateway, size)
    inline = not to_file and size <= gateway.max_inline_attachment
    if not (to_file or inline or out):
        raise errors.CommandError(
            f"attachment {attachment_id}: {size} bytes exceed max_inline_attachment;"
            " use --out or set [gateway] attachment_dir"
        )
    push = client.PushClient(gateway, keys.parse_credential(gateway.credential_text()))
    message_id, seq_no = str(message["MessageId"]), int(meta["SeqNo"])
    try:
        if to_file:
            assert gateway.attachment_dir is not None  # inbound.to_file checked it
            target = attachfiles.path_for(
                gateway.attachment_dir, rx_id, seq_no, str(meta["FileName"] or "")
            )
            attachfiles.download(push, target, message_id, seq_no, gateway.chunk_size)
            repo.save_attachment_file(attachment_id, str(target))
            click.echo(f"downloaded {size} bytes into {target}")
            if out is not None:
                shutil.copyfile(target, out)
        elif out is not None:
            attachfiles.download(push, out, message_id, seq_no, gateway.chunk_size)
            if inline:
                repo.save_attachment_data(attachment_id, out.read_bytes())
                click.echo(f"downloaded {size} bytes into InboxAttachment {attachment_id}")
            else:
                click.echo(f"downloaded {size} bytes (over max_inline_attachment: not in FileData)")
        else:
            sink = io.BytesIO()
            push.download(message_id, seq_no, sink, gateway.chunk_size)
            repo.save_attachment_data(attachment_id, sink.getvalue())
            click.echo(f"downloaded {size} bytes into InboxAttachment {attachment_id}")
    finally:
        push.close()
