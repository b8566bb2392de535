"""``mpg server domain …`` through click with a real SMTP server on loopback: the code
is read out of the received mail and typed back."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from devicerows import add_device, devices
from smtp_sink import Sink, smtp_sink

from mpg import errors
from mpg.cli import context
from mpg.cli import server as server_cli
from mpg.server import datakeys, tables


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with smtp_sink() as served:
        yield served


@pytest.fixture
def obj(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, sink: tuple[Sink, int]
) -> Iterator[context.CliContext]:
    for name in ("MPG_CONFIG", "MPG_SERVER__MASTER_KEY", "MPG_SERVER__DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndatabase_url = "sqlite:///{tmp_path / "server.db"}"\n'
        f'data_dir = "{tmp_path / "data"}"\nallow_plain_http = true\n'
        f'mail_host = "127.0.0.1"\nmail_port = {sink[1]}\nmail_security = "plain"\n'
        'mail_from = "noreply@mpg.example"\n'
    )
    ctx = context.CliContext(str(path))
    assert run(ctx, "init").exit_code == 0
    assert run(ctx, "group", "add", "north", "--name", "North").exit_code == 0
    yield ctx
    ctx.close()


def run(obj: context.CliContext, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(server_cli.server, list(args), obj=obj, input=input)


def test_a_domain_is_verified_with_the_mailed_code_and_removed_after_confirmation(
    obj: context.CliContext, sink: tuple[Sink, int]
) -> None:
    added = run(
        obj, "domain", "add", "firma.example", "--group", "north", "--email", "it@firma.example"
    )
    assert added.exit_code == 0, added.output
    assert "pending (code sent to it@firma.example)" in added.output
    wrong = run(obj, "domain", "verify", "firma.example", "000", "--group", "north")
    assert isinstance(wrong.exception, errors.Refused)
    assert wrong.exception.code == "code_malformed"
    code = sink[0].code()
    verified = run(obj, "domain", "verify", "firma.example", code, "--group", "north")
    assert verified.exit_code == 0, verified.output
    assert "verified" in run(obj, "domain", "list").output

    settings = obj.settings.server
    engine = tables.create_engine(settings.database_url)
    try:
        add_device(
            engine,
            datakeys.load_keyring(settings),
            group="north",
            via="email",
            via_ref="firma.example",
        )
        declined = run(obj, "domain", "remove", "firma.example", "--group", "north", input="n\n")
        assert "removes 1 device(s) registered through it in group north" in declined.output
        assert len(devices(engine)) == 1
        removed = run(obj, "domain", "remove", "firma.example", "--group", "north", "--yes")
        assert removed.exit_code == 0, removed.output
        assert devices(engine) == set()
    finally:
        engine.dispose()
    assert "and 1 device(s)" in removed.output


def test_resend_mails_another_code(obj: context.CliContext, sink: tuple[Sink, int]) -> None:
    run(obj, "domain", "add", "firma.example", "--group", "north", "--email", "it@firma.example")
    resent = run(obj, "domain", "resend", "firma.example", "--group", "north")
    assert resent.exit_code == 0, resent.output
    assert len(sink[0].received) == 2
    code = sink[0].code()
    assert run(obj, "domain", "verify", "firma.example", code, "--group", "north").exit_code == 0
