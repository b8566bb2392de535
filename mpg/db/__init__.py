"""The database core shared by the gateway's storage and the push server's store.

Everything that is about talking to *a* database, not about MPG's tables, lives here
once: :mod:`~mpg.db.engine` makes engines from URLs with the settings each database
needs (SQLite pragmas and ``BEGIN IMMEDIATE``, utf8mb4 on MariaDB, pools, isolation)
and the column types that mean the same everywhere; :mod:`~mpg.db.transactions` runs
write transactions and reads, maps driver errors to :class:`mpg.errors.StorageError`
and is the one place that says whether a failure is transient or a lost race;
:mod:`~mpg.db.notify` is PostgreSQL LISTEN/NOTIFY.

``mpg.storage`` (the gateway's tables and repositories) and ``mpg.server`` (the
server's tables and stores) build on it; it imports neither.
"""
