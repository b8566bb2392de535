"""Verification codes, their rate limits and registration codes (pure logic)."""

from __future__ import annotations

import pathlib
import random
import re
import tracemalloc

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mpg import errors
from mpg.server import verification as v

KEY = bytes(range(32))
SUBJECT = "device\0anna@firma.example\0phone-1"
POLICY = v.CodePolicy()


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _issue(code: int = 123456, now: float = 0.0) -> tuple[str, v.IssuedCode]:
    return v.issue(SUBJECT, key=KEY, now=now, randbelow=lambda _n: code)


def _other(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


# --- verification codes -----------------------------------------------------------


def test_the_record_holds_no_code_only_its_keyed_hash() -> None:
    code, record = _issue()
    assert code == "123456"
    assert code.encode() not in record.digest
    assert len(record.digest) == 32
    assert record.expires_at == POLICY.lifetime


def test_codes_are_zero_padded_to_their_digits() -> None:
    code, _ = _issue(code=42)
    assert code == "000042"
    code8, _ = v.issue(
        SUBJECT, key=KEY, now=0, policy=v.CodePolicy(digits=8), randbelow=lambda _n: 7
    )
    assert code8 == "00000007"


@given(st.integers(0, 999_999), st.integers(0, 999_999))
def test_a_wrong_code_fails_and_costs_one_try(issued: int, offered: int) -> None:
    assume(issued != offered)
    _, record = _issue(issued)
    verdict = v.check(record, SUBJECT, f"{offered:06d}", key=KEY, now=1)
    assert verdict.outcome is v.Outcome.WRONG
    assert not verdict.ok
    assert verdict.reason == "wrong code; 4 tries left"
    assert verdict.record.wrong_attempts == 1


def test_the_right_code_works_once() -> None:
    code, record = _issue()
    first = v.check(record, SUBJECT, code, key=KEY, now=1)
    assert first.ok
    assert first.reason == "code accepted"
    again = v.check(first.record, SUBJECT, code, key=KEY, now=2)
    assert again.outcome is v.Outcome.USED
    assert again.reason == "code already used; ask for a new code"


def test_spaces_and_hyphens_in_the_typed_code_do_not_matter() -> None:
    code, record = _issue()
    assert v.check(record, SUBJECT, " 123-456 ", key=KEY, now=1).ok
    assert code == "123456"


def test_the_code_proves_nothing_for_another_subject_or_key() -> None:
    code, record = _issue()
    other_device = "device\0anna@firma.example\0phone-2"
    assert v.check(record, other_device, code, key=KEY, now=1).outcome is v.Outcome.WRONG
    assert v.check(record, SUBJECT, code, key=bytes(32), now=1).outcome is v.Outcome.WRONG


def test_an_expired_code_fails_with_its_own_reason_even_when_right() -> None:
    code, record = _issue(now=0)
    verdict = v.check(record, SUBJECT, code, key=KEY, now=POLICY.lifetime)
    assert verdict.outcome is v.Outcome.EXPIRED
    assert verdict.reason == "code expired; ask for a new code"
    assert verdict.record == record
    assert v.check(record, SUBJECT, code, key=KEY, now=POLICY.lifetime - 0.001).ok


def test_after_the_last_wrong_try_even_the_right_code_is_refused() -> None:
    code, record = _issue()
    reasons = []
    for _ in range(POLICY.max_attempts):
        verdict = v.check(record, SUBJECT, _other(code), key=KEY, now=1)
        reasons.append(verdict.reason)
        record = verdict.record
    assert reasons[-2:] == [
        "wrong code; 1 try left",
        "wrong code; no tries left, ask for a new code",
    ]
    blocked = v.check(record, SUBJECT, code, key=KEY, now=1)
    assert blocked.outcome is v.Outcome.EXHAUSTED
    assert blocked.reason == "too many wrong tries for this code; ask for a new code"
    assert not blocked.record.used


@pytest.mark.parametrize("offered", ["12345", "1234567", "12a456", "١٢٣٤٥٦", "", "9" * 10_000])
def test_a_malformed_code_is_refused_without_costing_a_try(offered: str) -> None:
    _, record = _issue()
    verdict = v.check(record, SUBJECT, offered, key=KEY, now=1)
    assert verdict.outcome is v.Outcome.MALFORMED
    assert verdict.reason == "a code is 6 digits"
    assert verdict.record.wrong_attempts == 0


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        v.issue(SUBJECT, key=b"short", now=0)


def test_policies_outside_their_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="digits"):
        v.CodePolicy(digits=4)
    with pytest.raises(ValueError, match="max_attempts"):
        v.CodePolicy(max_attempts=0)


# --- rate limits --------------------------------------------------------------------


def test_a_rate_allows_its_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = v.RateLimiter(v.Rate(3, 60.0), clock=clock, max_keys=10)
    for _ in range(3):
        assert limiter.wait("k") == 0
        limiter.charge("k")
    assert limiter.wait("k") == pytest.approx(20.0)
    clock.now += 20.0
    assert limiter.wait("k") == 0
    assert limiter.wait("other") == 0


@given(st.lists(st.floats(0, 50.0), min_size=1, max_size=200))
def test_no_span_holds_more_than_the_burst_plus_one_per_interval(gaps: list[float]) -> None:
    clock = FakeClock(0.0)
    rate = v.Rate(5, 100.0)
    interval = rate.per / rate.count
    limiter = v.RateLimiter(rate, clock=clock, max_keys=10)
    allowed: list[float] = []
    for gap in gaps:
        clock.now += gap
        if limiter.wait("k") == 0:
            limiter.charge("k")
            allowed.append(clock.now)
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            events = j - i + 1
            assert events <= rate.count + (allowed[j] - start) / interval + 1e-9


def test_memory_stays_bounded_with_many_keys_and_old_keys_are_forgotten() -> None:
    clock = FakeClock()
    limiter = v.RateLimiter(v.Rate(1, 10.0), clock=clock, max_keys=1000)
    tracemalloc.start()
    try:
        for i in range(100_000):
            clock.now += 0.01  # each key's limit ends 10 s (1000 keys) after it is charged
            key = f"attacker-{i}@example.org"
            if limiter.wait(key) == 0:
                limiter.charge(key)
            assert len(limiter) <= 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    clock.now += 10.0
    assert limiter.wait("anyone") == 0
    assert len(limiter) == 0


def test_a_full_table_refuses_new_keys_rather_than_forgetting_a_live_limit() -> None:
    clock = FakeClock()
    limiter = v.RateLimiter(v.Rate(1, 3600.0), clock=clock, max_keys=3)
    for key in ("victim", "flood-1", "flood-2"):
        limiter.charge(key)
    assert limiter.wait("flood-3") > 0
    assert limiter.wait("victim") > 0
    clock.now += 3600.0
    assert limiter.wait("flood-3") == 0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
    ],
)
def test_clients_are_limited_by_ipv4_address_or_ipv6_prefix(address: str, key: str) -> None:
    assert v.client_key(address) == key


def test_a_refusal_names_the_limit_and_charges_no_other_limit() -> None:
    clock = FakeClock()
    one_an_hour = v.Rate(1, 3600.0)
    policy = v.LimitPolicy(mails_per_address=one_an_hour, mails_per_device=one_an_hour)
    limits = v.VerificationLimits(policy, clock=clock)
    assert limits.allow_mail(
        address="Anna@Firma.example", device_id="d1", client="192.0.2.1"
    ).allowed

    refused = limits.allow_mail(address="anna@firma.example", device_id="d2", client="192.0.2.2")
    assert not refused.allowed
    assert refused.reason == "too many codes asked for this address; retry in 3600 s"
    assert refused.retry_after == 3600
    # The refused request did not use up d2's one mail an hour.
    assert limits.allow_mail(
        address="bob@firma.example", device_id="d2", client="192.0.2.2"
    ).allowed
    refused = limits.allow_mail(address="carl@firma.example", device_id="d2", client="192.0.2.3")
    assert refused.reason == "too many codes asked for this device; retry in 3600 s"


def _guess(limits: v.VerificationLimits, clock: FakeClock, *, wait_out: float) -> int:
    """An attacker asks for codes for one address and tries every code in turn
    (000000 upwards; the real one is 999999), a new device and client address for each
    code; refused, it waits as told while the clock has not passed ``wait_out``.
    Returns the number of guesses the limits let through."""
    guesses = 0
    n = 0
    while True:
        n += 1
        who = {"address": "anna@firma.example", "device_id": f"phone-{n}"}
        client = f"198.51.100.{n % 250}"
        asked = limits.allow_mail(**who, client=client)
        if not asked.allowed:
            if clock.now + asked.retry_after > wait_out:
                return guesses
            clock.now += asked.retry_after
            continue
        _, record = v.issue(SUBJECT, key=KEY, now=clock.now, randbelow=lambda _n: 999_999)
        while record.wrong_attempts < POLICY.max_attempts:
            tried = limits.allow_check(**who, client=client)
            if not tried.allowed:
                assert tried.reason.startswith("too many codes tried for this address")
                if clock.now + tried.retry_after > wait_out:
                    return guesses
                clock.now += tried.retry_after
                continue
            verdict = v.check(record, SUBJECT, f"{guesses:06d}", key=KEY, now=clock.now)
            assert not verdict.ok
            guesses += 1
            record = verdict.record


def test_a_guessing_loop_is_stopped_by_the_rate_limit() -> None:
    clock = FakeClock()
    policy = v.LimitPolicy()
    guesses = _guess(v.VerificationLimits(policy, clock=clock), clock, wait_out=clock.now)
    assert guesses == policy.checks_per_address.count


def test_a_patient_guesser_gets_at_most_a_hundred_guesses_a_day() -> None:
    clock = FakeClock()
    limits = v.VerificationLimits(v.LimitPolicy(), clock=clock)
    guesses = _guess(limits, clock, wait_out=clock.now + 86400.0)
    assert 90 <= guesses <= 100


# --- registration codes -------------------------------------------------------------


def test_a_registration_code_is_five_groups_of_four_and_parses_to_itself() -> None:
    code = v.new_registration_code(randbelow=random.Random(7).randrange)
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4, 4]
    assert set(code.replace("-", "")) <= set(v.ALPHABET)
    assert v.parse_registration_code(code) == code


def test_registration_codes_do_not_repeat() -> None:
    codes = {v.new_registration_code() for _ in range(1000)}
    assert len(codes) == 1000


@given(st.randoms(use_true_random=False))
def test_case_spacing_and_look_alike_letters_do_not_matter(rng: random.Random) -> None:
    code = v.new_registration_code(randbelow=rng.randrange)
    typed = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert v.parse_registration_code(typed) == code


@given(st.randoms(use_true_random=False), st.integers(0, 19), st.integers(1, 31))
def test_every_single_mistyped_character_is_caught(
    rng: random.Random, position: int, shift: int
) -> None:
    plain = v.new_registration_code(randbelow=rng.randrange).replace("-", "")
    wrong = v.ALPHABET[(v.ALPHABET.index(plain[position]) + shift) % 32]
    typo = plain[:position] + wrong + plain[position + 1 :]
    with pytest.raises(errors.ValidationError, match="check character does not match"):
        v.parse_registration_code(typo)


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("7K2M-Q9XD-4HVT", "a registration code has 20 characters, this has 12"),
        ("7K2M-Q9XD-4HVT-8NPC-3RWU", "not a character of registration codes: 'U'"),
        ("x" * 100, "not a registration code (too long)"),
    ],
)
def test_a_malformed_registration_code_is_refused_saying_why(typed: str, reason: str) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        v.parse_registration_code(typed)
    assert caught.value.field == "code"
    assert caught.value.reason == reason


def test_the_stored_digest_is_found_from_any_spelling_of_the_code() -> None:
    code = v.new_registration_code()
    digest = v.registration_code_digest(KEY, code)
    assert v.registration_code_digest(KEY, code.lower().replace("-", "")) == digest
    assert code.encode() not in digest


def test_the_example_code_in_the_docs_is_a_valid_code() -> None:
    docs = (pathlib.Path(__file__).parents[2] / "docs" / "devices.md").read_text(encoding="utf-8")
    example = re.search(r"^([0-9A-Z]{4}(?:-[0-9A-Z]{4}){4})$", docs, re.MULTILINE)
    assert example is not None
    assert v.parse_registration_code(example.group(1)) == example.group(1)
