"""Configuration: one TOML file, overridable per key from the environment.

Naming rule for the environment: ``MPG_<SECTION>__<KEY>`` in upper case, e.g.
``MPG_GATEWAY__SERVER_URL`` overrides ``[gateway] server_url``. Secrets never need to
be in the TOML: ``MPG_GATEWAY__SECRET`` (or ``[gateway] secret_file``) holds the
gateway's credential and ``MPG_SERVER__MASTER_KEY`` (or ``[server] master_key_file``)
the server's key-encryption key. The file is found from ``--config``, else
``MPG_CONFIG``, else ``./mpg.toml`` when it exists; with none, embedded defaults apply.

:func:`load` returns frozen settings or raises :class:`mpg.errors.ConfigError`
naming the key and the reason.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import pathlib
import stat
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import pydantic
import pydantic_settings
import structlog

from mpg import errors

DEFAULT_CONFIG_FILE: Final = "mpg.toml"
ENV_PREFIX: Final = "MPG_"
#: Bytes a request needs besides its payload (the envelope's header, IV and tag).
REQUEST_MARGIN: Final = 8 * 1024

_log = structlog.get_logger("mpg.config")


#: Seconds after which a message still on its way is stuck (``mpg status``, the console).
STUCK_AFTER: Final = 3600.0


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Section):
    """``[gateway]``: the MPG service that serves one account's Outbox and Inbox."""

    account: str = ""
    database_url: str = "sqlite:///mpg.db"
    server_url: str = "https://127.0.0.1:8443"
    ca_bundle: pathlib.Path | None = None
    allow_plain_http: bool = False
    key_id: str = ""
    secret: pydantic.SecretStr | None = None
    secret_file: pathlib.Path | None = None
    poll_interval: float = pydantic.Field(default=1.0, gt=0, le=3600)
    batch_size: int = pydantic.Field(default=200, ge=1, le=5000)
    #: Name of this gateway process among those sharing one Outbox (MpgClaim.Gateway);
    #: empty: the host name, so a restarted process resumes its own rows at once.
    instance: str = pydantic.Field(default="", max_length=200)
    #: Seconds a claim on a row lasts unrenewed: how long a dead gateway's rows wait.
    claim_lease: float = pydantic.Field(default=300.0, ge=1, le=86400)
    chunk_size: int = pydantic.Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    send_timeout: float = pydantic.Field(default=86400.0, gt=0)
    request_timeout: float = pydantic.Field(default=30.0, gt=0)
    long_poll_wait: float = pydantic.Field(default=20.0, ge=0, le=300)
    retry_max_delay: float = pydantic.Field(default=60.0, gt=0)
    clock: Literal["local", "utc"] = "local"
    watch_database: bool = True
    default_download_flag: Literal[0, 1] = 0
    max_inline_attachment: int = pydantic.Field(default=256 * 1024 * 1024, ge=0)
    #: Where inbound attachment bytes go (docs/databases.md, "Attachments at size"):
    #: "database" puts them in FileData up to max_inline_attachment, "files" writes
    #: every one under attachment_dir and points SourceUri at it.
    inbound_attachments: Literal["database", "files"] = "database"
    attachment_dir: pathlib.Path | None = None
    # The XML document interface (docs/dropfolders.md); every folder is off when unset.
    drop_dir: pathlib.Path | None = None
    drop_attachment_dir: pathlib.Path | None = None
    drop_scan_interval: float = pydantic.Field(default=5.0, gt=0, le=3600)
    drop_settle: float = pydantic.Field(default=0.5, ge=0, le=3600)
    # libxml2 refuses a text node over 10 MB without huge_tree (which stays off), so
    # embedded attachments stay below about 7 MB each whatever this says.
    drop_max_bytes: int = pydantic.Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    inbound_dir: pathlib.Path | None = None
    receipt_dir: pathlib.Path | None = None
    receipt_states: tuple[int, ...] = (29, 97, 99)
    validate_content: tuple[str, ...] = ()
    # Hostile rows (docs/security.md, "The gateway's files and rows").
    #: The only folders AttachmentList / drop-file paths may name files in; none: no
    #: attachment by path is accepted (the drop folder's own attachment folder always is).
    attachment_roots: tuple[pathlib.Path, ...] = ()
    #: Largest Content (UTF-8 bytes): below libxml2's 10 MB text node limit, which the
    #: server's parser keeps (huge_tree off).
    max_content_bytes: int = pydantic.Field(default=8 * 1024 * 1024, ge=1024, le=9_000_000)
    #: The server's ``server.max_request_bytes``: submits are cut to fit it (and the
    #: server's 16 MiB XML limit). Defaults to the server's own default.
    max_request_bytes: int = pydantic.Field(
        default_factory=lambda: int(ServerSettings.model_fields["max_request_bytes"].default),
        ge=64 * 1024,
    )
    # Operations (docs/operations.md).
    health_host: str = "127.0.0.1"
    health_port: int | None = pydantic.Field(default=None, ge=0, le=65535)
    stuck_after: float = pydantic.Field(default=STUCK_AFTER, gt=0)
    history_retention_days: float = pydantic.Field(default=90.0, ge=0)
    housekeeping_interval: float = pydantic.Field(default=3600.0, gt=0)
    #: Seconds between rounds of the delivery summary in StatusLog (docs/push.md); 0: off.
    delivery_summary_interval: float = pydantic.Field(default=60.0, ge=0)
    #: Seconds after its last state change that a device row's summary is kept up to date.
    delivery_summary_window: float = pydantic.Field(default=86400.0, gt=0)

    @pydantic.field_validator(
        "drop_dir",
        "drop_attachment_dir",
        "inbound_dir",
        "receipt_dir",
        "attachment_dir",
        mode="before",
    )
    @classmethod
    def _empty_folder_is_off(cls, value: object) -> object:
        # `drop_dir = ""` (as config.example.toml shows the default) means "off", not ".".
        return None if value == "" else value

    @pydantic.field_validator("server_url")
    @classmethod
    def _url_has_scheme(cls, value: str) -> str:
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError("must be an https:// URL (http:// only on loopback)")
        return value.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _chunks_fit_a_request(self) -> GatewaySettings:
        if self.chunk_size + REQUEST_MARGIN > self.max_request_bytes:
            raise ValueError(
                f"chunk_size: {self.chunk_size} bytes does not fit max_request_bytes "
                f"{self.max_request_bytes} less {REQUEST_MARGIN} for the envelope"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _files_need_a_folder(self) -> GatewaySettings:
        if self.inbound_attachments == "files" and self.attachment_dir is None:
            raise ValueError('attachment_dir: required when inbound_attachments = "files"')
        return self

    @pydantic.model_validator(mode="after")
    def _plain_http_only_on_loopback(self) -> GatewaySettings:
        parsed = urllib.parse.urlsplit(self.server_url)
        if parsed.scheme == "http":
            if not self.allow_plain_http:
                raise ValueError(
                    "server_url uses plain http; set allow_plain_http = true (loopback only)"
                )
            if not _is_loopback(parsed.hostname or ""):
                raise ValueError(
                    "server_url: plain http is allowed only on loopback "
                    "(a literal 127.x.x.x or ::1 address; names are not resolved)"
                )
        return self

    def credential_text(self) -> str:
        """The credential token from ``secret`` or ``secret_file``; raises if neither."""
        if self.secret is not None:
            return self.secret.get_secret_value().strip()
        if self.secret_file is not None:
            return _read_secret_file(self.secret_file, "gateway.secret_file")
        raise errors.ConfigError(
            "gateway.secret: missing; set MPG_GATEWAY__SECRET or gateway.secret_file"
        )


#: Signature algorithms an ID token may use; symmetric (HS*) and ``none`` never are.
ID_TOKEN_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: The placeholder of Entra's multi-tenant issuer, replaced by the token's ``tid``.
TENANT_PLACEHOLDER: Final = "{tenantid}"


class IdTokenGroupRule(_Section):
    """One ``groups`` entry of an ID token issuer: which tokens register into ``group``."""

    #: The token's ``tid`` (directory / tenant id) this rule matches.
    tenant: str = pydantic.Field(min_length=1)
    #: Only tokens whose issuer's ``group_claim`` holds this value (empty: any token).
    claim_value: str = ""
    #: The message group a matching device joins.
    group: str = pydantic.Field(min_length=1)


def _https_or_empty(value: str) -> str:
    """``value`` when it is empty or an https URL with a host; ValueError otherwise."""
    parts = urllib.parse.urlsplit(value)
    if value and (parts.scheme != "https" or not parts.hostname):
        raise ValueError(f"{value!r} is not an https URL")
    return value


class IdTokenIssuer(_Section):
    """One ``[[server.id_token_issuers]]`` entry (docs/devices.md, "ID tokens")."""

    #: The exact ``iss``; Entra's multi-tenant form has ``{tenantid}`` in place of the id.
    issuer: str
    #: The application (client) id the token must name as its audience.
    client_id: str = pydantic.Field(min_length=1)
    #: Where the discovery document is; default ``<issuer>/.well-known/openid-configuration``.
    discovery_url: str = ""
    #: The key set's URL, instead of looking it up in the discovery document.
    jwks_uri: str = ""
    #: A claim holding group or role ids (``groups``, ``roles``) for rules' ``claim_value``.
    group_claim: str = ""
    groups: tuple[IdTokenGroupRule, ...] = pydantic.Field(min_length=1)

    @pydantic.field_validator("issuer", "discovery_url", "jwks_uri")
    @classmethod
    def _https(cls, value: str) -> str:
        return _https_or_empty(value)

    @pydantic.model_validator(mode="after")
    def _keys_findable(self) -> IdTokenIssuer:
        if TENANT_PLACEHOLDER in self.issuer and not (self.discovery_url or self.jwks_uri):
            raise ValueError(f"an issuer with {TENANT_PLACEHOLDER} needs discovery_url or jwks_uri")
        if any(rule.claim_value for rule in self.groups) and not self.group_claim:
            raise ValueError("rules with claim_value need group_claim")
        return self

    def key_set_discovery_url(self) -> str:
        """The discovery document's URL: configured, or derived from the issuer."""
        return self.discovery_url or (self.issuer.rstrip("/") + "/.well-known/openid-configuration")


ConsoleRole = Literal["viewer", "operator", "admin"]


class ConsoleOidc(_Section):
    """``[server.console_oidc]``: sign-in to the admin console through OpenID Connect
    (docs/console.md, "Signing in with OpenID Connect")."""

    #: The exact ``iss`` (Entra ID: ``https://login.microsoftonline.com/<tenant id>/v2.0``).
    issuer: str
    client_id: str = pydantic.Field(min_length=1)
    #: The client secret of a confidential client (Entra "web" platform); empty: PKCE only.
    client_secret: pydantic.SecretStr | None = None
    #: Where the discovery document is; default ``<issuer>/.well-known/openid-configuration``.
    discovery_url: str = ""
    #: The redirect URI registered at the provider; default
    #: ``<server.public_url>/console/login/oidc/callback``.
    redirect_url: str = ""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    #: The claim naming the person (shown and written into the audit log).
    name_claim: str = "preferred_username"
    #: The claim holding role or group values (Entra app roles: ``roles``).
    role_claim: str = "roles"
    #: Claim value -> console role; a person holding none of them is refused.
    roles: dict[str, ConsoleRole] = pydantic.Field(min_length=1)
    #: The sign-in button's text.
    label: str = "Sign in with your organisation"

    @pydantic.field_validator("issuer", "discovery_url", "redirect_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return _https_or_empty(value)

    def key_set_discovery_url(self) -> str:
        """The discovery document's URL: configured, or derived from the issuer."""
        return self.discovery_url or (self.issuer.rstrip("/") + "/.well-known/openid-configuration")


#: The kinds of push provider (docs/push.md) and the platforms each serves by default.
PUSH_KIND_PLATFORMS: Final = {
    "log": ("*",),
    "fcm": ("android",),
    "apns": ("ios",),
    "webhook": ("*",),
}


class PushProvider(_Section):
    """One ``[[server.push_providers]]`` entry: a provider and its credentials, for the
    groups it lists (docs/push.md, "Providers and credentials").

    Secrets are never in the TOML: each comes from a file (``*_file``) or from the
    environment variable an ``*_env`` key names.
    """

    name: str = pydantic.Field(min_length=1, max_length=100)
    kind: Literal["log", "fcm", "apns", "webhook"]
    #: The message groups whose devices this entry reaches; ``"*"``: groups no entry names.
    groups: tuple[str, ...] = pydantic.Field(default=("*",), min_length=1)
    #: Device platforms served; empty: the kind's own (fcm android, apns ios, others any).
    platforms: tuple[str, ...] = ()
    #: Where to send instead of the provider's public address (a relay, a test stand-in).
    endpoint: str = ""
    ca_bundle: pathlib.Path | None = None
    timeout: float = pydantic.Field(default=10.0, gt=0, le=300)
    # fcm: the service-account key (JSON) of the group's Firebase project.
    service_account_file: pathlib.Path | None = None
    service_account_env: str = ""
    # apns: token authentication with the team's key (AuthKey_<key_id>.p8).
    team_id: str = ""
    key_id: str = ""
    key_file: pathlib.Path | None = None
    key_env: str = ""
    topic: str = ""
    environment: Literal["production", "sandbox"] = "production"
    #: Seconds one provider token is used (Apple: 20 to 60 minutes; kept under 50).
    token_window: int = pydantic.Field(default=2400, ge=1200, le=3000)
    #: Seconds APNs keeps a push for a phone that is off (apns-expiration); 0: once only.
    time_to_live: int = pydantic.Field(default=86400, ge=0, le=30 * 86400)
    # webhook: the receiver and the HMAC secret it checks signatures with.
    url: str = ""
    secret_file: pathlib.Path | None = None
    secret_env: str = ""

    @pydantic.field_validator("endpoint", "url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if value and (parts.scheme != "https" or not parts.hostname):
            raise ValueError(f"{value!r} is not an https URL")
        return value.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _kind_has_its_keys(self) -> PushProvider:
        required = {
            "fcm": (("service_account_file", "service_account_env"),),
            "apns": (("key_file", "key_env"),),
            "webhook": (("secret_file", "secret_env"),),
        }.get(self.kind, ())
        for file_key, env_key in required:
            given = [k for k in (file_key, env_key) if getattr(self, k)]
            if len(given) != 1:
                raise ValueError(
                    f"a {self.kind} provider needs exactly one of {file_key}, {env_key}"
                )
        needed = {"apns": ("team_id", "key_id", "topic"), "webhook": ("url",)}.get(self.kind, ())
        missing = [k for k in needed if not getattr(self, k)]
        if missing:
            raise ValueError(f"a {self.kind} provider needs {', '.join(missing)}")
        return self

    def served_platforms(self) -> tuple[str, ...]:
        """The platforms this entry serves (configured, else its kind's)."""
        return tuple(p.lower() for p in self.platforms) or PUSH_KIND_PLATFORMS[self.kind]

    def secret_text(self, file_key: str, env_key: str) -> str:
        """The secret from the file ``file_key`` names, or the variable ``env_key`` names."""
        where = f"server.push_providers[{self.name}]"
        path = getattr(self, file_key)
        if path is not None:
            return _read_secret_file(path, f"{where}.{file_key}")
        variable = getattr(self, env_key)
        value = os.environ.get(variable, "").strip()
        if not value:
            raise errors.ConfigError(
                f"{where}.{env_key}: environment variable {variable} is not set"
            )
        return value


class ServerSettings(_Section):
    """``[server]``: the push server (PSS)."""

    database_url: str = "sqlite:///mpg-server.db"
    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=8443, ge=0, le=65535)
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    allow_plain_http: bool = False
    data_dir: pathlib.Path = pathlib.Path("mpg-server-data")
    master_key: pydantic.SecretStr | None = None
    master_key_file: pathlib.Path | None = None
    public_url: str = ""
    # Personal data at rest (mpg.server.datakeys): 'key-id:base64' entries, comma separated.
    data_keys: pydantic.SecretStr | None = None
    data_keys_file: pathlib.Path | None = None
    #: The key that encrypts and indexes; empty: the last one listed.
    data_key_current: str = ""
    lease_seconds: float = pydantic.Field(default=60.0, gt=0)
    max_long_poll: float = pydantic.Field(default=30.0, ge=0, le=300)
    replay_window: float = pydantic.Field(default=300.0, gt=0)
    max_request_bytes: int = pydantic.Field(default=64 * 1024 * 1024, ge=1024)
    metrics_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    retention_days: float = pydantic.Field(default=30.0, ge=0)
    housekeeping_interval: float = pydantic.Field(default=3600.0, gt=0)
    #: Seconds a message may wait for its recipients before the console calls it stuck.
    stuck_after: float = pydantic.Field(default=STUCK_AFTER, gt=0)
    # The network face (docs/security.md, "The server's network face").
    #: Open connections (and requests in progress) beyond which requests get 503.
    max_connections: int = pydantic.Field(default=2048, ge=1, le=1_000_000)
    #: Seconds a connection has to finish its TLS handshake, and then each request's headers.
    header_timeout: float = pydantic.Field(default=10.0, gt=0, le=300)
    #: Seconds a request body may stall between two reads before the request is dropped.
    body_timeout: float = pydantic.Field(default=30.0, gt=0, le=3600)
    #: Seconds an idle keep-alive connection stays open.
    idle_timeout: float = pydantic.Field(default=75.0, gt=0, le=3600)
    #: Largest request line plus headers.
    max_header_bytes: int = pydantic.Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    #: Request body bytes held by all requests together; beyond it requests get 503.
    max_inflight_bytes: int = pydantic.Field(default=128 * 1024 * 1024, ge=1024)
    #: Request nonces one account may have in the replay cache (per replay_window).
    replay_per_account: int = pydantic.Field(default=20_000, ge=1)
    #: Bytes of staged (uploaded, not yet submitted) attachments one account may hold.
    upload_quota_bytes: int = pydantic.Field(default=4 * 1024**3, ge=1)
    #: Staged uploads one account may hold.
    upload_quota_files: int = pydantic.Field(default=10_000, ge=1)
    #: Seconds after its last chunk an unsubmitted staged upload is purged.
    upload_stage_ttl: float = pydantic.Field(default=86400.0, gt=0)
    # Verification mails (docs/devices.md, "Verification mail and codes"); off when
    # mail_host is empty.
    mail_host: str = ""
    #: Empty: 587 for starttls, 465 for tls, 25 for plain.
    mail_port: int | None = pydantic.Field(default=None, ge=1, le=65535)
    mail_security: Literal["starttls", "tls", "plain"] = "starttls"
    mail_from: str = ""
    mail_username: str = ""
    mail_password: pydantic.SecretStr | None = None
    mail_password_file: pathlib.Path | None = None
    mail_ca_bundle: pathlib.Path | None = None
    mail_timeout: float = pydantic.Field(default=30.0, gt=0, le=600)
    #: Tries per mail; transient failures (4xx replies, connection errors) are retried.
    mail_attempts: int = pydantic.Field(default=4, ge=1, le=20)
    mail_retry_max_delay: float = pydantic.Field(default=10.0, gt=0, le=600)
    # Device registration by ID token (docs/devices.md, "ID tokens (managed configuration)").
    id_token_issuers: tuple[IdTokenIssuer, ...] = ()
    #: Signature algorithms accepted in ID tokens (asymmetric only).
    id_token_algorithms: tuple[str, ...] = ("RS256", "ES256")
    #: Seconds of clock difference allowed for ``exp``, ``nbf`` and ``iat``.
    id_token_leeway: float = pydantic.Field(default=60.0, ge=0, le=600)
    #: Seconds an issuer's key set is kept before it is fetched again.
    id_token_keys_ttl: float = pydantic.Field(default=6 * 3600.0, gt=0)
    #: Least seconds between two fetches caused by an unknown key id (rotation).
    id_token_keys_refetch: float = pydantic.Field(default=300.0, ge=0)
    #: CA file trusted for the issuers' discovery documents and key sets (default: the system's).
    id_token_ca_bundle: pathlib.Path | None = None

    # Push notifications and the message file (docs/push.md).
    push_providers: tuple[PushProvider, ...] = ()
    #: Groups whose pushes may carry the subject and text (default: none; content stays
    #: behind the sealed channel). Named one by one; ``*`` is not accepted.
    push_content_groups: tuple[str, ...] = ()
    #: Largest message file; older messages are left out to stay under it.
    message_file_max_bytes: int = pydantic.Field(default=100 * 1024, ge=4096, le=1024 * 1024)
    #: A folder an external web server serves: each message file is also written there.
    message_file_export_dir: pathlib.Path | None = None
    message_file_cache_control: str = "public, no-cache"
    # Push jobs (docs/push.md, "Push jobs").
    #: Threads sending pushes in each server process (0: this process sends none).
    push_workers: int = pydantic.Field(default=4, ge=0, le=64)
    #: Seconds a claimed job is kept from other workers; after it another one sends it.
    push_lease_seconds: float = pydantic.Field(default=60.0, gt=0, le=3600)
    #: Seconds an idle worker waits before it looks for due jobs again.
    push_poll_seconds: float = pydantic.Field(default=1.0, gt=0, le=60)
    #: Tries of one push before it is given up (a retry waits for Retry-After or backoff).
    push_max_attempts: int = pydantic.Field(default=10, ge=1, le=100)
    #: Longest wait between two tries of one push (backoff cap; Retry-After may be longer).
    push_retry_max_delay: float = pydantic.Field(default=900.0, gt=0, le=86400)
    #: Seconds over which the pushes of one publication are spread (0: all at once).
    push_spread_seconds: float = pydantic.Field(default=0.0, ge=0, le=3600)
    #: Days after which a token its device did not refresh expires (0: never).
    push_token_max_age_days: float = pydantic.Field(default=270.0, ge=0)
    # The admin console (docs/console.md).
    #: Serve the console under /console.
    console_enabled: bool = True
    #: Seconds without a request after which a console session ends.
    console_idle_timeout: float = pydantic.Field(default=1800.0, gt=0, le=86400)
    #: Seconds after sign-in after which a console session ends, however busy.
    console_session_lifetime: float = pydantic.Field(default=43200.0, gt=0, le=30 * 86400)
    #: Failed sign-ins for one user name within console_lockout_seconds that lock it.
    console_lockout_failures: int = pydantic.Field(default=5, ge=1, le=1000)
    #: Failed sign-ins from one client address within console_lockout_seconds that lock it.
    console_lockout_address_failures: int = pydantic.Field(default=20, ge=1, le=100_000)
    #: Seconds over which failures count, and how long a lock lasts.
    console_lockout_seconds: float = pydantic.Field(default=900.0, gt=0, le=86400)
    console_oidc: ConsoleOidc | None = None

    @pydantic.field_validator("push_providers")
    @classmethod
    def _provider_names_unique(cls, value: tuple[PushProvider, ...]) -> tuple[PushProvider, ...]:
        names = [entry.name for entry in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"push provider name {name!r} is used twice")
        return value

    @pydantic.field_validator("message_file_export_dir", mode="before")
    @classmethod
    def _empty_export_dir_is_off(cls, value: object) -> object:
        return None if value == "" else value

    @pydantic.field_validator("push_content_groups")
    @classmethod
    def _content_groups_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value:
            raise ValueError("name each group that allows content in pushes; '*' is not accepted")
        return value

    @pydantic.field_validator("metrics_from")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @pydantic.field_validator("id_token_issuers")
    @classmethod
    def _one_entry_per_issuer(cls, value: tuple[IdTokenIssuer, ...]) -> tuple[IdTokenIssuer, ...]:
        issuers = [entry.issuer for entry in value]
        for issuer in issuers:
            if issuers.count(issuer) > 1:
                raise ValueError(f"issuer {issuer!r} is configured twice; merge its groups")
        return value

    @pydantic.field_validator("id_token_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in ID_TOKEN_ALGORITHMS:
                raise ValueError(
                    f"{name!r} is not allowed; choose from {sorted(ID_TOKEN_ALGORITHMS)}"
                )
        return value

    @pydantic.model_validator(mode="after")
    def _one_body_fits_in_flight(self) -> ServerSettings:
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError("max_inflight_bytes must be at least max_request_bytes")
        return self

    @pydantic.model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @pydantic.model_validator(mode="after")
    def _mail_is_complete(self) -> ServerSettings:
        if not self.mail_host:
            return self
        if not self.mail_from:
            raise ValueError("mail_from: required when mail_host is set")
        if self.mail_security == "plain" and not _is_loopback(self.mail_host):
            raise ValueError(
                'mail_host: mail_security = "plain" is allowed only on loopback '
                "(a literal 127.x.x.x or ::1 address); use starttls or tls"
            )
        has_password = self.mail_password is not None or self.mail_password_file is not None
        if has_password != bool(self.mail_username):
            raise ValueError("mail_username and mail_password (or mail_password_file) go together")
        return self

    def mail_password_text(self) -> str:
        """The SMTP password from ``mail_password`` or ``mail_password_file``; "" if none."""
        if self.mail_password is not None:
            return self.mail_password.get_secret_value()
        if self.mail_password_file is None:
            return ""
        return _read_secret_file(self.mail_password_file, "server.mail_password_file")

    def check_listen(self) -> None:
        """Refuse to serve plain http unless asked for, and then only on loopback."""
        if self.tls_cert is not None:
            return
        if not self.allow_plain_http:
            raise errors.ConfigError(
                "server.tls_cert: missing; set tls_cert and tls_key, "
                "or allow_plain_http = true (loopback only)"
            )
        if not _is_loopback(self.host):
            raise errors.ConfigError("server.host: plain http is allowed only on loopback")


class LogSettings(_Section):
    """``[log]``: how MPG writes its log."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    file: pathlib.Path | None = None
    max_bytes: int = pydantic.Field(default=10 * 1024 * 1024, ge=1024)
    backups: int = pydantic.Field(default=5, ge=0, le=1000)


class Settings(pydantic_settings.BaseSettings):
    """All settings, validated and frozen."""

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    gateway: GatewaySettings = pydantic.Field(default_factory=GatewaySettings)
    server: ServerSettings = pydantic.Field(default_factory=ServerSettings)
    log: LogSettings = pydantic.Field(default_factory=LogSettings)
    source: str = ""  # the file the settings came from, for messages

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[pydantic_settings.BaseSettings],
        init_settings: pydantic_settings.PydanticBaseSettingsSource,
        env_settings: pydantic_settings.PydanticBaseSettingsSource,
        dotenv_settings: pydantic_settings.PydanticBaseSettingsSource,
        file_secret_settings: pydantic_settings.PydanticBaseSettingsSource,
    ) -> tuple[pydantic_settings.PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which is passed in as init values.
        return (env_settings, init_settings)


def _read_secret_file(path: pathlib.Path, key: str) -> str:
    """The stripped text of the secret file ``path`` named by setting ``key``."""
    try:
        with path.open(encoding="utf-8") as fh:
            _check_secret_mode(os.fstat(fh.fileno()).st_mode, key, fh.name)
            return fh.read().strip()
    except OSError as exc:
        raise errors.ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def _check_secret_mode(mode: int, key: str, path: str) -> None:
    """Refuse a secret file others may write (they could swap the key); warn if they
    may read it. Only where POSIX modes mean something."""
    if os.name != "posix":
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise errors.ConfigError(
            f"{key}: {path} is writable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _log.warning(
            "secret_file_readable_by_others",
            key=key,
            file=path,
            mode=f"{stat.S_IMODE(mode):04o}",
            fix="chmod 600",
        )


def _is_loopback(host: str) -> bool:
    """Only a literal loopback address counts: a name such as ``localhost`` is not
    resolved (a hosts file or resolver could point it anywhere)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find_config_file(explicit: str | os.PathLike[str] | None) -> pathlib.Path | None:
    """The config file to read: ``explicit``, else ``MPG_CONFIG``, else ``./mpg.toml``."""
    if explicit:
        return pathlib.Path(explicit)
    env = os.environ.get("MPG_CONFIG")
    if env:
        return pathlib.Path(env)
    default = pathlib.Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, merge with the environment and validate; relative paths resolve to the file."""
    file = find_config_file(path)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            with file.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise errors.ConfigError(f"config file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise errors.ConfigError(f"config file {file}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise errors.ConfigError(f"config file {file}: {exc.strerror}") from exc
        _resolve_paths(data, file.parent)
        data["source"] = str(file)
    env_problems = _misspelt_environment(os.environ)
    if env_problems:
        raise errors.ConfigError("bad configuration: " + "; ".join(env_problems))
    try:
        return Settings(**data)
    except pydantic.ValidationError as exc:
        raise errors.ConfigError(_describe(exc, file)) from None


_PATH_KEYS: Final = {
    "gateway": (
        "ca_bundle",
        "secret_file",
        "drop_dir",
        "drop_attachment_dir",
        "inbound_dir",
        "receipt_dir",
        "attachment_dir",
        "attachment_roots",
    ),
    "server": (
        "tls_cert",
        "tls_key",
        "data_dir",
        "master_key_file",
        "mail_password_file",
        "mail_ca_bundle",
        "message_file_export_dir",
        "id_token_ca_bundle",
    ),
    "log": ("file",),
}


def _resolve_paths(data: dict[str, Any], base: pathlib.Path) -> None:
    """Make file paths and SQLite URLs in the file relative to the file's folder."""
    for section, keys in _PATH_KEYS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        for key in keys:
            value = values.get(key)
            if isinstance(value, str) and value and not pathlib.Path(value).is_absolute():
                values[key] = str(base / value)
            elif isinstance(value, list):
                values[key] = [
                    str(base / v) if isinstance(v, str) and not pathlib.Path(v).is_absolute() else v
                    for v in value
                ]
        url = values.get("database_url")
        if (
            isinstance(url, str)
            and url.startswith("sqlite:///")
            and not url.startswith("sqlite:////")
        ):
            rel = url.removeprefix("sqlite:///")
            if rel and rel != ":memory:":
                values["database_url"] = "sqlite:///" + str((base / rel).resolve())
    _resolve_provider_paths(data, base)


#: File paths inside each ``[[server.push_providers]]`` entry.
_PROVIDER_PATH_KEYS: Final = ("ca_bundle", "service_account_file", "key_file", "secret_file")


def _resolve_provider_paths(data: dict[str, Any], base: pathlib.Path) -> None:
    """The push providers' files, relative to the config file's folder like other paths."""
    server = data.get("server")
    entries = server.get("push_providers") if isinstance(server, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        for key in _PROVIDER_PATH_KEYS if isinstance(entry, dict) else ():
            value = entry.get(key)
            if isinstance(value, str) and value and not pathlib.Path(value).is_absolute():
                entry[key] = str(base / value)


def _did_you_mean(word: str, choices: Iterable[str], template: str) -> str:
    """``; did you mean <template with the closest choice>?``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return "; did you mean " + template.format(close[0]) + "?" if close else ""


def _misspelt_environment(environ: Mapping[str, str]) -> list[str]:
    """``MPG_*`` variables that look like settings but name no section.

    pydantic ignores them silently, so a misspelt section would change nothing.
    """
    sections = list(Settings.model_fields.keys() - {"source"})
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        section, sep, key = upper.removeprefix(ENV_PREFIX).partition("__")
        if section.lower() in sections:
            if not sep:
                problems.append(
                    f"environment variable {name}: a section cannot be set whole; "
                    f"set {ENV_PREFIX}{section}__<KEY> for each key"
                )
        elif sep:
            template = ENV_PREFIX + "{}__" + key.replace("{", "{{").replace("}", "}}")
            hint = _did_you_mean(section, [s.upper() for s in sections], template)
            problems.append(f"environment variable {name}: no section {section.lower()}{hint}")
    return problems


def _env_name(loc: Sequence[object]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _describe(exc: pydantic.ValidationError, file: pathlib.Path | None) -> str:
    """One line per problem, saying where it is (file or environment) and the fix."""
    where = f" (in {file})" if file else ""
    env = {name.upper() for name in os.environ}
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc) or "(top level)"
        reason = err["msg"].removeprefix("Value error, ")
        from_env = bool(loc) and _env_name(loc) in env
        if err["type"] == "extra_forbidden":
            model: type[pydantic.BaseModel] = Settings
            if len(loc) > 1:
                field = Settings.model_fields.get(loc[0])
                annotation = None if field is None else field.annotation
                if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
                    model = annotation
            known = [k for k in model.model_fields if k != "source"]
            what = "unknown key" if len(loc) > 1 else "unknown section"
            if from_env:
                template = _env_name([*loc[:-1], "{}"])
                hint = _did_you_mean(loc[-1].upper(), [k.upper() for k in known], template)
                lines.append(f"environment variable {_env_name(loc)}: {what}{hint}")
            else:
                template = ".".join([*loc[:-1], "{}"]) if len(loc) > 1 else "[{}]"
                hint = _did_you_mean(loc[-1], known, template)
                lines.append(f"{key}: {what}{where}{hint}")
        elif from_env:
            lines.append(f"environment variable {_env_name(loc)} ({key}): {reason}")
        else:
            lines.append(f"{key}: {reason}{where}")
    return "bad configuration: " + "; ".join(lines)
