"""Content in a push is a per-group choice (``server.push_content_groups``): the worker
opens the sealed subject and content at send time for such a group only; the FCM and
APNs stand-ins see the subject for that group and nothing of it for any other."""

from __future__ import annotations

import json
import pathlib
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pushdevices import add_device, add_group
from standins.apns import ApnsStandIn
from standins.common import ca_file
from standins.fcm import FcmStandIn

from mpg import config
from mpg.server import accounts, publishing, queues, tables
from mpg.server.directory import devices
from mpg.server.push import registry, worker
from mpg.wire import atrest, keys, model

SENDER = "erp-a@example.com"
SUBJECT = "Plant closed tonight"
BODY = "Gate 3 stays shut until six"
KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "com.acme.alerts"
IOS_TOKEN = "b2" * 32


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def fcm(ca: trustme.CA) -> Iterator[FcmStandIn]:
    yield from FcmStandIn().serve(ca)


@pytest.fixture(scope="module")
def team_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def apns(
    ca: trustme.CA, team_key: ec.EllipticCurvePrivateKey, tmp_path: pathlib.Path
) -> Iterator[ApnsStandIn]:
    yield from ApnsStandIn(team_key.public_key(), KEY_ID, TEAM_ID, TOPIC).serve(ca, tmp_path)


class Sender:
    """A server database whose group ``news`` shows content in pushes and ``acme`` not."""

    def __init__(self, engine: sa.Engine, settings: config.ServerSettings) -> None:
        self.engine = engine
        self.keyring = atrest.Keyring({"k1": keys.new_master_key()}, "k1")
        self.store = accounts.AccountStore(engine, keys.new_master_key(), self.keyring)
        self.store.add(SENDER, "gateway")
        directory = devices.DeviceStore(engine, self.keyring, self.store)
        self.queues = queues.QueueStore(engine, self.store.vault, addresser=directory.addresser)
        self.queues.publisher = publishing.OutboxPublisher(
            publishing.message_files(settings), settings
        )
        self.worker = worker.PushWorker(engine, self.keyring, registry.Registry(settings), settings)
        add_group(engine, "news")
        add_group(engine, "acme")

    def device(self, group: str, token: str, platform: str) -> str:
        return add_device(self.engine, self.store, self.keyring, group, token, platform=platform)

    def send(self, *to: str, keywords: str = "") -> str:
        msg = model.OutgoingMessage(
            tx_message_id=str(uuid.uuid4()),
            app_code="BPM",
            source_domain="example.com",
            agent_sender=SENDER,
            sender="alice@example.com",
            receiver_type="D",
            receivers=to,
            bcc=(),
            subject=SUBJECT,
            content=BODY,
            content_type="MSG",
            alert_flag=True,
            priority="H",
            keywords=keywords,
            transmit_time="2026-11-23 05:41:07",
        )
        [result] = self.queues.submit(SENDER, [msg])
        assert result.accepted, result.reason
        return result.message_id


@pytest.fixture
def sender(
    tmp_path: pathlib.Path,
    ca: trustme.CA,
    fcm: FcmStandIn,
    apns: ApnsStandIn,
    team_key: ec.EllipticCurvePrivateKey,
) -> Iterator[Sender]:
    key_file = tmp_path / "firebase.json"
    key_file.write_text(json.dumps(fcm.service_account()), encoding="utf-8")
    key_file.chmod(0o600)
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(
        team_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    p8.chmod(0o600)
    trust = ca_file(ca, tmp_path)
    settings = config.ServerSettings(
        data_dir=tmp_path / "data",
        push_workers=0,
        push_content_groups=("news",),
        push_providers=(
            config.PushProvider(
                name="android",
                kind="fcm",
                groups=("*",),
                service_account_file=key_file,
                endpoint=fcm.base,
                ca_bundle=trust,
            ),
            config.PushProvider(
                name="ios",
                kind="apns",
                groups=("*",),
                team_id=TEAM_ID,
                key_id=KEY_ID,
                key_file=p8,
                topic=TOPIC,
                endpoint=apns.url,
                ca_bundle=trust,
            ),
        ),
    )
    engine = tables.create_engine(f"sqlite:///{tmp_path / 'server.db'}")
    tables.create_tables(engine)
    s = Sender(engine, settings)
    yield s
    s.worker.stop()
    engine.dispose()


def test_a_content_group_s_pushes_show_the_subject_and_text_opened_at_send_time(
    sender: Sender, fcm: FcmStandIn, apns: ApnsStandIn
) -> None:
    message_id = sender.send(
        sender.device("news", "fcm-news", "android"), sender.device("news", IOS_TOKEN, "ios")
    )
    with sender.engine.connect() as conn:  # at rest: sealed, and nothing in the jobs
        row = conn.execute(
            sa.select(tables.transmit_queue).where(tables.transmit_queue.c.MessageId == message_id)
        ).one()
        jobs = conn.execute(sa.select(tables.push_job)).all()
    assert (row.Subject, row.Content) == (None, None)
    assert len(jobs) == 2
    assert SUBJECT not in repr(jobs)
    assert sender.worker.run_once() == 2
    [android] = fcm.pushes
    assert android["android"]["notification"]["title"] == SUBJECT
    assert android["android"]["notification"]["body"] == BODY
    [ios] = apns.pushes
    assert ios["aps"]["alert"] == {"title": SUBJECT, "body": BODY}


def test_a_group_without_the_choice_gets_no_subject_or_content_in_any_request(
    sender: Sender, fcm: FcmStandIn, apns: ApnsStandIn
) -> None:
    message_id = sender.send(
        sender.device("acme", "fcm-acme", "android"), sender.device("acme", IOS_TOKEN, "ios")
    )
    assert sender.worker.run_once() == 2
    [android] = fcm.pushes
    assert android["android"]["notification"]["title_loc_key"] == "mpg_new_message"
    assert android["data"]["message_id"] == message_id
    [ios] = apns.pushes
    assert ios["aps"]["alert"] == {"loc-key": "mpg_new_message"}
    raw = b"".join(fcm.raw_pushes) + b"".join(body for _, body in apns.raw_pushes)
    for personal in (SUBJECT, BODY, "alice", SENDER):
        assert personal.encode() not in raw


def test_the_file_push_of_a_publishing_row_shows_its_subject_in_a_content_group(
    sender: Sender, fcm: FcmStandIn
) -> None:
    sender.device("news", "fcm-news", "android")
    message_id = sender.send("group:news", keywords="mpg:publish")
    assert sender.worker.run_once() == 1
    [android] = fcm.pushes
    assert (android["data"]["kind"], android["data"]["message_id"]) == ("file", message_id)
    assert android["android"]["notification"]["title"] == SUBJECT
