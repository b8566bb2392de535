"""Serving the message files over HTTP: GET and HEAD, validators, 304s, gzip (docs/push.md).

:func:`respond` is the pure decision (which status, headers and body for a request's
method and headers); :func:`routes` puts it behind Starlette at ``/files/<group>.ibi``.
A conditional request is answered from the version kept in memory: no file is read.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mpg.server.push.messagefiles import MessageFiles, Version
from mpg.wire import messagefile

#: Where the files are served; the group's public file address points here.
PATH: Final = "/files/{name}"


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


def routes(files: MessageFiles, cache_control: str) -> list[Route]:
    """The Starlette route serving ``/files/<group>.ibi`` (GET, and HEAD with it)."""

    async def serve(request: Request) -> Response:
        name = str(request.path_params["name"])
        group = name.removesuffix(messagefile.SUFFIX)
        version = files.current(group) if name != group else None
        status, headers, body = respond(version, request.method, request.headers, cache_control)
        return Response(body, status_code=status, headers=headers)

    return [Route(PATH, serve, methods=["GET", "HEAD"])]
