"""Attacks on the push server's network face, against a real process over TLS on loopback.

Each test reproduces one finding of "Hostile input and overload" (docs/security.md,
"The server's network face"): large unauthenticated bodies, slow and flooding
connections, oversized headers, huge ranges, probing for accounts, one account
filling the replay cache or the upload stage, and refusals that list too much.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import serverproc
import sqlalchemy as sa

from mpg.server import housekeeping, tables
from mpg.wire import envelope, model, payloads

GATEWAY = "erp-a@example.com"
BOB = "bob@example.com"
BUSY = "busy@example.com"
CALM = "calm@example.com"
QUOTA = "quota@example.com"
GONE = "gone@example.com"
MIB = 1024 * 1024
REPLAY_PER_ACCOUNT = 30
QUOTA_BYTES = MIB
QUOTA_FILES = 3
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serverproc.ServerProcess]:
    """One server with small limits for the module's tests."""
    server = serverproc.start(
        tmp_path_factory.mktemp("hostile"),
        {
            GATEWAY: "gateway",
            BOB: "user",
            BUSY: "gateway",
            CALM: "gateway",
            QUOTA: "gateway",
            GONE: "user",
        },
        disabled=(GONE,),
        max_request_bytes=64 * MIB,
        max_long_poll=1,
        header_timeout=3,
        body_timeout=2,
        max_header_bytes=8192,
        max_connections=MAX_CONNECTIONS,
        replay_per_account=REPLAY_PER_ACCOUNT,
        upload_quota_bytes=QUOTA_BYTES,
        upload_quota_files=QUOTA_FILES,
    )
    yield server
    server.stop()


@pytest.fixture
def http(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    """A client of the module's server."""
    with httpx.Client(base_url=srv.url, verify=srv.tls_context(), timeout=60) as client:
        yield client


def post(http: httpx.Client, op: str, body: bytes) -> httpx.Response:
    """POST ``body`` to ``/v1/<op>``."""
    return http.post(f"/v1/{op}", content=body)


def payload_fetch() -> bytes:
    return payloads.build_fetch(10, 0)


# ------------------------------------------------------------------ bodies and memory


@pytest.fixture
def roomy(tmp_path: pathlib.Path) -> Iterator[serverproc.ServerProcess]:
    """A server with the default 64 MiB body limit and a 96 MiB cap on bytes in flight."""
    server = serverproc.start(
        tmp_path / "roomy",
        {GATEWAY: "gateway"},
        max_request_bytes=64 * MIB,
        max_inflight_bytes=96 * MIB,
    )
    yield server
    server.stop()


def test_unauthenticated_large_bodies_are_refused_at_the_header_with_memory_bounded(
    roomy: serverproc.ServerProcess,
) -> None:
    """12 x 63 MB bodies naming no known account: 401 after the header; RSS barely moves."""
    before = roomy.memory_kib("VmHWM")
    statuses = serverproc.flood_of_bodies(roomy, serverproc.forged("nobody@example.com", "upload"))
    grown_mib = (roomy.memory_kib("VmHWM") - before) / 1024
    assert set(statuses) <= {401, None}
    assert 401 in statuses
    # The old server held every body whole: 12 x 63 MB = 756 MB more.
    assert grown_mib < 48, f"peak RSS grew by {grown_mib:.0f} MiB"


def test_forged_large_bodies_of_a_known_account_are_capped_in_flight(
    roomy: serverproc.ServerProcess,
) -> None:
    """A known account with a forged key: bodies are spooled to disk, up to the in-flight cap."""
    before = roomy.memory_kib("VmHWM")
    statuses = serverproc.flood_of_bodies(
        roomy, serverproc.forged(GATEWAY, "upload", key_id=roomy.credentials[GATEWAY].key_id)
    )
    grown_mib = (roomy.memory_kib("VmHWM") - before) / 1024
    assert set(statuses) <= {401, 503, None}
    assert 503 in statuses
    # Upload bodies go to disk as they arrive (at most the 96 MiB cap of them);
    # the old server held all twelve in memory, several times over.
    assert grown_mib < 48, f"peak RSS grew by {grown_mib:.0f} MiB"


def test_operations_without_bulk_data_take_only_small_bodies(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """A 2 MiB fetch is refused by its Content-Length, before anything is read."""
    response = post(http, "fetch", bytes(2 * MIB))
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_a_stalled_body_is_dropped_with_408(srv: serverproc.ServerProcess) -> None:
    """Three bytes of a 1000-byte body, then nothing: 408 after body_timeout."""
    sock = srv.connect()
    with sock:
        sock.sendall(
            f"POST /v1/fetch HTTP/1.1\r\nHost: {srv.host}\r\nContent-Length: 1000\r\n\r\nMPG".encode()
        )
        assert serverproc.status_of(serverproc.read_response(sock)) == 408


# ------------------------------------------------------------------ connections


@pytest.fixture
def service_like(tmp_path: pathlib.Path) -> Iterator[serverproc.ServerProcess]:
    """A server started with the 1,024 open files a service gets by default."""
    server = serverproc.start(
        tmp_path / "service", {GATEWAY: "gateway"}, open_files=1024, header_timeout=10
    )
    yield server
    server.stop()


def open_slow(srv: serverproc.ServerProcess, count: int) -> list[ssl.SSLSocket]:
    """``count`` connections that have sent the start of a request's headers."""
    socks = []
    for _ in range(count):
        sock = srv.connect()
        sock.sendall(b"POST /v1/fetch HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(sock)
    return socks


def dribble_until_dropped(socks: list[ssl.SSLSocket], give_up_after: float) -> int:
    """Send one header byte a second on each connection until the server drops them all.

    Returns how many the server still held when giving up (the failsafe).
    """
    open_ = list(socks)
    deadline = time.monotonic() + give_up_after
    while open_ and time.monotonic() < deadline:
        still = []
        for sock in open_:
            try:
                sock.setblocking(False)
                with contextlib.suppress(ssl.SSLWantReadError, BlockingIOError):
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                sock.setblocking(True)
                sock.sendall(b"X")
                still.append(sock)
            except OSError:
                sock.close()
        open_ = still
        time.sleep(1)
    for sock in open_:
        sock.close()
    return len(open_)


def test_a_flood_of_slow_headers_does_not_lock_clients_out(
    service_like: serverproc.ServerProcess,
) -> None:
    """1,005 connections dribbling headers under a 1,024-file limit: clients still served,
    and every dribbler is dropped by the header deadline."""
    slow = open_slow(service_like, 1005)
    try:
        with httpx.Client(
            base_url=service_like.url, verify=service_like.tls_context(), timeout=30
        ) as client:
            assert client.get("/healthz").status_code == 200
            body = service_like.seal(GATEWAY, "fetch", payload_fetch())
            assert post(client, "fetch", body).status_code == 200
        assert dribble_until_dropped(slow, give_up_after=60) == 0
    finally:
        for sock in slow:
            sock.close()


def test_a_connection_that_never_finishes_its_tls_handshake_is_dropped(
    srv: serverproc.ServerProcess,
) -> None:
    """TCP connected, half a ClientHello, then nothing: closed after header_timeout (3 s
    here; asyncio's default would be 60 s)."""
    with socket.create_connection((srv.host, srv.port), timeout=30) as raw:
        raw.sendall(b"\x16\x03\x01\x00")
        try:  # the socket's own 30 s timeout would raise TimeoutError here
            closed = raw.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed


def test_an_oversized_header_is_refused(srv: serverproc.ServerProcess) -> None:
    """A 1 MB header line gets 400 and the connection closes (the limit is 8 KiB here)."""
    sock = srv.connect()
    with sock:
        sock.sendall(f"POST /v1/fetch HTTP/1.1\r\nHost: {srv.host}\r\nX-Big: ".encode())
        with contextlib.suppress(OSError):
            for _ in range(16):
                sock.sendall(b"a" * 65536)
        assert serverproc.status_of(serverproc.read_response(sock)) == 400


def test_the_next_request_on_a_kept_alive_connection_has_its_own_header_deadline(
    srv: serverproc.ServerProcess,
) -> None:
    """One request served, then half the next one's headers and nothing more: the
    connection is dropped once header_timeout (3 s here) passed, not kept idle."""
    sock = srv.connect()
    with sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {srv.host}\r\n\r\n".encode())
        assert serverproc.status_of(serverproc.read_response(sock)) == 200
        time.sleep(1.0)  # idle between requests: the next one's clock starts with its bytes
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {srv.host}\r\n".encode())
        started = time.monotonic()
        try:  # the socket's own 30 s timeout would raise TimeoutError here
            closed = sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        assert closed
        assert 2.0 < time.monotonic() - started < 15


def test_headers_that_grow_past_the_limit_in_small_pieces_are_refused(
    srv: serverproc.ServerProcess,
) -> None:
    """Header lines of 100 bytes sent one by one: 400 once they pass the 8 KiB limit,
    however small each piece."""
    sock = srv.connect()
    with sock:
        sock.sendall(f"POST /v1/fetch HTTP/1.1\r\nHost: {srv.host}\r\n".encode())
        with contextlib.suppress(OSError):
            for n in range(200):
                sock.sendall(f"X-Filler-{n:03d}: {'a' * 84}\r\n".encode())
        assert serverproc.status_of(serverproc.read_response(sock)) == 400


def test_connections_beyond_the_limit_are_answered_503(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """With max_connections held open, a request gets 503; once they close, 200."""
    held = [srv.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        assert http.get("/healthz").status_code == 503
    finally:
        for sock in held:
            sock.close()
    with httpx.Client(base_url=srv.url, verify=srv.tls_context(), timeout=30) as fresh:
        for _ in range(50):
            if fresh.get("/healthz").status_code == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server did not recover after the connections closed")


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("upload", {"tx": "t", "seq": 2**63, "offset": 0, "final": False}),
        ("upload", {"tx": "t", "seq": 1, "offset": 2**63, "final": False}),
        ("upload", {"tx": "t", "seq": 1, "offset": -1, "final": False}),
        (
            "upload",
            {"tx": "t", "seq": 1, "offset": 0, "final": True, "size": 2**63, "sha256": "0" * 64},
        ),
        ("download", {"messageId": "m", "seq": 1, "offset": 2**63, "length": 1}),
        ("download", {"messageId": "m", "seq": 1, "offset": 0, "length": 2**63}),
        ("download", {"messageId": "m", "seq": -(2**63), "offset": 0, "length": 1}),
    ],
)
def test_out_of_range_numbers_are_bad_requests(
    srv: serverproc.ServerProcess, http: httpx.Client, op: str, args: dict[str, object]
) -> None:
    """seq/offset/length/size of 2^63 (or negative) are 400, not a server fault."""
    response = post(http, op, srv.seal(BOB, op, b"x", **args))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"


# ------------------------------------------------------------------ authentication


def test_every_failure_to_authenticate_gets_the_same_401(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """Unknown account, unknown key id, wrong key, a disabled account's wrong key, garbage:
    one answer, so a prober learns nothing about which accounts exist."""
    attempts = {
        "unknown account": serverproc.forged("nobody@example.com"),
        "unknown key id": serverproc.forged(BOB),
        "wrong key": serverproc.forged(BOB, key_id=srv.credentials[BOB].key_id),
        "disabled, wrong key": serverproc.forged(GONE, key_id=srv.credentials[GONE].key_id),
        "no envelope": b"hello",
    }
    answers = {what: post(http, "fetch", body) for what, body in attempts.items()}
    assert {what: r.status_code for what, r in answers.items()} == dict.fromkeys(attempts, 401)
    assert len({r.content for r in answers.values()}) == 1


def test_a_disabled_account_hears_403_only_with_its_own_key(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """The holder of a disabled account's key learns that it is disabled."""
    response = post(http, "fetch", srv.seal(GONE, "fetch", payload_fetch()))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


# ------------------------------------------------------------------ per-account caps


def test_one_account_filling_the_replay_cache_locks_out_only_itself(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """Past replay_per_account requests in one window: 429 for that account, 200 for others."""
    ack = payloads.build_ack([])
    for _ in range(REPLAY_PER_ACCOUNT):
        assert post(http, "ack", srv.seal(BUSY, "ack", ack)).status_code == 200
    refused = post(http, "ack", srv.seal(BUSY, "ack", ack))
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_requests"
    assert post(http, "ack", srv.seal(CALM, "ack", ack)).status_code == 200


def upload(
    srv: serverproc.ServerProcess, http: httpx.Client, tx: str, data: bytes
) -> httpx.Response:
    """One non-final chunk at offset 0 of (tx, 1) as the quota account."""
    body = srv.seal(QUOTA, "upload", data, tx=tx, seq=1, offset=0, final=False)
    return post(http, "upload", body)


def test_staged_uploads_have_a_quota_and_abandoned_stages_are_purged(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """Bytes and files beyond the quota get 429; purging abandoned stages frees it."""
    part = bytes(600 * 1024)
    assert upload(srv, http, "q1", part).status_code == 200
    over_bytes = upload(srv, http, "q2", part)
    assert over_bytes.status_code == 429, over_bytes.text
    assert upload(srv, http, "q3", b"x").status_code == 200
    over_files = upload(srv, http, "q4", b"x")
    assert over_files.status_code == 429, over_files.text

    engine = tables.create_engine(srv.database_url)
    try:
        s = tables.upload_stage.c
        with engine.connect() as conn:
            quota = srv.vault.account_id(QUOTA)
            paths = list(conn.execute(sa.select(s.Path).where(s.SenderAccount == quota)).scalars())
        purged = housekeeping.purge_stages(engine, 3600, clock=lambda: time.time() + 7200)
    finally:
        engine.dispose()
    assert purged == len(paths) == QUOTA_FILES
    assert not any(pathlib.Path(p).exists() for p in paths)
    assert upload(srv, http, "q2", part).status_code == 200


def test_purging_stages_leaves_the_files_of_submitted_messages(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """A submitted message's attachment survives the purge; an abandoned stage and a
    dead process's spooled body do not."""
    data = b"attachment bytes"
    digest = hashlib.sha256(data).hexdigest()
    tx = str(uuid.uuid4())
    done = srv.seal(
        GATEWAY, "upload", data, tx=tx, seq=1, offset=0, final=True, size=len(data), sha256=digest
    )
    assert post(http, "upload", done).status_code == 200
    info = model.AttachmentInfo(1, "a.txt", "txt", len(data), 0, digest)
    answer = post(
        http,
        "submit",
        srv.seal(GATEWAY, "submit", payloads.build_submit([message((BOB,), (info,), tx)])),
    )
    assert answer.status_code == 200, answer.text
    _, plain = envelope.open_sealed(srv.credentials[GATEWAY].secret, answer.content)
    [result] = payloads.parse_submitted(plain)
    assert result.accepted, result.reason
    abandoned = srv.seal(GATEWAY, "upload", b"half", tx="abandoned", seq=1, offset=0, final=False)
    assert post(http, "upload", abandoned).status_code == 200

    spool = srv.data_dir / "incoming"
    spool.mkdir(exist_ok=True)
    orphan = spool / "left-by-a-dead-process"
    orphan.write_bytes(b"sealed body")
    engine = tables.create_engine(srv.database_url)
    try:
        later = time.time() + 7200
        assert housekeeping.purge_stages(engine, 3600, spool=spool, clock=lambda: later) >= 1
    finally:
        engine.dispose()
    assert not orphan.exists()
    read = srv.seal(BOB, "download", messageId=result.message_id, seq=1, offset=0, length=100)
    response = post(http, "download", read)
    assert response.status_code == 200, response.text
    assert envelope.open_sealed(srv.credentials[BOB].secret, response.content)[1] == data


# ------------------------------------------------------------------ listings and logs


def message(
    to: tuple[str, ...], attachments: tuple[model.AttachmentInfo, ...] = (), tx: str = ""
) -> model.OutgoingMessage:
    """A message from the gateway's ERP."""
    return model.OutgoingMessage(
        tx_message_id=tx or str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=GATEWAY,
        sender="alice@example.com",
        receiver_type="U",
        receivers=to,
        bcc=(),
        subject="s",
        content="c",
        content_type="MSG",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 05:41:07",
        attachments=attachments,
    )


def test_a_refusal_naming_300000_unknown_recipients_is_capped_in_answer_and_log(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    """The answer lists at most 100 unknown recipients and no log line is huge."""
    nobody = tuple(f"n{i}@example.com" for i in range(300_000))
    body = srv.seal(GATEWAY, "submit", payloads.build_submit([message(nobody)]))
    response = post(http, "submit", body)
    assert response.status_code == 200, response.text
    assert len(response.content) < 64 * 1024
    _, plain = envelope.open_sealed(srv.credentials[GATEWAY].secret, response.content)
    [result] = payloads.parse_submitted(plain)
    assert not result.accepted
    assert len(result.unknown) == 100
    assert "299990 more" in result.reason
    longest = max(len(line) for line in srv.log_lines())
    assert longest < 16 * 1024
    assert any(json.loads(line).get("event") == "message_refused" for line in srv.log_lines())
