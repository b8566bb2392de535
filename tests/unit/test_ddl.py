"""Generated DDL: schema/*.sql match tables.py, and tables.py matches reference §4."""

from __future__ import annotations

import pathlib

import pytest
import sqlalchemy as sa

from mpg.storage import ddl, tables

#: Reference §4, copied literally (SQL Server types, in column order). The one
#: deliberate difference is SourceUri: nvarchar(10) in the document, widened to
#: nvarchar(2048) (docs/schema.md explains why).
REFERENCE: dict[str, list[tuple[str, str]]] = {
    "Outbox": [
        ("TxMessageId", "nvarchar(50)"),
        ("AppCode", "nvarchar(20)"),
        ("SourceDomain", "nvarchar(50)"),
        ("AgentSender", "nvarchar(100)"),
        ("Sender", "nvarchar(100)"),
        ("ReceiverType", "char(1)"),
        ("ReceiverList", "nvarchar(max)"),
        ("BccList", "nvarchar(max)"),
        ("Subject", "nvarchar(200)"),
        ("Content", "nvarchar(max)"),
        ("ContentType", "nvarchar(20)"),
        ("AttachmentList", "nvarchar(max)"),
        ("AlertFlag", "bit"),
        ("MessageId", "nvarchar(50)"),
        ("State", "int"),
        ("TransmitTime", "nchar(20)"),
        ("StatusTime", "nchar(20)"),
        ("StatusLog", "nvarchar(200)"),
        ("Priority", "nvarchar(1)"),
        ("Keywords", "nvarchar(200)"),
    ],
    "Inbox": [
        ("RxMessageId", "nvarchar(50)"),
        ("AppCode", "nvarchar(20)"),
        ("SourceDomain", "nvarchar(50)"),
        ("AgentSender", "nvarchar(100)"),
        ("Sender", "nvarchar(100)"),
        ("Owner", "nvarchar(max)"),
        ("ReceiverType", "char(1)"),
        ("ReceiverList", "nvarchar(max)"),
        ("BccList", "nvarchar(max)"),
        ("Subject", "nvarchar(200)"),
        ("Content", "nvarchar(max)"),
        ("ContentType", "nvarchar(20)"),
        ("AttachmentFlag", "bit"),
        ("AlertFlag", "bit"),
        ("MessageId", "nvarchar(50)"),
        ("State", "int"),
        ("TransmitTime", "nchar(20)"),
        ("ReceiveTime", "nchar(20)"),
        ("StatusTime", "nchar(20)"),
        ("StatusLog", "nvarchar(200)"),
        ("Priority", "nvarchar(1)"),
        ("Keywords", "nvarchar(200)"),
    ],
}
_ATTACHMENT = [
    ("AttachmentId", "uniqueidentifier"),
    ("MessageId", "nvarchar(50)"),
    ("SeqNo", "int"),
    ("FileName", "nvarchar(250)"),
    ("FileType", "nvarchar(10)"),
    ("FileSize", "int"),
    ("FileData", "varbinary(max)"),
    ("SourceUri", "nvarchar(2048)"),  # the document says nvarchar(10): see docs/schema.md
    ("DownloadFlag", "int"),
]
REFERENCE["OutboxAttachment"] = _ATTACHMENT
REFERENCE["InboxAttachment"] = _ATTACHMENT
PRIMARY_KEYS = {
    "Outbox": "TxMessageId",
    "Inbox": "RxMessageId",
    "OutboxAttachment": "AttachmentId",
    "InboxAttachment": "AttachmentId",
}


def _sql_server_type(column: sa.Column[object]) -> str:
    compiled = column.type.compile(dialect=ddl._dialects()["mssql"])
    return compiled.upper().replace("INTEGER", "INT")


@pytest.mark.parametrize("name", ddl.DIALECTS)
def test_schema_file_matches_what_ddl_generates(name: str) -> None:
    """schema/<dialect>.sql is exactly ddl.render(); run `python -m mpg.storage.ddl --write`."""
    path = ddl.path_for(name)
    assert path.exists(), f"{path} is missing: run python -m mpg.storage.ddl --write"
    assert path.read_text(encoding="utf-8") == ddl.render(name), (
        f"{path} drifted from mpg/storage/tables.py: run python -m mpg.storage.ddl --write"
    )


@pytest.mark.parametrize("table", tables.CONTRACT_TABLES, ids=lambda t: t.name)
def test_contract_tables_keep_reference_column_order_and_widths(table: sa.Table) -> None:
    """Names, order and SQL Server types of each contract table are reference §4's."""
    actual = [(c.name, _sql_server_type(c)) for c in table.columns]
    expected = [(n, t.upper()) for n, t in REFERENCE[table.name]]
    assert actual == expected
    assert [c.name for c in table.primary_key.columns] == [PRIMARY_KEYS[table.name]]


def test_mssql_ddl_uses_the_documented_types() -> None:
    """SQL Server gets NVARCHAR(max)/VARBINARY(max), never the deprecated NTEXT/IMAGE."""
    text = ddl.render("mssql")
    for wanted in (
        "[TxMessageId] NVARCHAR(50) NOT NULL",
        "[ReceiverType] CHAR(1)",
        "[Content] NVARCHAR(max)",
        "[StatusTime] NCHAR(20)",
        "[AlertFlag] BIT",
        "[State] INTEGER",
        "[AttachmentId] UNIQUEIDENTIFIER NOT NULL",
        "[FileData] VARBINARY(max)",
        "[SourceUri] NVARCHAR(2048)",
    ):
        assert wanted in text
    assert "NTEXT" not in text
    assert "IMAGE" not in text


def test_mariadb_ddl_is_utf8mb4_with_long_types() -> None:
    """MariaDB tables are utf8mb4 and use LONGTEXT/LONGBLOB for the (max) columns."""
    text = ddl.render("mariadb")
    assert text.count("CHARSET=utf8mb4") == len(tables.CONTRACT_TABLES) + len(tables.OWN_TABLES)
    assert "`Content` LONGTEXT" in text
    assert "`FileData` LONGBLOB" in text
    assert "NATIONAL" not in text  # NATIONAL CHAR would be utf8mb3


@pytest.mark.parametrize("name", ddl.DIALECTS)
def test_render_is_deterministic_and_has_the_generated_header(name: str) -> None:
    """Two renders are identical and say how to regenerate them."""
    first = ddl.render(name)
    assert first == ddl.render(name)
    assert "python -m mpg.storage.ddl --write" in first.splitlines()[2]
    for table in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES):
        assert f"CREATE TABLE {_quoted(name, table.name)}" in first
    assert "IX_Outbox_State" in first


def _quoted(dialect: str, name: str) -> str:
    return {"mssql": f"[{name}]", "mariadb": f"`{name}`"}.get(dialect, f'"{name}"')


def test_check_exits_1_on_drift_and_write_repairs_it(tmp_path: pathlib.Path) -> None:
    """`--check` fails on a missing or edited file and passes after `--write`."""
    assert ddl.main(["--check", "--dir", str(tmp_path)]) == 1
    assert ddl.main(["--write", "--dir", str(tmp_path)]) == 0
    assert ddl.main(["--check", "--dir", str(tmp_path)]) == 0
    edited = ddl.path_for("sqlite", tmp_path)
    edited.write_text(edited.read_text(encoding="utf-8") + "-- local edit\n", encoding="utf-8")
    assert ddl.main(["--check", "--dir", str(tmp_path)]) == 1
    assert ddl.drifted(tmp_path) == ["sqlite"]


def test_check_passes_on_the_repository_schema_dir() -> None:
    """The committed schema/ directory is up to date."""
    assert ddl.main(["--check"]) == 0
