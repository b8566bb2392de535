"""The directory administered as an operator does it: a real ``mpg server`` process
over TLS, the admin API and ``mpg server …`` commands (real processes) on one database,
and the domain's code read from a real SMTP server on loopback."""

from __future__ import annotations

import json
import ssl

import httpx
from harness import World
from smtp_sink import smtp_sink


def test_an_admin_sets_up_a_group_by_api_and_cli_and_every_change_is_audited(
    world: World,
) -> None:
    with smtp_sink() as (sink, smtp_port):
        with world.server_config.open("a") as config:
            config.write(
                f'mail_host = "127.0.0.1"\nmail_port = {smtp_port}\nmail_security = "plain"\n'
                'mail_from = "noreply@mpg.example"\n'
            )
        world.start_server()
        cfg = world.server_config
        token = json.loads(world.mpg(cfg, "server", "admin", "add", "root", "--json").stdout)[
            "token"
        ]
        api = httpx.Client(
            base_url=f"https://127.0.0.1:{world.port}/api/v1",
            verify=ssl.create_default_context(cafile=str(world.ca_file)),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        with api:
            assert api.post("/groups", json={"group": "north", "name": "North"}).status_code == 201
            world.mpg(cfg, "server", "category", "add", "north", "storm", "--name", "Storm")
            domain = {"domain": "firma.example", "group": "north", "email": "it@firma.example"}
            assert api.post("/domains", json=domain).status_code == 201
            code = sink.code()
            world.mpg(cfg, "server", "domain", "verify", "firma.example", code, "--group", "north")
            [listed] = api.get("/domains").json()
            assert listed["verified"] is True

            made = json.loads(
                world.mpg(
                    cfg, "server", "code", "add", "--name", "Site A", "--group", "north", "--json"
                ).stdout
            )
            assert api.get(f"/codes/{made['code_id']}").json()["status"] == "valid"
            assert api.delete(f"/codes/{made['code_id']}").json()["devices"] == 0
            listed_codes = json.loads(world.mpg(cfg, "server", "code", "list", "--json").stdout)
            assert [c["status"] for c in listed_codes] == ["deleted"]
            categories = api.get("/groups/north/categories").json()
            assert [c["category"] for c in categories] == ["storm"]

            audit = api.get("/audit").json()
    by_action = {entry["action"]: entry["actor"] for entry in audit}
    assert by_action["group.create"] == "root"
    assert by_action["domain.register"] == "root"
    assert by_action["domain.verify"].startswith("cli")
    assert by_action["code.create"].startswith("cli")
    assert by_action["code.delete"] == "root"
    assert by_action["category.create"].startswith("cli")
