"""Signing in to the console through OpenID Connect in a real browser, against the
loopback provider (tests/oidc_issuer.py), which signs the configured person in at once."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import oidc_issuer
import pytest
import serverproc
import trustme
from conftest import start_server


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serverproc.ServerProcess]:
    ca = trustme.CA()
    root = tmp_path_factory.mktemp("console-oidc-browser")
    ca_file = root / "issuer-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    provider = oidc_issuer.Issuer()
    provider.keys = [oidc_issuer.rsa_jwk(oidc_issuer.RSA_KEY, "k1")]
    provider.person = {"preferred_username": "erin@example.com", "roles": ["Console.Admin"]}
    for running in provider.serve(ca):
        srv = start_server(
            root / "server",
            id_token_ca_bundle=str(ca_file),
            console_oidc={
                "issuer": running.console_issuer(),
                "client_id": oidc_issuer.CLIENT_ID,
                "label": "Sign in with Example ID",
                "roles": {"Console.Admin": "admin"},
            },
        )
        try:
            yield srv
        finally:
            srv.stop()


def test_sign_in_through_the_identity_provider(
    page_as: Callable[..., Any],
    oidc_server: serverproc.ServerProcess,
    screenshot: Callable[[Any, str], pathlib.Path],
) -> None:
    page = page_as(None, server=oidc_server)
    page.goto("/console/sessions")
    screenshot(page, "login-oidc")
    page.get_by_role("link", name="Sign in with Example ID").click()
    page.wait_for_url(re.compile(r"/console/sessions$"))
    assert page.get_by_text("erin@example.com (admin)").is_visible()
    row = page.get_by_role("row").filter(has_text="erin@example.com").first
    assert "OpenID Connect" in row.inner_text()
