"""Publishing: the file's new version first, then one push job per device that should hear."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import pathlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pushdevices import add_device, add_group

from mpg import config, errors
from mpg.cli import context
from mpg.cli import server as server_cli
from mpg.server import accounts, app, audit, publishing, tables
from mpg.wire import atrest, content, keys, messagefile, model

NOW = 1_800_000_000.0


class Site:
    """A server (not listening) with groups ``acme`` (category ``alerts``) and ``other``."""

    def __init__(self, root: pathlib.Path, **settings: Any) -> None:
        self.engine = tables.create_engine(f"sqlite:///{root / 's.db'}")
        tables.create_tables(self.engine)
        self.settings = config.ServerSettings(data_dir=root / "data", push_workers=0, **settings)
        self.keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
        self.push = app.PushServer(self.settings, self.engine, keys.new_master_key(), self.keyring)
        add_group(self.engine, "acme", "alerts", "news")
        add_group(self.engine, "other")

    def device(self, group: str = "acme", token: str | None = "tok", **kw: Any) -> str:  # noqa: S107
        return add_device(self.engine, self.push.accounts, self.keyring, group, token, **kw)

    def publish(self, group: str = "acme", **kw: Any) -> publishing.Published:
        kw.setdefault("add", [publishing.new_message("Plant closed", "tonight", now=_now())])
        return publishing.publish(
            self.engine,
            self.push.files,
            self.settings,
            group,
            actor="test",
            clock=lambda: NOW,
            **kw,
        )

    def jobs(self) -> list[tables.Row]:
        j = tables.push_job.c
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(tables.push_job).order_by(j.NotBefore, j.AccountId)))


def _now() -> dt.datetime:
    return dt.datetime.fromtimestamp(NOW, dt.UTC)


@pytest.fixture
def site(tmp_path: pathlib.Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.engine.dispose()


def test_a_publication_writes_the_version_then_pushes_each_device_of_the_group(site: Site) -> None:
    one, two = site.device(), site.device(platform="ios")
    site.device("other")
    site.device(token=None)
    done = site.publish()
    served = site.push.files.current("acme")
    assert served is not None
    assert served.etag == done.version
    assert [m.title for m in messagefile.parse(served.body).messages] == ["Plant closed"]
    found = site.jobs()
    assert sorted(r.AccountId for r in found) == sorted([one, two])
    assert {(r.Kind, r.Version, r.GroupId, r.State) for r in found} == {
        ("file", done.version, "acme", "pending")
    }
    [entry] = audit.entries(site.engine)
    assert (entry.actor, entry.action, entry.target) == ("test", "file.publish", "acme")


def test_a_second_publication_adds_to_the_file_and_announces_its_new_version(site: Site) -> None:
    site.device()
    first = site.publish()
    second = site.publish(add=[publishing.new_message("Reopened", now=_now())])
    assert second.version != first.version
    assert len(second.kept) == 2
    assert [r.Version for r in site.jobs()] == [first.version, second.version]


def test_a_category_publication_pushes_only_its_subscribed_devices(site: Site) -> None:
    subscribed = site.device(categories=("alerts",))
    site.device(categories=("news",))
    site.device()
    done = site.publish(category="alerts")
    assert [(r.AccountId, r.CategoryId) for r in site.jobs()] == [(subscribed, "alerts")]
    served = site.push.files.current("acme.alerts")
    assert served is not None
    assert served.etag == done.version
    assert site.push.files.current("acme") is None


def test_publishing_the_same_file_again_makes_no_version_and_pushes_nobody(site: Site) -> None:
    site.device()
    first = site.publish()
    served = site.push.files.current("acme")
    assert served is not None
    again = site.publish(add=[], whole=served.body)
    assert (again.changed, again.version, again.pushes) == (False, first.version, 0)
    assert len(site.jobs()) == 1


def test_the_pushes_of_a_publication_are_spread_over_the_window(tmp_path: pathlib.Path) -> None:
    site = Site(tmp_path, push_spread_seconds=100)
    for _ in range(4):
        site.device()
    site.publish()
    assert [r.NotBefore - NOW for r in site.jobs()] == [0, 25, 50, 75]
    site.engine.dispose()


def test_an_unknown_group_or_category_is_not_found_and_nothing_is_written(site: Site) -> None:
    with pytest.raises(errors.NotFound, match="no message group 'nope'"):
        site.publish("nope")
    with pytest.raises(errors.NotFound, match="no category 'nope' in group 'acme'"):
        site.publish(category="nope")
    assert site.push.files.current("nope") is None
    assert site.push.files.current("acme.nope") is None


def test_a_file_of_another_group_is_refused(site: Site) -> None:
    other = messagefile.render("other", [], now=_now()).data
    with pytest.raises(errors.ValidationError, match="is the file of group 'other', not 'acme'"):
        site.publish(add=[], whole=other)


# ---------------------------------------------------------------- the admin API


def call(push: app.PushServer, path: str, token: str, body: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app.create_app(push))
        async with httpx.AsyncClient(transport=transport, base_url="http://mpg") as client:
            return await client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    return asyncio.run(go())


def test_the_admin_api_publishes_and_answers_the_version_and_pushes(site: Site) -> None:
    site.device(categories=("alerts",))
    _, token = site.push.admins.add("alice", "admin", "cli:root")
    body = {"category": "alerts", "messages": [{"title": "Storm", "priority": "E"}]}
    answer = call(site.push, "/api/v1/groups/acme/publish", token, body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["group"], got["category"], got["pushes"], got["changed"]) == (
        "acme",
        "alerts",
        1,
        True,
    )
    [job] = site.jobs()
    assert (job.Version, job.Priority) == (got["version"], "E")
    assert audit.entries(site.engine)[0].actor == "alice"


def test_the_admin_api_refuses_an_operator_and_names_a_bad_field(site: Site) -> None:
    _, operator = site.push.admins.add("olga", "operator", "cli:root")
    _, admin = site.push.admins.add("alice", "admin", "cli:root")
    body = {"messages": [{"title": "x"}]}
    assert call(site.push, "/api/v1/groups/acme/publish", operator, body).status_code == 403
    bad = call(
        site.push,
        "/api/v1/groups/acme/publish",
        admin,
        {"messages": [{"title": "x", "priority": "Z"}]},
    )
    assert bad.status_code == 400
    assert "priority" in bad.text
    missing = call(site.push, "/api/v1/groups/nope/publish", admin, body)
    assert missing.status_code == 404
    assert site.jobs() == []


# ---------------------------------------------------------------- the command line


def test_mpg_server_publish_writes_the_file_and_queues_the_pushes(tmp_path: pathlib.Path) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text(
        f'[server]\ndatabase_url = "sqlite:///{tmp_path / "s.db"}"\ndata_dir = "{tmp_path / "data"}"\n'
    )
    settings = config.load(config_file).server
    engine = tables.create_engine(settings.database_url)
    tables.create_tables(engine)
    add_group(engine, "acme")
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    add_device(
        engine,
        accounts.AccountStore(engine, keys.new_master_key(), keyring),
        keyring,
        "acme",
        "tok",
    )
    obj = context.CliContext(str(config_file))
    try:
        runner = CliRunner()
        result = runner.invoke(
            server_cli.server,
            ["publish", "acme", "--message", "Closed", "--priority", "H"],
            obj=obj,
        )
        assert result.exit_code == 0, result.output
        assert "1 pushes queued" in result.output
        both = runner.invoke(server_cli.server, ["publish", "acme"], obj=obj)
        assert both.exit_code == 2
        assert "either --message TITLE or --file F" in both.output
    finally:
        obj.close()
    served = publishing.message_files(settings).current("acme")
    assert served is not None
    assert b"Closed" in served.body
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.push_job)).scalar() == 1
    engine.dispose()


SENDER = "erp-a@example.com"


def outbox_row(site: Site, to: str, keywords: str, content: str = "tonight") -> str:
    """A gateway's Outbox row (ReceiverType D, AlertFlag 1) submitted; its MessageId."""
    if site.push.accounts.get(SENDER) is None:
        site.push.accounts.add(SENDER, "gateway")
    row = model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=SENDER,
        sender=SENDER,
        receiver_type="D",
        receivers=(to,),
        bcc=(),
        subject="Plant closed",
        content=content,
        content_type="MSG",
        alert_flag=True,
        priority="H",
        keywords=keywords,
        transmit_time="2026-11-30 17:00:00",
    )
    [result] = site.push.queues.submit(SENDER, [row])
    assert result.accepted, result.reason
    return result.message_id


def events(site: Site, message_id: str) -> list[tuple[str, str]]:
    e = tables.message_event.c
    with site.engine.connect() as conn:
        found = conn.execute(
            sa.select(e.Kind, e.Detail).where(e.MessageId == message_id).order_by(e.Id)
        )
        return [(r.Kind, r.Detail) for r in found if "publish" in r.Kind]


def test_an_outbox_row_with_mpg_publish_is_published_and_its_devices_pushed_once(
    site: Site,
) -> None:
    one, two = site.device(), site.device(platform="ios")
    site.device("other")
    message_id = outbox_row(site, "group:acme", "leave; MPG:Publish")
    served = site.push.files.current("acme")
    assert served is not None
    [published] = messagefile.parse(served.body).messages
    assert (published.message_id, published.title, published.text, published.priority) == (
        message_id,
        "Plant closed",
        "tonight",
        "H",
    )
    found = site.jobs()
    assert sorted(r.AccountId for r in found) == sorted([one, two])
    assert {(r.Kind, r.MessageId, r.Version) for r in found} == {("file", message_id, served.etag)}
    [(kind, detail)] = events(site, message_id)
    assert kind == "published"
    assert detail == f"group:acme: version {served.etag}, 2 pushes"
    with site.engine.connect() as conn:  # delivered as well: each device's queue has it
        r = tables.receive_queue.c
        queued = conn.execute(sa.select(r.Recipient).where(r.MessageId == message_id))
        assert sorted(queued.scalars()) == sorted([one, two])
    entry = audit.entries(site.engine)[0]
    assert (entry.actor, entry.target) == (publishing.OUTBOX_ACTOR, "acme")


def test_recalling_a_published_row_takes_it_out_of_the_file_and_tells_its_devices(
    site: Site,
) -> None:
    phone = site.device()
    kept = outbox_row(site, "group:acme", "mpg:publish")
    recalled = outbox_row(site, "group:acme", "mpg:publish")
    before = site.push.files.current("acme")
    assert before is not None
    recall = model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code=content.RECALL_APP_CODE,
        source_domain="example.com",
        agent_sender=SENDER,
        sender=SENDER,
        receiver_type="U",
        receivers=(model.SERVER_AGENT,),
        bcc=(),
        subject=f"[Recall]: {recalled}",
        content=content.build_recall(recalled),
        content_type="RECALL",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time="2026-11-30 17:05:00",
    )
    [result] = site.push.queues.submit(SENDER, [recall])
    assert result.accepted, result.reason
    served = site.push.files.current("acme")
    assert served is not None
    assert served.etag != before.etag
    assert [m.message_id for m in messagefile.parse(served.body).messages] == [kept]
    # The file without it is the file of `kept` alone again: the same version as then.
    told = [(r.AccountId, r.Version) for r in site.jobs() if r.MessageId == recalled]
    assert told == [(phone, before.etag), (phone, served.etag)]
    kinds = [kind for kind, _ in events(site, recalled)]
    assert kinds == ["published", "unpublished"]


def test_an_outbox_row_to_a_category_publishes_the_category_s_file(site: Site) -> None:
    subscribed = site.device(categories=("alerts",))
    site.device()
    message_id = outbox_row(site, "group:acme/alerts", "mpg:publish")
    served = site.push.files.current("acme.alerts")
    assert served is not None
    [published] = messagefile.parse(served.body).messages
    assert (published.message_id, published.category) == (message_id, "alerts")
    assert site.push.files.current("acme") is None
    assert [(r.AccountId, r.Kind, r.CategoryId) for r in site.jobs()] == [
        (subscribed, "file", "alerts")
    ]


def test_an_outbox_row_without_the_keyword_is_only_delivered(site: Site) -> None:
    phone = site.device()
    message_id = outbox_row(site, "group:acme", "mpg:publishing;publish")
    assert site.push.files.current("acme") is None
    assert [(r.AccountId, r.Kind, r.MessageId) for r in site.jobs()] == [
        (phone, "message", message_id)
    ]
    assert events(site, message_id) == []


def test_an_outbox_row_too_large_for_the_file_is_delivered_and_says_why_not_published(
    tmp_path: pathlib.Path,
) -> None:
    site = Site(tmp_path, message_file_max_bytes=4096)
    phone = site.device()
    message_id = outbox_row(site, "group:acme", "mpg:publish", content="x" * 6000)
    assert site.push.files.current("acme") is None
    assert [(r.AccountId, r.Kind) for r in site.jobs()] == [(phone, "message")]
    [(kind, detail)] = events(site, message_id)
    assert kind == "publish_failed"
    assert detail.startswith("group:acme: ")
    site.engine.dispose()


def test_publications_to_one_group_at_once_keep_every_message(
    db_url: str, tmp_path: pathlib.Path
) -> None:
    """Four threads publish five messages each to one file at the same moment: the
    group's lock makes each read-add-write follow the last, so none is lost."""
    engine = tables.create_engine(db_url)
    tables.create_tables(engine)
    add_group(engine, "acme")
    settings = config.ServerSettings(data_dir=tmp_path / "data", push_workers=0)
    files = publishing.message_files(settings)
    start = threading.Barrier(4)

    def publish_five(thread: int) -> None:
        start.wait()
        for n in range(5):
            message = publishing.new_message(f"t{thread}-{n}", now=_now())
            publishing.publish(engine, files, settings, "acme", actor="test", add=[message])

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(publish_five, range(4)))
        served = files.current("acme")
        assert served is not None
        titles = sorted(m.title for m in messagefile.parse(served.body).messages)
        assert titles == sorted(f"t{t}-{n}" for t in range(4) for n in range(5))
    finally:
        engine.dispose()
