"""The real push server as a subprocess, over real TLS, spoken to with sealed envelopes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import serverproc
import sqlalchemy as sa
import trustme

from mpg import config
from mpg.server import accounts, datakeys, queues, tables
from mpg.server import app as server_app
from mpg.wire import atrest, envelope, keys, model, payloads

GATEWAY = "erp-a@example.com"
BOB = "bob@example.com"
DISABLED = "gone@example.com"
MAX_REQUEST_BYTES = 256 * 1024


@dataclasses.dataclass
class Server:
    """A running server process, its address, its CA and the accounts' credentials."""

    proc: subprocess.Popen[str]
    url: str
    ca_file: pathlib.Path
    credentials: dict[str, keys.Credential]
    log_file: pathlib.Path

    def client(self) -> httpx.Client:
        """An HTTPS client that trusts only the test CA."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.url, verify=context, timeout=30)

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        return serverproc.terminate(self.proc)


def start_server(root: pathlib.Path) -> Server:
    """Write a TLS config on port 0, create accounts, start ``python -m mpg.server.main``."""
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "server.pem")
    )
    config_file = root / "server.toml"
    config_file.write_text(
        "[server]\n"
        f'database_url = "sqlite:///{root / "server.db"}"\n'
        'host = "127.0.0.1"\n'
        "port = 0\n"
        f'tls_cert = "{root / "server.pem"}"\n'
        f'tls_key = "{root / "server.pem"}"\n'
        f'data_dir = "{root / "data"}"\n'
        "lease_seconds = 30\n"
        "max_long_poll = 10\n"
        f"max_request_bytes = {MAX_REQUEST_BYTES}\n"
        "[log]\n"
        'format = "json"\n'
    )
    settings = config.load(config_file).server
    accounts.create_master_key_file(accounts.master_key_path(settings))
    datakeys.create_data_keys_file(datakeys.data_keys_path(settings))
    engine = tables.create_engine(settings.database_url)
    tables.create_tables(engine)
    store = accounts.AccountStore(
        engine, accounts.load_master_key(settings), datakeys.load_keyring(settings)
    )
    credentials = {
        GATEWAY: store.add(GATEWAY, "gateway")[1],
        BOB: store.add(BOB, "user")[1],
        DISABLED: store.add(DISABLED, "user")[1],
    }
    store.disable(DISABLED)
    engine.dispose()
    log_file = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPG_")}
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpg.server.main", "--config", str(config_file)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    url = serverproc.announced(proc, log_file)
    return Server(proc, url, ca_file, credentials, log_file)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests (each test uses its own transmit ids)."""
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


@pytest.fixture
def http(srv: Server) -> Iterator[httpx.Client]:
    """A client of the module's server."""
    with srv.client() as client:
        yield client


def sealed(
    srv: Server,
    account: str,
    op: str,
    payload: bytes = b"",
    args: dict[str, Any] | None = None,
    *,
    now: float | None = None,
) -> tuple[envelope.EnvelopeHeader, bytes]:
    """A request envelope sealed with ``account``'s key."""
    cred = srv.credentials[account]
    header = envelope.request_header(account, cred.key_id, op, args, now=now)
    return header, envelope.seal(cred.secret, header, payload)


def call(
    srv: Server,
    http: httpx.Client,
    account: str,
    op: str,
    payload: bytes = b"",
    args: dict[str, Any] | None = None,
) -> tuple[envelope.EnvelopeHeader, bytes]:
    """One authenticated exchange; the answer is opened and checked against the request."""
    header, body = sealed(srv, account, op, payload, args)
    response = http.post(f"/v1/{op}", content=body)
    assert response.status_code == 200, response.text
    answer, plain = envelope.open_sealed(srv.credentials[account].secret, response.content)
    envelope.check_response(header, answer)
    return answer, plain


def message(
    to: tuple[str, ...], attachments: tuple[model.AttachmentInfo, ...] = ()
) -> model.OutgoingMessage:
    """A message from the gateway's ERP."""
    return model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=GATEWAY,
        sender="alice@example.com",
        receiver_type="U",
        receivers=to,
        bcc=(),
        subject="请假单 AF20261123001",
        content="<content contenttype='msg'/>",
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 05:41:07",
        attachments=attachments,
    )


def submit(srv: Server, http: httpx.Client, msg: model.OutgoingMessage) -> model.SubmitResult:
    """Submit one message as the gateway."""
    _, plain = call(srv, http, GATEWAY, "submit", payloads.build_submit([msg]))
    [result] = payloads.parse_submitted(plain)
    return result


def fetch(
    srv: Server, http: httpx.Client, account: str, wait: float = 0, max_items: int = 100
) -> model.FetchBatch:
    """Fetch ``account``'s queue."""
    _, plain = call(srv, http, account, "fetch", payloads.build_fetch(max_items, wait))
    return payloads.parse_deliveries(plain)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """A JSON error body with the documented code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert body["detail"]


def test_healthz_answers_ok(http: httpx.Client) -> None:
    """GET /healthz is a plain 200 'ok' for load balancers."""
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok"


def test_request_without_envelope_is_unauthenticated(http: httpx.Client) -> None:
    """An empty body is not an envelope: 401."""
    assert_error(http.post("/v1/submit", content=b""), 401, "unauthenticated")


def test_tampered_envelope_is_unauthenticated(srv: Server, http: httpx.Client) -> None:
    """One flipped ciphertext byte makes the tag fail: 401."""
    _, body = sealed(srv, GATEWAY, "fetch", payloads.build_fetch(1, 0))
    damaged = body[:-1] + bytes([body[-1] ^ 1])
    assert_error(http.post("/v1/fetch", content=damaged), 401, "unauthenticated")


def test_unknown_key_is_unauthenticated(srv: Server, http: httpx.Client) -> None:
    """A key id the account does not have: 401."""
    stranger = keys.new_credential()
    header = envelope.request_header(GATEWAY, stranger.key_id, "fetch")
    body = envelope.seal(stranger.secret, header, payloads.build_fetch(1, 0))
    assert_error(http.post("/v1/fetch", content=body), 401, "unauthenticated")


def test_disabled_account_is_forbidden(srv: Server, http: httpx.Client) -> None:
    """A correctly sealed request from a disabled account: 403."""
    _, body = sealed(srv, DISABLED, "fetch", payloads.build_fetch(1, 0))
    assert_error(http.post("/v1/fetch", content=body), 403, "forbidden")


def test_replayed_request_is_refused(srv: Server, http: httpx.Client) -> None:
    """The same envelope twice: the second is 409."""
    _, body = sealed(srv, BOB, "fetch", payloads.build_fetch(1, 0))
    assert http.post("/v1/fetch", content=body).status_code == 200
    assert_error(http.post("/v1/fetch", content=body), 409, "replayed")


def test_stale_request_is_refused(srv: Server, http: httpx.Client) -> None:
    """A timestamp outside the replay window: 409."""
    _, body = sealed(srv, BOB, "fetch", payloads.build_fetch(1, 0), now=time.time() - 3600)
    assert_error(http.post("/v1/fetch", content=body), 409, "replayed")


def test_unknown_operation_is_a_bad_request(srv: Server, http: httpx.Client) -> None:
    """POST /v1/<unknown>: 400."""
    _, body = sealed(srv, BOB, "frobnicate")
    assert_error(http.post("/v1/frobnicate", content=body), 400, "bad_request")


def test_envelope_for_another_operation_is_a_bad_request(srv: Server, http: httpx.Client) -> None:
    """An envelope sealed for 'ack' posted to /v1/fetch: 400."""
    _, body = sealed(srv, BOB, "ack", payloads.build_ack([]))
    assert_error(http.post("/v1/fetch", content=body), 400, "bad_request")


def test_malformed_payload_is_a_bad_request(srv: Server, http: httpx.Client) -> None:
    """A sealed payload that is not the operation's XML: 400."""
    _, body = sealed(srv, BOB, "fetch", b"<!DOCTYPE x><fetch/>")
    assert_error(http.post("/v1/fetch", content=body), 400, "bad_request")


def test_oversized_body_is_refused(http: httpx.Client) -> None:
    """A body over server.max_request_bytes: 413 before anything is opened."""
    response = http.post("/v1/submit", content=b"x" * (MAX_REQUEST_BYTES + 1))
    assert_error(response, 413, "too_large")


def test_submit_fetch_ack_round_trip_ends_with_a_receipt(srv: Server, http: httpx.Client) -> None:
    """Submit to bob, bob fetches and acks, the gateway gets the receipt."""
    msg = message((BOB, "nobody@example.com"))
    result = submit(srv, http, msg)
    assert result.accepted
    assert result.unknown == ("nobody@example.com",)
    assert submit(srv, http, msg) == result  # idempotent over HTTP too
    batch = fetch(srv, http, BOB)
    [delivery] = [d for d in batch.deliveries if d.message_id == result.message_id]
    assert delivery.subject == msg.subject
    assert delivery.owner == BOB
    ids = [d.rx_message_id for d in batch.deliveries]
    _, plain = call(srv, http, BOB, "ack", payloads.build_ack(ids))
    assert payloads.parse_acked(plain) == len(ids)
    receipts = fetch(srv, http, GATEWAY, wait=5).receipts
    [receipt] = [r for r in receipts if r.message_id == result.message_id]
    assert receipt.tx_message_id == msg.tx_message_id
    assert receipt.served == 1
    call(srv, http, GATEWAY, "ack", payloads.build_ack([r.entry_id for r in receipts]))


def _fetch_acking(
    srv: Server, http: httpx.Client, account: str, acked: list[str], wait: float = 0
) -> model.FetchBatch:
    """A fetch that acknowledges ``acked`` (the previous batch), as a gateway sends it."""
    _, plain = call(srv, http, account, "fetch", payloads.build_fetch(100, wait, acked))
    return payloads.parse_deliveries(plain)


def _receipts_until(
    srv: Server, http: httpx.Client, message_id: str, deadline: float
) -> list[model.Receipt]:
    """The gateway's receipts, fetched until ``message_id``'s is among them (others that
    earlier tests left may come first) or ``deadline`` (monotonic) passes."""
    receipts: list[model.Receipt] = []
    while message_id not in [r.message_id for r in receipts] and time.monotonic() < deadline:
        receipts += fetch(srv, http, GATEWAY, wait=1).receipts
    return receipts


def _event_ids(srv: Server, message_id: str, kind: str) -> list[int]:
    """The ids (the order they were written in) of a message's events of ``kind``."""
    engine = sa.create_engine(config.load(srv.ca_file.parent / "server.toml").server.database_url)
    try:
        with engine.connect() as conn:
            e = tables.message_event.c
            query = sa.select(e.Id).where(e.MessageId == message_id, e.Kind == kind)
            return list(conn.execute(query).scalars())
    finally:
        engine.dispose()


def test_a_fetch_that_finds_entries_answers_before_it_applies_its_acknowledgements(
    srv: Server, http: httpx.Client
) -> None:
    """A backlog's acknowledgement does not hold up the next batch: the answer is leased
    (and sent) first, the acknowledgement follows and queues the receipts."""
    fetch(srv, http, BOB)  # leases anything left over by earlier tests
    backlog = [message((BOB,)) for _ in range(queues.ACKS_WITH_LEASE + 1)]
    _, plain = call(srv, http, GATEWAY, "submit", payloads.build_submit(backlog))
    first = payloads.parse_submitted(plain)[-1]
    delivered = fetch(srv, http, BOB).deliveries
    assert len(delivered) == len(backlog)
    second = submit(srv, http, message((BOB,)))
    batch = _fetch_acking(srv, http, BOB, [d.rx_message_id for d in delivered])
    assert [d.message_id for d in batch.deliveries] == [second.message_id]
    receipts = _receipts_until(srv, http, first.message_id, time.monotonic() + 5)
    assert first.message_id in [r.message_id for r in receipts]
    [leased] = _event_ids(srv, second.message_id, "fetched")
    [acknowledged] = _event_ids(srv, first.message_id, "acknowledged")
    assert leased < acknowledged
    call(srv, http, GATEWAY, "ack", payloads.build_ack([r.entry_id for r in receipts]))


def test_a_fetch_that_must_wait_applies_its_acknowledgements_before_waiting(
    srv: Server, http: httpx.Client
) -> None:
    """The sender's receipt does not wait for the recipient's long poll."""
    fetch(srv, http, BOB)
    first = submit(srv, http, message((BOB,)))
    [delivered] = fetch(srv, http, BOB).deliveries
    with concurrent.futures.ThreadPoolExecutor(1) as pool, srv.client() as other:
        waiting = pool.submit(_fetch_acking, srv, other, BOB, [delivered.rx_message_id], 10)
        started = time.monotonic()
        receipts = _receipts_until(srv, http, first.message_id, time.monotonic() + 5)
        got_receipt = time.monotonic() - started
        assert not waiting.done()  # still waiting for something to deliver
        ended = submit(srv, http, message((BOB,)))
        assert [d.message_id for d in waiting.result(timeout=15).deliveries] == [ended.message_id]
    assert first.message_id in [r.message_id for r in receipts]
    assert got_receipt < 5
    call(srv, http, GATEWAY, "ack", payloads.build_ack([r.entry_id for r in receipts]))


def test_long_poll_answers_when_a_message_arrives(srv: Server, http: httpx.Client) -> None:
    """A waiting fetch returns soon after a submit for its account, not at the deadline."""
    fetch(srv, http, BOB)  # leases anything left over by earlier tests
    with concurrent.futures.ThreadPoolExecutor(1) as pool, srv.client() as other:
        started = time.monotonic()
        waiting = pool.submit(fetch, srv, other, BOB, 10)
        time.sleep(0.5)
        result = submit(srv, http, message((BOB,)))
        batch = waiting.result(timeout=15)
        elapsed = time.monotonic() - started
    assert [d.message_id for d in batch.deliveries] == [result.message_id]
    assert elapsed < 5


def test_long_poll_answers_empty_when_time_is_up(srv: Server, http: httpx.Client) -> None:
    """With nothing to deliver, fetch waits about ``wait`` seconds and answers empty."""
    fetch(srv, http, BOB)
    started = time.monotonic()
    batch = fetch(srv, http, BOB, wait=1)
    assert batch == model.FetchBatch()
    assert 0.9 <= time.monotonic() - started < 5


def test_chunked_upload_then_download_returns_identical_bytes(
    srv: Server, http: httpx.Client
) -> None:
    """An attachment uploaded in chunks comes back byte for byte, range by range."""
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    tx, chunk = str(uuid.uuid4()), 64 * 1024
    for offset in range(0, len(data), chunk):
        final = offset + chunk >= len(data)
        args: dict[str, Any] = {"tx": tx, "seq": 1, "offset": offset, "final": final}
        if final:
            args.update(size=len(data), sha256=digest)
        answer, _ = call(srv, http, GATEWAY, "upload", data[offset : offset + chunk], args)
        assert answer.args["received"] == min(offset + chunk, len(data))
    assert answer.args["complete"] is True
    info = model.AttachmentInfo(1, "report.bin", "bin", len(data), 0, digest)
    msg = dataclasses.replace(message((BOB,)), tx_message_id=tx, attachments=(info,))
    result = submit(srv, http, msg)
    assert result.accepted, result.reason
    got = b""
    while len(got) < len(data):
        args = {"messageId": result.message_id, "seq": 1, "offset": len(got), "length": 50_000}
        answer, part = call(srv, http, BOB, "download", b"", args)
        assert answer.args == {"size": len(data), "sha256": digest}
        got += part
    assert got == data


def test_download_of_unknown_attachment_is_not_found(srv: Server, http: httpx.Client) -> None:
    """No such message: 404 with a JSON body."""
    args = {"messageId": str(uuid.uuid4()), "seq": 1, "offset": 0, "length": 10}
    _, body = sealed(srv, BOB, "download", b"", args)
    assert_error(http.post("/v1/download", content=body), 404, "not_found")


def test_sigterm_during_a_long_poll_stops_the_server_cleanly(tmp_path: pathlib.Path) -> None:
    """A waiting fetch is answered at once on SIGTERM and the server exits 0."""
    server = start_server(tmp_path)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool, server.client() as client:
            waiting = pool.submit(fetch, server, client, BOB, 10)
            time.sleep(1)
            started = time.monotonic()
            assert server.stop() == 0
            assert waiting.result(timeout=10) == model.FetchBatch()
            assert time.monotonic() - started < 5
    finally:
        if server.proc.poll() is None:
            server.stop()
    log = server.log_file.read_text()
    assert "server_stopping" in log
    assert server.credentials[BOB].secret.hex() not in log


def test_database_is_the_server_own(srv: Server) -> None:
    """The server's tables live in server.database_url, with the document's queue names."""
    url = config.load(srv.ca_file.parent / "server.toml").server.database_url
    engine = sa.create_engine(url)
    try:
        names = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"TransmitQueue", "ReceiveQueue", "Account", "AccountKey"} <= names


def test_metrics_are_served_only_to_the_allowed_networks(tmp_path: pathlib.Path) -> None:
    """/metrics answers 403 outside server.metrics_from, 200 inside; health stays open."""
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    settings = config.ServerSettings(data_dir=tmp_path, metrics_from=("10.9.0.0/16",))
    app = server_app.create_app(
        server_app.PushServer(
            settings,
            engine,
            keys.new_master_key(),
            atrest.Keyring({"k": keys.new_master_key()}, "k"),
        )
    )

    async def get(client_ip: str, path: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as client:
            return (await client.get(path)).status_code

    try:
        assert asyncio.run(get("10.1.2.3", "/metrics")) == 403
        assert asyncio.run(get("10.9.1.1", "/metrics")) == 200
        assert asyncio.run(get("10.1.2.3", "/healthz")) == 200
        assert asyncio.run(get("10.1.2.3", "/readyz")) == 200
    finally:
        engine.dispose()
