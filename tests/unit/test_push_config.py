"""``[[server.push_providers]]``: credentials per group, secrets from a file or the environment."""

from __future__ import annotations

import os
import pathlib

import pytest

from mpg import config, errors
from mpg.server.push import fcm, registry
from mpg.server.push.logprovider import LogProvider
from mpg.server.push.webhook import WebhookProvider
from mpg.wire.push import Notice, NoticeContent, NoticeKind


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    for name in list(os.environ):
        if name.startswith("MPG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def load(tmp_path: pathlib.Path, text: str) -> config.ServerSettings:
    path = tmp_path / "mpg.toml"
    path.write_text(text, encoding="utf-8")
    return config.load(path).server


WEBHOOK = """
[[server.push_providers]]
name = "acme-hook"
kind = "webhook"
groups = ["acme"]
url = "https://hooks.example.com/push"
secret_env = "ACME_HOOK_SECRET"
"""


def test_relative_secret_files_are_found_beside_the_config_file(tmp_path: pathlib.Path) -> None:
    settings = load(
        tmp_path,
        """
[[server.push_providers]]
name = "acme-ios"
kind = "apns"
groups = ["acme"]
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "keys/AuthKey_KEY1234567.p8"
topic = "com.acme.alerts"
environment = "sandbox"
""",
    )
    entry = settings.push_providers[0]
    assert entry.key_file == tmp_path / "keys" / "AuthKey_KEY1234567.p8"
    assert entry.served_platforms() == ("ios",)


def test_secret_from_the_environment_variable_the_entry_names(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_HOOK_SECRET", "s3cret")
    entry = load(tmp_path, WEBHOOK).push_providers[0]
    assert entry.secret_text("secret_file", "secret_env") == "s3cret"
    assert isinstance(registry.build(entry), WebhookProvider)


def test_unset_secret_variable_is_a_config_error_naming_entry_and_variable(
    tmp_path: pathlib.Path,
) -> None:
    entry = load(tmp_path, WEBHOOK).push_providers[0]
    with pytest.raises(errors.ConfigError, match=r"acme-hook\]\.secret_env: .*ACME_HOOK_SECRET"):
        registry.build(entry)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('kind = "apns"\nkey_file = "k.p8"\ntopic = "t"\nkey_id = "K"', "needs team_id"),
        ('kind = "fcm"', "exactly one of service_account_file, service_account_env"),
        (
            'kind = "fcm"\nservice_account_file = "a.json"\nservice_account_env = "X"',
            "exactly one of",
        ),
        (
            'kind = "webhook"\nsecret_env = "X"\nurl = "http://hooks.example.com"',
            "not an https URL",
        ),
        ('kind = "webhook"\nsecret_env = "X"', "needs url"),
        ('kind = "carrier-pigeon"', "kind"),
    ],
)
def test_incomplete_entry_is_refused_naming_the_key(
    tmp_path: pathlib.Path, body: str, reason: str
) -> None:
    with pytest.raises(errors.ConfigError, match=reason):
        load(tmp_path, f'[[server.push_providers]]\nname = "p"\n{body}\n')


def test_two_entries_with_one_name_are_refused(tmp_path: pathlib.Path) -> None:
    text = '[[server.push_providers]]\nname = "p"\nkind = "log"\n' * 2
    with pytest.raises(errors.ConfigError, match="used twice"):
        load(tmp_path, text)


def test_content_groups_must_be_named_one_by_one(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="'\\*' is not accepted"):
        load(tmp_path, '[server]\npush_content_groups = ["*"]\n')


def entry(name: str, kind: str, groups: tuple[str, ...], **extra: object) -> config.PushProvider:
    keys = {
        "fcm": {"service_account_env": "X"},
        "apns": {"key_env": "X", "team_id": "T", "key_id": "K", "topic": "t"},
    }
    return config.PushProvider(name=name, kind=kind, groups=groups, **keys.get(kind, {}), **extra)  # type: ignore[arg-type]


def test_a_group_named_in_an_entry_wins_over_the_catch_all() -> None:
    entries = (
        entry("all-android", "fcm", ("*",)),
        entry("acme-android", "fcm", ("acme",)),
        entry("acme-ios", "apns", ("acme",)),
    )
    assert registry.choose(entries, "acme", "Android").name == "acme-android"  # type: ignore[union-attr]
    assert registry.choose(entries, "other", "android").name == "all-android"  # type: ignore[union-attr]
    assert registry.choose(entries, "acme", "ios").name == "acme-ios"  # type: ignore[union-attr]
    assert registry.choose(entries, "other", "ios") is None


def test_no_entry_for_a_device_means_the_log_provider() -> None:
    reg = registry.Registry(config.ServerSettings())
    assert isinstance(reg.provider("acme", "ios"), LogProvider)


def test_content_reaches_the_request_only_for_a_group_that_allows_it() -> None:
    reg = registry.Registry(config.ServerSettings(push_content_groups=("open",)))
    content = NoticeContent("Salary review", "text")
    closed = Notice(NoticeKind.MESSAGE, "acme", message_id="m1")
    opened = Notice(NoticeKind.MESSAGE, "open", message_id="m1")
    assert reg.request("tok", closed, content).content is None
    assert reg.request("tok", opened, content).content == content


def test_service_account_key_lacking_fields_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="lacks private_key, token_uri"):
        fcm.load_service_account('{"project_id": "p", "client_email": "e"}', "acme.key")


def test_service_account_key_that_is_not_json_is_named() -> None:
    with pytest.raises(errors.ConfigError, match=r"acme\.key: not JSON"):
        fcm.load_service_account("-----BEGIN PRIVATE KEY-----", "acme.key")


def test_service_account_key_with_a_broken_private_key_is_a_config_error() -> None:
    info = {
        "project_id": "p",
        "client_email": "e@p.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    with pytest.raises(errors.ConfigError, match="acme-android: bad service-account key"):
        fcm.FcmProvider("acme-android", info)
