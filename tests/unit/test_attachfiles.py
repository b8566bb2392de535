"""Where inbound attachment bytes go, and the names their files get."""

from __future__ import annotations

import pathlib

from mpg import config
from mpg.gateway import attachfiles, inbound


def _settings(**values: object) -> config.GatewaySettings:
    return config.GatewaySettings.model_validate(values)


def test_database_mode_without_a_folder_never_writes_files() -> None:
    """The default keeps every attachment out of files, whatever its size."""
    settings = _settings(max_inline_attachment=10)
    assert not inbound.to_file(settings, 5)
    assert not inbound.to_file(settings, 11)


def test_database_mode_with_a_folder_files_only_what_is_over_the_inline_limit() -> None:
    """attachment_dir in "database" mode takes attachments FileData would not hold."""
    settings = _settings(max_inline_attachment=10, attachment_dir="/srv/att")
    assert not inbound.to_file(settings, 10)
    assert inbound.to_file(settings, 11)


def test_files_mode_files_every_attachment() -> None:
    """inbound_attachments = "files" writes even the smallest attachment to disk."""
    settings = _settings(inbound_attachments="files", attachment_dir="/srv/att")
    assert inbound.to_file(settings, 0)


def test_a_sender_chosen_name_cannot_leave_the_message_folder() -> None:
    """Separators, dot-files and empty names from the sender are neutralised."""
    folder = pathlib.Path("/srv/att")
    assert attachfiles.path_for(folder, "rx1", 2, "../../etc/passwd") == folder / "rx1/2-passwd"
    assert attachfiles.path_for(folder, "rx1", 3, "..\\..\\a b.pdf") == folder / "rx1/3-a_b.pdf"
    assert attachfiles.path_for(folder, "rx1", 4, "..") == folder / "rx1/4-attachment"
    assert attachfiles.path_for(folder, "../x", 1, "f") == folder / "x/1-f"
