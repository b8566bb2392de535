"""Message files served by a real uvicorn over TLS on loopback: GET, HEAD, 304s, gzip."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import gzip
import pathlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import trustme
import uvicorn
from harness import DEADLINE
from standins.common import client_context
from starlette.applications import Starlette

from mpg.server.push import fileserve
from mpg.server.push.messagefiles import MessageFiles
from mpg.wire import messagefile
from mpg.wire.messagefile import PublishedMessage

CACHE_CONTROL = "public, no-cache"
NOW = dt.datetime(2026, 11, 30, 18, 0, tzinfo=dt.UTC)


def file_bytes(*titles: str) -> bytes:
    messages = [
        PublishedMessage(f"m-{i}", NOW - dt.timedelta(minutes=i), title, text="Lorem ipsum " * 40)
        for i, title in enumerate(titles)
    ]
    return messagefile.render("acme", messages, now=NOW).data


@pytest.fixture
def files(tmp_path: pathlib.Path) -> MessageFiles:
    return MessageFiles(tmp_path / "files", export_dir=tmp_path / "www")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def base(files: MessageFiles, ca: trustme.CA, tmp_path: pathlib.Path) -> Iterator[str]:
    """uvicorn serving the message file routes over TLS, in a thread of this process."""
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    app = Starlette(routes=fileserve.routes(files, CACHE_CONTROL))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        # uvicorn's own logging setup would stop the "uvicorn" loggers propagating for
        # the rest of the worker, and tests of MPG's log files after it would miss them.
        log_config=None,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(int(DEADLINE * 20)):
        if server.started:
            started.set()
            break
        started.wait(0.05)
    assert started.is_set(), "uvicorn did not start"
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
        sock.close()


@pytest.fixture
def client(base: str, ca: trustme.CA) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, verify=client_context(ca)) as c:
        yield c


def test_get_serves_the_published_version_with_its_validators(
    files: MessageFiles, client: httpx.Client
) -> None:
    data = file_bytes("first", "second")
    version = files.publish("acme", data)
    response = client.get("/files/acme.ibi", headers={"accept-encoding": "identity"})
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.headers["etag"] == version.etag
    assert response.headers["etag"].startswith('"')
    assert response.headers["cache-control"] == CACHE_CONTROL
    assert response.headers["vary"] == "Accept-Encoding"
    modified = email.utils.parsedate_to_datetime(response.headers["last-modified"])
    assert modified.timestamp() == version.modified


def test_head_answers_the_headers_of_get_without_a_body(
    files: MessageFiles, client: httpx.Client
) -> None:
    files.publish("acme", file_bytes("first"))
    get = client.get("/files/acme.ibi", headers={"accept-encoding": "identity"})
    head = client.head("/files/acme.ibi", headers={"accept-encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-length", "etag", "last-modified", "content-type", "cache-control"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_with_the_current_etag_is_304(
    files: MessageFiles, client: httpx.Client, method: str
) -> None:
    version = files.publish("acme", file_bytes("first"))
    response = client.request(
        method,
        "/files/acme.ibi",
        headers={"if-none-match": version.etag, "accept-encoding": "identity"},
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == version.etag


def test_a_new_version_from_another_process_is_served_to_an_old_etag(
    files: MessageFiles, client: httpx.Client, tmp_path: pathlib.Path
) -> None:
    old = files.publish("acme", file_bytes("first"))
    assert client.get("/files/acme.ibi").status_code == 200
    other_process = MessageFiles(tmp_path / "files")
    new = other_process.publish("acme", file_bytes("second", "first"))
    response = client.get(
        "/files/acme.ibi", headers={"if-none-match": old.etag, "accept-encoding": "identity"}
    )
    assert response.status_code == 200
    assert response.headers["etag"] == new.etag != old.etag
    assert b"second" in response.content


def test_gzip_when_accepted_with_its_own_etag(files: MessageFiles, client: httpx.Client) -> None:
    data = file_bytes("first", "second", "third")
    version = files.publish("acme", data)
    response = client.get("/files/acme.ibi", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["etag"] == version.gzip_etag
    assert int(response.headers["content-length"]) < len(data)
    assert response.content == data  # httpx decodes it
    raw = client.head("/files/acme.ibi", headers={"accept-encoding": "gzip"})
    assert raw.headers["content-length"] == response.headers["content-length"]
    assert gzip.decompress(version.gzipped or b"") == data


def test_either_representations_etag_revalidates(files: MessageFiles, client: httpx.Client) -> None:
    version = files.publish("acme", file_bytes("first", "second"))
    for tag in (version.etag, version.gzip_etag, f"W/{version.etag}", '"other", ' + version.etag):
        response = client.get(
            "/files/acme.ibi", headers={"if-none-match": tag, "accept-encoding": "gzip"}
        )
        assert response.status_code == 304, tag


def test_if_modified_since_is_304_unless_the_file_is_newer(
    files: MessageFiles, client: httpx.Client
) -> None:
    version = files.publish("acme", file_bytes("first"))
    same = client.get("/files/acme.ibi", headers={"if-modified-since": version.last_modified})
    earlier = email.utils.formatdate(version.modified - 60, usegmt=True)
    older = client.get("/files/acme.ibi", headers={"if-modified-since": earlier})
    assert (same.status_code, older.status_code) == (304, 200)


def test_if_none_match_wins_over_if_modified_since(
    files: MessageFiles, client: httpx.Client
) -> None:
    version = files.publish("acme", file_bytes("first"))
    response = client.get(
        "/files/acme.ibi",
        headers={"if-none-match": '"stale"', "if-modified-since": version.last_modified},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/files/nobody.ibi",
        "/files/acme",
        "/files/.acme.ibi",
        "/files/..%2Fetc%2Fpasswd.ibi",
        "/files/acme.xml",
    ],
)
def test_unknown_or_unsafe_names_are_404(
    files: MessageFiles, client: httpx.Client, path: str
) -> None:
    files.publish("acme", file_bytes("first"))
    assert client.get(path).status_code == 404


def test_other_methods_are_refused(files: MessageFiles, client: httpx.Client) -> None:
    files.publish("acme", file_bytes("first"))
    response = client.post("/files/acme.ibi", content=b"x")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]


def test_publishing_also_writes_the_external_web_servers_folder(
    files: MessageFiles, tmp_path: pathlib.Path
) -> None:
    data = file_bytes("first")
    files.publish("acme", data)
    assert (tmp_path / "www" / "acme.ibi").read_bytes() == data
    assert [p.name for p in (tmp_path / "www").iterdir()] == ["acme.ibi"]
