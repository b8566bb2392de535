"""OutboxRepository: the only code that reads and changes ``Outbox`` rows.

Every ``State`` change is a compare-and-set (``UPDATE … WHERE TxMessageId = :tx AND
State = :expected``) checked against :mod:`mpg.storage.states`, done for a whole batch
in one transaction, with one ``MpgTransition`` row and one ``state_changed`` log event
per step. A row the ERP changed meanwhile (e.g. voided to 98) simply does not move.

Several gateway processes may serve one Outbox. :meth:`OutboxRepository.claim` takes
ready rows in one short transaction that locks them the way the database allows
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB, ``UPDLOCK, READPAST,
ROWLOCK`` on SQL Server, ``BEGIN IMMEDIATE`` on SQLite) and records an ``MpgClaim``
lease for each; no lock is held once it returns, so none is held across the network.
Rows in flight are resumed only by the process holding their claim, or by any
process once the lease ran out (:meth:`OutboxRepository.take_over`). The outbound
worker claims with :meth:`OutboxRepository.claim_and_start`: the claim and each row's
first move (to 11, 12 or 99) in one transaction, claims only on the rows left in flight.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mpg import errors, timefmt
from mpg.db import bulk, transactions
from mpg.storage import database, history, schema, states, tables
from mpg.wire import model

#: Width of ``Outbox.StatusLog``.
STATUS_LOG_WIDTH: Final = 200

#: States a row is still being worked on in (``mpg status`` shows the oldest).
PENDING_STATES: Final = (
    states.OutboxState.READY,
    *sorted(states.IN_FLIGHT),
    states.OutboxState.WAITING,
)
#: States a row should not stay in for long (``mpg status`` warns about them).
STUCK_STATES: Final = (*sorted(states.IN_FLIGHT), states.OutboxState.WAITING)
#: States the transition table lets go to 98 (voided).
VOIDABLE_STATES: Final = tuple(
    sorted(a for a, b in states.OUTBOX_TRANSITIONS if b == states.OutboxState.VOIDED)
)
#: States the send timeout applies to: those the transition table lets go to 97
#: (10, 11, 12 today; 20 waits for recipients, not for the gateway).
TIMEOUT_STATES: Final = tuple(
    sorted(a for a, b in states.OUTBOX_TRANSITIONS if b == states.OutboxState.TIMED_OUT)
)

#: Every code ``Outbox.State`` may hold.
STATE_CODES: Final = tuple(int(code) for code in states.OutboxState)

#: How long a claim on a row lasts without being renewed (seconds).
DEFAULT_LEASE: Final = 300.0

_o = tables.outbox.c
_a = tables.outbox_attachment.c
_c = tables.claim.c

#: SQL Server's row-locking idiom for a queue: lock what is read, skip what others lock.
MSSQL_CLAIM_HINT: Final = "WITH (UPDLOCK, READPAST, ROWLOCK)"

#: Pickup order of the priority codes; NULL, '' and unknown codes count as ``N``.
_PRIORITY_RANK: Final = sa.case(
    {code: rank for rank, code in enumerate(model.PRIORITIES)},
    value=sa.func.upper(_o.Priority),
    else_=model.PRIORITIES.index(model.DEFAULT_PRIORITY),
)

#: The batch compare-and-set; ``p_message_id`` NULL keeps the stored MessageId.
_CAS: Final = (
    sa.update(tables.outbox)
    .where(_o.TxMessageId == sa.bindparam("p_tx"), _o.State == sa.bindparam("p_expected"))
    .values(
        State=sa.bindparam("p_state"),
        StatusTime=sa.bindparam("p_status_time"),
        StatusLog=sa.bindparam("p_status_log"),
        MessageId=sa.func.coalesce(
            sa.bindparam("p_message_id", type_=sa.Unicode(50)), _o.MessageId
        ),
        TransmitTime=sa.func.coalesce(
            sa.bindparam("p_transmit_time", type_=sa.NCHAR(20)), _o.TransmitTime
        ),
    )
)

#: PostgreSQL's form of :data:`_CAS` for a whole batch: ONE statement, the rows given as
#: arrays (``p_txs``, ``p_status_logs``, ``p_message_ids``), those that moved returned.
#: Run once per row, the compare-and-set was PostgreSQL's costliest statement in a
#: burst (docs/benchmarks.md, "2026-12-02 (2)"): each execution paid its own start-up
#: on top of the row's update. Unbounded types: a cast to a width would cut a longer
#: value instead of refusing it. Here, not in ``transactions.compare_and_set``: that one
#: runs any guarded UPDATE given per row, and a batch form needs the statement written
#: around its arrays; the Outbox moves are the only compare-and-set run in bulk.
_BATCH_ROWS: Final = (
    sa.func.unnest(
        sa.bindparam("p_txs", type_=postgresql.ARRAY(sa.Unicode())),
        sa.bindparam("p_status_logs", type_=postgresql.ARRAY(sa.Unicode())),
        sa.bindparam("p_message_ids", type_=postgresql.ARRAY(sa.Unicode())),
    )
    .table_valued("tx", "status_log", "message_id")
    .render_derived()
)
_CAS_RETURNING: Final = (
    sa.update(tables.outbox)
    .where(_o.TxMessageId == _BATCH_ROWS.c.tx, _o.State == sa.bindparam("p_expected"))
    .values(
        State=sa.bindparam("p_state"),
        StatusTime=sa.bindparam("p_status_time"),
        StatusLog=_BATCH_ROWS.c.status_log,
        MessageId=sa.func.coalesce(_BATCH_ROWS.c.message_id, _o.MessageId),
        TransmitTime=sa.func.coalesce(
            sa.bindparam("p_transmit_time", type_=sa.NCHAR(20)), _o.TransmitTime
        ),
    )
    .returning(_o.TxMessageId)
)

#: Claims of many rows go in one statement per chunk (an IN list), not one per row.
#: An IN list, not plans.key_in: an ERP may have written a key as a BLOB (its row then
#: fails at 99), which a JSON list or a text array cannot carry.
_DELETE_CLAIMS: Final = sa.delete(tables.claim).where(
    _c.TxMessageId.in_(sa.bindparam("p_txs", expanding=True))
)
_RENEW_CLAIMS: Final = (
    sa.update(tables.claim)
    .where(
        _c.TxMessageId.in_(sa.bindparam("p_txs", expanding=True)),
        _c.Gateway == sa.bindparam("p_gateway"),
    )
    .values(LeaseUntil=sa.bindparam("p_until"))
)

_ATTRIBUTES: Final = {c.name: database.attribute_name(c.name) for c in tables.outbox.columns}
_COLUMNS_BY_ATTRIBUTE: Final = {attr: name for name, attr in _ATTRIBUTES.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    """One Outbox row; time columns without the padding nchar(20) adds (tables.TimeText)."""

    tx_message_id: str
    app_code: str | None = None
    source_domain: str | None = None
    agent_sender: str | None = None
    sender: str | None = None
    receiver_type: str | None = None
    receiver_list: str | None = None
    bcc_list: str | None = None
    subject: str | None = None
    content: str | None = None
    content_type: str | None = None
    attachment_list: str | None = None
    alert_flag: bool | None = None
    message_id: str | None = None
    state: int | None = None
    transmit_time: str | None = None
    status_time: str | None = None
    status_log: str | None = None
    priority: str | None = None
    keywords: str | None = None

    @classmethod
    def from_rows(
        cls,
        result: Iterable[sa.Row[Any]],
        known: Mapping[tuple[Any, ...], OutboxRow] | None = None,
    ) -> list[OutboxRow]:
        """Build from selected Outbox rows (their columns by name; others ignored).

        ``known``: rows built before, by the values they were built from; a row read
        again with the same values is that same object (:meth:`read_rows`).
        """
        rows = list(result)
        if not rows:
            return []
        # Each column's place found once, in the order of the fields: a row's lookups by
        # name cost as much again as building the row.
        names = rows[0]._fields
        places = [names.index(_COLUMNS_BY_ATTRIBUTE[f.name]) for f in dataclasses.fields(cls)]
        built = []
        for row in rows:
            values = tuple(row)
            same = known.get(values) if known else None
            built.append(same if same is not None else cls(*[values[n] for n in places]))
        return built

    @classmethod
    def read_rows(
        cls, result: Iterable[sa.Row[Any]]
    ) -> tuple[list[OutboxRow], dict[tuple[Any, ...], OutboxRow]]:
        """:meth:`from_rows`, and the rows by the values they were built from (for a
        second read of the same rows to reuse those unchanged)."""
        rows = list(result)
        built = cls.from_rows(rows)
        return built, {tuple(raw): row for raw, row in zip(rows, built, strict=True)}


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """Where a claim moves one ready row; the caller decides it from the row it read.

    ``to_state`` is 11 (files to upload; ``infos`` and ``paths`` are its
    OutboxAttachment rows), 12 (nothing to upload) or 99 (the row cannot be sent).
    """

    tx: str
    to_state: int
    log: str
    infos: Sequence[model.AttachmentInfo] = ()
    paths: Sequence[str] = ()


#: Given the rows a claim took, where each goes (rows left out stay at 10, unclaimed).
Plan = Callable[[Sequence["OutboxRow"]], Sequence[Start]]


def default_instance() -> str:
    """The default name of a gateway process: its host's name.

    Stable across restarts, so a gateway that crashed and was started again resumes
    its rows in flight at once instead of waiting out its own leases. Several
    processes on one host must each be given a name of their own.
    """
    return socket.gethostname()


def _claimed(dialect: sa.Dialect) -> sa.ColumnElement[bool]:
    """``MpgClaim.TxMessageId = Outbox.TxMessageId``, whatever the ERP's collation.

    On MariaDB an ERP-made Outbox may have another collation than MpgClaim, and
    comparing columns of two collations is an error there: compare the bytes instead
    (ids are written back exactly as read). MpgClaim holds only rows in flight, so
    the index this costs on it does not matter.
    """
    if dialect.name in ("mysql", "mariadb"):
        return _c.TxMessageId == sa.cast(_o.TxMessageId, sa.LargeBinary)
    return _c.TxMessageId == _o.TxMessageId


def lock_for_claim(query: sa.Select[Any], dialect: sa.Dialect) -> sa.Select[Any]:
    """``query`` on Outbox, made to lock the rows it returns and skip rows others hold.

    SQLite has no row locks: the caller's ``BEGIN IMMEDIATE`` holds the database's
    write lock for the (short) claim transaction instead.
    """
    if dialect.name in ("postgresql", "mysql", "mariadb"):
        return query.with_for_update(skip_locked=True)
    if dialect.name == "mssql":
        return query.with_hint(tables.outbox, MSSQL_CLAIM_HINT, "mssql")
    return query


#: The two claim queries: ready rows (10) and rows in flight (11, 12, 19).
ClaimKind = Literal["ready", "in_flight"]


def ready_query(dialect: sa.Dialect, limit: int, rowid: bool = False) -> sa.Select[Any]:
    """Ready rows no other process's live claim holds, in pickup order, locked for claiming.

    Takes ``p_now`` (UTC stamp) and ``p_instance`` (this process). This process's own
    claims do not count: a process restarted after dying between claim and move takes
    those rows again at once. ``rowid``: ties in the order rows were written (SQLite).
    """
    return _claim_query("ready", dialect, limit, rowid=rowid)


def in_flight_query(dialect: sa.Dialect, limit: int, rowid: bool = False) -> sa.Select[Any]:
    """Rows in flight not held by another live process, oldest first, locked for
    claiming; takes ``p_now`` and ``p_instance`` as :func:`ready_query` does."""
    return _claim_query("in_flight", dialect, limit, rowid=rowid)


def _stored_order(rowid: bool) -> sa.ColumnElement[Any]:
    """The pickup order's last key: the order the table keeps its rows in.

    A SQLite table with a rowid keeps rows in the order they were written; taking ties
    in that order makes a batch rows that sit side by side, so each of its three
    updates rewrites a quarter of the pages that rows scattered by a GUID key touch
    (docs/benchmarks.md, "2026-12-02 (6)"). MariaDB, SQL Server and a WITHOUT ROWID
    table keep rows by TxMessageId, PostgreSQL keeps no useful order: TxMessageId.
    """
    return sa.literal_column("_rowid_") if rowid else _o.TxMessageId


# Built once per database, kind and size: a claim query built anew for every wake-up
# (and keyed anew by SQLAlchemy's statement cache) was 8 % of the sending thread's CPU
# at 100 messages/s (docs/benchmarks.md, "2026-12-02 (2)").
@functools.lru_cache(maxsize=64)
def _claim_query(
    kind: ClaimKind,
    dialect: sa.Dialect,
    limit: int,
    peek: bool = False,
    among: bool = False,
    rowid: bool = False,
) -> sa.Select[Any]:
    """The claim query of ``kind`` (values: ``p_now``, ``p_instance``); with ``peek``,
    the query of whether there is any such row at all (one id, no lock); with
    ``among``, of those rows only the ones whose ids are in ``p_among``; ``rowid``:
    ties go in rowid order (:func:`_stored_order`)."""
    held = sa.exists().where(
        _claimed(dialect),
        _c.Gateway != sa.bindparam("p_instance"),
        _c.LeaseUntil >= sa.bindparam("p_now"),
    )
    query = sa.select(tables.outbox)
    if kind == "ready":
        query = query.where(_o.State == states.OutboxState.READY, ~held).order_by(
            _PRIORITY_RANK, sa.func.coalesce(_o.StatusTime, ""), _stored_order(rowid)
        )
    else:
        query = query.where(_o.State.in_(sorted(states.IN_FLIGHT)), ~held).order_by(
            sa.func.coalesce(_o.StatusTime, ""), _stored_order(rowid)
        )
    if among:
        query = query.where(_o.TxMessageId.in_(sa.bindparam("p_among", expanding=True)))
    if peek:
        # Whether any row qualifies, not which comes first: no sort of them all.
        return query.with_only_columns(_o.TxMessageId).order_by(None).limit(1)
    return lock_for_claim(query.limit(limit), dialect)


class OutboxRepository:
    """Reads and changes Outbox (and OutboxAttachment) rows for one gateway account.

    ``instance`` names this gateway process in ``MpgClaim``; a restarted process that
    keeps its name resumes its rows at once, others wait for ``lease_seconds``.
    """

    def __init__(
        self,
        engine: sa.Engine,
        gateway_account: str,
        clock: timefmt.Clock = "local",
        *,
        instance: str | None = None,
        lease_seconds: float = DEFAULT_LEASE,
        source_uri_width: int | None = tables.SOURCE_URI_WIDTH,
    ) -> None:
        self.engine = engine
        self.gateway_account = gateway_account
        self.clock: timefmt.Clock = clock
        self.instance = instance or default_instance()
        self.lease_seconds = lease_seconds
        #: OutboxAttachment.SourceUri as found; a path that does not fit is stored as NULL.
        self.source_uri_width = source_uri_width
        self._rowid: bool | None = None  # found at the first claim (_rowid_order)

    # -- claiming --------------------------------------------------------------------

    def claim(self, limit: int) -> list[OutboxRow]:
        """Take up to ``limit`` ready rows (State 10, pickup order) no other live claim holds.

        The rows stay in State 10; the caller moves them on (a compare-and-set, as
        ever). Their claims keep other gateways off them for ``lease_seconds``.
        """
        return self._claim_rows("ready", limit, "claiming Outbox rows")

    def claim_and_start(self, limit: int, plan: Plan) -> dict[str, int]:
        """Claim up to ``limit`` ready rows and move them on, in ONE transaction.

        ``plan`` sees the rows and says where each goes (:class:`Start`): while they
        are locked, or on SQLite just before the lock is taken, and then again for any
        row that was not found unchanged under it. The moves are compare-and-sets
        recorded in the history as ever, the rows with files get their
        OutboxAttachment rows, and only rows left in flight (11, 12) get a claim.
        Returns TxMessageId -> new State of the rows that moved. One commit for what
        took three before: claim, 10 -> 12, 10 -> 11.
        """
        moved: dict[str, int] = {}
        steps: list[history.Step] = []
        holders = self._holders()
        what = "claiming and starting Outbox rows"
        # SQLite's lock is the whole database's: the ERP's INSERTs wait while it is held.
        # So the rows are read and planned (validated, built) before it is taken, and
        # only rows that changed meanwhile are planned under it.
        early_rows: dict[str, OutboxRow] = {}
        early: dict[str, Start] = {}
        known: dict[tuple[Any, ...], OutboxRow] = {}
        if self.engine.dialect.name == "sqlite":
            with transactions.connect(self.engine, what) as conn:
                ready = ready_query(conn.dialect, limit, self._rowid_order())
                seen, known = OutboxRow.read_rows(conn.execute(ready, holders))
            if not seen:
                return moved
            early_rows = {r.tx_message_id: r for r in seen}
            early = {item.tx: item for item in plan(seen)}

        def start(conn: sa.Connection, rows: list[OutboxRow]) -> None:
            # Read again under the lock: an unchanged row is the very object read before.
            changed = [r for r in rows if early_rows.get(r.tx_message_id) is not r]
            fresh = {r.tx_message_id for r in changed}
            locked = {r.tx_message_id for r in rows}
            planned = [item for tx, item in early.items() if tx in locked and tx not in fresh]
            by_state: dict[int, list[Start]] = {}
            for item in [*planned, *(plan(changed) if changed else ())]:
                by_state.setdefault(item.to_state, []).append(item)
            for to_state, items in by_state.items():
                went, recorded = self._move(
                    conn, [(i.tx, i.log) for i in items], states.OutboxState.READY, to_state
                )
                steps.extend(recorded)
                moved.update(dict.fromkeys(went, to_state))
                if to_state == states.OutboxState.ATTACHMENTS_UPLOADING:
                    for i in items:
                        if i.tx in moved:
                            self.add_attachments(conn, i.tx, i.infos, i.paths)
            self._hold(conn, [tx for tx, state in moved.items() if state in states.IN_FLIGHT])

        self._claim_rows(
            "ready",
            limit,
            what,
            start,
            peek=not early_rows,
            known=known,
            holders=holders,
            # Under a backlog (a full early read) only the rows read are looked at again:
            # the full query sorts every waiting row once more, most of a claim's reading.
            among=list(early_rows) if len(early_rows) == limit else (),
        )
        history.log_steps("out", steps)
        return moved

    def take_over(self, limit: int) -> list[OutboxRow]:
        """Rows in flight (11, 12, 19) to resume: this process's, unclaimed or expired.

        A row whose claim another live process holds is left to that process.
        """
        return self._claim_rows("in_flight", limit, "taking over in-flight Outbox rows")

    def _rowid_order(self) -> bool:
        """Whether Outbox is a SQLite table with a rowid, whose ties are picked in the
        order the rows were written (:func:`_stored_order`); looked up once."""
        if self._rowid is None:
            self._rowid = False
            if self.engine.dialect.name == "sqlite":
                with transactions.connect(self.engine, "reading Outbox's layout") as conn:
                    options = sa.inspect(conn).get_table_options(tables.outbox.name)
                self._rowid = options.get("sqlite_with_rowid", True) is not False
        return self._rowid

    def _holders(self) -> dict[str, str]:
        """The claim queries' values now: claims of other processes that still hold."""
        return {"p_now": timefmt.utc_stamp(), "p_instance": self.instance}

    def _claim_rows(
        self,
        kind: ClaimKind,
        limit: int,
        what: str,
        start: Callable[[sa.Connection, list[OutboxRow]], None] | None = None,
        *,
        peek: bool = True,
        known: Mapping[tuple[Any, ...], OutboxRow] | None = None,
        holders: Mapping[str, str] | None = None,
        among: Sequence[str] = (),
    ) -> list[OutboxRow]:
        """Select and lock up to ``limit`` rows of ``kind`` (the claim queries), then
        replace their claims by this process's (or, with ``start``, let it move the
        rows and claim those it leaves in flight). ``holders``: the queries' values
        (:meth:`_holders`), when the caller took them already.

        On SQLite the lock is the whole database's write lock, which an ERP's INSERT
        then has to wait for: it is taken only when a plain read found rows to claim
        (``peek``; False when the caller has just read them), so the many wake-ups that
        find nothing never block the ERP. ``known``: the caller's earlier read of the
        rows (:meth:`OutboxRow.read_rows`); a row found unchanged is that same object.
        ``among``: ids of that read; only they are looked at again, by key (a row
        written since that read then waits for the next claim).
        """
        values = holders or self._holders()
        if peek and not transactions.worth_locking(
            self.engine, _claim_query(kind, self.engine.dialect, 1, peek=True), values, what
        ):
            return []
        with transactions.begin(self.engine, what) as conn:
            query = _claim_query(
                kind, conn.dialect, limit, among=bool(among), rowid=self._rowid_order()
            )
            params = {**values, "p_among": list(among)} if among else values
            rows = OutboxRow.from_rows(conn.execute(query, params), known)
            if rows:
                # The old claims are expired or this process's own (the query said so).
                self._release(conn, [r.tx_message_id for r in rows])
                if start is None:
                    self._hold(conn, [r.tx_message_id for r in rows])
                else:
                    start(conn, rows)
        return rows

    def _hold(self, conn: sa.Connection, tx_ids: Sequence[str]) -> None:
        """Insert this process's claims on rows that have none."""
        if not tx_ids:
            return
        until = timefmt.utc_stamp(self.lease_seconds)
        bulk.insert_rows(
            conn,
            tables.claim,
            [{"TxMessageId": tx, "Gateway": self.instance, "LeaseUntil": until} for tx in tx_ids],
        )

    @staticmethod
    def _release(conn: sa.Connection, tx_ids: Sequence[str]) -> None:
        """Delete the claims on rows, whoever holds them."""
        for part in transactions.chunks(tx_ids):
            conn.execute(_DELETE_CLAIMS, {"p_txs": list(part)})

    def sweep_claims(self) -> int:
        """Delete claims expired for a whole lease; return how many.

        They are left by rows that stopped being workable while claimed (voided by
        the ERP between claim and move, or a gateway that died on a row since
        finished by another). An expired claim binds nobody, so removing it is safe.
        """
        cutoff = timefmt.utc_stamp(-self.lease_seconds)
        expired = sa.select(_c.TxMessageId).where(_c.LeaseUntil < cutoff)
        if not transactions.worth_locking(self.engine, expired, {}, "reading MpgClaim"):
            return 0
        with transactions.begin(self.engine, "sweeping expired MpgClaim rows") as conn:
            result = conn.execute(sa.delete(tables.claim).where(_c.LeaseUntil < cutoff))
            return int(result.rowcount or 0)

    def claims(self) -> dict[str, tuple[str, str]]:
        """Every claim: TxMessageId -> (instance, lease end), for diagnostics and tests."""
        with transactions.connect(self.engine, "reading MpgClaim") as conn:
            return {
                str(tx): (str(gw), str(until))
                for tx, gw, until in conn.execute(
                    sa.select(_c.TxMessageId, _c.Gateway, _c.LeaseUntil)
                )
            }

    # -- reading ---------------------------------------------------------------------

    def get(self, tx_id: str) -> OutboxRow | None:
        """One row by TxMessageId."""
        rows = self._rows(sa.select(tables.outbox).where(_o.TxMessageId == tx_id), "reading Outbox")
        return rows[0] if rows else None

    def ids_in_state(self, state: int) -> list[str]:
        """TxMessageIds of every row in ``state``, oldest StatusTime first."""
        query = (
            sa.select(_o.TxMessageId)
            .where(_o.State == state)
            .order_by(sa.func.coalesce(_o.StatusTime, ""), _o.TxMessageId)
        )
        with transactions.connect(self.engine, "reading Outbox ids") as conn:
            return [str(tx) for tx in conn.execute(query).scalars()]

    def counts(self) -> dict[int, int]:
        """Number of rows per State code (NULL and non-code States are not counted:
        :meth:`odd_states` lists the latter)."""
        query = (
            sa.select(_o.State, sa.func.count()).where(_o.State.in_(STATE_CODES)).group_by(_o.State)
        )
        with transactions.connect(self.engine, "counting Outbox rows") as conn:
            return {int(state): int(n) for state, n in conn.execute(query)}

    def odd_states(self, limit: int = 100) -> list[tuple[str, object]]:
        """(TxMessageId, State as stored) of rows whose State is set but not a state
        code: ``'ten'`` or ``10.5`` in SQLite, an unknown number anywhere. No query
        picks them up, so they are reported instead (log, ``mpg status``)."""
        query = (
            sa.select(_o.TxMessageId, sa.type_coerce(_o.State, sa.types.NullType()))
            .where(_o.State.is_not(None), _o.State.not_in(STATE_CODES))
            .order_by(_o.TxMessageId)
            .limit(limit)
        )
        with transactions.connect(self.engine, "reading Outbox rows with an odd State") as conn:
            return [(tx, state) for tx, state in conn.execute(query)]

    def oldest_pending(self) -> tuple[str, str] | None:
        """(TxMessageId, StatusTime) of the oldest row in 10/11/12/19/20, or None."""
        query = (
            sa.select(_o.TxMessageId, _o.StatusTime)
            .where(_o.State.in_(PENDING_STATES), _o.StatusTime.is_not(None))
            .order_by(_o.StatusTime, _o.TxMessageId)
            .limit(1)
        )
        with transactions.connect(self.engine, "reading the oldest pending Outbox row") as conn:
            row = conn.execute(query).first()
        return None if row is None else (str(row[0]), str(row[1]).strip())

    def stuck(self, older_than_seconds: float, limit: int = 20) -> list[OutboxRow]:
        """Rows in 11, 12, 19 or 20 whose StatusTime is older than the threshold.

        A row may rightly wait in 10 (nothing picked it up: the send timeout handles
        that); in the states after it, a long stay means a step is not completing.
        """
        cutoff = timefmt.now(self.clock) - dt.timedelta(seconds=older_than_seconds)
        query = (
            sa.select(tables.outbox)
            .where(_o.State.in_(STUCK_STATES), _o.StatusTime.is_not(None))
            .order_by(_o.StatusTime, _o.TxMessageId)
        )
        rows = self._rows(query, "reading stuck Outbox rows")
        return [row for row in rows if _older(row.status_time, cutoff)][:limit]

    def voided_elsewhere(self, limit: int) -> list[tuple[OutboxRow, int]]:
        """Rows the ERP set to 98 itself, with the last state the history recorded.

        A row counts when it is in 98 but its newest ``MpgTransition`` row (box
        "out") ends in a state the transition table lets go to 98: the gateway has
        not yet taken note of the void (and, from 19/20, not yet recalled it).
        """
        t = tables.transition.c
        newer = tables.transition.alias("newer")
        # The newest history row of each 98 row, found through the MessageKey index
        # (a correlated NOT EXISTS rather than a GROUP BY over the whole history).
        query = (
            sa.select(tables.outbox, t.ToState.label("mpg_last_state"))
            .join(tables.transition, sa.and_(t.MessageKey == _o.TxMessageId, t.Box == "out"))
            .where(
                _o.State == states.OutboxState.VOIDED,
                t.ToState.in_(VOIDABLE_STATES),
                ~sa.exists().where(
                    newer.c.MessageKey == _o.TxMessageId,
                    newer.c.Box == "out",
                    newer.c.Id > t.Id,
                ),
            )
            .order_by(t.Id)
            .limit(limit)
        )
        with transactions.connect(self.engine, "reading voided Outbox rows") as conn:
            found = conn.execute(query).all()
        states_before = [int(r.mpg_last_state) for r in found]
        return list(zip(OutboxRow.from_rows(found), states_before, strict=True))

    def note_voided(
        self, tx_id: str, last_state: int, log: str, *, message_id: str | None = None
    ) -> bool:
        """Record a void the ERP wrote itself (``last_state`` -> 98), with ``log``.

        State is already 98, so only StatusLog, StatusTime (and MessageId when given)
        change, by a compare-and-set on 98, and one history step is written, checked
        against the transition table.
        """
        states.check(last_state, states.OutboxState.VOIDED)
        step = history.Step(tx_id, last_state, int(states.OutboxState.VOIDED), log)
        params = [
            {
                "p_tx": tx_id,
                "p_expected": int(states.OutboxState.VOIDED),
                "p_state": int(states.OutboxState.VOIDED),
                "p_status_time": timefmt.now_text(self.clock),
                "p_status_log": history.truncate(log, STATUS_LOG_WIDTH),
                "p_message_id": message_id,
                "p_transmit_time": None,
            }
        ]
        with transactions.begin(self.engine, "recording a void") as conn:
            moved = bool(transactions.compare_and_set(conn, _CAS, params))
            if moved:
                history.record(conn, "out", self.gateway_account, [step])
        if moved:
            history.log_steps("out", [step])
        return moved

    def delivery_rows(self, within_seconds: float, limit: int) -> list[OutboxRow]:
        """Device-addressed rows sent (20) or served (29) whose StatusTime is within
        ``within_seconds``, newest first: those whose delivery summary may still change
        (docs/push.md, "The delivery summary")."""
        cutoff = timefmt.now(self.clock) - dt.timedelta(seconds=within_seconds)
        query = (
            sa.select(tables.outbox)
            .where(
                _o.State.in_([states.OutboxState.WAITING, states.OutboxState.SENT]),
                _o.ReceiverType == "D",
                _o.MessageId.is_not(None),
                _o.StatusTime.is_not(None),
            )
            .order_by(_o.StatusTime.desc(), _o.TxMessageId)
            .limit(limit)
        )
        rows = self._rows(query, "reading sent device rows")
        return [row for row in rows if not _older(row.status_time, cutoff)]

    def note_delivery(self, row: OutboxRow, log: str) -> bool:
        """Set the StatusLog of ``row`` to ``log`` (cut to its width) if the row still has
        the state and StatusLog it was read with; no state change, no history step, and
        StatusTime stays the time of the last state change. False when it had changed."""
        same_log = (
            _o.StatusLog.is_(None) if row.status_log is None else _o.StatusLog == row.status_log
        )
        query = (
            sa.update(tables.outbox)
            .where(_o.TxMessageId == row.tx_message_id, _o.State == row.state, same_log)
            .values(StatusLog=history.truncate(log, STATUS_LOG_WIDTH))
        )
        with transactions.begin(self.engine, "writing a delivery summary") as conn:
            return bool(conn.execute(query).rowcount)

    def timed_out(self, older_than_seconds: float) -> list[OutboxRow]:
        """Rows in :data:`TIMEOUT_STATES` whose StatusTime is older than the timeout.

        Rows with a NULL or unreadable StatusTime are left out: their age is unknown.
        """
        cutoff = timefmt.now(self.clock) - dt.timedelta(seconds=older_than_seconds)
        query = (
            sa.select(tables.outbox)
            .where(_o.State.in_(TIMEOUT_STATES), _o.StatusTime.is_not(None))
            .order_by(_o.StatusTime, _o.TxMessageId)
        )
        return [
            row
            for row in self._rows(query, "reading timed-out Outbox rows")
            if _older(row.status_time, cutoff)
        ]

    def attachments(self, tx_id: str) -> list[tuple[model.AttachmentInfo, str]]:
        """The OutboxAttachment rows of one message as (info, local path), by SeqNo.

        The table has no hash column, so ``info.sha256`` is ``""``: whoever streams
        the file hashes what it actually reads.
        """
        query = (
            sa.select(
                _a.SeqNo, _a.FileName, _a.FileType, _a.FileSize, _a.DownloadFlag, _a.SourceUri
            )
            .where(_a.MessageId == tx_id)
            .order_by(_a.SeqNo)
        )
        with transactions.connect(self.engine, "reading OutboxAttachment") as conn:
            return [
                (
                    model.AttachmentInfo(
                        seq_no=int(r.SeqNo),
                        file_name=r.FileName or "",
                        file_type=r.FileType or "",
                        file_size=int(r.FileSize or 0),
                        download_flag=int(r.DownloadFlag or 0),
                        sha256="",
                    ),
                    r.SourceUri or "",
                )
                for r in conn.execute(query)
            ]

    # -- writing ---------------------------------------------------------------------

    def transition(
        self,
        tx_ids_and_logs: Sequence[tuple[str, str]],
        from_state: int,
        to_state: int,
        *,
        message_ids: Mapping[str, str] | None = None,
        set_transmit_time: bool = False,
        conn: sa.Connection | None = None,
    ) -> list[str]:
        """Move rows from ``from_state`` to ``to_state``; return the ids that moved.

        One compare-and-set per row, all in one transaction (the caller's ``conn``
        when given). A multi-step move (e.g. 12 -> 19 -> 20) follows
        :func:`states.path`; each step is checked and recorded on its own, the
        intermediate ones with the transition table's meaning and the last one with
        the row's log. StatusLog gets the row's log (cut to 200 characters),
        StatusTime the current time, MessageId the value in ``message_ids`` (when
        given for that row) and TransmitTime the current time when
        ``set_transmit_time``. Rows no longer in ``from_state`` are left alone.
        """
        states.path(from_state, to_state)  # refuses a move the table does not allow
        if not tx_ids_and_logs:
            return []
        recorded: list[history.Step] = []

        def apply(c: sa.Connection) -> list[str]:
            moved, steps = self._move(
                c,
                tx_ids_and_logs,
                from_state,
                to_state,
                message_ids=message_ids,
                set_transmit_time=set_transmit_time,
            )
            recorded.extend(steps)
            self._follow_claims(c, moved, to_state)
            return moved

        if conn is not None:
            with transactions.mapped_errors("changing Outbox state"):
                moved_ids = apply(conn)
        else:
            with transactions.begin(self.engine, "changing Outbox state") as own:
                moved_ids = apply(own)
        history.log_steps("out", recorded)
        return moved_ids

    def _move(
        self,
        conn: sa.Connection,
        tx_ids_and_logs: Sequence[tuple[str, str]],
        from_state: int,
        to_state: int,
        *,
        message_ids: Mapping[str, str] | None = None,
        set_transmit_time: bool = False,
    ) -> tuple[list[str], list[history.Step]]:
        """The compare-and-set and its history rows in ``conn`` (claims untouched);
        returns the ids that moved and the steps recorded, to be logged after commit."""
        steps = states.path(from_state, to_state)
        meanings = [states.check(a, b) for a, b in steps]
        batch = list(dict(tx_ids_and_logs).items())  # one entry per tx (its last log)
        if not batch:
            return [], []
        now = timefmt.now_text(self.clock)
        ids = message_ids or {}
        logs = [history.truncate(log or meanings[-1], STATUS_LOG_WIDTH) for _, log in batch]
        fixed = {
            "p_expected": int(from_state),
            "p_state": int(to_state),
            "p_status_time": now,
            "p_transmit_time": now if set_transmit_time else None,
        }
        if conn.dialect.name == "postgresql":
            went = set(
                conn.execute(
                    _CAS_RETURNING,
                    {
                        **fixed,
                        "p_txs": [tx for tx, _ in batch],
                        "p_status_logs": logs,
                        "p_message_ids": [ids.get(tx) for tx, _ in batch],
                    },
                ).scalars()
            )
            moved = [item for item in batch if item[0] in went]
        else:
            params = [
                {**fixed, "p_tx": tx, "p_status_log": text, "p_message_id": ids.get(tx)}
                for (tx, _), text in zip(batch, logs, strict=True)
            ]
            moved = [batch[i] for i in transactions.compare_and_set(conn, _CAS, params)]
        recorded: list[history.Step] = []
        for tx, log in moved:
            for (a, b), meaning in zip(steps[:-1], meanings[:-1], strict=True):
                recorded.append(history.Step(tx, int(a), int(b), meaning))
            a, b = steps[-1]
            recorded.append(history.Step(tx, int(a), int(b), log or meanings[-1]))
        history.record(conn, "out", self.gateway_account, recorded)
        return [tx for tx, _ in moved], recorded

    def _follow_claims(self, conn: sa.Connection, moved: list[str], to_state: int) -> None:
        """Renew this process's claims on rows still in flight; drop the others' claims."""
        if not moved:
            return
        if to_state in states.IN_FLIGHT:
            until = timefmt.utc_stamp(self.lease_seconds)
            for part in transactions.chunks(moved):
                conn.execute(
                    _RENEW_CLAIMS,
                    {"p_txs": list(part), "p_gateway": self.instance, "p_until": until},
                )
        else:
            self._release(conn, moved)

    def fail(
        self, tx_id: str, from_state: int, log: str, *, conn: sa.Connection | None = None
    ) -> bool:
        """Move one row to 99 with ``log`` as StatusLog; False if it had changed meanwhile."""
        moved = self.transition([(tx_id, log)], from_state, states.OutboxState.FAILED, conn=conn)
        return bool(moved)

    def add_attachments(
        self,
        conn: sa.Connection | None,
        tx_id: str,
        infos: Sequence[model.AttachmentInfo],
        paths: Sequence[str],
    ) -> None:
        """Write the OutboxAttachment rows of one message, replacing earlier ones.

        Replacing makes a claim that crashed half-way safe to redo. FileData stays
        NULL: the file is streamed from its local path (``AttachmentList``) when it is
        sent; ``SourceUri`` records that path for the ERP, or NULL where it does not
        fit a narrow column (:mod:`mpg.storage.schema`).
        Runs in ``conn`` when given (e.g. with the claim), else in its own transaction.
        """
        if len(infos) != len(paths):
            raise ValueError(f"{len(infos)} attachment infos but {len(paths)} paths")
        rows = [
            {
                "AttachmentId": uuid.uuid4(),
                "MessageId": tx_id,
                "SeqNo": info.seq_no,
                "FileName": info.file_name,
                "FileType": info.file_type,
                "FileSize": info.file_size,
                "FileData": None,
                "SourceUri": schema.fit(path, self.source_uri_width),
                "DownloadFlag": info.download_flag,
            }
            for info, path in zip(infos, paths, strict=True)
        ]

        def apply(c: sa.Connection) -> None:
            c.execute(sa.delete(tables.outbox_attachment).where(_a.MessageId == tx_id))
            if rows:
                c.execute(tables.outbox_attachment.insert(), rows)

        if conn is not None:
            with transactions.mapped_errors("writing OutboxAttachment"):
                apply(conn)
        else:
            with transactions.begin(self.engine, "writing OutboxAttachment") as own:
                apply(own)

    def insert(
        self,
        row: Mapping[str, object],
        *,
        reason: str = "inserted by mpg send",
        conn: sa.Connection | None = None,
    ) -> str:
        """Insert one Outbox row (``mpg send``, a drop file); return its TxMessageId.

        Keys are column names (``Subject``) or attributes (``subject``). Missing
        values default to State 10, StatusTime now, Priority ``N``, AgentSender the
        gateway's account and a new uuid4 TxMessageId. ``reason`` is the history
        step's; runs in ``conn`` when given, else in its own transaction.
        """
        values: dict[str, Any] = {}
        for key, value in row.items():
            name = key if key in _ATTRIBUTES else _COLUMNS_BY_ATTRIBUTE.get(key)
            if name is None:
                raise errors.ValidationError(key, "not an Outbox column")
            values[name] = value
        defaults: dict[str, object] = {
            "TxMessageId": str(uuid.uuid4()),
            "State": int(states.OutboxState.READY),
            "StatusTime": timefmt.now_text(self.clock),
            "Priority": model.DEFAULT_PRIORITY,
            "AgentSender": self.gateway_account,
        }
        for name, default in defaults.items():
            if values.get(name) in (None, ""):
                values[name] = default
        tx_id = str(values["TxMessageId"])
        step = history.Step(tx_id, None, int(values["State"]), reason)

        def apply(c: sa.Connection) -> None:
            c.execute(tables.outbox.insert(), values)
            history.record(c, "out", self.gateway_account, [step])

        if conn is not None:
            with transactions.mapped_errors("inserting an Outbox row"):
                apply(conn)
        else:
            with transactions.begin(self.engine, "inserting an Outbox row") as own:
                apply(own)
        history.log_steps("out", [step])
        return tx_id

    # -- helpers ---------------------------------------------------------------------

    def _rows(self, query: sa.Select[Any], what: str) -> list[OutboxRow]:
        with transactions.connect(self.engine, what) as conn:
            return OutboxRow.from_rows(conn.execute(query))


def _older(status_time: str | None, cutoff: dt.datetime) -> bool:
    if status_time is None:
        return False
    try:
        return timefmt.parse_text(status_time) < cutoff
    except ValueError:
        return False
