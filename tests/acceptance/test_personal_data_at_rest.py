"""No personal data in clear at rest (issue 11, part 9): a real server process is given
known addresses, device serials, subjects, contents, file names and file bytes by
sealed clients (directory rows by the helper that follows issue 11's conventions), and
the raw files are scanned for them: the SQLite database, its WAL, the blob and spool
folders, and a ``pg_dump`` of the same data on PostgreSQL. Then a data-key rotation
with the CLI, and the scan again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import threading

import directoryrows
import httpx
import pytest
import serverproc
import sqlalchemy as sa

from mpg.db import transactions
from mpg.server import tables
from mpg.wire import envelope, model, payloads

GATEWAY = "erp-scan@scan-example.com"
ANNA = "anna.meier@scan-example.com"
BERND = "bernd.blindcopy@scan-example.com"
SERIAL = "SN-Serial-Okapi-4711"
SENDER = "carla.sender"  # qualified with the SourceDomain: carla.sender@scan-example.com
UNKNOWN = "nobody.unknown@scan-example.com"
SUBJECT = "Quarterly salary review Zebra-7781"
CONTENT = "<approval>Confidential-Content-Quokka-5512</approval>"
KEYWORDS = "keyword-Narwhal-3391"
FILE_NAME = "payslip-anna-meier-Tapir.pdf"
FILE_BYTES = random.Random(11).randbytes(300_000)
DEVICE_ID = "DEVICE-ID-Pangolin-6620"
DEVICE_EMAIL = "dora.device@scan-example.com"
DEVICE_NAME = "Dora's Pixel Capybara"
PUSH_TOKEN = "pushtoken-Axolotl-9931"
VERIFY_ADDRESS = "hostmaster.verify@scan-example.com"
TEXTS = (
    GATEWAY,
    ANNA,
    BERND,
    SERIAL,
    "carla.sender@scan-example.com",
    UNKNOWN,
    SUBJECT,
    CONTENT.removeprefix("<approval>").removesuffix("</approval>"),
    KEYWORDS,
    FILE_NAME,
    DEVICE_ID,
    DEVICE_EMAIL,
    DEVICE_NAME,
    PUSH_TOKEN,
    VERIFY_ADDRESS,
)


def needles() -> dict[str, bytes]:
    """What must not be found: each text as UTF-8 in its own, lower and upper case,
    as UTF-16 (LE and BE), as hex (how a dump shows bytes), and windows of the file."""
    found: dict[str, bytes] = {}
    for text in TEXTS:
        for variant in {text, text.lower(), text.upper()}:
            found[f"{variant!r} utf-8"] = variant.encode("utf-8")
            found[f"{variant!r} utf-16-le"] = variant.encode("utf-16-le")
            found[f"{variant!r} utf-16-be"] = variant.encode("utf-16-be")
            found[f"{variant!r} hex"] = variant.encode("utf-8").hex().encode("ascii")
    for start in (0, 65_536 - 20, 150_000, len(FILE_BYTES) - 64):
        window = FILE_BYTES[start : start + 64]
        found[f"file bytes at {start}"] = window
        found[f"file bytes at {start} hex"] = window.hex().encode("ascii")
    return found


def scan(files: list[pathlib.Path]) -> list[str]:
    """Each needle found, with the file it is in."""
    hits = []
    wanted = needles()
    for path in files:
        data = path.read_bytes()
        lowered = data.lower()
        for label, needle in wanted.items():
            if needle in data or (label.endswith(" hex") and needle.lower() in lowered):
                hits.append(f"{label} in {path}")
    return hits


def everything_under(*roots: pathlib.Path) -> list[pathlib.Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def post(
    http: httpx.Client,
    srv: serverproc.ServerProcess,
    account: str,
    op: str,
    payload: bytes = b"",
    **args: object,
) -> tuple[envelope.EnvelopeHeader, bytes]:
    """A sealed request as ``account``; the opened answer."""
    answer = http.post(f"/v1/{op}", content=srv.seal(account, op, payload, **args))
    assert answer.status_code == 200, answer.text
    return envelope.open_sealed(srv.credentials[account].secret, answer.content)


def message(
    tx: str,
    receiver_type: str,
    to: tuple[str, ...],
    bcc: tuple[str, ...] = (),
    attachments: tuple[model.AttachmentInfo, ...] = (),
) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id=tx,
        app_code="SCANAPP",
        source_domain="scan-example.com",
        agent_sender=GATEWAY,
        sender=SENDER,
        receiver_type=receiver_type,
        receivers=to,
        bcc=bcc,
        subject=SUBJECT,
        content=CONTENT,
        content_type="APPROVE",
        alert_flag=True,
        priority="H",
        keywords=KEYWORDS,
        transmit_time="2026-11-30 12:00:00",
        attachments=attachments,
    )


def exercise(srv: serverproc.ServerProcess) -> str:
    """Upload, submit (To, Bcc, an unknown name, a device), fetch, download, ack, leave
    an upload half done, and write a device and a domain; return the MessageId."""
    digest = hashlib.sha256(FILE_BYTES).hexdigest()
    with httpx.Client(base_url=srv.url, verify=srv.tls_context(), timeout=60) as http:
        half = 100_000
        post(
            http,
            srv,
            GATEWAY,
            "upload",
            FILE_BYTES[:half],
            tx="tx-scan-1",
            seq=1,
            offset=0,
            final=False,
        )
        post(
            http,
            srv,
            GATEWAY,
            "upload",
            FILE_BYTES[half:],
            tx="tx-scan-1",
            seq=1,
            offset=half,
            final=True,
            size=len(FILE_BYTES),
            sha256=digest,
        )
        # An upload never submitted: its stage keeps segments on disk.
        post(
            http,
            srv,
            GATEWAY,
            "upload",
            FILE_BYTES[:70_000],
            tx="tx-scan-stage",
            seq=1,
            offset=0,
            final=False,
        )
        info = model.AttachmentInfo(1, FILE_NAME, "pdf", len(FILE_BYTES), 1, digest)
        msgs = [
            message("tx-scan-1", "U", (ANNA, UNKNOWN), (BERND,), (info,)),
            message("tx-scan-2", "D", (SERIAL,)),
        ]
        _, body = post(http, srv, GATEWAY, "submit", payloads.build_submit(msgs))
        results = payloads.parse_submitted(body)
        assert all(r.accepted for r in results), results
        assert results[0].unknown == (UNKNOWN,)
        _, body = post(http, srv, ANNA, "fetch", payloads.build_fetch(10, 0))
        [delivery] = payloads.parse_deliveries(body).deliveries
        assert (delivery.subject, delivery.content, delivery.keywords) == (
            SUBJECT,
            CONTENT,
            KEYWORDS,
        )
        assert delivery.attachments[0].file_name == FILE_NAME
        _, part = post(
            http,
            srv,
            ANNA,
            "download",
            messageId=results[0].message_id,
            seq=1,
            offset=60_000,
            length=100_000,
        )
        assert part == FILE_BYTES[60_000:160_000]
        post(http, srv, ANNA, "ack", payloads.build_ack([delivery.rx_message_id]))
        _, body = post(http, srv, BERND, "fetch", payloads.build_fetch(10, 0))
        assert payloads.parse_deliveries(body).deliveries[0].bcc_list == BERND
    engine = tables.create_engine(srv.database_url)
    try:
        with transactions.begin(engine, "directory rows") as conn:
            directoryrows.insert_device(
                conn,
                srv.vault.keyring,
                account_id="dev-" + "5" * 32,
                device_id=DEVICE_ID,
                email=DEVICE_EMAIL,
                name=DEVICE_NAME,
                push_token=PUSH_TOKEN,
            )
            directoryrows.insert_domain(
                conn, srv.vault.keyring, "scan-example.com", "north", VERIFY_ADDRESS
            )
    finally:
        engine.dispose()
    return results[0].message_id


def start(root: pathlib.Path, **settings: object) -> serverproc.ServerProcess:
    return serverproc.start(
        root,
        {GATEWAY: "gateway", ANNA: "user", BERND: "user", SERIAL: "device"},
        **settings,
    )


def mpg(root: pathlib.Path, *args: str) -> str:
    """A CLI command on the server's config (another one if ``args`` start with --config)."""
    config = ["--config", str(root / "server.toml")] if args[:1] != ("--config",) else []
    done = subprocess.run(
        [sys.executable, "-m", "mpg.cli.main", *config, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("MPG_")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sqlite_files_wal_blobs_and_spool_hold_no_personal_data_in_clear(
    tmp_path: pathlib.Path,
) -> None:
    """Scanned while the server runs (WAL present) and after a rotation and rekey."""
    root = tmp_path / "server"
    srv = start(root)
    try:
        message_id = exercise(srv)
        db = root / "server.db"
        data = root / "data"
        files = [db, *everything_under(data)] + [
            p for p in (root / "server.db-wal", root / "server.db-shm") if p.exists()
        ]
        assert (root / "server.db-wal").exists()
        assert any(p.parent.name != "incoming" for p in everything_under(data / "blobs"))
        assert scan(files) == []
        # The scan does find what is meant to stay clear (ids, the app code): it reads
        # the files it names.
        raw = b"".join(p.read_bytes() for p in files)
        assert b"tx-scan-1" in raw
        assert message_id.encode() in raw
        assert b"SCANAPP" in raw
    finally:
        srv.stop()

    names = json.loads(mpg(root, "server", "account", "list", "--json"))
    assert sorted(n["account"] for n in names) == sorted([GATEWAY, ANNA, BERND, SERIAL])
    added = json.loads(mpg(root, "server", "data-key", "add", "--json"))
    listed = json.loads(mpg(root, "server", "data-key", "list", "--json"))
    assert listed["current"] == added["key_id"]
    assert len(listed["keys"]) == 2
    summary = json.loads(mpg(root, "server", "rekey", "--json", "--batch", "1"))
    assert summary["current"] == added["key_id"]
    assert summary["tables"]["TransmitQueue"]["rewritten"] == 2
    assert summary["tables"]["Account"]["rewritten"] == 4
    assert summary["tables"]["Device"]["rewritten"] == 1
    assert summary["tables"]["Domain"]["rewritten"] == 1
    assert summary["files"]["rewritten"] == 1
    assert summary["stages_under_old_keys"] == 1  # the upload never submitted
    assert scan([root / "server.db", *everything_under(root / "data")]) == []


@pytest.fixture
def pg_dump() -> str:
    found = shutil.which("pg_dump") or next(
        iter(sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)),
        None,
    )
    if not found:
        pytest.skip("pg_dump not installed")
    return str(found)


def test_a_postgresql_dump_holds_no_personal_data_in_clear(
    tmp_path: pathlib.Path, postgresql_url: str, pg_dump: str
) -> None:
    """The same data on PostgreSQL, dumped with pg_dump (bytea shows as hex)."""
    root = tmp_path / "server"
    srv = start(root, database_url=postgresql_url)
    try:
        message_id = exercise(srv)
    finally:
        srv.stop()
    url = sa.make_url(postgresql_url)
    dump = tmp_path / "server.sql"
    done = subprocess.run(
        [
            pg_dump,
            "-h",
            str(url.host),
            "-p",
            str(url.port),
            "-U",
            str(url.username),
            "-f",
            str(dump),
            str(url.database),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = dump.read_bytes()
    assert b'COPY public."TransmitQueue"' in text
    assert message_id.encode() in text
    assert scan([dump, *everything_under(root / "data")]) == []


def test_rekey_runs_while_the_server_serves(tmp_path: pathlib.Path) -> None:
    """A server that knows both keys keeps taking, delivering and serving files while
    `mpg server rekey` moves what is under the old key; nothing is lost or garbled."""
    root = tmp_path / "server"
    (root / "data").mkdir(parents=True)
    keys_file = root / "data" / "data.keys"
    keys_file.write_text(
        "".join(
            f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}\n" for key_id in ("k1", "k2")
        )
    )
    keys_file.chmod(0o600)
    srv = start(root, data_key_current="k1")
    try:
        first = exercise(srv)  # everything so far under k1
        rekey_config = root / "rekey.toml"
        rekey_config.write_text(
            (root / "server.toml")
            .read_text()
            .replace('data_key_current = "k1"', 'data_key_current = "k2"')
        )
        stop = threading.Event()
        seen: list[str] = []

        def keep_serving() -> None:
            with httpx.Client(base_url=srv.url, verify=srv.tls_context(), timeout=60) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    msg = message(f"tx-live-{n}", "U", (ANNA,))
                    _, body = post(http, srv, GATEWAY, "submit", payloads.build_submit([msg]))
                    assert payloads.parse_submitted(body)[0].accepted
                    _, part = post(
                        http,
                        srv,
                        ANNA,
                        "download",
                        messageId=first,
                        seq=1,
                        offset=0,
                        length=len(FILE_BYTES),
                    )
                    assert part == FILE_BYTES
                    _, body = post(http, srv, ANNA, "fetch", payloads.build_fetch(10, 0))
                    for delivery in payloads.parse_deliveries(body).deliveries:
                        assert (delivery.subject, delivery.content) == (SUBJECT, CONTENT)
                        seen.append(delivery.rx_message_id)
                        post(http, srv, ANNA, "ack", payloads.build_ack([delivery.rx_message_id]))

        errors_seen: list[BaseException] = []

        def guarded() -> None:
            try:
                keep_serving()
            except BaseException as exc:  # reported below, on the test's thread
                errors_seen.append(exc)

        worker = threading.Thread(target=guarded)
        worker.start()
        try:
            summary = json.loads(
                mpg(
                    root, "--config", str(rekey_config), "server", "rekey", "--json", "--batch", "1"
                )
            )
        finally:
            stop.set()
            worker.join(120)
        assert errors_seen == []
        assert seen  # the server kept delivering during the rekey
        assert summary["files"]["rewritten"] == 1
        assert summary["tables"]["TransmitQueue"]["rewritten"] >= 2
        with httpx.Client(base_url=srv.url, verify=srv.tls_context(), timeout=60) as http:
            _, part = post(
                http,
                srv,
                ANNA,
                "download",
                messageId=first,
                seq=1,
                offset=0,
                length=len(FILE_BYTES),
            )
        assert part == FILE_BYTES
    finally:
        srv.stop()
