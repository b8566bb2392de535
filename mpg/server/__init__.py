"""The push server (the document's PSS): accounts, queues, attachments, HTTP.

Modules: :mod:`~mpg.server.tables` (the server's database), :mod:`~mpg.server.accounts`
(accounts and their keys), :mod:`~mpg.server.queues` (submit, fan-out, fetch, ack,
receipts, recall), :mod:`~mpg.server.blobs` (attachment files), :mod:`~mpg.server.auth`
(opening request envelopes), :mod:`~mpg.server.app` (Starlette routes and the error
table) and :mod:`~mpg.server.main` (uvicorn with TLS).

The server's own refusals, besides the envelope errors of :mod:`mpg.errors`::

    MpgError
    └── ServerRefusal          the request is understood but cannot be served
        ├── NotFound           no such message or attachment           (HTTP 404)
        ├── Forbidden          not allowed to see that message          (HTTP 403)
        │   └── AccountDisabled    the account or key is disabled       (HTTP 403)
        ├── TooLarge           the request body is over the limit       (HTTP 413)
        ├── RequestTimeout     the request body stalled                 (HTTP 408)
        ├── TooManyRequests    an account is over a per-account limit   (HTTP 429)
        └── Unavailable        starting, stopping or overloaded         (HTTP 503)
"""

from __future__ import annotations

from mpg import errors


class ServerRefusal(errors.MpgError):
    """The server understood the request and refuses it."""


class NotFound(ServerRefusal):
    """No such message or attachment."""


class Forbidden(ServerRefusal):
    """The caller may not see that message or use that account."""


class AccountDisabled(Forbidden):
    """The account, or the key it signed with, is disabled."""


class TooLarge(ServerRefusal):
    """The request body is larger than ``server.max_request_bytes``."""


class Unavailable(ServerRefusal):
    """The server is starting or stopping; the client retries."""


class TooManyRequests(ServerRefusal):
    """The account is over a per-account limit for now; the client retries later."""


class RequestTimeout(ServerRefusal):
    """The request body stalled for longer than ``server.body_timeout``."""
