"""APNs provider tokens that every server process makes identical (docs/push.md).

Apple wants one provider token (an ES256 JWT: header ``kid``, claims ``iss`` = team id
and ``iat``) reused for 20 to 60 minutes, and answers TooManyProviderTokenUpdates when
a key's token changes more often — which several server processes, each making its own
token, would cause. So the token is a function of the time window alone: ``iat`` is
the start of the current window (a multiple of ``window`` seconds since the epoch) and
the signature is deterministic ECDSA (RFC 6979), so every process on every host with
the same key, key id, team id and (NTP-synced) clock produces the same bytes. Nothing
is shared or locked: no file, no database round trip, no process that must be up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm
from jwt.utils import der_to_raw_signature

from mpg import errors

#: Apple: refresh no more often than every 20 minutes, and no token older than 60.
MIN_WINDOW: Final = 20 * 60
#: Below Apple's hour, leaving room for clock skew between processes and Apple.
MAX_WINDOW: Final = 50 * 60
DEFAULT_WINDOW: Final = 40 * 60


class _DeterministicES256(ECAlgorithm):
    """ES256 whose signature depends only on the key and the message (RFC 6979)."""

    def sign(self, msg: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        der = key.sign(msg, ec.ECDSA(self.hash_alg(), deterministic_signing=True))
        return der_to_raw_signature(der, key.curve)


def _signer() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm("ES256", _DeterministicES256(ECAlgorithm.SHA256))
    return jws


_JWS: Final = _signer()


def load_key(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of an Apple ``AuthKey_<kid>.p8`` file; ConfigError names ``where``."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise errors.ConfigError(f"{where}: not a PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise errors.ConfigError(f"{where}: an APNs key is an EC P-256 key (AuthKey_*.p8)")
    return key


def make_token(key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str, issued_at: int) -> str:
    """The provider token for one window start: the same inputs give the same token."""
    claims = json.dumps({"iss": team_id, "iat": issued_at}, separators=(",", ":"), sort_keys=True)
    return _JWS.encode(
        claims.encode(), key, algorithm="ES256", headers={"kid": key_id, "typ": None}
    )


class ProviderTokens:
    """The current provider token of one APNs key, and its renewal after a refusal.

    ``read_key`` gives the key file's bytes; it is read again on :meth:`renew`, so a key
    replaced on disk is taken without a restart.
    """

    def __init__(
        self,
        key_id: str,
        team_id: str,
        read_key: Callable[[], bytes],
        *,
        window: int = DEFAULT_WINDOW,
        where: str = "apns key",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not MIN_WINDOW <= window <= MAX_WINDOW:
            raise ValueError(f"window {window} s: Apple wants 20 to 60 minutes")
        self._key_id = key_id
        self._team_id = team_id
        self._read_key = read_key
        self._where = where
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._key = load_key(read_key(), where)
        self._cached: tuple[int, str] = (-1, "")

    def window_start(self) -> int:
        """The ``iat`` every process uses now."""
        now = int(self._clock())
        return now - now % self._window

    def current(self) -> str:
        """The token of the current window (made once per window per process)."""
        start = self.window_start()
        with self._lock:
            if self._cached[0] != start:
                self._cached = (start, make_token(self._key, self._key_id, self._team_id, start))
            return self._cached[1]

    def renew(self) -> str:
        """After APNs refused the token: read the key again and make the window's token.

        The window stays the same (a token made at another ``iat`` would differ between
        processes and cause TooManyProviderTokenUpdates); if the key on disk did not
        change the same token comes back and the refusal becomes a configuration alarm.
        """
        key = load_key(self._read_key(), self._where)
        with self._lock:
            self._key = key
            self._cached = (-1, "")
        return self.current()
