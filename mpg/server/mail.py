"""Verification mails over SMTP: render the message, send it, retry what is transient.

Why the standard library's :mod:`smtplib` and not aiosmtplib: a verification mail is
rare (each is rate-limited per address, device and client, ``mpg.server.verification``)
and short, so the server can hand :meth:`Mailer.send` to a worker thread
(``asyncio.to_thread``) without starving anything; smtplib ships and is patched with
CPython, speaks STARTTLS, implicit TLS and AUTH, and raises one exception per SMTP
reply, which is all the retry policy needs. One dependency less to keep.

Transport security follows the rest of MPG: ``starttls`` (port 587) or ``tls``
(implicit TLS, port 465), the certificate verified against the system store or
``mail_ca_bundle``; ``plain`` only towards a literal loopback address (checked by
:mod:`mpg.config`).

Failures: a 4xx reply or a connection error is retried with backoff
(:func:`mpg.backoff.delay`) up to ``mail_attempts`` tries, then
:class:`mpg.errors.MailError`; a 5xx reply to the mail is
:class:`mpg.errors.MailRefused` at once, naming the address and the server's reply; a
bad certificate, a refused login or a missing STARTTLS is a :class:`MailError` at once
(a configuration problem retrying cannot fix). The address is personal data: it
appears in the exception for the caller, never in the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.errors
import email.headerregistry
import email.message
import email.utils
import pathlib
import smtplib
import ssl
import time
from collections.abc import Callable
from typing import Final, Literal, NoReturn

import jinja2
import structlog

from mpg import backoff, config, errors, tlstrust

Security = Literal["starttls", "tls", "plain"]

DEFAULT_PORTS: Final[dict[str, int]] = {"starttls": 587, "tls": 465, "plain": 25}
SUBJECT: Final = "Your verification code"
SERVICE_NAME: Final = "MPG"
#: Longest first wait between tries (doubled per retry): a mail server's "try later"
#: rarely clears within a fraction of a second, and the caller is waiting.
RETRY_BASE_DELAY: Final = 1.0
#: RFC 5321's limit on a path (address plus angle brackets).
MAX_ADDRESS_CHARS: Final = 254

_log = structlog.get_logger("mpg.server.mail")

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("mpg.server", "mail_templates"),
    # The HTML part escapes every value; the plain-text part must not.
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    """Where and how to hand mails to the mail server (the ``server.mail_*`` keys)."""

    host: str
    port: int
    security: Security
    sender: str
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    ca_bundle: pathlib.Path | None = None
    timeout: float = 30.0
    attempts: int = 4
    retry_max_delay: float = 10.0

    @classmethod
    def from_server(cls, settings: config.ServerSettings) -> SmtpSettings:
        """The SMTP settings of a server configuration; ConfigError when mail is off."""
        if not settings.mail_host:
            raise errors.ConfigError(
                "server.mail_host: missing; verification mails need an SMTP server"
            )
        return cls(
            host=settings.mail_host,
            port=settings.mail_port or DEFAULT_PORTS[settings.mail_security],
            security=settings.mail_security,
            sender=settings.mail_from,
            username=settings.mail_username,
            password=settings.mail_password_text(),
            ca_bundle=settings.mail_ca_bundle,
            timeout=settings.mail_timeout,
            attempts=settings.mail_attempts,
            retry_max_delay=settings.mail_retry_max_delay,
        )


def verification_message(
    *, sender: str, to: str, code: str, valid_for: dt.timedelta
) -> email.message.EmailMessage:
    """The verification mail: a plain-text part and an HTML alternative carrying ``code``.

    Raises :class:`mpg.errors.ValidationError` (field ``email``) for an address that is
    not one address.
    """
    address = _checked_address(to)
    values = {
        "code": code,
        "minutes": max(1, round(valid_for.total_seconds() / 60)),
        "address": address,
        "service": SERVICE_NAME,
    }
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = address
    message["Subject"] = SUBJECT
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message.set_content(_templates.get_template("verification.txt").render(values))
    message.add_alternative(
        _templates.get_template("verification.html").render(values), subtype="html"
    )
    return message


def _checked_address(to: str) -> str:
    """``to`` when it is one bare address (no display name, no line breaks), its domain
    in ASCII (IDNA): every mail server takes that, while a non-ASCII address needs the
    server's SMTPUTF8, so a non-ASCII local part is refused rather than failing later."""
    if len(to) > MAX_ADDRESS_CHARS:
        raise errors.ValidationError("email", f"longer than {MAX_ADDRESS_CHARS} characters")
    if not to.rpartition("@")[0].isascii():
        raise errors.ValidationError(
            "email", "the part before @ has non-ASCII characters, which is not supported"
        )
    try:
        parsed = email.headerregistry.Address(addr_spec=to)
        if not parsed.username or not parsed.domain or parsed.addr_spec != to:
            raise ValueError("user@domain expected")
        domain = parsed.domain.encode("idna").decode("ascii")
    except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
        raise errors.ValidationError("email", f"not an e-mail address: {exc}") from None
    return email.headerregistry.Address(username=parsed.username, domain=domain).addr_spec


class Mailer:
    """Sends messages through one SMTP server, retrying transient failures.

    ``sleep`` waits between tries; tests pass one that records instead of waiting.
    """

    def __init__(
        self, settings: SmtpSettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._settings = settings
        self._sleep = sleep

    def send(self, message: email.message.EmailMessage) -> None:
        """Deliver ``message`` to the mail server, or raise MailRefused / MailError."""
        to = str(message["To"])
        attempts = self._settings.attempts
        for attempt in range(1, attempts + 1):
            try:
                self._send_once(message, to)
            except errors.MailTryFailed as exc:
                if attempt == attempts:
                    raise errors.MailError(
                        f"mail to {to} not sent after {attempts} tries: {exc}"
                    ) from None
                wait = backoff.delay(
                    attempt, max_delay=self._settings.retry_max_delay, base=RETRY_BASE_DELAY
                )
                # Servers often echo the address in their reply; the log must not hold it.
                reason = str(exc).replace(to, "<address>")
                _log.warning("mail_retry", attempt=attempt, reason=reason, wait=round(wait, 2))
                self._sleep(wait)
            else:
                _log.info("mail_sent", attempts=attempt)
                return

    def _send_once(self, message: email.message.EmailMessage, to: str) -> None:
        s = self._settings
        where = f"{s.host}:{s.port}"
        context = tlstrust.context(s.ca_bundle, "server.mail_ca_bundle")
        try:
            smtp = (
                smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
                if s.security == "tls"
                else smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            )
            with smtp:
                if s.security == "starttls":
                    smtp.starttls(context=context)
                if s.username:
                    smtp.login(s.username, s.password)
                smtp.send_message(message, from_addr=s.sender, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(to, (0, b"refused"))
            _raise_for_reply(to, code, text)
        except smtplib.SMTPAuthenticationError as exc:
            if 400 <= exc.smtp_code < 500:
                raise errors.MailTryFailed(
                    f"{where}: login: {_reply(exc.smtp_code, exc.smtp_error)}"
                ) from exc
            raise errors.MailError(
                f"mail server {where} refused the login of {s.username!r}: "
                f"{_reply(exc.smtp_code, exc.smtp_error)}; check server.mail_username and "
                "the password"
            ) from None
        except smtplib.SMTPResponseException as exc:
            _raise_for_reply(to, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPServerDisconnected as exc:
            raise errors.MailTryFailed(f"{where}: connection lost: {exc}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise errors.MailError(
                f"mail server {where} lacks what server.mail_security or mail_username need: {exc}"
            ) from None
        except smtplib.SMTPException as exc:
            raise errors.MailError(f"mail server {where}: {exc}") from None
        except ssl.SSLError as exc:
            # Before OSError (its base): a certificate or protocol mismatch is configuration.
            raise errors.MailError(
                f"mail server {where}: TLS failed ({exc.reason or exc}); check "
                "server.mail_security, mail_port and mail_ca_bundle"
            ) from None
        except OSError as exc:
            raise errors.MailTryFailed(f"{where}: {exc.strerror or exc}") from exc


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}"


def _raise_for_reply(to: str, code: int, text: bytes | str) -> NoReturn:
    """A 5xx reply is the server's final word; anything else (4xx, a broken reply) is
    worth another try."""
    if not 500 <= code < 600:
        raise errors.MailTryFailed(f"mail server replied {_reply(code, text)}")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    raise errors.MailRefused(to, code, text)
