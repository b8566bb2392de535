"""The console's pure rules: CSRF compare, session expiry, lockout counting, password
policy and where a sign-in may send the browser next."""

from __future__ import annotations

import pytest

from mpg.server.console import auth_pages, csrf, lockout, oidc, sessions, users

POLICY = sessions.Policy(idle=600.0, lifetime=3600.0)


def _session(created: float, seen: float) -> sessions.Session:
    return sessions.Session("ada", "admin", "password", "token", created, seen)


def test_csrf_token_matches_only_itself() -> None:
    token = csrf.new_token()
    assert csrf.matches(token, token)
    assert not csrf.matches(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not csrf.matches(token, csrf.new_token())


@pytest.mark.parametrize(
    ("expected", "given"),
    [("", ""), (None, None), ("abc", None), (None, "abc"), ("abc", ""), ("abc", "äbc")],
)
def test_csrf_empty_missing_or_non_ascii_tokens_never_match(
    expected: str | None, given: str | None
) -> None:
    assert not csrf.matches(expected, given)


def test_csrf_overlong_token_is_refused_without_comparing() -> None:
    token = "x" * (csrf.MAX_CHARS + 1)
    assert not csrf.matches(token, token)


def test_session_lives_until_idle_timeout() -> None:
    s = _session(created=1000.0, seen=1000.0)
    assert not sessions.expired(s, 1599.0, POLICY)
    assert sessions.expired(s, 1600.0, POLICY)


def test_busy_session_ends_at_its_lifetime() -> None:
    s = _session(created=1000.0, seen=4590.0)
    assert not sessions.expired(s, 4599.0, POLICY)
    assert sessions.expired(s, 4600.0, POLICY)


def test_last_seen_is_written_at_most_once_a_minute() -> None:
    s = _session(created=1000.0, seen=1000.0)
    assert not sessions.needs_touch(s, 1059.0, POLICY)
    assert sessions.needs_touch(s, 1060.0, POLICY)


def test_short_idle_timeout_touches_more_often() -> None:
    s = _session(created=1000.0, seen=1000.0)
    policy = sessions.Policy(idle=30.0, lifetime=3600.0)
    assert sessions.needs_touch(s, 1003.0, policy)


def test_session_id_digest_is_not_the_id() -> None:
    assert sessions.digest("abc") != "abc"
    assert len(sessions.digest("abc")) == 64


def test_failures_lock_at_the_limit_for_the_configured_time() -> None:
    count = None
    for n in range(1, 3):
        count = lockout.after_failure(count, 100.0 + n, limit=3, seconds=900.0)
        assert lockout.locked_until(count, 100.0 + n) is None
    count = lockout.after_failure(count, 103.0, limit=3, seconds=900.0)
    assert count.failures == 3
    assert lockout.locked_until(count, 103.0) == 1003.0
    assert lockout.locked_until(count, 1003.0) is None


def test_failures_outside_the_window_start_a_new_count() -> None:
    count = lockout.after_failure(None, 100.0, limit=3, seconds=900.0)
    count = lockout.after_failure(count, 200.0, limit=3, seconds=900.0)
    count = lockout.after_failure(count, 1000.0, limit=3, seconds=900.0)
    assert count.failures == 1
    assert count.window_start == 1000.0
    assert lockout.locked_until(count, 1000.0) is None


def test_lockout_subjects_fold_case_of_names() -> None:
    assert lockout.user_subject("Ada") == lockout.user_subject("ada")
    assert lockout.user_subject("ada") != lockout.address_subject("ada")


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short pass", "at least 12"),
        ("x" * (users.MAX_PASSWORD + 1), "at most"),
        ("my name is ada, really", "user name"),
        ("abababababababab", "5 different"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, problem: str) -> None:
    found = users.password_problem("Ada", password)
    assert found is not None
    assert problem in found


def test_a_long_varied_password_is_accepted() -> None:
    assert users.password_problem("ada", "correct horse battery staple") is None


def test_password_hash_is_argon2id_and_salted() -> None:
    first = users.hash_password("correct horse battery staple")
    assert first.startswith("$argon2id$")
    assert first != users.hash_password("correct horse battery staple")


def test_console_user_roles_are_ordered() -> None:
    operator = users.ConsoleUser("otto", "operator")
    assert operator.may("viewer")
    assert operator.may("operator")
    assert not operator.may("admin")
    assert operator.actor == "console:otto"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/audit?who=ada", "/audit?who=ada"),
        ("", "/"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/audit\r\nSet-Cookie: x", "/"),
        ("audit", "/"),
    ],
)
def test_sign_in_goes_on_only_to_console_paths(value: str | None, expected: str) -> None:
    assert auth_pages.safe_next(value) == expected


def test_pkce_challenge_is_rfc_7636s_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oidc.challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


ROLES = {"Console.Read": "viewer", "Console.Ops": "operator", "Console.Admin": "admin"}


@pytest.mark.parametrize(
    ("value", "role"),
    [
        (["Console.Read", "Console.Admin", "Console.Ops"], "admin"),
        (["Console.Ops", "Other"], "operator"),
        ("Console.Read", "viewer"),
        (["Other"], None),
        (None, None),
        ([1, {"x": 2}], None),
    ],
)
def test_oidc_role_is_the_highest_mapped_claim_value(value: object, role: str | None) -> None:
    assert oidc.role_of({"roles": value}, "roles", ROLES) == role


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (" erin@example.com ", "erin@example.com"),
        ("", None),
        (None, None),
        (["a"], None),
        ("x" * 201, None),
    ],
)
def test_oidc_name_claim_must_be_a_short_text(value: object, name: str | None) -> None:
    assert oidc.name_of({"preferred_username": value}, "preferred_username") == name


def test_oidc_flow_survives_its_cookie_and_garbage_is_no_flow() -> None:
    flow = oidc.new_flow("/audit", 1000.0)
    assert oidc.Flow.from_cookie(flow.to_cookie()) == flow
    assert oidc.Flow.from_cookie("not-base64-json") is None
    assert oidc.Flow.from_cookie("") is None
    assert oidc.Flow.from_cookie("x" * (oidc.MAX_FLOW_CHARS + 1)) is None
