"""Which answer a message file request gets, decided without a server."""

from __future__ import annotations

import pathlib

import hypothesis
import pytest
from hypothesis import strategies as st

from mpg import errors
from mpg.server.push import fileserve, messagefiles
from mpg.server.push.messagefiles import MessageFiles, Version

BODY = b"<messagefile>" + b"<message/>" * 200 + b"</messagefile>"


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("*", True),
        ("*, gzip;q=0", False),
        ("gzip;q=nonsense", False),
        ("", False),
    ],
)
def test_accept_encoding_decides_gzip(header: str, gzip: bool) -> None:
    assert fileserve.accepts_gzip(header) is gzip


def test_no_gzip_body_when_it_would_not_be_smaller() -> None:
    assert Version.of(b"tiny", 0).gzipped is None
    assert Version.of(BODY, 0).gzipped is not None


def test_a_file_that_does_not_compress_is_served_plain_even_to_gzip_clients() -> None:
    status, headers, body = fileserve.respond(
        Version.of(b"tiny", 0), "GET", {"accept-encoding": "gzip"}, "no-cache"
    )
    assert (status, body) == (200, b"tiny")
    assert "content-encoding" not in headers


def test_a_missing_file_is_404() -> None:
    assert fileserve.respond(None, "GET", {}, "no-cache")[0] == 404


def test_an_unparseable_if_modified_since_is_ignored() -> None:
    status, _, _ = fileserve.respond(
        Version.of(BODY, 1000), "GET", {"if-modified-since": "yesterday"}, "no-cache"
    )
    assert status == 200


def test_the_etag_is_the_content_hash_so_equal_content_has_equal_tags() -> None:
    assert Version.of(BODY, 1).etag == Version.of(BODY, 2).etag != Version.of(b"x", 1).etag


def test_an_unchanged_file_is_served_from_memory(tmp_path: pathlib.Path) -> None:
    files = MessageFiles(tmp_path)
    files.publish("acme", BODY)
    assert files.current("acme") is files.current("acme")


@pytest.mark.parametrize("group", ["", ".hidden", "../x", "a/b", "a" * 101, "ä"])
def test_group_ids_that_cannot_name_a_file_are_refused(group: str) -> None:
    with pytest.raises(errors.ValidationError, match="group"):
        messagefiles.file_name(group)


def test_an_export_folder_that_cannot_be_written_is_a_storage_error_naming_it(
    tmp_path: pathlib.Path,
) -> None:
    blocker = tmp_path / "www"
    blocker.write_text("a file where the folder should be")
    files = MessageFiles(tmp_path / "files", export_dir=blocker)
    with pytest.raises(errors.StorageError, match=r"www/acme.ibi not written"):
        files.publish("acme", BODY)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    match=st.one_of(st.none(), st.text(max_size=80)),
    since=st.one_of(st.none(), st.text(max_size=80), st.just("Mon, 01 Jan 99999 00:00:00 GMT")),
    encoding=st.text(max_size=80),
)
def test_any_request_headers_get_an_answer_not_an_exception(
    match: str | None, since: str | None, encoding: str
) -> None:
    headers = {"accept-encoding": encoding}
    if match is not None:
        headers["if-none-match"] = match
    if since is not None:
        headers["if-modified-since"] = since
    status, _, _ = fileserve.respond(Version.of(BODY, 1000), "GET", headers, "no-cache")
    assert status in (200, 304)
