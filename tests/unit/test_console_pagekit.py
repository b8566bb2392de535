"""How the management pages show times and ages, and read a UTC date field."""

from __future__ import annotations

import pytest

from mpg import errors
from mpg.server.console import pagekit


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "never"),
        (0, "0 s"),
        (59.9, "59 s"),
        (61, "1 min 1 s"),
        (3600, "1 h"),
        (3 * 86400 + 4 * 3600 + 5 * 60, "3 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_an_age_shows_its_two_largest_units(seconds: float | None, shown: str) -> None:
    assert pagekit.age(seconds) == shown


def test_a_time_is_shown_in_utc_to_the_minute() -> None:
    assert pagekit.when(1_800_000_000.0) == "2027-01-15 08:00 UTC"
    assert pagekit.when(None) == "never"


def test_a_datetime_local_field_is_read_as_utc_and_empty_is_none() -> None:
    assert pagekit.parse_utc("2027-01-15T08:00", "valid_until") == 1_800_000_000.0
    assert pagekit.parse_utc("  ", "valid_until") is None


def test_a_field_that_is_no_date_names_the_field() -> None:
    with pytest.raises(errors.ValidationError, match="valid_until"):
        pagekit.parse_utc("tomorrow", "valid_until")


def test_a_store_s_refusal_keeps_the_api_s_status_and_a_fault_is_none() -> None:
    assert pagekit.refusal_status(errors.Conflict("taken")) == 409
    assert pagekit.refusal_status(errors.ValidationError("name", "empty")) == 400
    assert pagekit.refusal_status(errors.MailError("down")) == 503
    assert pagekit.refusal_status(errors.StorageError("disk")) is None
