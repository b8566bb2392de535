"""The object every command receives as ``ctx.obj``: settings and database, lazily.

Nothing is read until a command asks for it, so ``mpg --help`` and ``mpg --version``
work with a broken configuration, and a bad file fails only the commands that need it.
The modules behind settings and database (pydantic, SQLAlchemy) are imported on first
use too: a command that needs neither starts without their cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpg import errors
from mpg.cli import exitcodes

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
                raise exitcodes.CommandError(str(exc), exitcodes.CONFIG) from exc
            logs.configure(self._settings.log, component)
        return self._settings

    @property
    def settings(self) -> config.Settings:
        """The settings (loaded on first use)."""
        return self.load()

    @property
    def engine(self) -> sa.Engine:
        """The engine for ``gateway.database_url`` (created on first use)."""
        if self._engine is None:
            from mpg.storage import database

            self._engine = database.create_engine(self.settings.gateway.database_url)
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
