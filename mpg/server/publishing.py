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

An Outbox row addressed to a group or category whose ``Keywords`` hold
``mpg:publish`` is also published, in its submit's transaction
(:class:`OutboxPublisher`); its devices then get the publication's ``file`` push
instead of the row's ``message`` push, so a phone is alerted once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

import sqlalchemy as sa
import structlog

from mpg import config, errors
from mpg.db import transactions
from mpg.server import addressing, audit, rows, tables
from mpg.server.push import jobs
from mpg.server.push.messagefiles import MessageFiles
from mpg.server.rows import EventKind
from mpg.wire import messagefile, model
from mpg.wire.push import NoticeKind

log = structlog.get_logger(__name__)

#: Folder under ``server.data_dir`` that holds the message files.
FILE_DIR: Final = "files"
#: The keyword (of an Outbox row's ``;``-separated Keywords) that asks for publishing.
PUBLISH_KEYWORD: Final = "mpg:publish"
#: The audit log's actor for publications an Outbox row made.
OUTBOX_ACTOR: Final = "outbox"
#: Ends the file's address in a ``published`` event's Detail (``group:acme: version …``),
#: which is how a recall finds the files to take its message out of.
_WHERE_END: Final = ": "


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
    #: The devices (AccountIds) pushed.
    pushed: tuple[str, ...] = ()


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
    """NotFound unless the group (and category) exist. The group's row stays locked
    until the caller's transaction ends, so that publications to one group — from the
    API, the command line or Outbox rows, in any server process — read and write its
    files one after another and none loses another's messages."""
    g = tables.message_group.c
    locked = sa.select(g.GroupId).where(g.GroupId == group).with_for_update()
    if conn.execute(locked).first() is None:
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
    remove: Collection[str] = (),
) -> tuple[tuple[messagefile.PublishedMessage, ...], str | None]:
    """The messages of the new version (less those with an id in ``remove``), and the
    ETag of the one served now."""
    kept, before = _wanted(files, key, group, add, whole)
    return tuple(m for m in kept if m.message_id not in remove), before


def _wanted(
    files: MessageFiles,
    key: str,
    group: str,
    add: Sequence[messagefile.PublishedMessage],
    whole: bytes | None,
) -> tuple[tuple[messagefile.PublishedMessage, ...], str | None]:
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
    with transactions.begin(engine, "publishing to a message file") as conn:
        done = publish_in(
            conn,
            files,
            settings,
            group,
            actor=actor,
            category=category,
            add=add,
            whole=whole,
            now=clock(),
        )
    _logged(done)
    return done


def publish_in(
    conn: sa.Connection,
    files: MessageFiles,
    settings: config.ServerSettings,
    group: str,
    *,
    actor: str,
    category: str = "",
    add: Sequence[messagefile.PublishedMessage] = (),
    whole: bytes | None = None,
    now: float,
    message_id: str | None = None,
    remove: Collection[str] = (),
) -> Published:
    """:func:`publish` in the caller's transaction: the group locked, the new version
    (without the messages whose ids are in ``remove``) written, its ``file`` jobs
    (carrying ``message_id`` when an Outbox row caused them) and the audit entry added;
    they commit with the caller."""
    _check_target(conn, group, category)
    key = file_key(group, category)
    messages, before = _messages(files, key, group, add, whole, remove)
    rendered = messagefile.render(
        group,
        messages,
        now=dt.datetime.fromtimestamp(now, dt.UTC),
        max_bytes=settings.message_file_max_bytes,
    )
    version = files.publish(key, rendered.data)
    changed = version.etag != before
    priority = add[0].priority if add else "N"
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
                message_id=message_id,
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
        f"version {version.etag}, {len(rendered.kept)} messages, {pushes} pushes"
        + (f", message {message_id}" if message_id else ""),
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
        tuple(targets),
    )


def _logged(done: Published) -> None:
    log.info(
        "file_published",
        file=file_key(done.group, done.category),
        version=done.version,
        changed=done.changed,
        kept=len(done.kept),
        dropped=len(done.dropped),
        pushes=done.pushes,
    )


def publish_targets(msg: model.OutgoingMessage) -> tuple[addressing.Address, ...]:
    """The groups and categories an Outbox row publishes to: the addresses of its To
    list (ReceiverType ``D``) when its Keywords hold :data:`PUBLISH_KEYWORD` (any case)."""
    words = {word.strip().lower() for word in msg.keywords.split(";")}
    if msg.receiver_type != "D" or PUBLISH_KEYWORD not in words:
        return ()
    found = (addressing.parse(entry) for entry in msg.receivers)
    return tuple(dict.fromkeys(a for a in found if a is not None))


class OutboxPublisher:
    """Publishes the accepted Outbox rows that ask for it, inside their submit's
    transaction (:meth:`mpg.server.queues.QueueStore.submit` calls it after writing
    the messages): ``Subject`` the title, ``Content`` the text, ``Priority`` the
    priority, the server's MessageId the file message's id."""

    def __init__(self, files: MessageFiles, settings: config.ServerSettings) -> None:
        self._files = files
        self._settings = settings

    def __call__(
        self,
        conn: sa.Connection,
        sender_id: str,
        messages: Sequence[model.OutgoingMessage],
        results: Mapping[str, model.SubmitResult],
        now: float,
    ) -> None:
        """Publish each accepted message of ``messages`` that asks for it (``results``
        by TxMessageId; ``sender_id`` the sender's AccountId, for the events)."""
        wanted = [
            (address, msg, result.message_id)
            for msg in messages
            if (result := results.get(msg.tx_message_id)) is not None and result.accepted
            for address in publish_targets(msg)
        ]
        # Groups locked in one order by every submit: two never wait for each other.
        for address, msg, message_id in sorted(wanted, key=lambda w: str(w[0])):
            self._one(conn, sender_id, msg, message_id, address, now)

    def _one(
        self,
        conn: sa.Connection,
        sender_id: str,
        msg: model.OutgoingMessage,
        message_id: str,
        address: addressing.Address,
        now: float,
    ) -> None:
        item = messagefile.PublishedMessage(
            message_id=message_id,
            published=dt.datetime.fromtimestamp(now, dt.UTC),
            title=msg.subject,
            text=msg.content,
            priority=msg.priority,
            category=address.category or "",
        )
        try:
            done = publish_in(
                conn,
                self._files,
                self._settings,
                address.group,
                actor=OUTBOX_ACTOR,
                category=address.category or "",
                add=[item],
                now=now,
                message_id=message_id,
            )
        except (errors.NotFound, errors.ValidationError) as exc:
            # The message is delivered all the same; its history says why it is not
            # in the file (it was refused before anything was written).
            log.warning("outbox_publish_refused", message_id=message_id, to=str(address))
            event = rows.event(
                message_id, now, EventKind.PUBLISH_FAILED, sender_id, f"{address}: {exc}"
            )
            conn.execute(tables.message_event.insert(), event)
            return
        jobs.drop_message_pushes(conn, message_id, done.pushed)
        detail = f"{address}{_WHERE_END}version {done.version}, {done.pushes} pushes"
        conn.execute(
            tables.message_event.insert(),
            rows.event(message_id, now, EventKind.PUBLISHED, sender_id, detail),
        )
        _logged(done)

    def withdraw(self, conn: sa.Connection, message_id: str, sender_id: str, now: float) -> None:
        """Take a recalled message out of every file its row published it to (in the
        recall's transaction); the devices of each file hear of its new version."""
        e = tables.message_event.c
        published = conn.execute(
            sa.select(e.Detail).where(e.MessageId == message_id, e.Kind == EventKind.PUBLISHED)
        ).scalars()
        found = {addressing.parse(d.partition(_WHERE_END)[0]) for d in published}
        for address in sorted((a for a in found if a is not None), key=str):
            try:
                done = publish_in(
                    conn,
                    self._files,
                    self._settings,
                    address.group,
                    actor=OUTBOX_ACTOR,
                    category=address.category or "",
                    now=now,
                    message_id=message_id,
                    remove={message_id},
                )
            except errors.NotFound:
                continue  # the group or category is gone, and its file with it
            detail = f"{address}{_WHERE_END}version {done.version}, {done.pushes} pushes"
            conn.execute(
                tables.message_event.insert(),
                rows.event(message_id, now, EventKind.UNPUBLISHED, sender_id, detail),
            )
            _logged(done)
