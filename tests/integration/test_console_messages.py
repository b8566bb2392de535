"""The console's message tracking pages over HTTPS (a real server): search, the timeline
fragment, recall and push again by role, the explanation of a recipient."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import consoleworld
import httpx
import pytest
import serverproc

from mpg.wire import envelope, model, payloads

GATEWAY = "erp-a@example.com"
ACCOUNTS = {GATEWAY: "gateway", "bob@example.com": "user", "carol@example.com": "user"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serverproc.ServerProcess]:
    server = serverproc.start(tmp_path_factory.mktemp("console-messages"), ACCOUNTS)
    consoleworld.add_users(server.database_url)
    yield server
    server.stop()


def call(srv: serverproc.ServerProcess, account: str, op: str, payload: bytes) -> bytes:
    """One sealed exchange of the gateway protocol; the answer's plain text."""
    cred = srv.credentials[account]
    header = envelope.request_header(account, cred.key_id, op)
    with consoleworld.client(srv) as http:
        answer = http.post(f"/v1/{op}", content=envelope.seal(cred.secret, header, payload))
    assert answer.status_code == 200, answer.text
    return envelope.open_sealed(cred.secret, answer.content)[1]


def submit(srv: serverproc.ServerProcess, keywords: str, to: tuple[str, ...]) -> str:
    msg = model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=GATEWAY,
        sender="",
        receiver_type="U",
        receivers=to,
        bcc=(),
        subject="Leave request <b>AF-1</b>",
        content="<content/>",
        content_type="MSG",
        alert_flag=False,
        priority="N",
        keywords=keywords,
        transmit_time="2026-11-30 08:00:00",
    )
    [result] = payloads.parse_submitted(call(srv, GATEWAY, "submit", payloads.build_submit([msg])))
    assert result.accepted, result.reason
    return result.message_id


def fetch_and_ack(srv: serverproc.ServerProcess, account: str) -> model.FetchBatch:
    batch = payloads.parse_deliveries(call(srv, account, "fetch", payloads.build_fetch(10, 0)))
    ids = [d.rx_message_id for d in batch.deliveries] + [r.entry_id for r in batch.receipts]
    call(srv, account, "ack", payloads.build_ack(ids))
    return batch


@pytest.fixture
def http(srv: serverproc.ServerProcess) -> Iterator[httpx.Client]:
    with consoleworld.client(srv) as client:
        yield client


def signed_in(http: httpx.Client, name: str) -> httpx.Client:
    assert consoleworld.sign_in(http, name).status_code == 303
    return http


def test_a_message_is_found_by_keyword_and_its_subject_shown_escaped(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    word = f"kw-{uuid.uuid4().hex[:8]}"
    message_id = submit(srv, f"{word};leave", ("bob@example.com",))
    page = signed_in(http, "vera").get("/console/messages", params={"keywords": word.upper()})
    assert page.status_code == 200
    assert page.text.count("/console/messages/" + message_id) == 1
    assert "Leave request &lt;b&gt;AF-1&lt;/b&gt;" in page.text
    none = http.get("/console/messages", params={"keywords": "no-such-keyword"})
    assert "No message matches" in none.text


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"state": "lost"}, "state: must be one of"),
        ({"since": "yesterday"}, "since: not a date and time"),
        ({"after": "not-a-position"}, "after: not a page position"),
    ],
)
def test_a_bad_search_is_answered_400_naming_the_field(
    http: httpx.Client, params: dict[str, str], says: str
) -> None:
    page = signed_in(http, "vera").get("/console/messages", params=params)
    assert page.status_code == 400
    assert says in page.text


def test_the_timeline_polls_while_the_message_moves_and_stops_when_final(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    message_id = submit(srv, "", ("bob@example.com",))
    signed_in(http, "vera")
    moving = http.get(f"/console/messages/{message_id}/timeline")
    assert 'hx-trigger="every 2s"' in moving.text
    assert "waiting on the server" in moving.text
    fetch_and_ack(srv, "bob@example.com")
    fetch_and_ack(srv, GATEWAY)  # the sender's receipt
    final = http.get(f"/console/messages/{message_id}/timeline")
    assert "hx-trigger" not in final.text
    assert "stored by the recipient" in final.text


def test_a_viewer_sees_no_recall_button_and_a_forged_recall_is_refused(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    message_id = submit(srv, "", ("bob@example.com",))
    page = signed_in(http, "vera").get(f"/console/messages/{message_id}")
    assert "Recall this message" not in page.text
    forged = http.post(
        f"/console/messages/{message_id}/recall", data={"csrf": consoleworld.csrf_of(page)}
    )
    assert forged.status_code == 403
    after = http.get(f"/console/messages/{message_id}/timeline")
    assert "RECALL" not in after.text


def test_an_operator_recalls_once_and_the_recall_reaches_the_recipient(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    message_id = submit(srv, "", ("bob@example.com", "carol@example.com"))
    fetch_and_ack(srv, "bob@example.com")
    page = signed_in(http, "otto").get(f"/console/messages/{message_id}")
    assert "Recall this message" in page.text
    done = http.post(
        f"/console/messages/{message_id}/recall", data={"csrf": consoleworld.csrf_of(page)}
    )
    assert done.status_code == 303
    shown = http.get(done.headers["location"])
    assert "RECALL sent to 1" in shown.text
    assert "Recall this message" not in shown.text
    [the_recall] = fetch_and_ack(srv, "bob@example.com").deliveries
    assert the_recall.content_type == "RECALL"
    assert "RECALL arrived" in http.get(f"/console/messages/{message_id}/timeline").text
    again = http.post(
        f"/console/messages/{message_id}/recall", data={"csrf": consoleworld.csrf_of(shown)}
    )
    assert again.status_code == 409
    assert "recalled already" in again.text
    audit = http.get("/console/audit", params={"what": "message.recall"})
    assert re.search(r"console:otto", audit.text)


def test_the_explanation_of_a_recipient_is_a_fragment_for_htmx_and_a_page_otherwise(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    message_id = submit(srv, "", ("bob@example.com", "carol@example.com"))
    signed_in(http, "vera")
    path = f"/console/messages/{message_id}/explain"
    fragment = http.get(
        path, params={"recipient": "carol@example.com"}, headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "carol@example.com" in fragment.text
    assert "BROKEN" in fragment.text
    whole = http.get(path, params={"recipient": "carol@example.com"})
    assert "<html" in whole.text
    assert "Why didn't it arrive?" in whole.text


def test_push_again_needs_an_operator_and_a_waiting_device(
    srv: serverproc.ServerProcess, http: httpx.Client
) -> None:
    message_id = submit(srv, "", ("carol@example.com",))
    page = signed_in(http, "otto").get(f"/console/messages/{message_id}")
    assert "Push again" not in page.text  # carol is a user, no device
    refused = http.post(
        f"/console/messages/{message_id}/push",
        data={
            "csrf": consoleworld.csrf_of(page),
            "account": srv.vault.account_id("carol@example.com"),
        },
    )
    assert refused.status_code == 409
    assert "not a device with a live push token" in refused.text


def test_an_unknown_message_is_a_404_page(http: httpx.Client) -> None:
    page = signed_in(http, "vera").get("/console/messages/no-such-message")
    assert page.status_code == 404
    assert "no message no-such-message" in page.text
