"""Signing in to the console through OpenID Connect, against the loopback provider
(tests/oidc_issuer.py): authorization code flow with PKCE, state and nonce, the ID
token's checks and the claim -> role mapping."""

from __future__ import annotations

import pathlib
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

import consoleworld
import httpx
import oidc_issuer
import pytest
import serverproc
import trustme

from mpg.server.console import sessions

ROLES = {"Console.Read": "viewer", "Console.Ops": "operator", "Console.Admin": "admin"}
PERSON = {"preferred_username": "erin@example.com", "roles": ["Console.Ops"]}


@pytest.fixture(scope="module")
def issuer(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[oidc_issuer.Issuer, pathlib.Path]]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("oidc-ca") / "issuer-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    provider = oidc_issuer.Issuer()
    provider.keys = [oidc_issuer.rsa_jwk(oidc_issuer.RSA_KEY, "k1")]
    for running in provider.serve(ca):
        yield running, ca_file


@pytest.fixture(scope="module")
def srv(
    issuer: tuple[oidc_issuer.Issuer, pathlib.Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[serverproc.ServerProcess]:
    provider, ca_file = issuer
    server = consoleworld.start(
        tmp_path_factory.mktemp("console-oidc"),
        id_token_ca_bundle=str(ca_file),
        console_oidc={
            "issuer": provider.console_issuer(),
            "client_id": oidc_issuer.CLIENT_ID,
            "label": "Sign in with Example ID",
            "roles": ROLES,
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider(issuer: tuple[oidc_issuer.Issuer, pathlib.Path]) -> oidc_issuer.Issuer:
    running = issuer[0]
    running.person = dict(PERSON)
    running.token_overrides = {}
    return running


@pytest.fixture
def http(
    srv: serverproc.ServerProcess, issuer: tuple[oidc_issuer.Issuer, pathlib.Path]
) -> Iterator[httpx.Client]:
    trust = ssl.create_default_context(cafile=str(srv.ca_file))
    trust.load_verify_locations(cafile=str(issuer[1]))
    with httpx.Client(base_url=srv.url, verify=trust, timeout=60) as client:
        yield client


def _round_trip(http: httpx.Client, next_path: str = "/") -> tuple[httpx.Response, dict[str, Any]]:
    """Off to the provider and back; the callback's answer and the authorize request."""
    leaving = http.get("/console/login/oidc", params={"next": next_path})
    assert leaving.status_code == 303, leaving.text
    at_provider = http.get(leaving.headers["location"])
    assert at_provider.status_code == 302
    back = at_provider.headers["location"]
    asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(leaving.headers["location"]).query))
    return http.get(back), asked


def test_login_page_offers_the_provider(http: httpx.Client) -> None:
    page = http.get("/console/login")
    assert "Sign in with Example ID" in page.text
    assert 'href="/console/login/oidc?next=/"' in page.text


def test_sign_in_through_the_provider_maps_the_role_claim(
    http: httpx.Client, provider: oidc_issuer.Issuer
) -> None:
    answer, asked = _round_trip(http, "/sessions")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/sessions"
    assert asked["code_challenge_method"] == "S256"
    assert asked["response_type"] == "code"
    for name in ("state", "nonce", "code_challenge"):
        assert len(asked[name]) >= 43
    assert asked["redirect_uri"].endswith("/console/login/oidc/callback")
    page = http.get("/console/sessions")
    assert "erin@example.com (operator)" in page.text.replace('<span class="role">', "")
    assert "OpenID Connect" in page.text


def test_callback_with_another_state_is_refused(
    http: httpx.Client, provider: oidc_issuer.Issuer
) -> None:
    leaving = http.get("/console/login/oidc")
    at_provider = http.get(leaving.headers["location"])
    back = urllib.parse.urlsplit(at_provider.headers["location"])
    query = dict(urllib.parse.parse_qsl(back.query))
    query["state"] = "an attacker's state"
    answer = http.get(back.path + "?" + urllib.parse.urlencode(query))
    assert answer.status_code == 400
    assert "(state)" in answer.text
    assert sessions.COOKIE not in http.cookies


def test_callback_without_a_started_flow_is_refused(http: httpx.Client) -> None:
    answer = http.get("/console/login/oidc/callback", params={"code": "c", "state": "s"})
    assert answer.status_code == 400
    assert "not started here" in answer.text


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"nonce": "another sign-in's nonce"}, "(nonce)"),
        ({"aud": "another-client"}, "Audience"),
        ({"iss": "https://127.0.0.1:1/other/v2.0"}, "issuer"),
        ({"exp": 1000}, "expired"),
    ],
)
def test_id_token_failing_a_check_is_refused(
    http: httpx.Client, provider: oidc_issuer.Issuer, overrides: dict[str, Any], reason: str
) -> None:
    provider.token_overrides = overrides
    answer, _ = _round_trip(http)
    assert answer.status_code == 403
    assert "The ID token was refused" in answer.text
    assert reason.lower() in answer.text.lower()
    assert sessions.COOKIE not in http.cookies


def test_person_without_a_mapped_role_is_refused(
    http: httpx.Client, provider: oidc_issuer.Issuer
) -> None:
    provider.person = {"preferred_username": "mallory@example.com", "roles": ["Sales"]}
    answer, _ = _round_trip(http)
    assert answer.status_code == 403
    assert "mallory@example.com has no console role" in answer.text


def test_provider_refusal_is_shown(http: httpx.Client, provider: oidc_issuer.Issuer) -> None:
    leaving = http.get("/console/login/oidc")
    asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(leaving.headers["location"]).query))
    answer = http.get(
        "/console/login/oidc/callback",
        params={"state": asked["state"], "error": "access_denied", "error_description": "no"},
    )
    assert answer.status_code == 403
    assert "The identity provider refused: access_denied" in answer.text
