"""Message tracking for the admin console: search, and one message's timeline.

**Search** (:func:`search`) filters ``TransmitQueue`` by MessageId, TxMessageId,
sender, recipient, AppCode, keywords, state and a time range (``ReceivedAt``), newest
first, a page at a time. Pages are keyset pages: the next one starts after the last
row's ``(ReceivedAt, MessageId)`` (:class:`Cursor`), so page 1,000 costs what page
one does and rows arriving meanwhile never shift a page. Each filter has an index
that serves it in that order (:mod:`mpg.server.tables`; figures in
``docs/benchmarks.md``, "Message tracking").

Personal data stays sealed (:mod:`mpg.server.vault`): a sender or recipient is found
through its pseudonym (one equality on the stored id), a keyword through its blind
index in ``MessageKeyword``, which :func:`index_keywords` fills in the submit's
transaction. Only the page shown is opened.

**Timeline** (:func:`timeline`): what the server knows of one message, from the
sending gateway (its transmit time, the server's receipt, recall and the receipt's
way back) to every recipient and device: its queue entry, each event (fetched,
acknowledged, read, withdrawn), each push job and, after a recall, the RECALL's own
way to them. :func:`recipient_status` and :func:`is_final` are the pure rules the
page shows and stops refreshing by.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.server import accounts, rows, tables
from mpg.server.push.jobs import JobState
from mpg.server.rows import EventKind
from mpg.server.states import RECEIPT_WAITING, EntryState, MessageState
from mpg.server.vault import Vault
from mpg.wire import content, model, recipients

#: Rows per page unless asked otherwise, and the most a page may hold.
PAGE_SIZE: Final = 50
MAX_PAGE: Final = 200
#: A recipient with this many messages is searched by walking the messages (see
#: :func:`_statement`), one with fewer through its entries.
BUSY: Final = 2000
#: Most keywords one search may combine (each one more join).
MAX_KEYWORDS: Final = 5
#: Message states a search may ask for.
STATES: Final = tuple(str(s) for s in MessageState)
#: Push job states in which a push may still go out.
_PUSH_WAITING: Final = (JobState.PENDING, JobState.LEASED)
_ID_WIDTH: Final = 50
_NAME_WIDTH: Final = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """What to search for; empty fields do not filter. Times are Unix seconds."""

    message_id: str = ""
    tx_message_id: str = ""
    sender: str = ""  # an account name (gateway, user or device)
    recipient: str = ""  # an account name
    app_code: str = ""
    keywords: str = ""  # ';'- or ','-separated; a message must have each of them
    state: str = ""  # a MessageState
    since: float | None = None  # ReceivedAt >= since
    until: float | None = None  # ReceivedAt < until

    def check(self) -> None:
        """Refuse a query no message could match, naming the field and why."""
        for name, value, width in (
            ("message_id", self.message_id, _ID_WIDTH),
            ("tx_message_id", self.tx_message_id, _ID_WIDTH),
            ("sender", self.sender, _NAME_WIDTH),
            ("recipient", self.recipient, _NAME_WIDTH),
            ("app_code", self.app_code, 20),
            ("keywords", self.keywords, 200),
        ):
            if len(value) > width:
                raise errors.ValidationError(name, f"longer than {width} characters")
        if self.state and self.state not in STATES:
            raise errors.ValidationError("state", f"must be one of {', '.join(STATES)}")
        if len(self.keyword_list()) > MAX_KEYWORDS:
            raise errors.ValidationError("keywords", f"at most {MAX_KEYWORDS} keywords")
        for name, at in (("since", self.since), ("until", self.until)):
            if at is not None and not math.isfinite(at):
                raise errors.ValidationError(name, "not a time")

    def keyword_list(self) -> tuple[str, ...]:
        """The keywords asked for, each once (as the message's Keywords is split)."""
        return recipients.split_list(self.keywords)


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the last row's ``(ReceivedAt, MessageId)``."""

    received_at: float
    message_id: str

    def text(self) -> str:
        """The form a page link carries (``repr`` keeps the float exact)."""
        return f"{self.received_at!r}~{self.message_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor :meth:`text` wrote; ValidationError for anything else."""
        at, sep, message_id = text.partition("~")
        try:
            received_at = float(at)
        except ValueError:
            received_at = math.nan
        if (
            not sep
            or not message_id
            or len(message_id) > _ID_WIDTH
            or not math.isfinite(received_at)
        ):
            raise errors.ValidationError("after", "not a page position this search gave")
        return cls(received_at, message_id)


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """One message in a result page (its Subject opened, its sender named)."""

    message_id: str
    tx_message_id: str
    received_at: float
    sender: str
    app_code: str
    subject: str
    state: str
    content_type: str
    priority: str
    recipients: int
    served: int
    recalled: int


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """A page of results, newest first; ``after`` continues it (None: the last page)."""

    items: tuple[Found, ...]
    after: str | None


def _page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError("limit", f"must be 1 to {MAX_PAGE}")
    return limit


def search(
    engine: sa.Engine, vault: Vault, query: Query, *, limit: int = PAGE_SIZE, after: str = ""
) -> Page:
    """The messages matching ``query``, newest first, ``limit`` of them after ``after``."""
    query.check()
    size = _page_size(limit)
    cursor = Cursor.parse(after) if after else None
    with transactions.connect(engine, "searching messages") as conn:
        busy = bool(query.recipient) and _busy(conn, _account_id(vault, query.recipient))
        found = conn.execute(_statement(vault, query, cursor, size + 1, busy)).all()
        names = vault.names(conn, {str(row.SenderAccount) for row in found[:size]})
    items = tuple(_found(vault, row, names) for row in found[:size])
    more = len(found) > size
    last = items[-1] if items else None
    return Page(items, Cursor(last.received_at, last.message_id).text() if more and last else None)


def _account_id(vault: Vault, name: str) -> str:
    """The AccountId of an account name as people write it."""
    return vault.account_id(accounts.normalize(name))


def _copies(recipient_id: str) -> sa.ColumnElement[bool]:
    r = tables.receive_queue.c
    return sa.and_(r.Recipient == recipient_id, r.Kind == model.DeliveryKind.MESSAGE)


def _busy(conn: sa.Connection, recipient_id: str) -> bool:
    """True when the recipient has at least :data:`BUSY` messages (counted in the index,
    never further)."""
    r = tables.receive_queue.c
    few = sa.select(r.MessageId).where(_copies(recipient_id)).limit(BUSY).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(few)).scalar_one()) >= BUSY


def _statement(
    vault: Vault, query: Query, cursor: Cursor | None, limit: int, busy: bool = False
) -> sa.Select[Any]:
    """The SELECT of one page: every filter, ordered by the index that serves it.

    A recipient's messages are found two ways: a recipient with few of them
    (``busy`` False) by its own entries, sorted; one with many by walking the messages
    newest first and keeping those it has a copy of, which finds a page after some
    hundred rows instead of sorting all of its entries (docs/benchmarks.md).
    """
    t = tables.transmit_queue.c
    statement = sa.select(
        t.MessageId,
        t.TxMessageId,
        t.SenderAccount,
        t.AppCode,
        t.ReceivedAt,
        t.State,
        t.ContentType,
        t.Priority,
        t.RecipientCount,
        t.ServedCount,
        t.RecalledCount,
        t.Subject,
        t.SubjectEnc,
    ).select_from(tables.transmit_queue)
    # The order and the page's start go by the columns of the table that drives the
    # search: a keyword's index rows carry the message's ReceivedAt, so the database
    # walks that index newest first and stops at the page's end.
    at, mid = t.ReceivedAt, t.MessageId
    for n, keyword in enumerate(query.keyword_list()):
        k = tables.message_keyword.alias(f"k{n}")
        statement = statement.join(
            k,
            sa.and_(k.c.MessageId == t.MessageId, k.c.KeywordIndex == vault.keyword_index(keyword)),
        )
        if n == 0:
            at, mid = k.c.ReceivedAt, k.c.MessageId
    conditions = _filters(vault, query, busy)
    if query.since is not None:
        conditions.append(at >= query.since)
    if query.until is not None:
        conditions.append(at < query.until)
    if cursor is not None:
        conditions.append(
            sa.or_(
                at < cursor.received_at,
                sa.and_(at == cursor.received_at, mid < cursor.message_id),
            )
        )
    return statement.where(*conditions).order_by(at.desc(), mid.desc()).limit(limit)


def _filters(vault: Vault, query: Query, busy: bool) -> list[sa.ColumnElement[bool]]:
    """The conditions on the message itself (all but keywords, time and page)."""
    t = tables.transmit_queue.c
    r = tables.receive_queue.c
    conditions: list[sa.ColumnElement[bool]] = []
    if query.message_id:
        conditions.append(t.MessageId == query.message_id.strip())
    if query.tx_message_id:
        conditions.append(t.TxMessageId == query.tx_message_id.strip())
    if query.sender:
        conditions.append(t.SenderAccount == _account_id(vault, query.sender))
    if query.recipient:
        copies = _copies(_account_id(vault, query.recipient))
        if busy:
            conditions.append(sa.exists().where(r.MessageId == t.MessageId, copies))
        else:
            conditions.append(t.MessageId.in_(sa.select(r.MessageId).where(copies)))
    if query.app_code:
        conditions.append(t.AppCode == query.app_code.strip())
    if query.state:
        conditions.append(t.State == query.state)
    return conditions


def _found(vault: Vault, row: tables.Row, names: Mapping[str, str]) -> Found:
    subject = vault.unseal(
        row.SubjectEnc, "TransmitQueue", "SubjectEnc", row.MessageId, row.Subject
    )
    return Found(
        message_id=str(row.MessageId),
        tx_message_id=str(row.TxMessageId),
        received_at=float(row.ReceivedAt),
        sender=names.get(str(row.SenderAccount), str(row.SenderAccount)),
        app_code=row.AppCode or "",
        subject=subject or "",
        state=str(row.State),
        content_type=row.ContentType or "",
        priority=row.Priority or model.DEFAULT_PRIORITY,
        recipients=int(row.RecipientCount),
        served=int(row.ServedCount),
        recalled=int(row.RecalledCount),
    )


# ---------------------------------------------------------------------- keywords


def keyword_rows(
    vault: Vault, message_id: str, keywords: str, received_at: float
) -> list[dict[str, Any]]:
    """The ``MessageKeyword`` rows of one message's Keywords (each keyword once)."""
    indexes = dict.fromkeys(vault.keyword_index(word) for word in recipients.split_list(keywords))
    return [
        {"MessageId": message_id, "KeywordIndex": index, "ReceivedAt": received_at}
        for index in indexes
    ]


def index_keywords(
    conn: sa.Connection,
    vault: Vault,
    messages: Sequence[model.OutgoingMessage],
    new_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Index the keywords of the accepted messages among ``new_rows`` (the
    ``TransmitQueue`` rows a submit is inserting; ``messages``: what was submitted),
    in the submit's transaction. Refused messages are not indexed: a corrected
    resubmission deletes them."""
    by_tx = {m.tx_message_id: m for m in messages}
    made: list[dict[str, Any]] = []
    for row in new_rows:
        msg = by_tx.get(str(row["TxMessageId"]))
        if msg is not None and msg.keywords and row["State"] == MessageState.QUEUED:
            made += keyword_rows(vault, str(row["MessageId"]), msg.keywords, row["ReceivedAt"])
    if made:
        conn.execute(tables.message_keyword.insert(), made)


# ---------------------------------------------------------------------- timeline


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One thing that happened (``at``: Unix time)."""

    at: float
    kind: str
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Push:
    """One push job to a device."""

    kind: str  # message | recall
    state: str  # a JobState
    attempts: int
    last_error: str
    created_at: float
    done_at: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Recipient:
    """The message's way to one recipient (an account: gateway, user or device)."""

    name: str
    account_id: str
    kind: str  # gateway | user | device | '' (no such account any more)
    entry_state: str  # an EntryState
    status: str  # recipient_status()
    steps: tuple[Step, ...]
    pushes: tuple[Push, ...]
    recall_state: str  # the RECALL's EntryState for this recipient, '' when none


@dataclasses.dataclass(frozen=True, slots=True)
class Timeline:
    """One message as the server knows it."""

    message: Mapping[str, Any]  # the TransmitQueue row, its sealed columns opened
    sender: str  # the sending account's name
    sender_steps: tuple[Step, ...]  # at the sender and the server
    recipients: tuple[Recipient, ...]
    recall_ids: tuple[str, ...]  # MessageIds of the RECALLs of this message
    final: bool  # nothing about it can change any more but a read report

    @property
    def recalled(self) -> bool:
        """True once a recall of it was accepted."""
        return any(step.kind == EventKind.RECALLED for step in self.sender_steps)


#: What a recipient's status says, from its entry and what happened to it.
STATUS_WORDS: Final = {
    "queued": "waiting on the server; not yet fetched",
    "notified": "its device was told by push; not yet fetched",
    "push failed": "the push to its device failed; not yet fetched",
    "fetched": "fetched; waiting for the acknowledgement",
    "acknowledged": "stored by the recipient",
    "read": "read on the device",
    "withdrawn": "recalled before it was stored",
}


def recipient_status(entry_state: str, kinds: Iterable[str]) -> str:
    """The recipient's status (a key of :data:`STATUS_WORDS`) from its entry's state
    and the kinds of its events."""
    seen = set(kinds)
    if entry_state == EntryState.WITHDRAWN:
        return "withdrawn"
    if entry_state == EntryState.ACKED:
        return "read" if EventKind.READ in seen else "acknowledged"
    if entry_state == EntryState.LEASED:
        return "fetched"
    if EventKind.NOTIFIED in seen:
        return "notified"
    if EventKind.PUSH_FAILED in seen:
        return "push failed"
    return "queued"


def is_final(
    message_state: str,
    receipt_state: str | None,
    entry_states: Iterable[str],
    push_states: Iterable[str],
) -> bool:
    """True when the message can no longer move: not queued, its receipt (if it owes
    one) stored by the sender, no entry (its own, its RECALL's) waiting and no push
    left to send."""
    waiting = {str(s) for s in (EntryState.QUEUED, EntryState.LEASED)}
    return (
        message_state != MessageState.QUEUED
        and receipt_state not in RECEIPT_WAITING
        and not any(s in waiting for s in entry_states)
        and not any(s in _PUSH_WAITING for s in push_states)
    )


def timeline(engine: sa.Engine, vault: Vault, message_id: str) -> Timeline:
    """Everything the server knows of ``message_id``; NotFound when there is no such
    message (or it was purged by retention)."""
    t = tables.transmit_queue.c
    with transactions.connect(engine, "reading a message's timeline") as conn:
        row = conn.execute(
            sa.select(tables.transmit_queue).where(t.MessageId == message_id.strip())
        ).first()
        if row is None:
            raise errors.NotFound(f"no message {message_id}")
        message = rows.opened_message(vault, row)
        events = _events(conn, [row.MessageId])
        recall_ids = _recalls(conn, vault, row, events)
        entries = _entries(conn, [row.MessageId, *recall_ids])
        q = tables.receipt_queue.c
        receipt_state = conn.execute(
            sa.select(q.State).where(q.MessageId == row.MessageId)
        ).scalar()
        recall_events = _events(conn, recall_ids)
        j = tables.push_job.c
        jobs = conn.execute(
            sa.select(tables.push_job).where(j.MessageId == row.MessageId).order_by(j.CreatedAt)
        ).all()
        ids = {str(row.SenderAccount)} | {str(e.Recipient) for e in entries}
        names = vault.names(conn, ids)
        kinds = _kinds(conn, ids)
    return _assemble(
        message, receipt_state, events, entries, recall_ids, recall_events, jobs, names, kinds
    )


def _events(conn: sa.Connection, message_ids: Sequence[str]) -> list[tables.Row]:
    e = tables.message_event.c
    if not message_ids:
        return []
    return list(
        conn.execute(
            sa.select(e.MessageId, e.At, e.Kind, e.Account, e.Detail)
            .where(e.MessageId.in_(message_ids))
            .order_by(e.Id)
        )
    )


def _entries(conn: sa.Connection, message_ids: Sequence[str]) -> list[tables.Row]:
    r = tables.receive_queue.c
    return list(
        conn.execute(
            sa.select(r.EntryId, r.MessageId, r.Recipient, r.Kind, r.State)
            .where(r.MessageId.in_(message_ids))
            .order_by(r.CreatedSeq)
        )
    )


def _recalls(
    conn: sa.Connection, vault: Vault, row: tables.Row, events: Sequence[tables.Row]
) -> list[str]:
    """The RECALLs of the message: the sender's RECALL rows received at the moment of
    each ``recalled`` event (one transaction stamps both), whose content names it."""
    t = tables.transmit_queue.c
    moments = {float(e.At) for e in events if e.Kind == EventKind.RECALLED}
    found: list[str] = []
    for at in sorted(moments):
        candidates = conn.execute(
            sa.select(t.MessageId, t.Content, t.ContentEnc).where(
                t.SenderAccount == row.SenderAccount,
                t.ReceivedAt == at,
                t.ContentType == "RECALL",
                t.State == MessageState.SERVED,
            )
        )
        for c in candidates:
            text = vault.unseal(c.ContentEnc, "TransmitQueue", "ContentEnc", c.MessageId, c.Content)
            try:
                if content.parse_recall(text or "") == row.MessageId:
                    found.append(str(c.MessageId))
            except (errors.WireError, errors.ValidationError):
                continue  # another sender's RECALL stamped the same moment, unreadable
    return found


def _kinds(conn: sa.Connection, ids: Iterable[str]) -> dict[str, str]:
    a = tables.account.c
    found: dict[str, str] = {}
    for part in transactions.chunks(sorted(set(ids))):
        result = conn.execute(sa.select(a.AccountId, a.Kind).where(a.AccountId.in_(part)))
        found.update({str(r.AccountId): str(r.Kind) for r in result})
    return found


def _assemble(
    message: Mapping[str, Any],
    receipt_state: str | None,
    events: Sequence[tables.Row],
    entries: Sequence[tables.Row],
    recall_ids: Sequence[str],
    recall_events: Sequence[tables.Row],
    jobs: Sequence[tables.Row],
    names: Mapping[str, str],
    kinds: Mapping[str, str],
) -> Timeline:
    """The timeline from the rows read (pure)."""
    message_id = str(message["MessageId"])
    sender_id = str(message["SenderAccount"])
    own = [e for e in entries if e.MessageId == message_id and e.Kind == model.DeliveryKind.MESSAGE]
    recipient_ids = {str(e.Recipient) for e in own}
    steps: dict[str, list[Step]] = collections.defaultdict(list)
    sender_steps: list[Step] = []
    for e in events:
        step = Step(float(e.At), str(e.Kind), str(e.Detail))
        account = str(e.Account)
        if account in recipient_ids and e.Kind not in _SENDER_KINDS:
            steps[account].append(step)
        else:
            sender_steps.append(step)
    for e in recall_events:
        if str(e.Account) in recipient_ids:
            steps[str(e.Account)].append(Step(float(e.At), f"recall {e.Kind}", str(e.Detail)))
    pushes: dict[str, list[Push]] = collections.defaultdict(list)
    for job in jobs:
        pushes[str(job.AccountId)].append(
            Push(
                str(job.Kind),
                str(job.State),
                int(job.Attempts),
                job.LastError or "",
                float(job.CreatedAt),
                None if job.DoneAt is None else float(job.DoneAt),
            )
        )
    recall_state = {
        str(e.Recipient): str(e.State)
        for e in entries
        if e.MessageId in recall_ids and e.Kind == model.DeliveryKind.MESSAGE
    }
    made = []
    for entry in own:
        account = str(entry.Recipient)
        mine = sorted(steps[account], key=lambda s: s.at)
        made.append(
            Recipient(
                name=names.get(account, account),
                account_id=account,
                kind=kinds.get(account, ""),
                entry_state=str(entry.State),
                status=recipient_status(str(entry.State), (s.kind for s in mine)),
                steps=tuple(mine),
                pushes=tuple(pushes[account]),
                recall_state=recall_state.get(account, ""),
            )
        )
    final = is_final(
        str(message["State"]),
        receipt_state,
        (str(e.State) for e in entries),
        (str(job.State) for job in jobs),
    )
    return Timeline(
        message=message,
        sender=names.get(sender_id, sender_id),
        sender_steps=tuple(sender_steps),
        recipients=tuple(made),
        recall_ids=tuple(recall_ids),
        final=final,
    )


#: Events that concern the message as a whole, whoever they name.
_SENDER_KINDS: Final = frozenset(
    {
        EventKind.RECEIVED,
        EventKind.RECALLED,
        EventKind.SERVED,
        EventKind.RECEIPT_FETCHED,
        EventKind.RECEIPT_ACKNOWLEDGED,
    }
)


def utc_text(at: float | None) -> str:
    """A Unix time as ``yyyy-MM-dd HH:mm:ss`` UTC ('' for None)."""
    if at is None:
        return ""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
