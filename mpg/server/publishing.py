"""Publishing to a group's (or a category's) message file, then pushing its devices.

Reference §6 and docs/push.md ("Publishing"): the new version is written first
(:meth:`mpg.server.push.messagefiles.MessageFiles.publish`, atomic), then one
transaction commits the push jobs that carry its version — one per registered device
of the group with a live token, or per subscribed device for a category's file — and
the audit entry. A device told of a version therefore always finds it, and a device
that already holds it (same ETag) does not fetch it again. The pushes may be spread
over ``server.push_spread_seconds`` (each job gets its own not-before time) so that a
large group does not fetch the file in one burst.

A publication adds messages to those the file already holds (the size policy of
:func:`mpg.wire.messagefile.render` then drops expired and the oldest ones), or
replaces the whole file with one given (``--file``). Publishing a set that renders to
the same bytes makes no new version and pushes nobody.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import config, errors
from mpg.db import transactions
from mpg.server import audit, tables
from mpg.server.push import jobs
from mpg.server.push.messagefiles import MessageFiles
from mpg.wire import messagefile
from mpg.wire.push import NoticeKind

log = structlog.get_logger(__name__)

#: Folder under ``server.data_dir`` that holds the message files.
FILE_DIR: Final = "files"


def message_files(settings: config.ServerSettings) -> MessageFiles:
    """The message files of a server's data folder (and its export folder)."""
    return MessageFiles(
        pathlib.Path(settings.data_dir) / FILE_DIR, settings.message_file_export_dir
    )


def file_key(group: str, category: str = "") -> str:
    """The name a file is published under: ``group`` or ``group.category`` (ids hold no dot)."""
    return f"{group}.{category}" if category else group


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """What a publication did."""

    group: str
    category: str
    #: The strong ETag of the version now served.
    version: str
    #: False when the content rendered to the version already served (nobody pushed).
    changed: bool
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    expired: tuple[str, ...]
    pushes: int


def new_message(
    title: str,
    text: str = "",
    *,
    priority: str = "N",
    expires: dt.datetime | None = None,
    category: str = "",
    now: dt.datetime,
) -> messagefile.PublishedMessage:
    """A message to publish now, with a fresh id."""

    return messagefile.PublishedMessage(
        message_id=str(uuid.uuid4()),
        published=now,
        title=title,
        text=text,
        priority=priority,
        expires=expires,
        category=category,
    )


def _check_target(conn: sa.Connection, group: str, category: str) -> None:
    g = tables.message_group.c
    if conn.execute(sa.select(g.GroupId).where(g.GroupId == group)).first() is None:
        raise errors.NotFound(f"no message group {group!r}")
    if category:
        c = tables.category.c
        found = conn.execute(
            sa.select(c.CategoryId).where(c.GroupId == group, c.CategoryId == category)
        ).first()
        if found is None:
            raise errors.NotFound(f"no category {category!r} in group {group!r}")


def devices_to_push(conn: sa.Connection, group: str, category: str = "") -> list[str]:
    """The devices a publication to ``group`` (or its ``category``) pushes, in a fixed order."""
    d = tables.device.c
    query = sa.select(d.AccountId).where(d.GroupId == group, jobs.pushable(tables.device))
    if category:
        s = tables.subscription.c
        query = query.join(
            tables.subscription,
            sa.and_(s.AccountId == d.AccountId, s.GroupId == group, s.CategoryId == category),
        )
    return [str(a) for a in conn.execute(query.order_by(d.AccountId)).scalars()]


def _messages(
    files: MessageFiles,
    key: str,
    group: str,
    add: Sequence[messagefile.PublishedMessage],
    whole: bytes | None,
) -> tuple[tuple[messagefile.PublishedMessage, ...], str | None]:
    """The messages of the new version, and the ETag of the one served now."""
    current = files.current(key)
    if whole is not None:
        try:
            given = messagefile.parse(whole)
        except errors.WireError as exc:
            raise errors.ValidationError("file", str(exc)) from None
        if given.group != group:
            raise errors.ValidationError(
                "file", f"is the file of group {given.group!r}, not {group!r}"
            )
        return given.messages, None if current is None else current.etag
    if current is None:
        return tuple(add), None
    return messagefile.parse(current.body).messages + tuple(add), current.etag


def publish(
    engine: sa.Engine,
    files: MessageFiles,
    settings: config.ServerSettings,
    group: str,
    *,
    actor: str,
    category: str = "",
    add: Sequence[messagefile.PublishedMessage] = (),
    whole: bytes | None = None,
    clock: Callable[[], float] = time.time,
) -> Published:
    """Publish ``add`` (or the ``whole`` file) to ``group``'s file (or its ``category``'s).

    NotFound for an unknown group or category; ValidationError for a file that breaks
    the format or a message the size policy cannot take.
    """
    with transactions.connect(engine, "reading the message group") as conn:
        _check_target(conn, group, category)
    key = file_key(group, category)
    now = clock()
    messages, before = _messages(files, key, group, add, whole)
    rendered = messagefile.render(
        group,
        messages,
        now=dt.datetime.fromtimestamp(now, dt.UTC),
        max_bytes=settings.message_file_max_bytes,
    )
    version = files.publish(key, rendered.data)
    changed = version.etag != before
    priority = add[0].priority if add else "N"
    with transactions.begin(engine, "committing a publication's pushes") as conn:
        targets = devices_to_push(conn, group, category) if changed else []
        spread = settings.push_spread_seconds / len(targets) if targets else 0.0
        pushes = jobs.enqueue(
            conn,
            [
                jobs.job_row(
                    account,
                    group,
                    NoticeKind.FILE,
                    priority,
                    now,
                    version=version.etag,
                    category=category or None,
                    not_before=now + n * spread,
                )
                for n, account in enumerate(targets)
            ],
        )
        audit.record(
            conn,
            actor,
            "file.publish",
            key,
            f"version {version.etag}, {len(rendered.kept)} messages, {pushes} pushes",
        )
    log.info(
        "file_published",
        file=key,
        version=version.etag,
        changed=changed,
        kept=len(rendered.kept),
        dropped=len(rendered.dropped),
        pushes=pushes,
    )
    return Published(
        group,
        category,
        version.etag,
        changed,
        rendered.kept,
        rendered.dropped,
        rendered.expired,
        pushes,
    )
