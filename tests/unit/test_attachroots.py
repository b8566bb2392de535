"""Which attachment paths the gateway reads (attachment_roots), on real files."""

from __future__ import annotations

import os
import pathlib

import pytest
import structlog

from mpg import config, errors
from mpg.gateway import attachroots, outbound


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "outgoing"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"fine")
    return folder


@pytest.fixture
def outside(tmp_path: pathlib.Path) -> pathlib.Path:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for sending")
    return secret


def refusal(roots: attachroots.AttachmentRoots, path: str | pathlib.Path) -> str:
    with pytest.raises(errors.AttachmentRefused) as info:
        roots.check(str(path))
    return str(info.value)


def test_a_file_inside_a_root_is_read_from_the_descriptor_that_was_checked(
    root: pathlib.Path,
) -> None:
    """The size and the bytes come from the one opened file."""
    roots = attachroots.AttachmentRoots.create([root])
    assert roots.check(str(root / "ok.txt")) == 4
    with roots.open(str(root / "ok.txt")) as (fh, size):
        assert (fh.read(), size) == (b"fine", 4)


def test_no_roots_accepts_no_path(root: pathlib.Path) -> None:
    """The default: without attachment_roots no file is sent by path."""
    assert "attachment_roots is empty" in refusal(
        attachroots.AttachmentRoots.create([]), root / "ok.txt"
    )


def test_paths_that_leave_the_roots_are_refused(
    root: pathlib.Path, outside: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """An absolute path elsewhere, '..' out of a root, a link outside to outside, a link
    inside pointing out: each refused, naming where it leads."""
    roots = attachroots.AttachmentRoots.create([root])
    assert "outside the attachment roots" in refusal(roots, outside)
    assert f"leads to {outside}" in refusal(roots, f"{root}/../{outside.name}")
    (tmp_path / "link-out").symlink_to(outside)
    assert f"leads to {outside}" in refusal(roots, tmp_path / "link-out")
    (root / "innocent.pdf").symlink_to(outside)
    assert f"leads to {outside}" in refusal(roots, root / "innocent.pdf")
    assert "full path" in refusal(roots, "ok.txt")


def test_a_sibling_folder_sharing_the_root_prefix_is_outside(tmp_path: pathlib.Path) -> None:
    """/x/outgoing-evil is not inside /x/outgoing."""
    (tmp_path / "outgoing").mkdir()
    (tmp_path / "outgoing-evil").mkdir()
    (tmp_path / "outgoing-evil" / "f").write_bytes(b"x")
    roots = attachroots.AttachmentRoots.create([tmp_path / "outgoing"])
    assert "outside" in refusal(roots, tmp_path / "outgoing-evil" / "f")


def test_a_link_on_the_path_is_refused_when_opening_even_if_resolved_before(
    root: pathlib.Path, outside: pathlib.Path
) -> None:
    """The open walks the folders with O_NOFOLLOW: a link that replaced a file or a
    folder after the path was resolved is refused, not followed."""
    (root / "now-a-link").symlink_to(outside)
    with pytest.raises(OSError, match=r"Too many levels of symbolic links") as link:
        attachroots._open_below(str(root), str(root / "now-a-link"))
    assert "is a symbolic link" in attachroots._reason(link.value)
    (root / "sub").symlink_to(outside.parent)
    with pytest.raises(OSError, match=r"Not a directory") as folder:
        attachroots._open_below(str(root), str(root / "sub" / outside.name))
    assert "a link or a file where its path needs a folder" in attachroots._reason(folder.value)


def test_the_gateways_own_secret_files_are_refused_inside_a_root(
    root: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The credential (also through a hard link), the config and the database are
    never sent, whatever the roots say."""
    cred = root / "gw.cred"
    cred.write_text("k1.secret", encoding="utf-8")
    cred.chmod(0o600)
    toml = root / "gw.toml"
    toml.write_text(
        f'[gateway]\nsecret_file = "{cred.name}"\ndatabase_url = "sqlite:///gw.db"\n'
        f'attachment_roots = ["."]\n',
        encoding="utf-8",
    )
    (root / "gw.db").write_bytes(b"SQLite format 3\x00")
    os.link(cred, root / "copy.txt")
    roots = attachroots.AttachmentRoots.from_settings(config.load(toml))
    assert "credential file" in refusal(roots, cred)
    assert "credential file" in refusal(roots, root / "copy.txt")
    assert "configuration file" in refusal(roots, toml)
    assert "database" in refusal(roots, root / "gw.db")
    assert roots.check(str(root / "ok.txt")) == 4


def test_a_fifo_or_a_folder_is_not_a_regular_file(root: pathlib.Path) -> None:
    """A FIFO is refused without blocking the open; so is a folder."""
    os.mkfifo(root / "pipe")
    roots = attachroots.AttachmentRoots.create([root])
    assert "not a regular file" in refusal(roots, root / "pipe")
    (root / "folder").mkdir()
    assert "not a regular file" in refusal(roots, root / "folder")


def test_batches_are_cut_by_size_in_order() -> None:
    """Runs never exceed the budget; an item over it stands alone."""
    assert outbound.cut("abcde", [4, 4, 4, 9, 1], 8) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert outbound.cut([], [], 8) == []


def test_a_secret_file_others_can_write_is_refused_and_readable_warned(
    tmp_path: pathlib.Path,
) -> None:
    """gateway.secret_file: writable by group/others -> refused; readable -> a warning."""
    cred = tmp_path / "gw.cred"
    cred.write_text("k1.secret\n", encoding="utf-8")
    settings = config.GatewaySettings(secret_file=cred)
    cred.chmod(0o664)
    with pytest.raises(errors.ConfigError, match="writable by others"):
        settings.credential_text()
    cred.chmod(0o644)
    with structlog.testing.capture_logs() as logged:
        assert settings.credential_text() == "k1.secret"
    assert [e["event"] for e in logged] == ["secret_file_readable_by_others"]
    cred.chmod(0o600)
    with structlog.testing.capture_logs() as logged:
        assert settings.credential_text() == "k1.secret"
    assert logged == []


def test_localhost_is_not_taken_for_loopback_without_resolving(tmp_path: pathlib.Path) -> None:
    """Plain http needs a literal loopback address; the name localhost is refused."""
    path = tmp_path / "gw.toml"
    path.write_text(
        "[gateway]\nserver_url = 'http://localhost:8080'\nallow_plain_http = true\n",
        encoding="utf-8",
    )
    with pytest.raises(errors.ConfigError, match="literal"):
        config.load(path)
    path.write_text(
        "[gateway]\nserver_url = 'http://[::1]:8080'\nallow_plain_http = true\n",
        encoding="utf-8",
    )
    assert config.load(path).gateway.server_url == "http://[::1]:8080"
