"""The exception tree of MPG.

Everything MPG raises on purpose derives from :class:`MpgError`::

    MpgError
    ├── ConfigError            bad or missing configuration (names the key)
    ├── StorageError           the database failed (driver errors are wrapped)
    │   └── SchemaMismatch     an existing table lacks a column MPG needs
    ├── ValidationError        a row or document is invalid (names row, field, reason)
    ├── WireError              a payload could not be built or parsed
    │   ├── UnsafeXml          the XML used a DTD, entities or exceeded the size limit
    │   ├── EnvelopeError      a sealed envelope failed to open
    │   │   ├── TamperedEnvelope   authentication tag or framing is wrong
    │   │   ├── ReplayedEnvelope   the nonce was seen or the timestamp is stale
    │   │   └── UnknownKey         no such account or key id
    │   └── AtRestError        a field or file encrypted at rest failed to open
    ├── TransitionError        a state change not in the transition table
    ├── IdTokenRefused         an ID token failed a check (``code`` says which)
    ├── KeySetUnavailable      an ID token issuer's keys could not be fetched
    ├── ServerError            talking to the push server failed
    │   ├── TransientServerError   worth retrying: down, timeout, 5xx
    │   └── RefusedByServer        the server said no (4xx); retrying will not help
    └── MailError              a mail was not sent (TLS, login, or retries used up)
        └── MailRefused        the SMTP server refused the mail for good (5xx reply)

The CLI maps these to exit codes (see ``mpg.cli.exitcodes``).
"""

from __future__ import annotations


class MpgError(Exception):
    """Base of every error MPG raises on purpose."""


class ConfigError(MpgError):
    """The configuration is missing, malformed or inconsistent."""


class StorageError(MpgError):
    """A database operation failed."""


class SchemaMismatch(StorageError):
    """An existing table does not have the shape MPG needs."""


class ValidationError(MpgError):
    """Input is invalid; ``field`` and ``reason`` say why."""

    def __init__(self, field: str, reason: str, *, row: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.row = row
        where = f"row {row}: " if row else ""
        super().__init__(f"{where}{field}: {reason}")


class WireError(MpgError):
    """A wire payload could not be built or parsed."""


class UnsafeXml(WireError):
    """XML was refused because it was unsafe or too large."""


class EnvelopeError(WireError):
    """A sealed envelope could not be opened."""


class TamperedEnvelope(EnvelopeError):
    """The envelope's framing or authentication tag is wrong."""


class ReplayedEnvelope(EnvelopeError):
    """The envelope's nonce was already used or its timestamp is outside the window."""


class UnknownKey(EnvelopeError):
    """The envelope names an account or key id that is unknown or disabled."""


class AtRestError(WireError):
    """A value or file encrypted at rest could not be decrypted (tampered, moved or
    under an unknown key id)."""


class IdTokenRefused(MpgError):
    """An OpenID Connect ID token was refused; ``code`` names the failed check
    (``wrong_audience``, ``expired``, ...) and the message says why."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"ID token refused ({code}): {detail}")


class KeySetUnavailable(MpgError):
    """An ID token issuer's discovery document or key set could not be fetched."""


class TransitionError(MpgError):
    """A state change that the transition table does not allow."""


class ServerError(MpgError):
    """Talking to the push server failed."""


class TransientServerError(ServerError):
    """A failure worth retrying (server down, timeout, 5xx)."""


class RefusedByServer(ServerError):
    """The server refused the request; retrying the same request will not help."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(f"server refused ({status} {code}): {detail}")


class MailError(MpgError):
    """A mail could not be sent: the SMTP server was unreachable through every retry, its
    certificate or login failed, or it lacks what the configuration asks for."""


class MailRefused(MailError):
    """The SMTP server refused the mail with a permanent (5xx) reply; retrying will not help."""

    def __init__(self, address: str, code: int, reply: str) -> None:
        self.address = address
        self.code = code
        self.reply = reply
        super().__init__(f"mail to {address} refused by the mail server: {code} {reply}")
