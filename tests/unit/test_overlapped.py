"""The sender's overlap of a request with the next claim (outbound.overlapped)."""

from __future__ import annotations

import threading

import pytest

from mpg.gateway.outbound import overlapped


def test_the_request_and_the_meanwhile_work_run_at_the_same_time() -> None:
    """Each waits for the other: run one after the other, both would time out."""
    sent, claimed = threading.Event(), threading.Event()

    def send() -> str:
        sent.set()
        assert claimed.wait(5)
        return "answer"

    def meanwhile() -> None:
        assert sent.wait(5)
        claimed.set()

    assert overlapped(send, meanwhile) == ("answer", None)


def test_a_failure_meanwhile_comes_back_with_the_answer_to_record_first() -> None:
    def meanwhile() -> None:
        raise OSError("database is locked")

    answer, trouble = overlapped(lambda: 42, meanwhile)
    assert answer == 42
    assert isinstance(trouble, OSError)


def test_a_failed_request_is_raised_once_the_meanwhile_work_is_done() -> None:
    done: list[bool] = []

    def send() -> int:
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError, match="no answer"):
        overlapped(send, lambda: done.append(True))
    assert done == [True]
