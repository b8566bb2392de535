"""Logging: JSON lines to the given stream, ISO UTC timestamps, secrets and bodies redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Literal

import pytest
import structlog

from mpg import config, logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging itself; put the defaults back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _configure(
    fmt: Literal["auto", "json", "console"] = "json",
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> io.StringIO:
    stream = io.StringIO()
    logs.configure(config.LogSettings(format=fmt, level=level), "gateway", stream=stream)
    return stream


def test_events_are_json_lines_with_utc_timestamp_and_component() -> None:
    """A structlog event is one JSON object with event, level, component and a UTC time."""
    stream = _configure()
    structlog.get_logger("t").info("message_sent", tx="tx-1", to=29)
    (event,) = _json_lines(stream)
    assert event["event"] == "message_sent"
    assert event["tx"] == "tx-1"
    assert event["level"] == "info"
    assert event["component"] == "gateway"
    assert str(event["timestamp"]).endswith("Z")


@pytest.mark.parametrize(
    "key",
    [
        "secret",
        "key",
        "token",
        "password",
        "content",
        "file_data",
        "credential",
        "master_key",
        "FileData",
        "Content",
    ],
)
def test_sensitive_values_never_reach_the_output(key: str) -> None:
    """A value logged under a sensitive key is masked; the rest of the event survives."""
    stream = _configure()
    structlog.get_logger("t").info("oops", tx="tx-2", **{key: "TOP-SECRET-VALUE"})
    text = stream.getvalue()
    assert "TOP-SECRET-VALUE" not in text
    (event,) = _json_lines(stream)
    assert event[key] == logs.REDACTED
    assert event["tx"] == "tx-2"


def test_nested_rows_are_redacted() -> None:
    """A whole row logged as a dict loses its Content and FileData, keeps its id."""
    stream = _configure()
    row = {"TxMessageId": "tx-3", "Content": "<content>私密</content>", "FileData": b"\x00\x01"}
    structlog.get_logger("t").warning("row_rejected", row=row)
    text = stream.getvalue()
    assert "私密" not in text
    (event,) = _json_lines(stream)
    assert event["row"] == {
        "TxMessageId": "tx-3",
        "Content": "[redacted]",
        "FileData": "[redacted]",
    }


def test_key_id_is_not_mistaken_for_a_key() -> None:
    """Identifiers that merely start with a sensitive word stay readable."""
    stream = _configure()
    structlog.get_logger("t").info("key_rotated", key_id="k2", content_type="MSG")
    (event,) = _json_lines(stream)
    assert event["key_id"] == "k2"
    assert event["content_type"] == "MSG"


def test_stdlib_logging_is_rendered_and_redacted_too() -> None:
    """Library logs through `logging` come out as the same JSON, redaction included."""
    stream = _configure()
    logging.getLogger("uvicorn.error").info("started", extra={"token": "TOP-SECRET-VALUE"})
    text = stream.getvalue()
    assert "TOP-SECRET-VALUE" not in text
    (event,) = _json_lines(stream)
    assert event["event"] == "started"
    assert event["component"] == "gateway"


def test_level_filters_lower_events() -> None:
    """At level warning, info events are dropped."""
    stream = _configure(level="warning")
    log = structlog.get_logger("t")
    log.info("quiet")
    log.warning("loud")
    assert [e["event"] for e in _json_lines(stream)] == ["loud"]


def test_wants_answers_as_the_configured_level_filters() -> None:
    """A caller that asks first logs exactly what the level lets through."""
    _configure(level="warning")
    assert not logs.wants(logging.INFO)
    assert logs.wants(logging.WARNING)
    stream = _configure(level="debug")
    assert logs.wants(logging.DEBUG)
    if logs.wants(logging.INFO):
        structlog.get_logger("t").info("message_accepted", tx="tx-1")
    assert [line["event"] for line in _json_lines(stream)] == ["message_accepted"]


@pytest.mark.parametrize("library", ["httpx", "httpcore.connection", "apscheduler.scheduler"])
def test_http_client_and_scheduler_info_lines_are_quiet_unless_debug(library: str) -> None:
    """A line per HTTP request or scheduler start is noise at info, shown at debug."""
    stream = _configure(level="info")
    logging.getLogger(library).info("HTTP Request: POST https://x/fetch")
    logging.getLogger(library).warning("real trouble")
    assert [e["event"] for e in _json_lines(stream)] == ["real trouble"]
    stream = _configure(level="debug")
    logging.getLogger(library).info("HTTP Request: POST https://x/fetch")
    assert [e["event"] for e in _json_lines(stream)] == ["HTTP Request: POST https://x/fetch"]


def test_console_format_is_not_json_and_still_redacts() -> None:
    """format = console renders readable lines, still without secrets."""
    stream = _configure(fmt="console")
    structlog.get_logger("t").info("hello", password="TOP-SECRET-VALUE")
    text = stream.getvalue()
    assert "hello" in text
    assert "TOP-SECRET-VALUE" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_auto_format_picks_json_off_a_terminal() -> None:
    """auto means JSON when the stream is not a TTY (services, pipes, CI)."""
    assert logs.wants_json("auto", io.StringIO())
    assert not logs.wants_json("console", io.StringIO())
    assert logs.wants_json("json", io.StringIO())


def test_a_huge_text_field_is_cut_with_its_length() -> None:
    """A field of 5.9 MB (a refusal naming 300,000 recipients) becomes 2,000 chars + length."""
    stream = _configure()
    huge = ";".join(f"n{i}@example.com" for i in range(300_000))
    structlog.get_logger("t").info("message_refused", reason=huge, tx="tx-1")
    (event,) = _json_lines(stream)
    reason = str(event["reason"])
    assert reason.startswith(huge[: logs.MAX_FIELD_CHARS])
    assert reason.endswith(f"… ({len(huge)} chars)")
    assert len(reason) < logs.MAX_FIELD_CHARS + 40
    assert event["tx"] == "tx-1"
