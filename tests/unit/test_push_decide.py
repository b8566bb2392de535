"""What a push job becomes after each outcome (mpg.server.push.jobs.decide)."""

from __future__ import annotations

import pytest

from mpg.server.push import jobs, outcome
from mpg.server.push.jobs import JobState
from mpg.server.push.outcome import PushOutcome

NOW = 1000.0


def decide(result: PushOutcome, attempts: int = 1, backoff: float = 10.0) -> jobs.Decision:
    return jobs.decide(result, attempts, NOW, max_attempts=5, backoff=backoff)


def test_a_retry_waits_for_the_longer_of_retry_after_and_the_backoff() -> None:
    assert decide(outcome.retry("QUOTA_EXCEEDED", after=60)).not_before == NOW + 60
    assert decide(outcome.retry("UNAVAILABLE", after=3)).not_before == NOW + 10
    assert decide(outcome.retry("timeout")).not_before == NOW + 10
    assert decide(outcome.retry("x")).state is JobState.PENDING


def test_a_retry_after_the_last_attempt_gives_up() -> None:
    assert decide(outcome.retry("UNAVAILABLE"), attempts=5) == jobs.Decision(JobState.FAILED)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (outcome.delivered("id"), jobs.Decision(JobState.SENT)),
        (outcome.token_gone("UNREGISTERED"), jobs.Decision(JobState.FAILED, token="removed")),
        (outcome.token_flagged("BadDeviceToken"), jobs.Decision(JobState.FAILED, token="flagged")),
        (outcome.config_alarm("DeviceTokenNotForTopic"), jobs.Decision(JobState.PARKED)),
        (outcome.message_error("PayloadTooLarge"), jobs.Decision(JobState.FAILED)),
    ],
    ids=["delivered", "token-gone", "token-flagged", "config-alarm", "message-error"],
)
def test_every_other_outcome_is_final_or_parked(
    result: PushOutcome, expected: jobs.Decision
) -> None:
    assert decide(result) == expected
