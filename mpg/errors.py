"""The exception tree of MPG.

Everything MPG raises on purpose derives from :class:`MpgError`::

    MpgError
    ├── ConfigError            bad or missing configuration (names the key)
    ├── StorageError           the database failed (driver errors are wrapped)
    │   └── SchemaMismatch     an existing table lacks a column MPG needs
    ├── ValidationError        a row or document is invalid (names row, field, reason)
    │   └── DropFileError      an XML document (drop file) is invalid; adds its line
    ├── AttachmentRefused      a file may not be sent (outside attachment_roots, a link, ...);
    │                          also a ValueError, which the validation's file check catches
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
    ├── MailError              a mail was not sent (TLS, login, or retries used up)
    │   ├── MailTryFailed      one try failed, worth another (4xx reply, connection lost)
    │   └── MailRefused        the SMTP server refused the mail for good (5xx reply)
    ├── ServerError            talking to the push server failed (the gateway's side)
    │   ├── TransientServerError   worth retrying: down, timeout, 5xx
    │   └── RefusedByServer        the server said no (4xx); retrying will not help
    ├── ServerRefusal          the push server understood a request and refuses it
    │   ├── NotFound           no such message or attachment           (HTTP 404)
    │   ├── Forbidden          not allowed to see that message          (HTTP 403)
    │   │   └── AccountDisabled    the account or key is disabled       (HTTP 403)
    │   ├── TooLarge           the request body is over the limit       (HTTP 413)
    │   ├── RequestTimeout     the request body stalled                 (HTTP 408)
    │   ├── Conflict           the name is taken, or the thing changed  (HTTP 409)
    │   ├── Refused            a refusal with its own status and machine code
    │   │                      (code_expired, registration_code_deleted, ...)
    │   ├── TooManyRequests    an account is over a per-account limit   (HTTP 429)
    │   ├── Unavailable        starting, stopping or overloaded         (HTTP 503)
    │   └── SignInRequired     the admin console needs a sign-in (303 to the sign-in page)
    └── CommandError           a command gives up with a message and an exit code

Every class is defined here, so ``except`` clauses and the exit-code and HTTP
mappings have one tree to follow. :func:`mpg.exitcodes.for_exception` maps these to
exit codes; ``mpg.server.app`` maps ServerRefusal and the envelope errors to HTTP.
Whether a failure is worth retrying is not a class: it is asked of the layer that
raised it (``mpg.gateway.retry.is_transient``).
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


class DropFileError(ValidationError):
    """A document is invalid: ``line`` (0 when unknown), ``field`` and ``reason``."""

    def __init__(self, field: str, reason: str, *, line: int = 0) -> None:
        super().__init__(field, reason)
        self.line = line
        where = f"line {line}: " if line else ""
        self.args = (f"{where}{field}: {reason}",)


class AttachmentRefused(MpgError, ValueError):
    """The path may not be sent; ``str()`` is the reason (``is outside ...``)."""


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


class ServerRefusal(MpgError):
    """The server understood the request and refuses it."""


class NotFound(ServerRefusal):
    """No such message or attachment."""


class Forbidden(ServerRefusal):
    """The caller may not see that message or use that account."""


class AccountDisabled(Forbidden):
    """The account, or the key it signed with, is disabled."""


class TooLarge(ServerRefusal):
    """The request body is larger than ``server.max_request_bytes``."""


class Unavailable(ServerRefusal):
    """The server is starting or stopping; the client retries."""


class TooManyRequests(ServerRefusal):
    """The account is over a per-account limit for now; the client retries later."""


class RequestTimeout(ServerRefusal):
    """The request body stalled for longer than ``server.body_timeout``."""


class Conflict(ServerRefusal):
    """The request conflicts with what exists: a name already taken, a state changed."""


class Refused(ServerRefusal):
    """A refusal with its own HTTP ``status`` and machine ``code`` (the JSON error's
    ``error``), for reasons a client acts on: ``code_expired``, ``rate_limited``,
    ``registration_code_deleted`` ... ``retry_after`` (seconds) goes into ``Retry-After``."""

    def __init__(
        self, status: int, code: str, detail: str, *, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(detail)


class SignInRequired(ServerRefusal):
    """The admin console needs a signed-in user: go to the sign-in page, then back
    to ``next_path`` (a path inside the console)."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path
        super().__init__("sign-in required")


class CommandError(MpgError):
    """A command gives up with a readable ``message`` and an exit ``code``.

    The default code is :data:`mpg.exitcodes.FAILURE` (1); this module sits below
    ``exitcodes`` and cannot import it.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class MailError(MpgError):
    """A mail could not be sent: the SMTP server was unreachable through every retry, its
    certificate or login failed, or it lacks what the configuration asks for."""


class MailTryFailed(MailError):
    """One try failed in a way the next try may not (4xx reply, connection error); the
    mailer retries it and raises a plain :class:`MailError` after the last try."""


class MailRefused(MailError):
    """The SMTP server refused the mail with a permanent (5xx) reply; retrying will not help."""

    def __init__(self, address: str, code: int, reply: str) -> None:
        self.address = address
        self.code = code
        self.reply = reply
        super().__init__(f"mail to {address} refused by the mail server: {code} {reply}")
