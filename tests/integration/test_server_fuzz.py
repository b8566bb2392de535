"""Property-based fuzz of every server operation: whatever arrives, never a 5xx.

In-process ASGI (the HTTP and TLS layers of a real process add nothing to what a
payload or an argument can do; ``test_server_hostile.py`` attacks those). Two
kinds of input: unauthenticated garbage (random bytes, and bodies that start like
an envelope), and envelopes validly sealed by a real account carrying fuzzed
arguments and fuzzed payloads (random bytes, and valid payloads with bytes spliced
in). Bounded: a fixed number of examples per property, no deadline per example.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpg import config
from mpg.server import accounts, app, datakeys, main
from mpg.wire import envelope, keys, model, payloads

ACCOUNT = "erp-a@example.com"
PEER = "bob@example.com"
OPS = ("upload", "submit", "fetch", "ack", "download", "history")
ARG_NAMES = ("tx", "seq", "offset", "final", "size", "sha256", "messageId", "length")
BOUNDED = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Target:
    """The app in process and the account whose key seals the fuzzed envelopes."""

    def __init__(self, push: app.PushServer, credential: keys.Credential) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.create_app(push)), base_url="http://fuzz"
        )
        self.credential = credential

    def post(self, op: str, body: bytes) -> int:
        """POST ``body`` to ``/v1/<op>``; fail on any 5xx."""
        response = self.loop.run_until_complete(self.client.post(f"/v1/{op}", content=body))
        assert response.status_code < 500, (op, response.status_code, response.text)
        return response.status_code

    def sealed(self, op: str, args: dict[str, Any], payload: bytes) -> bytes:
        """An envelope sealed with the account's real key."""
        header = envelope.request_header(ACCOUNT, self.credential.key_id, op, args)
        return envelope.seal(self.credential.secret, header, payload)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz")
    server_settings = config.ServerSettings(
        database_url=f"sqlite:///{root / 'server.db'}",
        data_dir=root / "data",
        allow_plain_http=True,
        max_long_poll=0,
        max_request_bytes=1024 * 1024,
    )
    accounts.create_master_key_file(accounts.master_key_path(server_settings))
    datakeys.create_data_keys_file(datakeys.data_keys_path(server_settings))
    push = main.build(server_settings)
    credential = push.accounts.add(ACCOUNT, "gateway")[1]
    push.accounts.add(PEER, "user")
    target = Target(push, credential)
    yield target
    target.close()
    push.engine.dispose()


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**53, 2**63, -(2**63), 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
ARGS = st.dictionaries(
    st.one_of(st.sampled_from(ARG_NAMES), st.text(max_size=8)), JSON_VALUES, max_size=8
)


def _message(seq: int = 1) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id="tx-fuzz",
        app_code="BPM",
        source_domain="example.com",
        agent_sender=ACCOUNT,
        sender="alice@example.com",
        receiver_type="U",
        receivers=(PEER, "nobody@example.com"),
        bcc=(),
        subject="s",
        content="<content/>",
        content_type="MSG",
        alert_flag=True,
        priority="N",
        keywords="",
        transmit_time="2026-11-23 05:41:07",
        attachments=(
            model.AttachmentInfo(
                seq_no=seq,
                file_name="a.pdf",
                file_type="pdf",
                file_size=3,
                download_flag=1,
                sha256="0" * 64,
            ),
        ),
    )


SEEDS: dict[str, bytes] = {
    "upload": b"abc",
    "submit": payloads.build_submit([_message()]),
    "fetch": payloads.build_fetch(10, 0),
    "ack": payloads.build_ack(["e1", "e2"]),
    "download": b"",
    "history": b"",
}


@st.composite
def payloads_for(draw: st.DrawFn, op: str) -> bytes:
    """Random bytes, or the op's valid payload with random bytes spliced in."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    seed = SEEDS[op]
    at = draw(st.integers(min_value=0, max_value=len(seed)))
    cut = draw(st.integers(min_value=0, max_value=8))
    splice = draw(
        st.one_of(
            st.binary(max_size=12),
            st.sampled_from(
                [b"99999999999999999999", b"-1", b"<!DOCTYPE x>", b"&x;", b"\x00", b'"', b"<r/>"]
            ),
        )
    )
    return seed[:at] + splice + seed[at + cut :]


@BOUNDED
@given(op=st.one_of(st.sampled_from(OPS), st.text(max_size=12)), body=st.binary(max_size=2000))
def test_unauthenticated_garbage_never_gets_a_server_error(
    target: Target, op: str, body: bytes
) -> None:
    """Random bytes to any op (known or not): a 4xx, never a 5xx."""
    if "/" in op or "?" in op or "#" in op or not op.isprintable():
        op = "fetch"
    target.post(op, body)


@BOUNDED
@given(
    op=st.sampled_from(OPS),
    header=st.binary(max_size=300),
    length=st.integers(min_value=0, max_value=0xFFFF),
    tail=st.binary(max_size=100),
)
def test_bodies_that_look_like_envelopes_never_get_a_server_error(
    target: Target, op: str, header: bytes, length: int, tail: bytes
) -> None:
    """The magic, any header length, any header bytes: 401 or 4xx, never 5xx."""
    assert target.post(op, b"MPG1" + length.to_bytes(2, "big") + header + tail) < 500


@BOUNDED
@given(data=st.data(), op=st.sampled_from(OPS), args=ARGS)
def test_sealed_envelopes_with_fuzzed_arguments_and_payloads_never_get_a_server_error(
    target: Target, data: st.DataObject, op: str, args: dict[str, Any]
) -> None:
    """A real account's envelope with any arguments and payload: never a 5xx."""
    payload = data.draw(payloads_for(op))
    target.post(op, target.sealed(op, args, payload))


@BOUNDED
@given(data=st.data(), op=st.sampled_from(OPS))
def test_sealed_envelopes_with_plausible_arguments_never_get_a_server_error(
    target: Target, data: st.DataObject, op: str
) -> None:
    """Arguments of the right names and types (to get past the checks), fuzzed values."""
    numbers = st.one_of(
        st.integers(min_value=-5, max_value=10), st.sampled_from([2**31 - 1, 2**53, 2**63])
    )
    args = {
        "tx": data.draw(st.text(max_size=60)),
        "seq": data.draw(numbers),
        "offset": data.draw(numbers),
        "final": data.draw(st.booleans()),
        "size": data.draw(numbers),
        "sha256": data.draw(st.sampled_from(["0" * 64, "", "zz", "A" * 64])),
        "messageId": data.draw(st.text(max_size=60)),
        "length": data.draw(numbers),
    }
    target.post(op, target.sealed(op, args, data.draw(payloads_for(op))))


def test_the_fuzz_reaches_past_authentication(target: Target) -> None:
    """Sealed seeds are served (so the properties above test the operations themselves)."""
    assert target.post("fetch", target.sealed("fetch", {}, SEEDS["fetch"])) == 200
    assert target.post("submit", target.sealed("submit", {}, SEEDS["submit"])) == 200
