"""The ``[[server.id_token_issuers]]`` settings: loaded from TOML, bad ones refused."""

from __future__ import annotations

import os
import pathlib

import pytest

from mpg import config, errors

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


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    for name in list(os.environ):
        if name.startswith("MPG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _load(tmp_path: pathlib.Path, text: str) -> config.Settings:
    path = tmp_path / "mpg.toml"
    path.write_text(text, encoding="utf-8")
    return config.load(path)


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
