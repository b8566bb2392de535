"""The gateway's workers against a real server over TLS on loopback, both in this process
(``local_world``: no process is needed to check what the workers do with the answers)."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Gateway as GatewayFiles
from harness import World, wait_for

from mpg import config, errors, metrics
from mpg.gateway import runner
from mpg.server import app as server_app
from mpg.storage import outbox
from mpg.storage.states import OutboxState as S
from mpg.wire import model, payloads

INSERT = (
    'INSERT INTO "Outbox" ("TxMessageId","SourceDomain","ReceiverType","ReceiverList",'
    '"Subject","Content","ContentType","AttachmentList","State","Priority") '
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def add(
    gw: GatewayFiles,
    tx: str,
    to: str = "erp-b",
    *,
    receiver_type: str = "U",
    attachments: str = "",
    priority: str = "N",
    content_type: str = "MSG",
) -> None:
    gw.sql(
        INSERT,
        (
            tx,
            "example.com",
            receiver_type,
            to,
            f"subject {tx}",
            "<c/>",
            content_type,
            attachments,
            10,
            priority,
        ),
    )


def open_gateway(files: GatewayFiles, **overrides: object) -> runner.Gateway:
    settings = config.load(files.config)
    if overrides:
        gw = settings.gateway.model_copy(update=overrides)
        settings = settings.model_copy(update={"gateway": gw})
    return runner.Gateway(settings)


@pytest.fixture
def pair(local_world: World) -> Iterator[tuple[World, GatewayFiles, GatewayFiles]]:
    """A running server, accounts A and B, and their databases (no gateway running)."""
    local_world.start_server()
    return local_world, local_world.gateway("erp-a"), local_world.gateway("erp-b")


def test_invalid_row_goes_to_99_naming_the_field_while_the_others_flow(
    pair: tuple[World, GatewayFiles, GatewayFiles],
) -> None:
    """One bad row never blocks a batch."""
    _, a, _ = pair
    add(a, "good-1")
    add(a, "bad", receiver_type="X")
    add(a, "good-2")
    gw = open_gateway(a)
    try:
        gw.outbound.run_once()
    finally:
        gw.stop()
    bad = a.outbox_row("bad")
    assert bad is not None
    assert bad["State"] == S.FAILED
    assert "ReceiverType" in bad["StatusLog"]
    for tx in ("good-1", "good-2"):
        row = a.outbox_row(tx)
        assert row is not None
        assert row["State"] == S.WAITING
        assert row["MessageId"]


def test_unknown_recipients_are_reported_not_dropped(
    pair: tuple[World, GatewayFiles, GatewayFiles],
) -> None:
    """Known recipients get the message; unknown ones are named in StatusLog; a message
    with no known recipient at all is refused (99)."""
    _, a, _ = pair
    add(a, "partly", to="erp-b;ghost")
    add(a, "nobody", to="ghost;phantom")
    gw = open_gateway(a)
    try:
        gw.outbound.run_once()
    finally:
        gw.stop()
    partly, nobody = a.outbox_row("partly"), a.outbox_row("nobody")
    assert partly is not None
    assert nobody is not None
    assert partly["State"] == S.WAITING
    assert "ghost@example.com" in partly["StatusLog"]
    assert nobody["State"] == S.FAILED
    assert "ghost@example.com" in nobody["StatusLog"]


def test_server_down_keeps_rows_in_flight_and_they_go_out_when_it_returns(
    local_world: World,
) -> None:
    """A transient failure never reaches 99: the row waits at 12 and is resumed."""
    world = local_world
    world.init_server()
    files = world.gateway("erp-a")
    world.gateway("erp-b")
    add(files, "patient")
    gw = open_gateway(files)
    try:
        with pytest.raises(errors.TransientServerError):
            gw.outbound.run_once()
        row = files.outbox_row("patient")
        assert row is not None
        assert row["State"] == S.ATTACHMENTS_UPLOADED
        world.start_server()
        gw.outbound.run_once()
    finally:
        gw.stop()
    row = files.outbox_row("patient")
    assert row is not None
    assert row["State"] == S.WAITING


def test_rows_not_sent_within_the_send_timeout_go_to_97(local_world: World) -> None:
    """With the server unreachable, the sweep times rows out with a readable log."""
    local_world.init_server()
    files = local_world.gateway("erp-a")
    add(files, "late")
    gw = open_gateway(files, send_timeout=0.5)
    try:
        with pytest.raises(errors.TransientServerError):
            gw.outbound.run_once()
        time.sleep(1.6)  # StatusTime has one-second resolution
        assert gw.outbound.expire() == 1
    finally:
        gw.stop()
    row = files.outbox_row("late")
    assert row is not None
    assert row["State"] == S.TIMED_OUT
    assert "timed out" in row["StatusLog"]


def test_attachment_streams_in_small_chunks_and_arrives_identical(
    pair: tuple[World, GatewayFiles, GatewayFiles],
    tmp_path: pathlib.Path,
) -> None:
    """A file larger than the chunk size is uploaded piecewise and downloaded intact."""
    _, a, b = pair
    data = bytes(range(256)) * 4000  # 1 MB, many 4 KiB chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    add(a, "with-file", attachments=f"{path}|1")
    sender = open_gateway(a, chunk_size=4096)
    receiver = open_gateway(b, chunk_size=4096)
    try:
        sender.outbound.run_once()
        receiver.inbound.handle(receiver.push.fetch(10, 0))
    finally:
        sender.stop()
        receiver.stop()
    [att] = b.sql('SELECT "FileData", "FileSize" FROM "InboxAttachment"')
    assert att["FileSize"] == len(data)
    assert bytes(att["FileData"]) == data


def _answered(op: str) -> float:
    """Requests the in-process server answered with 200 for ``op`` so far."""
    for family in metrics.SERVER_REQUESTS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {"op": op, "status": "200"}:
                return sample.value
    return 0.0


def _three_rows_to_29(a: GatewayFiles, b: GatewayFiles, prefix: str) -> float:
    """A sends three rows to B with both gateways running until every row is at 29;
    B's Inbox holds each once. Returns the ``ack`` requests answered meanwhile."""
    for n in range(3):
        add(a, f"{prefix}-{n}")
    sender = open_gateway(a, long_poll_wait=0.2)
    receiver = open_gateway(b, long_poll_wait=0.2)
    acks = _answered("ack")
    try:
        sender.start()
        receiver.start()
        wait_for(
            "every row at 29",
            lambda: all(
                (row := a.outbox_row(f"{prefix}-{n}")) is not None and row["State"] == S.SENT
                for n in range(3)
            ),
        )
        answered = _answered("ack") - acks
    finally:
        sender.stop()
        receiver.stop()
    inbox = b.sql('SELECT "Subject" FROM "Inbox" ORDER BY "Subject"')
    assert [r["Subject"] for r in inbox] == [f"subject {prefix}-{n}" for n in range(3)]
    return answered


def test_each_batch_is_acknowledged_by_the_next_fetch_not_by_an_ack_request(
    pair: tuple[World, GatewayFiles, GatewayFiles],
) -> None:
    """B's stored batch is acknowledged in B's next fetch (so the receipts reach A and its
    rows go to 29) and A's receipts in A's: no ``ack`` request is made while running."""
    _, a, b = pair
    assert _three_rows_to_29(a, b, "folded") == 0


def test_a_gateway_acknowledges_on_its_own_when_the_server_refuses_acks_in_a_fetch(
    pair: tuple[World, GatewayFiles, GatewayFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server older than acknowledgements in the fetch refuses them as its parser did
    ("fetch: must be empty", 400): the gateway then sends ``ack`` requests, and every
    message still arrives once and its receipt takes the row to 29."""
    _, a, b = pair
    current = payloads.parse_fetch

    def older_server(data: bytes) -> model.FetchRequest:
        request = current(data)
        if request.acked:
            raise errors.WireError("fetch: must be empty")
        return request

    monkeypatch.setattr(payloads, "parse_fetch", older_server)
    assert _three_rows_to_29(a, b, "unfolded") > 0


def test_gateway_refuses_a_server_certificate_from_an_unknown_ca(
    pair: tuple[World, GatewayFiles, GatewayFiles],
) -> None:
    """Without the test CA in its bundle the client does not trust the server."""
    _, a, _ = pair
    add(a, "untrusted")
    gw = open_gateway(a, ca_bundle=None)
    try:
        with pytest.raises(errors.TransientServerError, match="CERTIFICATE_VERIFY_FAILED"):
            gw.outbound.run_once()
    finally:
        gw.stop()


def test_row_voided_while_its_submit_is_in_flight_is_recalled(
    pair: tuple[World, GatewayFiles, GatewayFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ERP writes 98 during the submit: the accepted message is recalled at once."""
    _, a, _ = pair
    add(a, "racy")
    gw = open_gateway(a)
    real_submit = gw.push.submit

    def erp_voids_meanwhile(*args: Any, **kwargs: Any) -> object:
        # The ERP's own UPDATE lands while the request is on its way to the server.
        a.sql('UPDATE "Outbox" SET "State" = 98 WHERE "TxMessageId" = ?', ("racy",))
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(gw.push, "submit", erp_voids_meanwhile)
    try:
        gw.outbound.run_once()
    finally:
        gw.stop()
    row = a.outbox_row("racy")
    assert row is not None
    assert row["State"] == S.VOIDED
    assert row["MessageId"]
    assert "voided while being sent; recalled: withdrawn from 1" in row["StatusLog"]
    steps = a.sql(
        'SELECT "FromState", "ToState" FROM "MpgTransition" WHERE "MessageKey" = ? ORDER BY "Id"',
        ("racy",),
    )
    assert [(r["FromState"], r["ToState"]) for r in steps][-1] == (S.ATTACHMENTS_UPLOADED, 98)


def _states(gw: GatewayFiles) -> dict[str, int]:
    return {
        r["TxMessageId"]: r["State"] for r in gw.sql('SELECT "TxMessageId", "State" FROM "Outbox"')
    }


def test_under_a_backlog_the_next_batch_is_claimed_while_the_current_one_is_at_the_server(
    pair: tuple[World, GatewayFiles, GatewayFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full batch means more rows wait: they are claimed (12) during the request, and
    the next cycle submits them; nothing is claimed ahead when the batch was not full."""
    _, a, _ = pair
    for i in range(7):
        add(a, f"row-{i}")
    gw = open_gateway(a, batch_size=3)
    real_submit = gw.push.submit
    claimed_meanwhile: list[int] = []

    def submit_watching(messages: list[model.OutgoingMessage], pieces: Any = None) -> Any:
        # Give the worker's own thread the time to claim ahead, if it does.
        sent = {m.tx_message_id for m in messages}
        deadline = time.monotonic() + 5
        while S.READY in _states(a).values() and time.monotonic() < deadline:
            time.sleep(0.01)
        others = {tx: s for tx, s in _states(a).items() if tx not in sent}
        claimed_meanwhile.append(sum(s == S.ATTACHMENTS_UPLOADED for s in others.values()))
        return real_submit(messages, pieces)

    monkeypatch.setattr(gw.push, "submit", submit_watching)
    try:
        gw.outbound.run_once()
        after_one = sorted(_states(a).values())
        gw.outbound.run_once()
    finally:
        gw.stop()
    assert claimed_meanwhile == [4, 0]
    assert after_one == [S.ATTACHMENTS_UPLOADED] * 4 + [S.WAITING] * 3
    assert set(_states(a).values()) == {S.WAITING}


def test_rows_claimed_ahead_when_the_stop_comes_are_sent_before_the_worker_ends(
    pair: tuple[World, GatewayFiles, GatewayFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping finishes the work in hand, the batch claimed ahead included."""
    _, a, _ = pair
    for i in range(6):
        add(a, f"row-{i}")
    gw = open_gateway(a, batch_size=3)
    real_submit = gw.push.submit

    def stop_meanwhile(messages: list[model.OutgoingMessage], pieces: Any = None) -> Any:
        gw.stop_event.set()
        return real_submit(messages, pieces)

    monkeypatch.setattr(gw.push, "submit", stop_meanwhile)
    try:
        gw.outbound.run()
    finally:
        gw.stop()
    assert list(_states(a).values()) == [S.WAITING] * 6


def test_a_message_queued_right_after_a_fetch_looked_still_wakes_that_fetch(
    pair: tuple[World, GatewayFiles, GatewayFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch takes its wake-up event before its first look, in the same worker-thread
    call: a message queued between that look and the wait answers the fetch at once,
    not at the next safety look (5 s) or the end of the long poll."""
    _, a, b = pair
    add(a, "between")
    sender = open_gateway(a)
    receiver = open_gateway(b)
    real_look = server_app.PushServer._look_now
    sent: list[float] = []

    def look_then_send(self: server_app.PushServer, account: str, *args: Any) -> Any:
        found = real_look(self, account, *args)
        if found is None and account.startswith("erp-b") and not sent:
            sent.append(time.monotonic())
            sender.outbound.run_once()  # queued for B after B's look found nothing
        return found

    monkeypatch.setattr(server_app.PushServer, "_look_now", look_then_send)
    try:
        batch = receiver.push.fetch(10, 20.0)
        answered = time.monotonic()
    finally:
        sender.stop()
        receiver.stop()
    assert [d.subject for d in batch.deliveries] == ["subject between"]
    assert answered - sent[0] < server_app.POLL_SAFETY_SECONDS


@pytest.mark.parametrize(
    ("found_at", "moved_to"), [(S.ATTACHMENTS_UPLOADED, S.WAITING), (S.UPLOADED, S.WAITING)]
)
def test_a_receipt_reaches_its_row_while_the_sender_moves_it_forward(
    pair: tuple[World, GatewayFiles, GatewayFiles],
    monkeypatch: pytest.MonkeyPatch,
    found_at: S,
    moved_to: S,
) -> None:
    """A receipt can overtake the sender's own record of the submit: the inbound thread
    looks for the row in each state it may be in while the outbound thread moves it on
    (12 -> 20, 19 -> 20). It looks along the walk, so a row that moves on between two
    looks is found at the next one and goes to 29 (looking backwards lost it at 20)."""
    _, a, _ = pair
    add(a, "overtaken")
    a.sql('UPDATE "Outbox" SET "State" = ? WHERE "TxMessageId" = ?', (int(found_at), "overtaken"))
    gw = open_gateway(a)
    real = outbox.OutboxRepository.transition
    moved_on: list[int] = []

    def racing(self: outbox.OutboxRepository, *args: Any, **kwargs: Any) -> list[str]:
        went = real(self, *args, **kwargs)
        if not went and not moved_on:  # the sender's record lands between two looks
            moved_on.append(args[1])
            a.sql(
                'UPDATE "Outbox" SET "State" = ? WHERE "TxMessageId" = ?',
                (int(moved_to), "overtaken"),
            )
        return went

    monkeypatch.setattr(outbox.OutboxRepository, "transition", racing)
    try:
        receipt = model.Receipt("entry-overtaken", "overtaken", "message-overtaken", 1, 0)
        gw.inbound.store(model.FetchBatch(receipts=(receipt,)))
    finally:
        gw.stop()
    row = a.outbox_row("overtaken")
    assert row is not None
    assert row["State"] == S.SENT
