"""The gateway's database boundary (SQLAlchemy Core only).

Nothing outside this package talks to the gateway's database. ``tables`` defines the
contract tables once, ``states`` holds the transition table every ``State`` change
goes through, ``database`` makes engines and turns driver errors into
:class:`mpg.errors.StorageError`, and the repositories (``outbox``, ``inbox``,
``history``) are the only code that reads or writes rows. ``ddl`` generates
``schema/*.sql`` from ``tables``.
"""
