"""Personal data in the server's own tables: account pseudonyms and sealed columns.

No address is stored in clear (docs/devices.md, "Personal data at rest"):

* An account's ``AccountId`` is a **pseudonym**, ``a-`` and 40 hex digits of an
  HMAC-SHA256 of its stored name (lower-cased ``name@domain``, or a device serial as
  given) under a key HKDF derives from the **master key**, not from a data key: the
  id is the same after every data-key rotation, so the rows that name the account
  (queue entries, events, keys) never have to change, and a name from the wire is
  found with one indexed equality. Its name is kept encrypted in ``Account.NameEnc``
  for the places that show it. Device accounts made by registration already have an
  opaque id (``dev-`` and 32 hex digits) and keep it.
* A sealed column (``...Enc``) holds :meth:`mpg.wire.atrest.Keyring.encrypt` of its
  value bound to ``(table, column, row key)``; :meth:`Vault.unseal` falls back to the
  clear column a row of an older version still has, until ``mpg server rekey``
  moves it (:mod:`mpg.server.rekey`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Final

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpg.db import transactions
from mpg.server import tables
from mpg.wire import atrest

#: Prefix of an account pseudonym; the rest is 40 hex digits (160 bits).
PSEUDONYM_PREFIX: Final = "a-"
_PSEUDONYM_HEX: Final = 40
#: Ids device registration gives accounts: opaque already, kept as they are.
OPAQUE_ID: Final = re.compile(r"dev-[0-9a-f]{32}")
_INFO: Final = b"mpg account pseudonym v1"
_KEYWORD_INFO: Final = b"mpg keyword index v1"


def pseudonym_key(master_key: bytes) -> bytes:
    """The key account pseudonyms are taken under (HKDF of the master key)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


class Vault:
    """Pseudonyms (master key) and sealed columns (the data keyring) of the server."""

    def __init__(self, master_key: bytes, keyring: atrest.Keyring) -> None:
        key = pseudonym_key(master_key)
        self.keyring = keyring

        # Every request maps its account and recipients; the same names come back.
        # Bounded: names from the wire are at most 100 characters (mpg.server.auth).
        @functools.lru_cache(maxsize=16384)
        def account_id(name: str) -> str:
            if OPAQUE_ID.fullmatch(name):
                return name
            mac = hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()
            return PSEUDONYM_PREFIX + mac[:_PSEUDONYM_HEX]

        self._account_id = account_id
        # Keywords are found by a blind index under a master-derived key, like account
        # names: it outlives data-key rotations, so the index rows never change.
        self._keyword_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_KEYWORD_INFO
        ).derive(master_key)

    def keyword_index(self, keyword: str) -> str:
        """The blind index (hex) of a message keyword, trimmed and case-folded."""
        folded = keyword.strip().casefold().encode("utf-8")
        return hmac.new(self._keyword_key, folded, hashlib.sha256).hexdigest()

    def account_id(self, name: str) -> str:
        """The ``AccountId`` of the account stored as ``name`` (its normalised form)."""
        return self._account_id(name)

    def seal(self, value: str | None, table: str, column: str, row: str) -> bytes | None:
        """``value`` encrypted for ``table.column`` of ``row`` (None stays None)."""
        if value is None:
            return None
        return self.keyring.encrypt(value, atrest.Place(table, column, row))

    def unseal(
        self, sealed: bytes | None, table: str, column: str, row: str, clear: str | None = None
    ) -> str | None:
        """The text :meth:`seal` stored; ``clear`` (an older version's clear column)
        when nothing is sealed."""
        if sealed is None:
            return clear
        return self.keyring.decrypt_text(bytes(sealed), atrest.Place(table, column, row))

    def seal_row(
        self, table: str, row: str, values: Mapping[str, str | None]
    ) -> dict[str, bytes | None]:
        """:meth:`seal` of each of ``values`` (by column) in ``table`` for ``row``."""
        return self.keyring.encrypt_row(table, row, values)

    def unseal_row(
        self,
        table: str,
        row: str,
        sealed: Mapping[str, bytes | None],
        clear: Mapping[str, str | None],
    ) -> dict[str, str | None]:
        """:meth:`unseal` of each of ``sealed`` (by column) of ``row``; where nothing
        is sealed, ``clear`` of that column (an older version's clear value)."""
        opened = self.keyring.decrypt_row_text(table, row, sealed)
        return {
            column: clear.get(column) if value is None else value
            for column, value in opened.items()
        }

    def name_of(self, row: tables.Row) -> str:
        """The name of an ``Account`` row (its id while it is not sealed: an older
        version's clear name)."""
        name = self.unseal(row.NameEnc, "Account", "NameEnc", row.AccountId)
        return str(row.AccountId) if name is None else name

    def names(self, conn: sa.Connection, ids: Iterable[str]) -> dict[str, str]:
        """``{AccountId: name}`` for ``ids``; an id without an account shows as itself."""
        a = tables.account.c
        wanted = sorted(set(ids))
        found = {account_id: account_id for account_id in wanted}
        for part in transactions.chunks(wanted):
            for row in conn.execute(sa.select(a.AccountId, a.NameEnc).where(a.AccountId.in_(part))):
                found[row.AccountId] = self.name_of(row)
        return found
