"""``mpg attachment fetch``: download an attachment the gateway did not fetch with its message.

Attachments sent with ``DownloadFlag`` 0 arrive as metadata and a ``SourceUri``; this
command downloads the bytes from the push server into ``InboxAttachment.FileData``
(and, with ``--out``, into a file).
"""

from __future__ import annotations

import io
import pathlib

import click

from mpg.cli import context, exitcodes
from mpg.gateway import client
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
    help="Also write the bytes to this file.",
)
@click.pass_obj
def fetch(obj: context.CliContext, attachment_id: str, out: pathlib.Path | None) -> None:
    """Download attachment ATTACHMENT_ID into FileData (and --out)."""
    repo = obj.inbox()
    meta = repo.attachment(attachment_id)
    if meta is None:
        raise exitcodes.CommandError(f"no Inbox attachment {attachment_id}")
    data = meta.get("FileData")
    if data is None:
        message = repo.get(str(meta["MessageId"]))
        if message is None:
            raise exitcodes.CommandError(f"attachment {attachment_id}: its Inbox row is gone")
        gateway = obj.settings.gateway
        credential = keys.parse_credential(gateway.credential_text())
        push = client.PushClient(gateway, credential)
        sink = io.BytesIO()
        try:
            size = push.download(
                str(message["MessageId"]), int(meta["SeqNo"]), sink, gateway.chunk_size
            )
        finally:
            push.close()
        data = sink.getvalue()
        repo.save_attachment_data(attachment_id, data)
        click.echo(f"downloaded {size} bytes into InboxAttachment {attachment_id}")
    else:
        click.echo(f"InboxAttachment {attachment_id} already holds its {len(data)} bytes")
    if out is not None:
        out.write_bytes(bytes(data))
        click.echo(f"wrote {out}")
