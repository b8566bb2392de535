"""Verification mails through a real SMTP server (aiosmtpd) on loopback: STARTTLS and
implicit TLS with a throwaway CA (trustme), AUTH, retries and refusals."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.message
import email.policy
import pathlib
import re
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import structlog.testing
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from harness import free_port

from mpg import errors
from mpg.server import mail

USER = "mpg-mailer"
PASSWORD = "s3cret-pw"
SENDER = "noreply@mpg.example"
TO = "anna.meier@firma.example"
CODE = "492817"


class SmtpInbox:
    """An aiosmtpd handler that keeps what it accepts and answers scripted replies first."""

    def __init__(self, *, rcpt_replies: tuple[str, ...] = (), data_replies: tuple[str, ...] = ()):
        self.rcpt_replies = list(rcpt_replies)
        self.data_replies = list(data_replies)
        self.received: list[bytes] = []
        self.logins: list[bytes] = []

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_replies:
            return self.data_replies.pop(0)
        self.received.append(envelope.original_content)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok:
            self.logins.append(auth_data.login)
        return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, pathlib.Path]:
    """A server TLS context for 127.0.0.1 and the CA file that trusts it."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("mailca") / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


class Sleeps(list[float]):
    """Records the waits between tries instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@contextlib.contextmanager
def serving(handler: SmtpInbox, **kwargs: Any) -> Iterator[int]:
    """An aiosmtpd server on a free loopback port for the duration of the block."""
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=handler.authenticate, **kwargs
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def inbox() -> SmtpInbox:
    return SmtpInbox()


@pytest.fixture
def starttls_port(inbox: SmtpInbox, ca: tuple[ssl.SSLContext, pathlib.Path]) -> Iterator[int]:
    with serving(inbox, tls_context=ca[0], require_starttls=True, auth_required=True) as port:
        yield port


def _settings(port: int, ca_file: pathlib.Path | None, **changes: Any) -> mail.SmtpSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "starttls",
        "sender": SENDER,
        "username": USER,
        "password": PASSWORD,
        "ca_bundle": ca_file,
        "timeout": 10.0,
        "attempts": 3,
    }
    values.update(changes)
    return mail.SmtpSettings(**values)


def _message(to: str = TO) -> email.message.EmailMessage:
    return mail.verification_message(
        sender=SENDER, to=to, code=CODE, valid_for=dt.timedelta(minutes=10)
    )


def _codes_in(raw: bytes) -> tuple[str, str]:
    """The six-digit code read from the plain-text part and from the HTML part."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    plain_match = re.search(r"code is: (\d{6})", plain.get_content())
    html_match = re.search(r'id="code">(\d{6})<', html.get_content())
    assert plain_match
    assert html_match
    return plain_match.group(1), html_match.group(1)


def test_starttls_with_login_delivers_the_code_in_both_parts(
    inbox: SmtpInbox, starttls_port: int, ca: tuple[ssl.SSLContext, pathlib.Path]
) -> None:
    sleeps = Sleeps()
    mail.Mailer(_settings(starttls_port, ca[1]), sleep=sleeps).send(_message())

    assert len(inbox.received) == 1
    assert _codes_in(inbox.received[0]) == (CODE, CODE)
    assert inbox.logins == [USER.encode()]
    assert sleeps == []


def test_implicit_tls_with_login_delivers_the_code(
    inbox: SmtpInbox, ca: tuple[ssl.SSLContext, pathlib.Path]
) -> None:
    # aiosmtpd 1.4 offers AUTH only after STARTTLS unless told that implicit TLS counts
    # (and warns when AUTH is then also required); ``logins`` shows the login happened.
    with serving(inbox, ssl_context=ca[0], auth_require_tls=False) as port:
        mail.Mailer(_settings(port, ca[1], security="tls")).send(_message())

    assert [_codes_in(raw) for raw in inbox.received] == [(CODE, CODE)]
    assert inbox.logins == [USER.encode()]


def test_plain_smtp_on_loopback_without_login_delivers(inbox: SmtpInbox) -> None:
    with serving(inbox) as port:
        mail.Mailer(_settings(port, None, security="plain", username="", password="")).send(
            _message()
        )

    assert [_codes_in(raw) for raw in inbox.received] == [(CODE, CODE)]


def test_a_451_reply_is_retried_and_the_mail_goes_out_once(
    ca: tuple[ssl.SSLContext, pathlib.Path],
) -> None:
    inbox = SmtpInbox(data_replies=(f"451 4.7.1 <{TO}>: greylisted, try later",))
    sleeps = Sleeps()
    with (
        serving(inbox, tls_context=ca[0], require_starttls=True) as port,
        structlog.testing.capture_logs() as logged,
    ):
        mail.Mailer(_settings(port, ca[1]), sleep=sleeps).send(_message())

    assert len(sleeps) == 1
    assert [_codes_in(raw) for raw in inbox.received] == [(CODE, CODE)]
    retries = [event for event in logged if event["event"] == "mail_retry"]
    assert [event["reason"] for event in retries] == [
        "mail server replied 451 4.7.1 <<address>>: greylisted, try later"
    ]
    assert TO not in repr(logged)


def test_a_550_reply_is_a_permanent_refusal_naming_the_address_and_the_reply(
    ca: tuple[ssl.SSLContext, pathlib.Path],
) -> None:
    inbox = SmtpInbox(rcpt_replies=("550 5.1.1 No such user here",))
    sleeps = Sleeps()
    with (
        serving(inbox, tls_context=ca[0], require_starttls=True) as port,
        pytest.raises(errors.MailRefused) as caught,
    ):
        mail.Mailer(_settings(port, ca[1]), sleep=sleeps).send(_message())

    assert caught.value.address == TO
    assert caught.value.code == 550
    assert TO in str(caught.value)
    assert "5.1.1 No such user here" in str(caught.value)
    assert sleeps == []
    assert inbox.received == []


def test_transient_replies_on_every_try_give_a_mail_error_after_the_last_try(
    ca: tuple[ssl.SSLContext, pathlib.Path],
) -> None:
    inbox = SmtpInbox(data_replies=("452 4.3.1 Insufficient system storage",) * 3)
    sleeps = Sleeps()
    with (
        serving(inbox, tls_context=ca[0], require_starttls=True) as port,
        pytest.raises(errors.MailError, match=r"not sent after 3 tries: .*452 4\.3\.1"),
    ):
        mail.Mailer(_settings(port, ca[1], attempts=3), sleep=sleeps).send(_message())

    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 2.0
    assert inbox.received == []


def test_a_closed_port_is_retried_then_reported() -> None:
    sleeps = Sleeps()
    with pytest.raises(errors.MailError, match=r"not sent after 2 tries: 127\.0\.0\.1:\d+"):
        mail.Mailer(_settings(free_port(), None, attempts=2), sleep=sleeps).send(_message())

    assert len(sleeps) == 1


def test_a_wrong_password_is_reported_at_once(
    inbox: SmtpInbox, starttls_port: int, ca: tuple[ssl.SSLContext, pathlib.Path]
) -> None:
    sleeps = Sleeps()
    with pytest.raises(errors.MailError, match="refused the login of 'mpg-mailer': 535"):
        mail.Mailer(_settings(starttls_port, ca[1], password="wrong"), sleep=sleeps).send(
            _message()
        )

    assert sleeps == []
    assert inbox.received == []


def test_an_untrusted_certificate_is_reported_at_once(inbox: SmtpInbox, starttls_port: int) -> None:
    sleeps = Sleeps()
    with pytest.raises(errors.MailError, match=r"TLS failed .*CERTIFICATE_VERIFY_FAILED"):
        mail.Mailer(_settings(starttls_port, None), sleep=sleeps).send(_message())

    assert sleeps == []
    assert inbox.received == []


def test_a_server_without_starttls_is_reported_when_starttls_is_asked_for(
    inbox: SmtpInbox,
) -> None:
    with (
        serving(inbox) as port,
        pytest.raises(errors.MailError, match=r"lacks .*STARTTLS extension not supported"),
    ):
        mail.Mailer(_settings(port, None)).send(_message())

    assert inbox.received == []


def test_an_unreadable_ca_bundle_is_a_configuration_error(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(
        errors.ConfigError, match=r"server\.mail_ca_bundle: cannot use .*no-such-ca"
    ):
        mail.Mailer(_settings(free_port(), missing)).send(_message())
