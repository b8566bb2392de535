"""The agent's files in its state folder, as a phone's app keeps them.

=================  ==========================================================
``device.json``    device id, server, CA, platform, app version, push token,
                   and after registering: account, key id, group, categories
                   (an e-mail registration waiting for its code: the address;
                   then, when several groups were offered, the choice token)
``credential``     the credential token (``<key id>.<secret>``), alone, so it is
                   read like the gateway's ``secret_file`` (mode checked)
``inbox.db``       the local SQLite Inbox (the contract tables, mpg.storage)
=================  ==========================================================

The folder is made mode 0700 and every file 0600 (written whole: temp file, fsync,
rename), since they hold the credential and the user's messages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import uuid
from typing import Any, Final

from mpg import errors
from mpg.gateway import files

DEVICE_FILE: Final = "device.json"
CREDENTIAL_FILE: Final = "credential"
INBOX_FILE: Final = "inbox.db"
DEFAULT_PLATFORM: Final = "android"
DEFAULT_APP_VERSION: Final = "mpg-device"


@dataclasses.dataclass
class DeviceState:
    """What ``device.json`` holds. Empty ``account``: not registered (yet)."""

    device_id: str
    server_url: str = ""
    ca_file: str = ""
    platform: str = DEFAULT_PLATFORM
    app_version: str = DEFAULT_APP_VERSION
    push_token: str = ""
    account: str = ""
    key_id: str = ""
    group: dict[str, Any] = dataclasses.field(default_factory=dict)
    categories: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: The address of an e-mail registration waiting for ``mpg device confirm``.
    pending_email: str = ""
    #: After a confirmation offering several groups: the choice token for
    #: ``mpg device choose`` (the mailed code is used up), and the groups offered.
    pending_choice: str = ""
    offered_groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object written to ``device.json`` (and shown by ``mpg device info``)."""
        return dataclasses.asdict(self)


class StateFolder:
    """The agent's state folder ``root``."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    @property
    def inbox_path(self) -> pathlib.Path:
        """The local Inbox's SQLite file (created 0600 by :meth:`prepare_inbox`)."""
        return self.root / INBOX_FILE

    @property
    def credential_path(self) -> pathlib.Path:
        """The credential file."""
        return self.root / CREDENTIAL_FILE

    def load(self) -> DeviceState:
        """The saved state; a fresh one (a new random device id) when there is none."""
        path = self.root / DEVICE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return DeviceState(device_id=str(uuid.uuid4()))
        except (OSError, ValueError) as exc:
            raise errors.ConfigError(f"{path}: cannot read the device state: {exc}") from exc
        known = {f.name for f in dataclasses.fields(DeviceState)}
        if not isinstance(data, dict) or not data.get("device_id"):
            raise errors.ConfigError(f"{path}: not a device state (no device_id)")
        return DeviceState(**{k: v for k, v in data.items() if k in known})

    def save(self, state: DeviceState) -> None:
        """Write ``device.json`` whole, mode 0600."""
        self._folder()
        text = json.dumps(state.as_dict(), ensure_ascii=False, indent=2) + "\n"
        files.write_atomic(self.root / DEVICE_FILE, text.encode("utf-8"))

    def save_credential(self, token: str) -> None:
        """Keep the credential token, mode 0600."""
        self._folder()
        files.write_atomic(self.credential_path, (token.strip() + "\n").encode("ascii"))

    def prepare_inbox(self) -> pathlib.Path:
        """The Inbox file, created empty with mode 0600 before SQLite opens it (SQLite
        gives its -wal and -shm files the database file's mode)."""
        self._folder()
        path = self.inbox_path
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        return path

    def _folder(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
