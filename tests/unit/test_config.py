"""Configuration: TOML + MPG_<SECTION>__<KEY> environment, validated, naming bad keys."""

from __future__ import annotations

import os
import pathlib

import pydantic
import pytest

from mpg import config, errors


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """No MPG_* variable or ./mpg.toml of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("MPG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "mpg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_without_a_file() -> None:
    """With no file and no environment the embedded defaults are used."""
    settings = config.load()
    assert settings.gateway.database_url == "sqlite:///mpg.db"
    assert settings.log.level == "info"
    assert settings.source == ""


def test_environment_overrides_the_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MPG_GATEWAY__BATCH_SIZE wins over [gateway] batch_size in the TOML."""
    path = _write(tmp_path, "[gateway]\nbatch_size = 10\naccount = 'a@example.com'\n")
    monkeypatch.setenv("MPG_GATEWAY__BATCH_SIZE", "42")
    settings = config.load(path)
    assert settings.gateway.batch_size == 42
    assert settings.gateway.account == "a@example.com"


def test_mpg_config_variable_names_the_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MPG_CONFIG points at the file when --config is not given."""
    path = tmp_path / "elsewhere.toml"
    path.write_text("[log]\nlevel = 'debug'\n", encoding="utf-8")
    monkeypatch.setenv("MPG_CONFIG", str(path))
    assert config.load().log.level == "debug"


def test_unknown_key_is_named_with_the_key_meant(tmp_path: pathlib.Path) -> None:
    """A misspelt key in the file fails naming section.key, the file and the right key."""
    path = _write(tmp_path, "[gateway]\nbatch_sise = 10\n")
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert (
        f"gateway.batch_sise: unknown key (in {path}); did you mean gateway.batch_size?" in message
    )
    assert "MPG_" not in message


def test_unknown_section_in_the_file_names_the_section_meant(tmp_path: pathlib.Path) -> None:
    """[gatway] is an unknown section, and no environment variable is offered as the fix."""
    path = _write(tmp_path, "[gatway]\naccount = 'x'\n")
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path)
    assert f"gatway: unknown section (in {path}); did you mean [gateway]?" in str(caught.value)
    assert "MPG_" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        # A misspelt key is named as the variable it is, with the one meant.
        (
            "MPG_GATEWAY__POLL_INTERVALL",
            "environment variable MPG_GATEWAY__POLL_INTERVALL: unknown key; "
            "did you mean MPG_GATEWAY__POLL_INTERVAL?",
        ),
        # A misspelt section would silently change nothing: it is refused.
        (
            "MPG_GATWAY__ACCOUNT",
            "environment variable MPG_GATWAY__ACCOUNT: no section gatway; "
            "did you mean MPG_GATEWAY__ACCOUNT?",
        ),
        # A whole section in one variable is no traceback but says how to set keys.
        (
            "MPG_GATEWAY",
            "environment variable MPG_GATEWAY: a section cannot be set whole; "
            "set MPG_GATEWAY__<KEY> for each key",
        ),
    ],
)
def test_a_misspelt_environment_variable_is_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, variable: str, message: str
) -> None:
    """The variable is reported as a variable (not a file key), with the one fix."""
    monkeypatch.setenv(variable, "2")
    with pytest.raises(errors.ConfigError) as caught:
        config.load()
    assert str(caught.value) == "bad configuration: " + message


def test_out_of_range_value_is_named_with_reason(tmp_path: pathlib.Path) -> None:
    """A value outside its range fails naming the key and why."""
    path = _write(tmp_path, "[gateway]\nbatch_size = 0\n")
    with pytest.raises(errors.ConfigError, match=r"gateway\.batch_size: .*greater than"):
        config.load(path)


def test_bad_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value from the environment names the same key."""
    monkeypatch.setenv("MPG_LOG__LEVEL", "loud")
    with pytest.raises(
        errors.ConfigError, match=r"environment variable MPG_LOG__LEVEL \(log\.level\)"
    ):
        config.load()


def test_malformed_toml_is_reported(tmp_path: pathlib.Path) -> None:
    """A file that is not TOML fails with the file's name, not a traceback."""
    path = _write(tmp_path, "[gateway\n")
    with pytest.raises(errors.ConfigError, match="not valid TOML"):
        config.load(path)


def test_missing_file_is_reported(tmp_path: pathlib.Path) -> None:
    """An explicit file that does not exist is a configuration error."""
    with pytest.raises(errors.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_secret_is_read_from_file(tmp_path: pathlib.Path) -> None:
    """secret_file, relative to the TOML, supplies the credential without it in the TOML."""
    (tmp_path / "gw.credential").write_text("kid1.c2VjcmV0\n", encoding="utf-8")
    path = _write(tmp_path, "[gateway]\nsecret_file = 'gw.credential'\n")
    settings = config.load(path)
    assert settings.gateway.credential_text() == "kid1.c2VjcmV0"
    assert "c2VjcmV0" not in path.read_text(encoding="utf-8")


def test_secret_from_environment_wins_and_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """MPG_GATEWAY__SECRET supplies the credential and never shows in repr()."""
    monkeypatch.setenv("MPG_GATEWAY__SECRET", "kid2.dG9rZW4")
    settings = config.load()
    assert settings.gateway.credential_text() == "kid2.dG9rZW4"
    assert "dG9rZW4" not in repr(settings)


def test_missing_secret_names_both_ways_to_give_it() -> None:
    """Asking for the credential without one names the variable and the file key."""
    with pytest.raises(errors.ConfigError, match="MPG_GATEWAY__SECRET"):
        config.load().gateway.credential_text()


def test_plain_http_refused_without_opt_in(tmp_path: pathlib.Path) -> None:
    """http:// needs allow_plain_http even on loopback."""
    path = _write(tmp_path, "[gateway]\nserver_url = 'http://127.0.0.1:8080'\n")
    with pytest.raises(errors.ConfigError, match="allow_plain_http"):
        config.load(path)


def test_plain_http_refused_off_loopback(tmp_path: pathlib.Path) -> None:
    """http:// to a non-loopback host is refused even when plain http is allowed."""
    path = _write(
        tmp_path,
        "[gateway]\nserver_url = 'http://push.example.com'\nallow_plain_http = true\n",
    )
    with pytest.raises(errors.ConfigError, match="only on loopback"):
        config.load(path)


def test_plain_http_allowed_on_loopback_when_asked(tmp_path: pathlib.Path) -> None:
    """The demo's setting: http to 127.0.0.1 with allow_plain_http = true."""
    path = _write(
        tmp_path, "[gateway]\nserver_url = 'http://127.0.0.1:8080/'\nallow_plain_http = true\n"
    )
    assert config.load(path).gateway.server_url == "http://127.0.0.1:8080"


def test_server_refuses_plain_http_off_loopback() -> None:
    """The server will not listen without TLS on a non-loopback address."""
    settings = config.Settings(
        server=config.ServerSettings(host="192.0.2.10", allow_plain_http=True)
    )
    with pytest.raises(errors.ConfigError, match=r"server\.host"):
        settings.server.check_listen()


def test_sqlite_path_is_relative_to_the_file(tmp_path: pathlib.Path) -> None:
    """A relative SQLite URL in the TOML points next to the TOML, not the working dir."""
    sub = tmp_path / "conf"
    sub.mkdir()
    path = sub / "gw.toml"
    path.write_text("[gateway]\ndatabase_url = 'sqlite:///gw.db'\n", encoding="utf-8")
    url = config.load(path).gateway.database_url
    assert url == "sqlite:///" + str((sub / "gw.db").resolve())


EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "config.example.toml"


def test_example_config_is_valid() -> None:
    """config.example.toml loads as it is (everything in it is a default)."""
    settings = config.load(EXAMPLE)
    assert settings.gateway.poll_interval == config.GatewaySettings().poll_interval


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("gateway", config.GatewaySettings),
        ("server", config.ServerSettings),
        ("log", config.LogSettings),
    ],
)
def test_example_config_documents_every_key(section: str, model: type[pydantic.BaseModel]) -> None:
    """Every settings field appears in its section of config.example.toml."""
    text = EXAMPLE.read_text(encoding="utf-8")
    body = text.split(f"\n[{section}]\n", 1)[1].split("\n[", 1)[0]
    for key in model.model_fields:
        assert f"# {key} = " in body, f"{section}.{key} is not in config.example.toml"


def test_files_mode_without_attachment_dir_is_refused_naming_the_key(
    tmp_path: pathlib.Path,
) -> None:
    """inbound_attachments = "files" with no attachment_dir fails naming attachment_dir."""
    path = _write(tmp_path, '[gateway]\ninbound_attachments = "files"\n')
    with pytest.raises(errors.ConfigError, match=r"gateway: attachment_dir: required"):
        config.load(path)


def test_attachment_dir_resolves_relative_to_the_config_file(tmp_path: pathlib.Path) -> None:
    """attachment_dir, like other paths, is relative to the file that names it."""
    path = _write(tmp_path, '[gateway]\ninbound_attachments = "files"\nattachment_dir = "att"\n')
    assert config.load(path).gateway.attachment_dir == tmp_path / "att"


def test_in_flight_cap_below_one_body_is_refused_naming_both_keys(tmp_path: pathlib.Path) -> None:
    """max_inflight_bytes < max_request_bytes would refuse every large upload (503)."""
    path = _write(tmp_path, "[server]\nmax_request_bytes = 4096\nmax_inflight_bytes = 2048\n")
    with pytest.raises(errors.ConfigError, match="max_inflight_bytes must be at least"):
        config.load(path)


# [[server.id_token_issuers]]: device registration by ID token (docs/devices.md).
MULTI_TENANT = """
[server]
id_token_algorithms = ["RS256"]
id_token_leeway = 30

[[server.id_token_issuers]]
issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
client_id = "11111111-2222-3333-4444-555555555555"
discovery_url = "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration"
group_claim = "roles"
groups = [
  { tenant = "9188040d-6c67-4c5b-b112-36a304b66dad", group = "north" },
  { tenant = "9188040d-6c67-4c5b-b112-36a304b66dad", claim_value = "Field", group = "south" },
]
"""


def _load(tmp_path: pathlib.Path, text: str) -> config.Settings:
    return config.load(_write(tmp_path, text))


def test_a_multi_tenant_entra_issuer_loads_with_its_group_rules(tmp_path: pathlib.Path) -> None:
    server = _load(tmp_path, MULTI_TENANT).server
    (entry,) = server.id_token_issuers
    assert entry.issuer.endswith("/{tenantid}/v2.0")
    assert [rule.group for rule in entry.groups] == ["north", "south"]
    assert server.id_token_algorithms == ("RS256",)


def test_a_single_tenant_issuer_finds_its_discovery_document_itself(
    tmp_path: pathlib.Path,
) -> None:
    text = MULTI_TENANT.replace("{tenantid}", "9188040d-6c67-4c5b-b112-36a304b66dad")
    text = text.replace("discovery_url =", "# discovery_url =")
    (entry,) = _load(tmp_path, text).server.id_token_issuers
    assert entry.key_set_discovery_url() == (
        "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad"
        "/v2.0/.well-known/openid-configuration"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('id_token_algorithms = ["RS256"]', 'id_token_algorithms = ["HS256"]'), "'HS256'"),
        (('id_token_algorithms = ["RS256"]', 'id_token_algorithms = ["none"]'), "'none'"),
        (("https://login.microsoftonline.com/{", "http://login.microsoftonline.com/{"), "https"),
        (("discovery_url =", "# discovery_url ="), "needs discovery_url or jwks_uri"),
        (('group_claim = "roles"', ""), "need group_claim"),
        (("client_id = ", "client_ids = "), "client_id"),
    ],
)
def test_an_unsafe_or_incomplete_issuer_is_refused(
    tmp_path: pathlib.Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        _load(tmp_path, MULTI_TENANT.replace(*change))


def test_an_issuer_configured_twice_is_refused(tmp_path: pathlib.Path) -> None:
    entry = MULTI_TENANT.split("[[server.id_token_issuers]]")[1]
    text = MULTI_TENANT + "\n[[server.id_token_issuers]]" + entry
    with pytest.raises(errors.ConfigError, match="configured twice"):
        _load(tmp_path, text)
