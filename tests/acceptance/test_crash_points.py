"""A process killed at every named failpoint in turn loses nothing and doubles nothing.

One world for the whole module: a server, the sending gateway ``erp`` (drop folder and
receipt folder) and the receiving gateway ``bob`` (inbound folder). For each point of
:data:`mpg.faults.POINTS` the process that reaches it is restarted with the point
armed, a round of messages goes out (a plain row, a row with an attachment, a drop
file, a message to the never-running ``carol`` and the RECALL of it), the process dies
at the point (SIGKILL), is restarted, and then every row of the round must be final
(29) with its StatusLog and an unbroken history, bob must hold each message once, and
each folder each file once.
"""

from __future__ import annotations

import collections
import itertools
import pathlib
import signal
import sqlite3
import subprocess
from collections.abc import Iterator

import pytest
from harness import DEADLINE, World, wait_for

from mpg import faults
from mpg.wire import content, dropfile

#: The process that reaches each failpoint in the round below.
VICTIM = {
    faults.DROPFOLDER_AFTER_INSERT: "erp",
    faults.OUTBOUND_CLAIMED_11: "erp",
    faults.OUTBOUND_CLAIMED_12: "erp",
    faults.ATTACHMENT_BEFORE_OPEN: "erp",
    faults.OUTBOUND_UPLOADED_12: "erp",
    faults.SERVER_SUBMIT_COMMITTED: "server",
    faults.OUTBOUND_SUBMITTED: "erp",
    faults.OUTBOUND_AT_19: "erp",
    faults.OUTBOUND_AT_20: "erp",
    faults.SERVER_RECALL_WITHDRAWN: "server",
    faults.INBOUND_AFTER_FILES: "bob",
    faults.INBOUND_AFTER_STORE: "bob",
    faults.INBOUND_FOLDER_WRITTEN: "bob",
    faults.SERVER_BEFORE_RECEIPTS: "server",
    faults.SERVER_ACK_COMMITTED: "server",
    faults.INBOUND_AFTER_RECEIPTS: "erp",
    faults.RECEIPT_FOLDER_WRITTEN: "erp",
}
#: Outbox states whose history steps the receipt folder writes (the default).
RECEIPT_STATES = (29, 97, 99)
INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","AppCode","SourceDomain","Sender","ReceiverType",'
    '"ReceiverList","Subject","Content","ContentType","AttachmentList","State","Priority") '
    "VALUES (?,?,'example.com','alvin','U',?,?,?,?,?,10,'N')"
)


class Crashing:
    """The three processes of the module's world; any one can be restarted armed."""

    def __init__(self, world: World) -> None:
        self.world = world
        server = world.start_server()
        self.erp = world.gateway("erp")
        self.bob = world.gateway("bob")
        world.gateway("carol")  # an account whose gateway never runs: its entries wait
        self.procs: dict[str, subprocess.Popen[bytes]] = {"server": server}
        self.start("erp")
        self.start("bob")

    def folder(self, name: str) -> pathlib.Path:
        return self.world.root / name

    def env(self, name: str) -> dict[str, str]:
        fast = {"MPG_GATEWAY__DROP_SETTLE": "0", "MPG_GATEWAY__DROP_SCAN_INTERVAL": "0.2"}
        if name == "erp":
            return {
                **fast,
                "MPG_GATEWAY__DROP_DIR": str(self.folder("drop")),
                "MPG_GATEWAY__RECEIPT_DIR": str(self.folder("receipts")),
            }
        if name == "bob":
            return {**fast, "MPG_GATEWAY__INBOUND_DIR": str(self.folder("inbound"))}
        return {}

    def start(self, name: str, failpoint: str = "") -> None:
        """Start ``name`` (server, erp or bob), with ``failpoint`` armed if given."""
        env = self.env(name) | ({faults.ENV_VAR: failpoint} if failpoint else {})
        if name == "server":
            self.procs[name] = self.world.start(
                self.world.server_config, "server", env=env, name="server"
            )
            # A gateway's retry from the round before (an ack the last server died
            # answering) can reach the armed point within milliseconds of the start,
            # before a look at the port sees it open: dead at the point counts too.
            wait_for("the server to listen", lambda: self.world.listening() or self.killed(name))
        else:
            gateway = self.erp if name == "erp" else self.bob
            self.procs[name] = gateway.run(env=env)

    def stop(self, name: str) -> None:
        """Stop ``name`` at once (SIGKILL: quicker than draining its long polls); the
        round before left nothing in flight."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)

    def killed(self, name: str) -> bool:
        """True once ``name`` has died of SIGKILL (the armed failpoint was reached)."""
        code = self.procs[name].poll()
        assert code in (None, -signal.SIGKILL), f"{name} exited {code}"
        return code is not None


@pytest.fixture(scope="module")
def crashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashing]:
    """The module's world, running."""
    world = World(tmp_path_factory.mktemp("crash"))
    try:
        yield Crashing(world)
    finally:
        world.stop_all()


def test_every_failpoint_has_a_process_that_reaches_it() -> None:
    """A point added to faults.POINTS must be given its process here, so it is tested."""
    assert sorted(VICTIM) == sorted(faults.POINTS)
    assert len(set(faults.POINTS)) == len(faults.POINTS)


@pytest.mark.parametrize("point", faults.POINTS)
def test_killed_at_the_point_loses_and_doubles_nothing(crashing: Crashing, point: str) -> None:
    """Killed at ``point`` and restarted: every row 29, everything delivered once."""
    erp = crashing.erp
    victim = VICTIM[point]
    crashing.stop(victim)
    crashing.start(victim, point)

    attachment = crashing.world.root / f"{point}.bin"
    attachment.write_bytes(point.encode() * 100)
    rows = {
        f"{point}-plain": ("bob", ""),
        f"{point}-file": ("bob", f"{attachment}|1"),
        f"{point}-carol": ("carol", ""),
    }
    for tx, (to, files) in rows.items():
        erp.sql(INSERT, (tx, "BPM", to, tx, "<c/>", "MSG", files))
    drop = crashing.folder("drop")
    drop.mkdir(exist_ok=True)
    document = dropfile.build_message(
        {
            "TxMessageId": f"{point}-drop",
            "AppCode": "BPM",
            "ReceiverList": "bob",
            "Subject": f"{point}-drop",
            "ContentType": "MSG",
            "Content": "<c/>",
        }
    )
    (drop / f"{point}.tmp").write_bytes(document)
    (drop / f"{point}.tmp").rename(drop / f"{point}.xml")

    recall_tx = f"{point}-recall"

    def recall_once() -> bool:
        """Insert the RECALL of the carol message as soon as it has its MessageId."""
        if erp.outbox_row(recall_tx) is not None:
            return True
        target = erp.outbox_row(f"{point}-carol")
        if target is None or not target["MessageId"]:
            return False
        recall = content.build_recall(target["MessageId"])
        erp.sql(INSERT, (recall_tx, "SYS", "psereceiver", recall_tx, recall, "RECALL", ""))
        return True

    wait_for(f"{victim} to die at {point}", lambda: (recall_once(), crashing.killed(victim))[1])
    crashing.start(victim)
    wait_for("the RECALL row", recall_once)
    txs = [*rows, f"{point}-drop", recall_tx]
    wait_for(
        f"every row of {point} to be final",
        lambda: all(
            (row := erp.outbox_row(tx)) is not None and row["State"] in (29, 97, 98, 99)
            for tx in txs
        ),
    )
    for tx in txs:
        row = erp.outbox_row(tx)
        assert row is not None
        assert (row["State"], tx) == (29, tx), row["StatusLog"]
        assert row["StatusLog"]
        steps = erp.sql(
            'SELECT "FromState", "ToState" FROM "MpgTransition" WHERE "MessageKey" = ? '
            'ORDER BY "Id"',
            (tx,),
        )
        walk = [(s["FromState"], s["ToState"]) for s in steps]
        assert walk[0][0] in (None, 10)  # inserted (the drop folder) or taken from 10
        for (_, to), (after, _) in itertools.pairwise(walk):
            assert after == to, f"{tx}: broken history {walk}"
        assert walk[-1][1] == 29
        assert len(set(walk)) == len(walk), f"{tx}: a step twice {walk}"
    [attached] = erp.sql(
        'SELECT * FROM "OutboxAttachment" WHERE "MessageId" = ?', (f"{point}-file",)
    )
    assert attached["FileSize"] == attachment.stat().st_size

    _assert_delivered_once(crashing, point)
    _assert_receipt_files_once(crashing)
    assert not list(drop.glob("*.xml"))  # the drop file moved to processed/
    assert (drop / "processed" / f"{point}.xml").exists()
    _assert_server_holds_each_message_once(crashing)


def _assert_delivered_once(crashing: Crashing, point: str) -> None:
    """bob's Inbox and inbound folder hold each message once; carol's never came."""
    bob = crashing.bob
    inbox = bob.sql('SELECT "RxMessageId", "MessageId", "Subject" FROM "Inbox"')
    assert len({r["MessageId"] for r in inbox}) == len(inbox)
    subjects = collections.Counter(r["Subject"] for r in inbox)
    for what in ("plain", "file", "drop"):
        assert subjects[f"{point}-{what}"] == 1
    assert subjects[f"{point}-carol"] == 0
    [file_row] = bob.sql(
        'SELECT a."FileData" FROM "InboxAttachment" a JOIN "Inbox" i '
        'ON a."MessageId" = i."RxMessageId" WHERE i."Subject" = ?',
        (f"{point}-file",),
    )
    assert bytes(file_row["FileData"]) == point.encode() * 100

    def files() -> list[pathlib.Path]:
        return sorted(crashing.folder("inbound").glob("*.xml"))

    wait_for("an inbound file per Inbox row", lambda: len(files()) >= len(inbox))
    written = collections.Counter(
        dropfile.parse_message(f.read_bytes(), max_bytes=10**7).fields["RxMessageId"]
        for f in files()
    )
    assert written == collections.Counter(r["RxMessageId"] for r in inbox)


def _assert_receipt_files_once(crashing: Crashing) -> None:
    """One receipt file per history step into the receipt states, each once."""
    erp = crashing.erp
    marks = ",".join("?" * len(RECEIPT_STATES))
    ids = {
        int(r["Id"])
        for r in erp.sql(
            f'SELECT "Id" FROM "MpgTransition" WHERE "Box" = \'out\' AND "ToState" IN ({marks})',
            RECEIPT_STATES,
        )
    }

    def written() -> list[int]:
        return [int(f.name.split("-")[1]) for f in crashing.folder("receipts").glob("*.xml")]

    wait_for("a receipt file per step", lambda: ids <= set(written()))
    assert sorted(written()) == sorted(set(written()))


def _assert_server_holds_each_message_once(crashing: Crashing) -> None:
    """One TransmitQueue row per TxMessageId, one entry per recipient per message."""
    db = crashing.world.root / "server.db"
    with sqlite3.connect(db, timeout=10) as conn:
        doubled = conn.execute(
            'SELECT "MessageId", "Recipient", COUNT(*) FROM "ReceiveQueue" '
            "WHERE \"Kind\" = 'message' GROUP BY 1, 2 HAVING COUNT(*) > 1"
        ).fetchall()
        receipts = conn.execute(
            'SELECT "MessageId", COUNT(*) FROM "ReceiveQueue" '
            "WHERE \"Kind\" = 'receipt' GROUP BY 1 HAVING COUNT(*) > 1"
        ).fetchall()
    assert doubled == []
    assert receipts == []
