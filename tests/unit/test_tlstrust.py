"""Whom outgoing TLS trusts: the configured CA file, or the system's; a bad file named."""

from __future__ import annotations

import pathlib
import ssl

import pytest
import trustme

from mpg import config, errors, tlstrust
from mpg.server import app, tables
from mpg.wire import atrest, keys


def test_a_configured_ca_file_is_the_only_one_trusted(tmp_path: pathlib.Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    made = tlstrust.httpx_verify(ca_file, "x.ca_bundle")
    assert isinstance(made, ssl.SSLContext)
    assert len(made.get_ca_certs()) == 1
    assert tlstrust.httpx_verify(None, "x.ca_bundle") is True


def test_an_unusable_ca_file_is_a_config_error_naming_the_setting(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    for path in (tmp_path / "missing.pem", tmp_path / "bad.pem"):
        with pytest.raises(errors.ConfigError, match=r"gateway\.ca_bundle: cannot use"):
            tlstrust.context(path, "gateway.ca_bundle")


def test_a_bad_identity_provider_ca_file_stops_the_server_at_start(tmp_path: pathlib.Path) -> None:
    engine = tables.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    tables.create_tables(engine)
    settings = config.ServerSettings(data_dir=tmp_path, id_token_ca_bundle=tmp_path / "missing.pem")
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    try:
        with pytest.raises(errors.ConfigError, match=r"server\.id_token_ca_bundle"):
            app.PushServer(settings, engine, keys.new_master_key(), keyring)
    finally:
        engine.dispose()
