"""Where the data keys come from: the setting, the file, the current key, the faults."""

from __future__ import annotations

import datetime
import pathlib
import stat

import pytest

from mpg import config, errors
from mpg.server import datakeys
from mpg.wire import atrest, keys

K1 = keys.format_master_key(b"\x01" * 32)
K2 = keys.format_master_key(b"\x02" * 32)


def settings(tmp_path: pathlib.Path, **values: object) -> config.ServerSettings:
    return config.ServerSettings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_the_last_listed_key_is_current_unless_one_is_named(tmp_path: pathlib.Path) -> None:
    assert datakeys.load_keyring(settings(tmp_path, data_keys=f"a:{K1},b:{K2}")).current == "b"
    named = settings(tmp_path, data_keys=f"a:{K1},b:{K2}", data_key_current="a")
    assert datakeys.load_keyring(named).current == "a"


def test_the_file_takes_one_key_per_line_and_comments(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data.keys").write_text(f"# keys\na:{K1}\n\nb:{K2}  # newest\n")
    keyring = datakeys.load_keyring(settings(tmp_path))
    assert keyring.current == "b"
    blob = keyring.encrypt("x", _place())
    assert keyring.key_id_of(blob) == "b"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"a{K1}", "not 'key-id:base64-key'"),
        (f"a:{K1},a:{K2}", "listed twice"),
        ("a:c2hvcnQ", "must be 32 bytes"),
        (",", "no data key"),
    ],
)
def test_a_bad_setting_is_a_config_error_saying_why(
    tmp_path: pathlib.Path, value: str, reason: str
) -> None:
    with pytest.raises(errors.ConfigError, match=reason):
        datakeys.load_keyring(settings(tmp_path, data_keys=value))


def test_a_current_key_not_listed_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="data_key_current"):
        datakeys.load_keyring(settings(tmp_path, data_keys=f"a:{K1}", data_key_current="z"))


def test_a_missing_file_says_how_to_make_one(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="mpg server init"):
        datakeys.load_keyring(settings(tmp_path))


def test_the_created_file_is_private_and_never_replaced(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sub" / "data.keys"
    assert datakeys.create_data_keys_file(path)
    before = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not datakeys.create_data_keys_file(path)
    assert path.read_text() == before
    assert datakeys.load_keyring(settings(tmp_path, data_keys_file=path)).current


def test_new_key_ids_are_dated_and_unique() -> None:
    day = datetime.date(2026, 11, 30)
    assert datakeys.new_key_id([], day) == "2026-11-30"
    assert datakeys.new_key_id(["2026-11-30", "2026-11-30.2"], day) == "2026-11-30.3"


def _place() -> atrest.Place:
    return atrest.Place("T", "C", "1")
