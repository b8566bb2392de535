"""Verification codes, their rate limits, and registration codes (PURE: the clock, the
randomness and the hashing key are passed in; nothing here does I/O).

Verification codes (issue 11, part 5) are mailed to prove an address: short-lived,
single-use, a bounded number of wrong tries each. What is stored is an
:class:`IssuedCode`, never the code: its HMAC-SHA256 under a server key, bound to the
code's *subject* (for a device: the address and the device id), so a stored row does
not reveal the code and a code proves nothing for another address or device.

Why a keyed hash and not argon2 or a salted hash: a 6-digit code has 10**6 values, so
any unkeyed hash of it, salted or slow, is reversed from a leaked row by trying them all
(argon2 at 50 ms each: 14 hours, within a code's lifetime only if it were days). What
protects a stored code is a key that is not in the database (the server derives it
from its master key), and that makes a fast hash enough; a slow hash would only give
every guesser a way to burn the server's CPU. Online guessing is stopped by the attempt
limit per code and the rate limits below, not by the hash.

Rate limits: :class:`RateLimiter` is the generic cell rate algorithm (GCRA, a token
bucket kept as one number per key: the theoretical arrival time). A key whose time has
passed is in the same state as a key never seen, so it is forgotten; the table holds at
most ``max_keys`` keys, and when it is full of keys still limited a new key is refused
("busy") rather than an old limit forgotten early, so flooding the table cannot reset
anyone's limit. Keys are kept as 16-byte BLAKE2b digests: bounded size, and no address
or device id in clear in memory. :class:`VerificationLimits` applies one limiter per
address, per device id and per client address (IPv6 by its /64) to both mails and
checks.

Registration codes (part 4) are bearer secrets an admin hands out or reads aloud:
19 random characters of Crockford's base32 (95 bits; no I, L, O, U; case-insensitive;
O read as 0, I and L as 1) and one Luhn mod 32 check character, in five groups of four:
``WXWC-BYB6-WK95-2SWA-0438``. The check character catches every single mistyped
character before a lookup; the server stores only :func:`registration_code_digest`.

Defaults and the reasoning: docs/devices.md, "Verification mail and codes".
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
from collections.abc import Callable
from typing import Final

from mpg import errors

#: Shortest hashing key accepted (HMAC-SHA256 gains nothing beyond its block size).
MIN_KEY_BYTES: Final = 32
#: Longest offered code looked at; anything longer is malformed without further work.
MAX_OFFERED_CHARS: Final = 64

RandBelow = Callable[[int], int]
Clock = Callable[[], float]


# --- verification codes -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CodePolicy:
    """How verification codes look and how long and how often they may be tried."""

    digits: int = 6
    #: Seconds a code is valid after it is issued.
    lifetime: float = 600.0
    #: Wrong tries per code; after them even the right code is refused.
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not 6 <= self.digits <= 8:
            raise ValueError("digits: 6 to 8")
        if self.lifetime <= 0:
            raise ValueError("lifetime: must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts: at least 1")


@dataclasses.dataclass(frozen=True)
class IssuedCode:
    """What is stored for one issued code: its keyed hash, never the code itself."""

    digest: bytes
    #: Time (of the injected clock) from which the code is refused as expired.
    expires_at: float
    wrong_attempts: int = 0
    used: bool = False


class Outcome(enum.Enum):
    """The result of checking a code; the value is the machine-readable error code."""

    ACCEPTED = "accepted"
    WRONG = "code_wrong"
    EXPIRED = "code_expired"
    USED = "code_used"
    EXHAUSTED = "code_attempts_exhausted"
    MALFORMED = "code_malformed"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome, its reason in words, and the record to store in place of the old."""

    outcome: Outcome
    reason: str
    record: IssuedCode

    @property
    def ok(self) -> bool:
        """True only for the right code, in time, the first time."""
        return self.outcome is Outcome.ACCEPTED


def issue(
    subject: str,
    *,
    key: bytes,
    now: float,
    policy: CodePolicy = CodePolicy(),
    randbelow: RandBelow = secrets.randbelow,
) -> tuple[str, IssuedCode]:
    """A new code for ``subject`` (e.g. address and device id) and the record to store.

    The code goes into the mail; only the record is kept.
    """
    code = str(randbelow(10**policy.digits)).zfill(policy.digits)
    return code, IssuedCode(_digest(key, subject, code), expires_at=now + policy.lifetime)


def check(
    record: IssuedCode,
    subject: str,
    offered: str,
    *,
    key: bytes,
    now: float,
    policy: CodePolicy = CodePolicy(),
) -> Verdict:
    """Check ``offered`` against ``record``; the verdict's record replaces the stored one.

    Order: a used code, then an expired one, then one whose tries are used up is refused
    before the offered code is looked at, so none of them can be brute-forced further.
    A malformed code (not ``digits`` digits once spaces and hyphens are dropped) costs
    no try: it says nothing about the code.
    """
    if record.used:
        return Verdict(Outcome.USED, "code already used; ask for a new code", record)
    if now >= record.expires_at:
        return Verdict(Outcome.EXPIRED, "code expired; ask for a new code", record)
    if record.wrong_attempts >= policy.max_attempts:
        return Verdict(
            Outcome.EXHAUSTED, "too many wrong tries for this code; ask for a new code", record
        )
    code = _normalised(offered, policy.digits)
    if code is None:
        return Verdict(Outcome.MALFORMED, f"a code is {policy.digits} digits", record)
    if hmac.compare_digest(record.digest, _digest(key, subject, code)):
        return Verdict(Outcome.ACCEPTED, "code accepted", dataclasses.replace(record, used=True))
    wrong = dataclasses.replace(record, wrong_attempts=record.wrong_attempts + 1)
    left = policy.max_attempts - wrong.wrong_attempts
    if left == 0:
        return Verdict(Outcome.WRONG, "wrong code; no tries left, ask for a new code", wrong)
    return Verdict(Outcome.WRONG, f"wrong code; {left} {_tries(left)} left", wrong)


def _tries(n: int) -> str:
    return "try" if n == 1 else "tries"


def _normalised(offered: str, digits: int) -> str | None:
    if len(offered) > MAX_OFFERED_CHARS:
        return None
    code = "".join(offered.split()).replace("-", "")
    # [0-9], not \d or isdigit(): those accept other scripts' digits.
    return code if re.fullmatch(f"[0-9]{{{digits}}}", code) else None


def _digest(key: bytes, subject: str, code: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key: at least {MIN_KEY_BYTES} bytes")
    # The code has a fixed length at the end, so subject and code cannot run together.
    return hmac.new(key, f"{subject}\0{code}".encode(), hashlib.sha256).digest()


# --- rate limits --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rate:
    """A token bucket: ``count`` events at once, then one more every ``per / count``
    seconds; so over any span of ``s`` seconds at most ``count + s * count / per``."""

    count: int
    per: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.per <= 0:
            raise ValueError("a rate needs count >= 1 and per > 0")


class RateLimiter:
    """GCRA per key with bounded memory (see the module docstring). Not thread-safe:
    use it from one thread (the server's event loop)."""

    def __init__(self, rate: Rate, *, clock: Clock, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys: at least 1")
        self._interval = rate.per / rate.count
        self._tolerance = rate.per - self._interval
        self._clock = clock
        self._max_keys = max_keys
        # Theoretical arrival time per key digest, least recently charged first.
        self._tat: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may have one more event; 0 when it may now."""
        now = self._clock()
        self._forget_expired(now)
        digest = _key_digest(key)
        tat = self._tat.get(digest)
        if tat is None:
            if len(self._tat) < self._max_keys:
                return 0.0
            # Full of live limits: wait until the oldest one is forgotten.
            return max(next(iter(self._tat.values())) - now, self._interval)
        return max(0.0, tat - now - self._tolerance)

    def charge(self, key: str) -> None:
        """Count one event for ``key``; call only after :meth:`wait` returned 0."""
        now = self._clock()
        digest = _key_digest(key)
        self._tat[digest] = max(self._tat.get(digest, now), now) + self._interval
        self._tat.move_to_end(digest)

    def _forget_expired(self, now: float) -> None:
        # Oldest charged first: each key is popped at most once per charge (amortised O(1)).
        while self._tat:
            digest, tat = next(iter(self._tat.items()))
            if tat > now:
                return
            del self._tat[digest]


def _key_digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def client_key(address: str) -> str:
    """The rate-limit key of a client address: an IPv6 client by its /64 (one
    subscriber's prefix: a host picks any of its 2**64 addresses), IPv4 as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclasses.dataclass(frozen=True)
class LimitPolicy:
    """The limits on mails and on checks, each per address, device id and client."""

    #: 5 at once, then one every 72 minutes: at most 25 mails a day to one mailbox.
    mails_per_address: Rate = Rate(5, 6 * 3600.0)
    mails_per_device: Rate = Rate(5, 6 * 3600.0)
    #: One client may serve many people (NAT, a company proxy): one every 3 minutes.
    mails_per_client: Rate = Rate(20, 3600.0)
    #: 20 at once (four codes' worth), then one every 18 minutes: at most 100 guesses a
    #: day at one address's codes, a 1 in 10,000 chance at a 6-digit code.
    checks_per_address: Rate = Rate(20, 6 * 3600.0)
    checks_per_device: Rate = Rate(20, 6 * 3600.0)
    checks_per_client: Rate = Rate(60, 3600.0)
    #: Keys each of the six limiters holds at most (about 180 bytes each: 9 MB).
    max_keys: int = 50_000


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether to go ahead; if not, why and after how many seconds to try again."""

    allowed: bool
    reason: str = ""
    retry_after: float = 0.0


class VerificationLimits:
    """Rate limits for sending codes and for checking them."""

    def __init__(self, policy: LimitPolicy, *, clock: Clock) -> None:
        def limiter(rate: Rate) -> RateLimiter:
            return RateLimiter(rate, clock=clock, max_keys=policy.max_keys)

        self._mail = (
            ("address", limiter(policy.mails_per_address)),
            ("device", limiter(policy.mails_per_device)),
            ("client address", limiter(policy.mails_per_client)),
        )
        self._check = (
            ("address", limiter(policy.checks_per_address)),
            ("device", limiter(policy.checks_per_device)),
            ("client address", limiter(policy.checks_per_client)),
        )

    def allow_mail(self, *, address: str, device_id: str, client: str) -> Decision:
        """May a code be mailed to ``address`` for ``device_id``, asked by ``client``?"""
        return self._allow(self._mail, "codes asked", address, device_id, client)

    def allow_check(self, *, address: str, device_id: str, client: str) -> Decision:
        """May ``client`` try a code for ``address`` and ``device_id``?"""
        return self._allow(self._check, "codes tried", address, device_id, client)

    @staticmethod
    def _allow(
        limiters: tuple[tuple[str, RateLimiter], ...],
        what: str,
        address: str,
        device_id: str,
        client: str,
    ) -> Decision:
        # Addresses are case-insensitive in practice: Anna@X and anna@x share a limit.
        keys = (address.casefold(), device_id, client_key(client))
        for (name, limiter), key in zip(limiters, keys, strict=True):
            wait = limiter.wait(key)
            if wait > 0:
                seconds = math.ceil(wait)
                return Decision(
                    False, f"too many {what} for this {name}; retry in {seconds} s", seconds
                )
        # Charged only when every limit allows, so a refusal by one costs the others nothing.
        for (_, limiter), key in zip(limiters, keys, strict=True):
            limiter.charge(key)
        return Decision(True)


# --- registration codes -------------------------------------------------------------

#: Crockford's base32: digits and letters without I, L, O, U.
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RANDOM_CHARS: Final = 19
GROUP: Final = 4
_READ_AS: Final = str.maketrans("OIL", "011")


def new_registration_code(*, randbelow: RandBelow = secrets.randbelow) -> str:
    """A new registration code, e.g. ``WXWC-BYB6-WK95-2SWA-0438`` (95 random bits)."""
    payload = "".join(ALPHABET[randbelow(len(ALPHABET))] for _ in range(RANDOM_CHARS))
    return _grouped(payload + ALPHABET[_luhn_check_value(payload)])


def parse_registration_code(text: str) -> str:
    """The canonical form of a typed code, or ValidationError (field ``code``) saying why.

    Case, spaces and hyphens do not matter; O is read as 0, I and L as 1.
    """
    if len(text) > MAX_OFFERED_CHARS:
        raise errors.ValidationError("code", "not a registration code (too long)")
    plain = "".join(text.split()).replace("-", "").upper().translate(_READ_AS)
    length = RANDOM_CHARS + 1
    if len(plain) != length:
        raise errors.ValidationError(
            "code", f"a registration code has {length} characters, this has {len(plain)}"
        )
    bad = sorted({ch for ch in plain if ch not in ALPHABET})
    if bad:
        raise errors.ValidationError(
            "code", f"not a character of registration codes: {', '.join(map(repr, bad))}"
        )
    if _luhn_check_value(plain[:-1]) != ALPHABET.index(plain[-1]):
        raise errors.ValidationError(
            "code", "check character does not match: a character is mistyped"
        )
    return _grouped(plain)


def registration_code_digest(key: bytes, code: str) -> bytes:
    """What the server stores and looks a registration code up by (HMAC-SHA256 of the
    canonical form): the code itself is shown once, when it is created."""
    return _digest(key, "registration-code", parse_registration_code(code))


def _grouped(plain: str) -> str:
    return "-".join(plain[i : i + GROUP] for i in range(0, len(plain), GROUP))


def _luhn_check_value(payload: str) -> int:
    """Luhn mod N (N = 32): the value that makes the whole code's sum divisible by N."""
    n = len(ALPHABET)
    total = 0
    for position, ch in enumerate(reversed(payload)):
        value = ALPHABET.index(ch) * (2 if position % 2 == 0 else 1)
        total += value // n + value % n
    return (n - total % n) % n
