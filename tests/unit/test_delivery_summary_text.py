"""The delivery summary a device row's StatusLog ends with (mpg.gateway.deliverysummary)."""

from __future__ import annotations

from mpg.gateway import deliverysummary
from mpg.gateway.deliverysummary import Counts
from mpg.wire import model


def event(kind: str, account: str, detail: str = "") -> model.ServerEvent:
    return model.ServerEvent("2026-11-30T10:00:00.000000Z", kind, account, detail)


def test_the_counts_are_devices_per_step_not_events() -> None:
    events = [
        event("received", "erp@example.com", "queued for 3 recipient(s); 1 unknown"),
        event("notified", "dev-a"),
        event("notified", "dev-b"),
        event("push_failed", "dev-c", "hook: token_gone HTTP 410"),
        event("fetched", "dev-a"),
        event("fetched", "dev-a"),  # the lease ran out and it was fetched again
        event("acknowledged", "dev-a"),
        event("read", "dev-a"),
        event("withdrawn", "dev-c"),
    ]
    assert deliverysummary.count(events) == Counts(3, notified=2, fetched=1, read=1, recalled=1)


def test_without_the_received_event_there_is_no_summary() -> None:
    assert deliverysummary.count([event("fetched", "dev-a")]) is None


def test_the_line_reads_as_the_issue_shows_it() -> None:
    assert Counts(10, 10, 8, 3).line() == "sent: 10 devices, 10 notified, 8 fetched, 3 read"
    assert Counts(2, 2, 1, 0, recalled=1).line().endswith(", 0 read, 1 recalled")


def test_the_summary_follows_the_text_of_a_waiting_row() -> None:
    log = deliverysummary.status_log(
        "queued for 3 recipient(s); unknown recipient(s): group:south", Counts(3, 3, 1, 0)
    )
    assert log == (
        "queued for 3 recipient(s); unknown recipient(s): group:south; "
        "sent: 3 devices, 3 notified, 1 fetched, 0 read"
    )


def test_a_new_summary_replaces_the_old_one() -> None:
    old = "queued for 3 recipient(s); sent: 3 devices, 3 notified, 1 fetched, 0 read"
    new = deliverysummary.status_log(old, Counts(3, 3, 3, 2))
    assert new == "queued for 3 recipient(s); sent: 3 devices, 3 notified, 3 fetched, 2 read"


def test_the_summary_replaces_the_receipt_note_it_repeats() -> None:
    log = deliverysummary.status_log("sent: 3 recipient(s) served", Counts(3, 3, 3, 1))
    assert log == "sent: 3 devices, 3 notified, 3 fetched, 1 read"


def test_a_long_text_is_cut_so_the_summary_fits_the_column() -> None:
    log = deliverysummary.status_log("x" * 300, Counts(10_000, 9_999, 9_998, 9_997, 5))
    assert len(log) == 200
    assert log.endswith("; sent: 10000 devices, 9999 notified, 9998 fetched, 9997 read, 5 recalled")
    assert log.startswith("xxx")
    assert "…; sent:" in log


def test_a_row_is_finished_when_every_device_read_it() -> None:
    assert deliverysummary.finished("sent: 3 devices, 3 notified, 3 fetched, 3 read")
    assert not deliverysummary.finished("sent: 3 devices, 3 notified, 3 fetched, 2 read")
    assert not deliverysummary.finished("queued for 3 recipient(s)")
    assert not deliverysummary.finished(None)


def test_nothing_but_the_queuing_has_not_started() -> None:
    assert not Counts(3).started
    assert Counts(3, notified=1).started
    assert Counts(3, recalled=1).started
