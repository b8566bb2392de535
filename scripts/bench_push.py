#!/usr/bin/env python3
"""Push jobs under a fan-out: enqueue time, and pushes sent per second to a stand-in.

In one process, on a server database (SQLite in a temporary folder by default, or
``--database-url``), with ``--devices`` registered devices of one group (rows written
directly, as tests/pushdevices.py does):

* **message fan-out**: one AlertFlag message submitted to every device
  (``QueueStore.submit``: entries and push jobs in one transaction), against the same
  message without AlertFlag (entries only) — the difference is the push jobs' cost;
* **publication fan-out**: ``publishing.publish`` to the group (file written, then
  one job per device committed);
* **send rate**: ``--workers`` worker threads sending the publication's jobs to the
  webhook stand-in (HTTPS on loopback, signature checked per push) until all are sent.

Results go to standard output as one JSON object; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import pathlib
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import sqlalchemy as sa
import structlog
import trustme
from pushdevices import add_group
from standins.webhook import WebhookStandIn, provider_entry

from mpg import config
from mpg.server import accounts, publishing, queues, tables
from mpg.server.push import registry, worker
from mpg.wire import atrest, keys, model

SENDER = "erp-a@example.com"
SECRET = b"bench-webhook-secret"


def devices(engine: sa.Engine, keyring: atrest.Keyring, count: int) -> list[str]:
    """``count`` device accounts with push tokens in group ``acme`` (bulk inserts)."""
    now = time.time()
    ids = ["dev-" + uuid.uuid4().hex for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            tables.account.insert(),
            [{"AccountId": a, "Kind": "device", "Disabled": False, "CreatedAt": ""} for a in ids],
        )
        conn.execute(
            tables.device.insert(),
            [
                {
                    "AccountId": a,
                    "DeviceIndex": a[4:],
                    "DeviceIdEnc": b"",
                    "GroupId": "acme",
                    "Via": "code",
                    "Platform": "android",
                    "PushTokenEnc": keyring.encrypt(
                        "token-" + a, atrest.Place("Device", "PushTokenEnc", a)
                    ),
                    "PushTokenAt": now,
                    "RegisteredAt": now,
                }
                for a in ids
            ],
        )
    return ids


def message(to: list[str], alert: bool) -> model.OutgoingMessage:
    return model.OutgoingMessage(
        tx_message_id=str(uuid.uuid4()),
        app_code="BPM",
        source_domain="example.com",
        agent_sender=SENDER,
        sender="alice@example.com",
        receiver_type="D",
        receivers=tuple(to),
        bcc=(),
        subject="bench",
        content="<c/>",
        content_type="MSG",
        alert_flag=alert,
        priority="H",
        keywords="",
        transmit_time="2026-11-30 12:00:00",
    )


def count_jobs(engine: sa.Engine, state: str | None = None) -> int:
    j = tables.push_job.c
    query = sa.select(sa.func.count()).select_from(tables.push_job)
    if state is not None:
        query = query.where(j.State == state)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def clear_jobs(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(tables.push_job.delete())


def run(args: argparse.Namespace, root: pathlib.Path) -> dict[str, object]:
    url = args.database_url or f"sqlite:///{root / 'server.db'}"
    engine = tables.create_engine(url)
    tables.create_tables(engine)
    keyring = atrest.Keyring({"k": keys.new_master_key()}, "k")
    account_store = accounts.AccountStore(engine, keys.new_master_key(), keyring)
    account_store.add(SENDER, "gateway")
    add_group(engine, "acme")
    ids = devices(engine, keyring, args.devices)
    store = queues.QueueStore(engine, account_store.vault)
    result: dict[str, object] = {"devices": args.devices, "database": engine.dialect.name}

    timings = {}
    for alert in (False, True):
        start = time.perf_counter()
        [answer] = store.submit(SENDER, [message(ids, alert)])
        timings[alert] = time.perf_counter() - start
        assert answer.accepted, answer.reason
    result["submit_without_alert_s"] = round(timings[False], 3)
    result["submit_with_alert_s"] = round(timings[True], 3)
    result["push_jobs_enqueued"] = count_jobs(engine)
    clear_jobs(engine)

    ca = trustme.CA()
    receiver = WebhookStandIn(SECRET)
    serving = receiver.serve(ca)
    next(serving)
    entry = provider_entry(receiver, ca, root)
    settings = config.ServerSettings(
        data_dir=root / "data", push_providers=(entry,), push_workers=args.workers
    )
    files = publishing.message_files(settings)
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    done = publishing.publish(
        engine,
        files,
        settings,
        "acme",
        actor="bench",
        add=[publishing.new_message("bench", now=now)],
    )
    result["publish_s"] = round(time.perf_counter() - start, 3)
    result["publication_pushes"] = done.pushes

    pusher = worker.PushWorker(engine, keyring, registry.Registry(settings), settings)
    start = time.perf_counter()
    pusher.start()
    try:
        while count_jobs(engine, "sent") + count_jobs(engine, "failed") < done.pushes:
            time.sleep(0.2)
    finally:
        pusher.stop()
    elapsed = time.perf_counter() - start
    result["workers"] = args.workers
    result["sent"] = count_jobs(engine, "sent")
    result["received_by_stand_in"] = len(receiver.received)
    result["send_s"] = round(elapsed, 2)
    result["pushes_per_s"] = round(done.pushes / elapsed, 1)
    serving.close()
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8, help="push worker threads")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp folder")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(args, pathlib.Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
