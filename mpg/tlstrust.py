"""Whom an outgoing TLS connection trusts: a configured CA file, or the system's.

Every client MPG makes (gateway to server, server to mail, identity providers and
push providers, the phone agent to the API) takes its trust from one setting naming
a CA file; an unreadable or unusable file is a :class:`~mpg.errors.ConfigError`
naming that setting, found when the client is made rather than at its first request.
"""

from __future__ import annotations

import os
import ssl

import httpx

from mpg import errors


def context(ca_file: str | os.PathLike[str] | None, setting: str) -> ssl.SSLContext:
    """A context trusting only ``ca_file`` when given, else the system's authorities."""
    try:
        return ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(f"{setting}: cannot use {ca_file}: {exc}") from None


def httpx_verify(ca_file: str | os.PathLike[str] | None, setting: str) -> ssl.SSLContext | bool:
    """httpx's ``verify``: ``True`` (its default trust) unless ``ca_file`` is given."""
    if not ca_file:
        return True
    return context(ca_file, setting)


def client_context(ca_file: str | os.PathLike[str] | None, setting: str) -> ssl.SSLContext:
    """The context of a client that is given one, not a ``verify``: the same trust as
    :func:`httpx_verify` (httpx's default authorities when ``ca_file`` is not given)."""
    if not ca_file:
        return httpx.create_ssl_context()
    return context(ca_file, setting)
