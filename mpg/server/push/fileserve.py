"""Serving the message files over HTTP: GET and HEAD, validators, 304s, gzip (docs/push.md).

:func:`respond` is the pure decision (which status, headers and body for a request's
method and headers); :func:`routes` puts it behind Starlette at ``/files/<group>.ibi``.
A conditional request is answered from the version kept in memory: no file is read.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from typing import Final

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mpg.server.push.messagefiles import MessageFiles, Version
from mpg.wire import messagefile

#: Where the files are served; the group's public file address points here.
PATH: Final = "/files/{name}"
#: The request headers an answer depends on (ASGI gives names in lower case).
_WANTED: Final = frozenset({b"if-none-match", b"if-modified-since", b"accept-encoding"})
#: Encoded answers kept; past this the cache starts afresh (versions change rarely).
_MAX_ANSWERS: Final = 256

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _tags(header: str) -> set[str]:
    """The entity tags of an If-None-Match list, compared weakly (RFC 9110 §13.1.2)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value takes gzip (q > 0, by name or by ``*``)."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        weights[name.strip().lower()] = q
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


def _not_modified(version: Version, headers: Mapping[str, str]) -> bool:
    match = headers.get("if-none-match")
    if match is not None:
        tags = _tags(match)
        return "*" in tags or bool(tags & {version.etag, version.gzip_etag})
    since = headers.get("if-modified-since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return version.modified <= when.timestamp()


def respond(
    version: Version | None, method: str, headers: Mapping[str, str], cache_control: str
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body for one GET or HEAD of a file (``headers`` in lower case)."""
    if version is None:
        return 404, {"content-type": "text/plain; charset=utf-8"}, b"no such message file\n"
    use_gzip = version.gzipped is not None and accepts_gzip(headers.get("accept-encoding", ""))
    out = {
        "etag": version.gzip_etag if use_gzip else version.etag,
        "last-modified": version.last_modified,
        "cache-control": cache_control,
        "vary": "Accept-Encoding",
    }
    if _not_modified(version, headers):
        return 304, out, b""
    body = version.gzipped if use_gzip and version.gzipped is not None else version.body
    out["content-type"] = messagefile.MEDIA_TYPE
    out["content-length"] = str(len(body))
    out["x-content-type-options"] = "nosniff"
    if use_gzip:
        out["content-encoding"] = "gzip"
    return 200, out, b"" if method == "HEAD" else body


class FileEndpoint:
    """The ASGI endpoint serving ``/files/<name>`` from ``files`` (GET and HEAD)."""

    def __init__(self, files: MessageFiles, cache_control: str) -> None:
        self._files = files
        self._cache_control = cache_control
        #: Encoded answers by (version, status, gzip, HEAD): the same few, over and over.
        self._answers: dict[tuple[str, int, int, bool, bool], Answer] = {}

    def answer(self, name: str, method: str, headers: Mapping[str, str]) -> Answer:
        """Status, encoded headers and body for one request (``headers`` in lower case)."""
        group = name.removesuffix(messagefile.SUFFIX)
        version = self._files.current(group) if name != group else None
        if version is None:
            status, out, body = respond(None, method, headers, self._cache_control)
            return status, _encoded(out), body
        use_gzip = version.gzipped is not None and accepts_gzip(headers.get("accept-encoding", ""))
        fresh = _not_modified(version, headers)
        key = (version.etag, version.modified, use_gzip, fresh, method == "HEAD")
        found = self._answers.get(key)
        if found is None:
            status, out, body = respond(version, method, headers, self._cache_control)
            found = (status, _encoded(out), body)
            if len(self._answers) >= _MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request (Starlette's route checked the method and path)."""
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _WANTED
        }
        status, out, body = self.answer(str(scope["path_params"]["name"]), scope["method"], headers)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def routes(files: MessageFiles, cache_control: str) -> list[Route]:
    """The Starlette route serving ``/files/<group>.ibi`` (GET, and HEAD with it)."""
    return [Route(PATH, FileEndpoint(files, cache_control), methods=["GET", "HEAD"])]
