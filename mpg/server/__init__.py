"""The push server (the document's PSS): accounts, queues, attachments, HTTP.

Modules: :mod:`~mpg.server.tables` (the server's tables), :mod:`~mpg.server.states`
(the server's transition table), :mod:`~mpg.server.fanout` (the fan-out and recall
rules, pure), :mod:`~mpg.server.rows` (row mapping), :mod:`~mpg.server.accounts`
(accounts and their keys), :mod:`~mpg.server.queues` (the queue store: submit,
fetch, ack, receipts, recall),
:mod:`~mpg.server.blobs` (attachment files), :mod:`~mpg.server.auth` (opening request
envelopes), :mod:`~mpg.server.app` (Starlette routes and the error table) and
:mod:`~mpg.server.main` (uvicorn with TLS).

The server's refusals (``ServerRefusal`` and its subclasses) are in the one
exception tree of :mod:`mpg.errors`. Engines, transactions and error mapping are the
database core's (:mod:`mpg.db`), shared with the gateway.
"""
