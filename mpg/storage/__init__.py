"""The gateway's database boundary (SQLAlchemy Core only).

Nothing outside this package talks to the gateway's tables. ``tables`` defines the
contract tables once, ``states`` holds the transition table every ``State`` change
goes through, ``database`` names the gateway's engine options and creates its
tables, and the repositories (``outbox``, ``inbox``, ``history``) are the only code
that reads or writes rows. ``ddl`` generates ``schema/*.sql`` from ``tables``.
Engines, transactions and the mapping of driver errors to
:class:`mpg.errors.StorageError` are the database core's (:mod:`mpg.db`).
"""
