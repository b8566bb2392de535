"""DropFileRepository: a drop file becomes an Outbox row exactly once.

The Outbox row, its history step and an ``MpgDropFile`` row are written in ONE
transaction. A file met again (the gateway died after the commit and before moving
the file to ``processed/``, or the ERP dropped the same file twice) has the same
TxMessageId and digest, is found in ``MpgDropFile`` and is not inserted again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import sqlalchemy as sa

from mpg import errors, timefmt
from mpg.db import transactions
from mpg.storage import outbox, tables

_d = tables.drop_file.c
_o = tables.outbox.c


class Outcome(enum.StrEnum):
    """What :meth:`DropFileRepository.accept` did."""

    INSERTED = "inserted"  # a new Outbox row
    ALREADY_DONE = "already done"  # this very file was turned into a row before


class DropFileRepository:
    """Records drop files and inserts their Outbox rows."""

    def __init__(self, engine: sa.Engine, outbox_repo: outbox.OutboxRepository) -> None:
        self.engine = engine
        self.outbox = outbox_repo

    def accept(self, values: Mapping[str, object], file_name: str, sha256: str) -> Outcome:
        """Insert the Outbox row of one drop file, unless this file was done before.

        ``values`` must hold ``TxMessageId``. Raises :class:`errors.ValidationError`
        (field ``TxMessageId``) when that id belongs to another drop file or to a row
        the ERP wrote itself.
        """
        tx = str(values["TxMessageId"])
        with transactions.begin(self.engine, "inserting a drop file's Outbox row") as conn:
            done = conn.execute(
                sa.select(_d.FileName, _d.Sha256).where(_d.TxMessageId == tx)
            ).first()
            if done is not None:
                if done.Sha256 == sha256:
                    return Outcome.ALREADY_DONE
                raise errors.ValidationError(
                    "TxMessageId", f"{tx!r} was already used by drop file {done.FileName}"
                )
            if conn.execute(sa.select(_o.TxMessageId).where(_o.TxMessageId == tx)).first():
                raise errors.ValidationError("TxMessageId", f"{tx!r} is already in Outbox")
            self.outbox.insert(values, reason=f"inserted from drop file {file_name}", conn=conn)
            conn.execute(
                tables.drop_file.insert(),
                {
                    "TxMessageId": tx,
                    "FileName": file_name,
                    "Sha256": sha256,
                    "At": timefmt.utc_stamp(),
                },
            )
        return Outcome.INSERTED
