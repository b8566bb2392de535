"""Where the server's data keys come from (personal data at rest, docs/devices.md).

The keys that encrypt personal data (:class:`mpg.wire.atrest.Keyring`) are kept apart
from the database, like the master key: in ``server.data_keys`` (usually the
environment, ``MPG_SERVER__DATA_KEYS``) or else in a file, ``server.data_keys_file``
(default ``data_dir/data.keys``, mode 0600, written by ``mpg server init``). Both list
``key-id:base64-key`` entries, the file one per line (``#`` starts a comment), the
setting separated by commas. The current key, which encrypts and indexes, is
``server.data_key_current`` or else the last one listed: a rotation appends a key.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from typing import Final

from mpg import config, errors
from mpg.server import accounts
from mpg.wire import atrest, keys

#: Name of the data key file under ``server.data_dir`` unless ``data_keys_file`` says.
DATA_KEYS_FILE: Final = "data.keys"


def data_keys_path(settings: config.ServerSettings) -> pathlib.Path:
    """Where the data key file is: ``data_keys_file``, else ``data_dir/data.keys``."""
    if settings.data_keys_file is not None:
        return settings.data_keys_file
    return settings.data_dir / DATA_KEYS_FILE


def parse_entries(entries: list[str], where: str) -> dict[str, bytes]:
    """``key-id:base64`` entries -> keys by id, in the order given."""
    found: dict[str, bytes] = {}
    for number, entry in enumerate(entries, start=1):
        key_id, sep, text = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not key_id:
            raise errors.ConfigError(f"{where}: entry {number} is not 'key-id:base64-key'")
        if key_id in found:
            raise errors.ConfigError(f"{where}: key id {key_id!r} is listed twice")
        try:
            found[key_id] = keys.parse_master_key(text)
        except errors.WireError as exc:
            raise errors.ConfigError(f"{where}: key {key_id!r}: {exc}") from None
    if not found:
        raise errors.ConfigError(f"{where}: no data key listed")
    return found


def _file_entries(path: pathlib.Path) -> list[str]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise errors.ConfigError(
            f"server.data_keys_file: {path} does not exist; run `mpg server init` "
            "or set MPG_SERVER__DATA_KEYS"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"server.data_keys_file: cannot read {path}: {exc}") from exc
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def load_keyring(settings: config.ServerSettings) -> atrest.Keyring:
    """The data keys from ``server.data_keys`` or their file; ConfigError names the fault."""
    if settings.data_keys is not None:
        where = "server.data_keys"
        entries = [e for e in settings.data_keys.get_secret_value().split(",") if e.strip()]
    else:
        path = data_keys_path(settings)
        where = f"server.data_keys_file ({path})"
        entries = _file_entries(path)
    found = parse_entries(entries, where)
    current = settings.data_key_current or list(found)[-1]
    if current not in found:
        raise errors.ConfigError(f"server.data_key_current: {current!r} is not among {where}")
    return atrest.Keyring(found, current)


def new_key_id(existing: list[str], today: datetime.date | None = None) -> str:
    """A fresh key id: the date, with a suffix when that day already has one."""
    base = (today or datetime.datetime.now(datetime.UTC).date()).isoformat()
    candidate, n = base, 1
    while candidate in existing:
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def create_data_keys_file(path: pathlib.Path) -> bool:
    """Write a new data key file with one fresh key (mode 0600); False if it exists."""
    # Never replace keys that encrypt existing data.
    return accounts.create_secret_file(
        path,
        "# MPG data keys (docs/devices.md); the last one encrypts, all decrypt\n"
        f"{new_key_id([])}:{keys.format_master_key(keys.new_master_key())}\n",
    )


def add_data_key(settings: config.ServerSettings) -> str:
    """Append a fresh key to the data key file, where it becomes the current key unless
    ``server.data_key_current`` names another; return its id.

    Refused (ConfigError) when the keys come from ``server.data_keys``: the setting
    is where a new one must be added then.
    """
    if settings.data_keys is not None:
        raise errors.ConfigError(
            "server.data_keys: the data keys come from the setting (MPG_SERVER__DATA_KEYS); "
            "add the new 'key-id:base64-key' entry there"
        )
    path = data_keys_path(settings)
    existing = list(parse_entries(_file_entries(path), f"server.data_keys_file ({path})"))
    key_id = new_key_id(existing)
    with path.open("a", encoding="ascii") as fh:
        fh.write(f"{key_id}:{keys.format_master_key(keys.new_master_key())}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key_id
