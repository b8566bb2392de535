"""A push server set up for the phone agent's tests: a mail server and an Entra-style
identity provider on loopback in its configuration, and a directory of two groups
whose domain ``firma.example`` belongs to both.

================  ==========================================================
group ``north``   categories ``floods`` (preselected) and ``roads``; domains
                  ``firma.example`` and ``nord.example``; a registration code
group ``south``   category ``storms`` (preselected); domain ``firma.example``;
                  a registration code
ID tokens         tenant :data:`oidc_issuer.TENANT` maps to ``north``,
                  :data:`TWO_GROUP_TENANT` to ``north`` and ``south``
================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import structlog
from directory_rows import add_category, add_code, add_domain, add_group
from harness import World
from oidc_issuer import CLIENT_ID, RSA_KEY, TENANT, Issuer, rsa_jwk

from mpg import config
from mpg.server import accounts, datakeys, tables
from mpg.server.directory import codestore

SHARED_DOMAIN = "firma.example"
NORTH_DOMAIN = "nord.example"
TWO_GROUP_TENANT = "3c7e8d0a-5f1b-4e2a-9d6c-0b1a2c3d4e5f"


@dataclasses.dataclass(frozen=True)
class Directory:
    """What the tests need to know of the directory: codes and their ids by group."""

    codes: dict[str, str]
    code_ids: dict[str, str]


def configure(world: World, smtp_port: int, issuer: Issuer, idp_ca_file: str) -> None:
    """Add the mail server and the identity provider to the world's server config."""
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    discovery = issuer.base + "/common/v2.0/.well-known/openid-configuration"
    with world.server_config.open("a") as extra:
        extra.write(
            f'mail_host = "127.0.0.1"\nmail_port = {smtp_port}\nmail_security = "plain"\n'
            'mail_from = "noreply@mpg.example"\nmail_attempts = 1\n'
            f'id_token_ca_bundle = "{idp_ca_file}"\n\n'
            "[[server.id_token_issuers]]\n"
            f'issuer = "{issuer.discovery_issuer}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'discovery_url = "{discovery}"\n'
            f'groups = [{{tenant = "{TENANT}", group = "north"}}, '
            f'{{tenant = "{TWO_GROUP_TENANT}", group = "north"}}, '
            f'{{tenant = "{TWO_GROUP_TENANT}", group = "south"}}]\n'
        )


def populate(world: World) -> Directory:
    """The groups, categories, domains and codes of the module docstring."""
    settings = config.load(world.server_config).server
    engine = tables.create_engine(settings.database_url)
    keyring = datakeys.load_keyring(settings)
    code_key = codestore.code_key(accounts.load_master_key(settings))
    try:
        add_group(engine, "north", name="North", region="Nord")
        add_group(engine, "south", name="South", region="Sued")
        add_category(engine, "north", "floods", preselected=True)
        add_category(engine, "north", "roads")
        add_category(engine, "south", "storms", preselected=True)
        for domain, group in (
            (SHARED_DOMAIN, "north"),
            (SHARED_DOMAIN, "south"),
            (NORTH_DOMAIN, "north"),
        ):
            add_domain(engine, keyring, domain, group)
        made = {group: add_code(engine, code_key, group) for group in ("north", "south")}
    finally:
        engine.dispose()
    return Directory(
        codes={g: code for g, (code, _) in made.items()},
        code_ids={g: code_id for g, (_, code_id) in made.items()},
    )


def expire_code(world: World, code_id: str) -> None:
    """Let a registration code's time run out (its ValidUntil moved into the past)."""
    settings = config.load(world.server_config).server
    engine = tables.create_engine(settings.database_url)
    r = tables.registration_code.c
    try:
        with engine.begin() as conn:
            conn.execute(
                tables.registration_code.update()
                .where(r.CodeId == code_id)
                .values(ValidUntil=time.time() - 60)
            )
    finally:
        engine.dispose()


def restore_logging() -> Iterator[None]:
    """``mpg device`` run in the test's process configures logging at warning level;
    put the defaults back afterwards, so tests that capture info events still see them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
