"""What became of one push: the answer every provider's ``send`` returns.

A job worker acts on the kind alone: DELIVERED ends the job; RETRY tries again, not
before ``retry_after`` seconds when it is set (else its own backoff); TOKEN_GONE
removes the device's token (recording the reason); TOKEN_FLAGGED keeps it but marks it
(an environment mix-up is more likely than a dead phone); CONFIG_ALARM stops sending
for that provider's configuration and tells the operator; MESSAGE_ERROR drops this
push (resending the same request cannot succeed).
"""

from __future__ import annotations

import dataclasses
import enum


class OutcomeKind(enum.StrEnum):
    """The classes of answers, by what the caller must do."""

    DELIVERED = "delivered"
    RETRY = "retry"
    TOKEN_GONE = "token_gone"  # noqa: S105 (an outcome, no secret)
    TOKEN_FLAGGED = "token_flagged"  # noqa: S105
    CONFIG_ALARM = "config_alarm"
    MESSAGE_ERROR = "message_error"


@dataclasses.dataclass(frozen=True, slots=True)
class PushOutcome:
    """One classified answer; ``reason`` is the provider's own word (``UNREGISTERED``)."""

    kind: OutcomeKind
    reason: str = ""
    #: RETRY only: the least seconds to wait (the provider's Retry-After); None: backoff.
    retry_after: float | None = None
    #: DELIVERED: the provider's id for the push (FCM message name, APNs ``apns-id``).
    provider_id: str = ""
    #: The provider's credential (not the device's token) was refused: renew it once and
    #: send again before treating this as the configuration alarm it otherwise is.
    renew_credential: bool = False

    @property
    def permanent(self) -> bool:
        """Sending the same push again cannot succeed."""
        return self.kind not in (OutcomeKind.RETRY, OutcomeKind.DELIVERED)


def delivered(provider_id: str = "") -> PushOutcome:
    """The provider accepted the push."""
    return PushOutcome(OutcomeKind.DELIVERED, provider_id=provider_id)


def retry(reason: str, after: float | None = None) -> PushOutcome:
    """Worth another try, not before ``after`` seconds when given."""
    return PushOutcome(OutcomeKind.RETRY, reason, retry_after=after)


def token_gone(reason: str) -> PushOutcome:
    """The device's token is dead: remove it."""
    return PushOutcome(OutcomeKind.TOKEN_GONE, reason)


def token_flagged(reason: str) -> PushOutcome:
    """The token was refused but may be right elsewhere (sandbox vs production): flag it."""
    return PushOutcome(OutcomeKind.TOKEN_FLAGGED, reason)


def config_alarm(reason: str, *, renew_credential: bool = False) -> PushOutcome:
    """The provider's configuration is wrong (topic, key, project): the operator must act."""
    return PushOutcome(OutcomeKind.CONFIG_ALARM, reason, renew_credential=renew_credential)


def message_error(reason: str) -> PushOutcome:
    """This request is wrong; another one may pass."""
    return PushOutcome(OutcomeKind.MESSAGE_ERROR, reason)
