"""The server.mail_* keys and the verification message (no network)."""

from __future__ import annotations

import datetime as dt
import os
import pathlib

import pytest

from mpg import config, errors
from mpg.server import mail


def _load(tmp_path: pathlib.Path, body: str) -> config.Settings:
    path = tmp_path / "mpg.toml"
    path.write_text("[server]\n" + body, encoding="utf-8")
    return config.load(path)


def test_mail_is_off_by_default_and_asking_for_it_names_the_key() -> None:
    with pytest.raises(errors.ConfigError, match=r"server\.mail_host: missing"):
        mail.SmtpSettings.from_server(config.ServerSettings())


@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("tls", 465)])
def test_the_port_defaults_to_the_one_of_the_security_chosen(security: str, port: int) -> None:
    settings = config.ServerSettings(
        mail_host="smtp.example", mail_from="noreply@example.org", mail_security=security
    )
    assert mail.SmtpSettings.from_server(settings).port == port


def test_plain_smtp_is_refused_off_loopback(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match='"plain" is allowed only on loopback'):
        _load(
            tmp_path,
            'mail_host = "smtp.example"\nmail_from = "a@example.org"\nmail_security = "plain"\n',
        )


def test_plain_smtp_is_accepted_on_a_loopback_address(tmp_path: pathlib.Path) -> None:
    settings = _load(
        tmp_path, 'mail_host = "127.0.0.1"\nmail_from = "a@example.org"\nmail_security = "plain"\n'
    )
    assert mail.SmtpSettings.from_server(settings.server).port == 25


def test_a_mail_host_needs_a_sender(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="mail_from: required when mail_host is set"):
        _load(tmp_path, 'mail_host = "smtp.example"\n')


def test_a_user_name_without_a_password_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="mail_username and mail_password"):
        _load(
            tmp_path,
            'mail_host = "smtp.example"\nmail_from = "a@example.org"\nmail_username = "u"\n',
        )


def test_the_password_comes_from_the_environment_and_stays_hidden(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPG_SERVER__MAIL_PASSWORD", "pw-from-env")
    settings = _load(
        tmp_path, 'mail_host = "smtp.example"\nmail_from = "a@example.org"\nmail_username = "u"\n'
    )
    smtp = mail.SmtpSettings.from_server(settings.server)
    assert smtp.password == "pw-from-env"
    assert "pw-from-env" not in repr(smtp)
    assert "pw-from-env" not in repr(settings)


def test_the_password_comes_from_a_file_relative_to_the_config(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "smtp.pw"
    secret.write_text("pw-from-file\n", encoding="utf-8")
    os.chmod(secret, 0o600)
    settings = _load(
        tmp_path,
        'mail_host = "smtp.example"\nmail_from = "a@example.org"\nmail_username = "u"\n'
        'mail_password_file = "smtp.pw"\n',
    )
    assert mail.SmtpSettings.from_server(settings.server).password == "pw-from-file"


def test_a_password_file_others_may_write_is_refused(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "smtp.pw"
    secret.write_text("pw", encoding="utf-8")
    os.chmod(secret, 0o666)  # noqa: S103 (the mistake under test)
    settings = _load(
        tmp_path,
        'mail_host = "smtp.example"\nmail_from = "a@example.org"\nmail_username = "u"\n'
        'mail_password_file = "smtp.pw"\n',
    )
    with pytest.raises(errors.ConfigError, match=r"mail_password_file: .* writable by others"):
        mail.SmtpSettings.from_server(settings.server)


def test_the_message_has_a_plain_and_an_html_part_with_the_code() -> None:
    message = mail.verification_message(
        sender="noreply@example.org",
        to="a@example.org",
        code="123456",
        valid_for=dt.timedelta(minutes=10),
    )
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "123456" in plain.get_content()
    assert "valid for 10 minutes" in plain.get_content()
    assert (
        '<p style="font-size: 2em; font-weight: bold; letter-spacing: 0.2em;" id="code">123456</p>'
        in html.get_content()
    )
    assert message["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org\r\nBcc: victim@example.org",
        "Anna <a@example.org>",
        "a@example.org, b@example.org",
        "no-at-sign",
        "@example.org",
        "x" * 250 + "@example.org",
        "jörg@example.org",
    ],
)
def test_anything_but_one_bare_address_is_refused(address: str) -> None:
    with pytest.raises(errors.ValidationError, match="email: "):
        mail.verification_message(
            sender="noreply@example.org", to=address, code="1", valid_for=dt.timedelta(minutes=5)
        )


def test_a_domain_in_another_script_is_sent_in_its_ascii_form() -> None:
    message = mail.verification_message(
        sender="noreply@example.org",
        to="anna@müller.example",
        code="1",
        valid_for=dt.timedelta(minutes=5),
    )
    assert message["To"] == "anna@xn--mller-kva.example"


def test_the_html_part_escapes_what_the_address_may_hold() -> None:
    message = mail.verification_message(
        sender="noreply@example.org",
        to='"<b>x</b>"@example.org',
        code="1",
        valid_for=dt.timedelta(minutes=5),
    )
    assert message["To"] == '"<b>x</b>"@example.org'
    html = message.get_body(("html",))
    assert html is not None
    assert "&lt;b&gt;x&lt;/b&gt;" in html.get_content()
    assert "<b>" not in html.get_content()
