"""The object every command receives as ``ctx.obj``: settings and database, lazily.

Nothing is read until a command asks for it, so ``mpg --help`` and ``mpg --version``
work with a broken configuration, and a bad file fails only the commands that need it.
The modules behind settings and database (pydantic, SQLAlchemy) are imported on first
use too: a command that needs neither starts without their cost.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING

from mpg import errors, exitcodes

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mpg import config
    from mpg.storage import inbox, outbox


class CliContext:
    """Settings from ``--config`` / ``MPG_CONFIG``, the gateway database, logging."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: config.Settings | None = None
        self._engine: sa.Engine | None = None

    def load(self, component: str = "cli") -> config.Settings:
        """Load and validate the settings once, and set up logging for ``component``.

        A :class:`mpg.errors.ConfigError` becomes exit code 3 with its message, which
        names the key and the reason.
        """
        if self._settings is None:
            from mpg import config, logs

            try:
                self._settings = config.load(self.config_path)
            except errors.ConfigError as exc:
                raise errors.CommandError(str(exc), exitcodes.CONFIG) from exc
            logs.configure(self._settings.log, component)
        return self._settings

    @property
    def settings(self) -> config.Settings:
        """The settings (loaded on first use)."""
        return self.load()

    @property
    def engine(self) -> sa.Engine:
        """The engine of an existing gateway database, whose tables ``mpg init-db`` made.

        Commands other than ``init-db`` only use the database: with no configuration,
        a SQLite file that does not exist or no Outbox table they stop, saying what to
        do, and create nothing (a SQLite file would otherwise appear on first connect).
        """
        if self._engine is None:
            engine = self.new_engine()
            try:
                _check_initialised(engine, self.config_path)
            except BaseException:
                self.close()
                raise
        return self.new_engine()

    def new_engine(self) -> sa.Engine:
        """The engine for ``gateway.database_url`` as it is (``init-db`` creates it)."""
        if self._engine is None:
            from mpg.storage import database

            settings = self.settings
            if not settings.source and not _url_from_environment():
                raise errors.CommandError(
                    "no configuration found (looked for --config, $MPG_CONFIG and "
                    f"./{config_file_name()}); give one with --config FILE",
                    exitcodes.CONFIG,
                )
            self._engine = database.create_engine(settings.gateway.database_url)
        return self._engine

    def outbox(self) -> outbox.OutboxRepository:
        """The Outbox repository of this gateway's account."""
        from mpg.storage import outbox

        gw = self.settings.gateway
        return outbox.OutboxRepository(self.engine, gw.account, gw.clock)

    def inbox(self) -> inbox.InboxRepository:
        """The Inbox repository of this gateway's account."""
        from mpg.storage import inbox

        gw = self.settings.gateway
        return inbox.InboxRepository(self.engine, gw.account, gw.clock)

    def close(self) -> None:
        """Release the database connections (called when the command ends)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def config_file_name() -> str:
    """The file looked for in the working folder when no other is named."""
    from mpg import config

    return config.DEFAULT_CONFIG_FILE


def _url_from_environment() -> bool:
    return any(name.upper() == "MPG_GATEWAY__DATABASE_URL" for name in os.environ)


def _check_initialised(engine: sa.Engine, config_path: str | None) -> None:
    """Refuse a database ``mpg init-db`` has not prepared, before anything touches it."""
    import sqlalchemy as sa

    from mpg.db import transactions
    from mpg.storage import tables

    init = "mpg init-db" if config_path is None else f"mpg --config {config_path} init-db"
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = pathlib.Path(str(url.database))
        if not path.exists():
            raise errors.CommandError(
                f"database {path} does not exist; create it with `{init}`", exitcodes.DATABASE
            )
    with transactions.connect(engine, "looking for the Outbox table") as conn:
        if not sa.inspect(conn).has_table(tables.outbox.name):
            shown = url.render_as_string(hide_password=True)
            raise errors.CommandError(
                f"no Outbox table in {shown}; create the tables with `{init}`",
                exitcodes.DATABASE,
            )
