"""``mpg server group|category|domain|code|device …``: the alerting directory from the
command line (the same stores as the admin API; docs/devices.md).

Every change is audited as ``cli:<os user>``. Removing a domain, deleting a code or
removing a device first prints what it removes and asks (``--yes`` does not ask).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime as dt
import json
from typing import Any

import click
import sqlalchemy as sa

from mpg import config, errors
from mpg.cli.admins import cli_actor, server_engine
from mpg.server import accounts, datakeys, mail
from mpg.server.directory import categories, codestore, domains, groups, regcodes, roster
from mpg.wire import atrest

_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_YES = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


@dataclasses.dataclass(frozen=True, slots=True)
class _Keyed:
    """What the commands that read personal data or codes need besides the engine."""

    engine: sa.Engine
    settings: config.ServerSettings
    keyring: atrest.Keyring
    codes: codestore.CodeStore


@contextlib.contextmanager
def _keyed(obj: object) -> collections.abc.Iterator[_Keyed]:
    with server_engine(obj) as engine:
        settings = getattr(obj, "settings", None)
        assert isinstance(settings, config.Settings)  # server_engine refused anything else
        keyring = datakeys.load_keyring(settings.server)
        code_key = codestore.code_key(accounts.load_master_key(settings.server))
        yield _Keyed(engine, settings.server, keyring, codestore.CodeStore(code_key, keyring))


def _domains(keyed: _Keyed) -> domains.DomainStore:
    settings = keyed.settings
    mailer = mail.Mailer(mail.SmtpSettings.from_server(settings)) if settings.mail_host else None
    return domains.DomainStore(keyed.engine, keyed.keyring, keyed.codes, mailer, settings.mail_from)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _confirm(yes: bool, question: str) -> None:
    if not yes and not click.confirm(question, default=False):
        raise errors.CommandError("nothing removed: not confirmed")


def _when(unix: float | None) -> str:
    if unix is None:
        return "-"
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_valid_until(text: str) -> float:
    """``--valid-until`` as Unix time: ``YYYY-MM-DD`` means through that day (to the next
    midnight), ``YYYY-MM-DD HH:MM[:SS]`` or with ``T`` that moment; all in UTC."""
    try:
        if len(text.strip()) == len("2026-12-31"):
            day = dt.date.fromisoformat(text.strip())
            moment = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(text.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise click.BadParameter(
            f"{text!r}: expected YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS] (UTC)"
        ) from None
    return moment.timestamp()


# --- groups -----------------------------------------------------------------------


@click.group("group")
def group() -> None:
    """Message groups (regions) devices register into."""


def _group_dict(g: groups.Group) -> dict[str, Any]:
    return {
        "group": g.group_id,
        "name": g.name,
        "region": g.region,
        "file_url": g.file_url,
        "created_at": g.created_at,
    }


def _print_group(g: groups.Group, as_json: bool) -> None:
    if as_json:
        _echo_json(_group_dict(g))
        return
    click.echo(f"group    {g.group_id}")
    click.echo(f"name     {g.name}")
    click.echo(f"region   {g.region or '-'}")
    click.echo(f"file url {g.file_url or '-'}")
    click.echo(f"created  {g.created_at}")


@group.command("add")
@click.argument("group_id", metavar="GROUP")
@click.option("--name", required=True, help="Display name.")
@click.option("--region", default="", help="Region the group covers.")
@click.option("--file-url", default="", help="Public https:// address of the message file.")
@_JSON
@click.pass_obj
def group_add(
    obj: object, group_id: str, name: str, region: str, file_url: str, as_json: bool
) -> None:
    """Create group GROUP (a-z 0-9 _ -, at most 50)."""
    with server_engine(obj) as engine:
        made = groups.GroupStore(engine).add(group_id, name, region, file_url, cli_actor())
    _print_group(made, as_json)


@group.command("list")
@_JSON
@click.pass_obj
def group_list(obj: object, as_json: bool) -> None:
    """Every group."""
    with server_engine(obj) as engine:
        found = groups.GroupStore(engine).all()
    if as_json:
        _echo_json([_group_dict(g) for g in found])
        return
    for g in found:
        click.echo(f"{g.group_id:<20} {g.region or '-':<20} {g.name}")


@group.command("show")
@click.argument("group_id", metavar="GROUP")
@_JSON
@click.pass_obj
def group_show(obj: object, group_id: str, as_json: bool) -> None:
    """Group GROUP with its categories."""
    with server_engine(obj) as engine:
        found = groups.GroupStore(engine).get(group_id)
        cats = categories.CategoryStore(engine).of_group(group_id)
    if as_json:
        _echo_json({**_group_dict(found), "categories": [_category_dict(c) for c in cats]})
        return
    _print_group(found, False)
    for c in cats:
        click.echo(
            f"category {c.category_id:<20} {'preselected' if c.preselected else '':<11} {c.name}"
        )


@group.command("change")
@click.argument("group_id", metavar="GROUP")
@click.option("--name", default=None, help="New display name.")
@click.option("--region", default=None, help="New region.")
@click.option("--file-url", default=None, help="New message file address ('' for none).")
@_JSON
@click.pass_obj
def group_change(
    obj: object,
    group_id: str,
    name: str | None,
    region: str | None,
    file_url: str | None,
    as_json: bool,
) -> None:
    """Change group GROUP (options left out stay)."""
    with server_engine(obj) as engine:
        changed = groups.GroupStore(engine).change(
            group_id, cli_actor(), name=name, region=region, file_url=file_url
        )
    _print_group(changed, as_json)


@group.command("remove")
@click.argument("group_id", metavar="GROUP")
@click.pass_obj
def group_remove(obj: object, group_id: str) -> None:
    """Remove group GROUP and its categories; refused while it has devices, domains or
    registration codes (remove those first)."""
    with server_engine(obj) as engine:
        groups.GroupStore(engine).remove(group_id, cli_actor())
    click.echo(f"removed group {group_id}")


# --- categories -------------------------------------------------------------------


@click.group("category")
def category() -> None:
    """Categories of a group, which devices subscribe to."""


def _category_dict(c: categories.Category) -> dict[str, Any]:
    return {
        "group": c.group_id,
        "category": c.category_id,
        "name": c.name,
        "preselected": c.preselected,
        "created_at": c.created_at,
    }


def _print_category(c: categories.Category, as_json: bool) -> None:
    if as_json:
        _echo_json(_category_dict(c))
        return
    mark = "preselected" if c.preselected else "optional"
    click.echo(f"{c.group_id}/{c.category_id} ({mark}): {c.name}")


@category.command("add")
@click.argument("group_id", metavar="GROUP")
@click.argument("category_id", metavar="CATEGORY")
@click.option("--name", required=True, help="Display name.")
@click.option("--preselected", is_flag=True, help="Subscribe devices to it by default.")
@_JSON
@click.pass_obj
def category_add(
    obj: object, group_id: str, category_id: str, name: str, preselected: bool, as_json: bool
) -> None:
    """Create CATEGORY in GROUP."""
    with server_engine(obj) as engine:
        made = categories.CategoryStore(engine).add(
            group_id, category_id, name, preselected, cli_actor()
        )
    _print_category(made, as_json)


@category.command("list")
@click.argument("group_id", metavar="GROUP")
@_JSON
@click.pass_obj
def category_list(obj: object, group_id: str, as_json: bool) -> None:
    """The categories of GROUP."""
    with server_engine(obj) as engine:
        found = categories.CategoryStore(engine).of_group(group_id)
    if as_json:
        _echo_json([_category_dict(c) for c in found])
        return
    for c in found:
        _print_category(c, False)


@category.command("change")
@click.argument("group_id", metavar="GROUP")
@click.argument("category_id", metavar="CATEGORY")
@click.option("--name", default=None, help="New display name.")
@click.option(
    "--preselected/--not-preselected", default=None, help="Whether devices get it by default."
)
@_JSON
@click.pass_obj
def category_change(
    obj: object,
    group_id: str,
    category_id: str,
    name: str | None,
    preselected: bool | None,
    as_json: bool,
) -> None:
    """Change CATEGORY of GROUP (options left out stay)."""
    with server_engine(obj) as engine:
        changed = categories.CategoryStore(engine).change(
            group_id, category_id, cli_actor(), name=name, preselected=preselected
        )
    _print_category(changed, as_json)


@category.command("remove")
@click.argument("group_id", metavar="GROUP")
@click.argument("category_id", metavar="CATEGORY")
@click.pass_obj
def category_remove(obj: object, group_id: str, category_id: str) -> None:
    """Remove CATEGORY from GROUP, with every device's subscription to it."""
    with server_engine(obj) as engine:
        dropped = categories.CategoryStore(engine).remove(group_id, category_id, cli_actor())
    click.echo(f"removed category {group_id}/{category_id} ({dropped} subscriptions)")


# --- domains ----------------------------------------------------------------------


@click.group("domain")
def domain() -> None:
    """Mail domains of a group, proven by a code mailed to an address at them."""


def _domain_dict(d: domains.Domain) -> dict[str, Any]:
    return {
        "domain": d.domain,
        "group": d.group_id,
        "region": d.region,
        "email": d.address,
        "verified": d.verified,
        "verified_at": d.verified_at,
        "created_at": d.created_at,
    }


def _print_domain(d: domains.Domain, as_json: bool) -> None:
    if as_json:
        _echo_json(_domain_dict(d))
        return
    state = f"verified {d.verified_at}" if d.verified else f"pending (code sent to {d.address})"
    click.echo(f"{d.domain:<30} {d.group_id:<20} {state}")


_GROUP = click.option("--group", "group_id", required=True, help="The message group.")


@domain.command("add")
@click.argument("name", metavar="DOMAIN")
@_GROUP
@click.option("--email", "address", required=True, help="Address at DOMAIN to mail the code to.")
@click.option("--region", default=None, help="Region (default: the group's).")
@_JSON
@click.pass_obj
def domain_add(
    obj: object, name: str, group_id: str, address: str, region: str | None, as_json: bool
) -> None:
    """Register DOMAIN for a group and mail a verification code to --email; confirm it
    with `mpg server domain verify`."""
    with _keyed(obj) as keyed:
        made = _domains(keyed).register(name, group_id, address, cli_actor(), region=region)
    _print_domain(made, as_json)
    if not as_json:
        click.echo(
            f"code mailed to {address}; run: mpg server domain verify {made.domain} "
            f"--group {group_id} CODE"
        )


@domain.command("verify")
@click.argument("name", metavar="DOMAIN")
@click.argument("code")
@_GROUP
@_JSON
@click.pass_obj
def domain_verify(obj: object, name: str, code: str, group_id: str, as_json: bool) -> None:
    """Confirm DOMAIN of a group with the CODE mailed for it."""
    with _keyed(obj) as keyed:
        done = _domains(keyed).verify(name, group_id, code, cli_actor())
    _print_domain(done, as_json)


@domain.command("resend")
@click.argument("name", metavar="DOMAIN")
@_GROUP
@click.pass_obj
def domain_resend(obj: object, name: str, group_id: str) -> None:
    """Mail a new code for a pending DOMAIN (the older ones stop working)."""
    with _keyed(obj) as keyed:
        _domains(keyed).resend(name, group_id, cli_actor())
    click.echo(f"new code mailed for {name} in group {group_id}")


@domain.command("list")
@click.option("--group", "group_id", default=None, help="Only this group's domains.")
@_JSON
@click.pass_obj
def domain_list(obj: object, group_id: str | None, as_json: bool) -> None:
    """Every domain of every group (or of --group)."""
    with _keyed(obj) as keyed:
        found = _domains(keyed).all(group_id)
    if as_json:
        _echo_json([_domain_dict(d) for d in found])
        return
    for d in found:
        _print_domain(d, False)


@domain.command("remove")
@click.argument("name", metavar="DOMAIN")
@_GROUP
@_YES
@click.pass_obj
def domain_remove(obj: object, name: str, group_id: str, yes: bool) -> None:
    """Remove DOMAIN from a group, and with it the devices registered through it into
    that group (its devices in other groups stay). Shows how many, then asks."""
    with _keyed(obj) as keyed:
        store = _domains(keyed)
        impact = store.impact(name, group_id)
        click.echo(
            f"removing {impact.domain} from group {group_id} removes {impact.devices} "
            f"device(s) registered through it in group {group_id}"
        )
        _confirm(yes, "remove it?")
        done = store.remove(name, group_id, cli_actor())
    click.echo(f"removed {done.domain} from group {group_id} and {done.devices} device(s)")


# --- registration codes -----------------------------------------------------------


@click.group("code")
def code() -> None:
    """Registration codes: a device registers into a group by typing one."""


def _code_dict(c: regcodes.RegCode) -> dict[str, Any]:
    return {
        "code_id": c.code_id,
        "name": c.name,
        "note": c.note,
        "group": c.group_id,
        "valid_until": c.valid_until,
        "status": c.status.value,
        "deleted_at": c.deleted_at,
        "created_at": c.created_at,
        "devices": c.devices,
    }


def _print_code(c: regcodes.RegCode) -> None:
    click.echo(f"code id     {c.code_id}")
    click.echo(f"name        {c.name}")
    click.echo(f"group       {c.group_id}")
    click.echo(f"status      {c.status.value}")
    click.echo(f"valid until {_when(c.valid_until) if c.valid_until else 'no end'}")
    click.echo(f"devices     {c.devices}")
    click.echo(f"created     {c.created_at}")
    if c.deleted_at:
        click.echo(f"deleted     {c.deleted_at}")
    if c.note:
        click.echo(f"note        {c.note}")


def _regcodes(keyed: _Keyed) -> regcodes.RegCodeStore:
    return regcodes.RegCodeStore(keyed.engine, keyed.codes.key)


@code.command("add")
@click.option("--name", required=True, help="What the code is for (people read it).")
@_GROUP
@click.option("--note", default="", help="Free text kept with it.")
@click.option(
    "--valid-until",
    default=None,
    help="UTC end: YYYY-MM-DD (through that day) or YYYY-MM-DD HH:MM[:SS]; default none.",
)
@_JSON
@click.pass_obj
def code_add(
    obj: object, name: str, group_id: str, note: str, valid_until: str | None, as_json: bool
) -> None:
    """Make a registration code for a group; the code is shown only this once."""
    until = None if valid_until is None else parse_valid_until(valid_until)
    with _keyed(obj) as keyed:
        made, text = _regcodes(keyed).create(
            name, group_id, cli_actor(), note=note, valid_until=until
        )
    if as_json:
        _echo_json({**_code_dict(made), "code": text})
        return
    _print_code(made)
    click.echo("code (shown only now; hand it out or read it aloud):")
    click.echo(text)


@code.command("list")
@click.option("--group", "group_id", default=None, help="Only this group's codes.")
@_JSON
@click.pass_obj
def code_list(obj: object, group_id: str | None, as_json: bool) -> None:
    """Every registration code (deleted ones too): valid, expired or deleted."""
    with _keyed(obj) as keyed:
        found = _regcodes(keyed).all(group_id)
    if as_json:
        _echo_json([_code_dict(c) for c in found])
        return
    for c in found:
        click.echo(
            f"{c.code_id}  {c.status.value:<8} {c.group_id:<15} {c.devices:>5} devices  {c.name}"
        )


@code.command("show")
@click.argument("code_id")
@_JSON
@click.pass_obj
def code_show(obj: object, code_id: str, as_json: bool) -> None:
    """One registration code (never the code itself)."""
    with _keyed(obj) as keyed:
        found = _regcodes(keyed).get(code_id)
    if as_json:
        _echo_json(_code_dict(found))
    else:
        _print_code(found)


@code.command("change")
@click.argument("code_id")
@click.option("--name", default=None, help="New name.")
@click.option("--note", default=None, help="New note.")
@click.option("--valid-until", default=None, help="New UTC end (as for add).")
@click.option("--no-end", is_flag=True, help="Valid with no end.")
@_JSON
@click.pass_obj
def code_change(
    obj: object,
    code_id: str,
    name: str | None,
    note: str | None,
    valid_until: str | None,
    no_end: bool,
    as_json: bool,
) -> None:
    """Change a code's name, note or validity (a deleted code cannot change)."""
    until = None if valid_until is None else parse_valid_until(valid_until)
    with _keyed(obj) as keyed:
        changed = _regcodes(keyed).change(
            code_id, cli_actor(), name=name, note=note, valid_until=until, no_end=no_end
        )
    if as_json:
        _echo_json(_code_dict(changed))
    else:
        _print_code(changed)


@code.command("delete")
@click.argument("code_id")
@_YES
@click.pass_obj
def code_delete(obj: object, code_id: str, yes: bool) -> None:
    """Delete a code: every device registered with it is removed and the code is
    blocked for ever. Shows how many devices, then asks."""
    with _keyed(obj) as keyed:
        store = _regcodes(keyed)
        impact = store.impact(code_id)
        click.echo(
            f"deleting code {code_id} (group {impact.group_id}) removes {impact.devices} "
            "device(s) registered with it; the code is blocked for ever"
        )
        _confirm(yes, "delete it?")
        done = store.delete(code_id, cli_actor())
    click.echo(f"deleted code {code_id} and {done.devices} device(s)")


# --- devices ----------------------------------------------------------------------


@click.group("device")
def device() -> None:
    """Registered devices: list, show, remove."""


def _device_dict(d: roster.DeviceView) -> dict[str, Any]:
    return {
        "account": d.account,
        "device_id": d.device_id,
        "group": d.group_id,
        "via": d.via,
        "via_ref": d.via_ref,
        "platform": d.platform,
        "app_version": d.app_version,
        "push_token_age": d.push_token_age,
        "last_seen": d.last_seen,
        "last_start": d.last_start,
        "registered_at": d.registered_at,
        "subscriptions": list(d.subscriptions),
    }


@device.command("list")
@click.option("--group", "group_id", default=None, help="Only this group's devices.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@_JSON
@click.pass_obj
def device_list(obj: object, group_id: str | None, limit: int, as_json: bool) -> None:
    """Registered devices by account."""
    with _keyed(obj) as keyed:
        found = roster.Roster(keyed.engine, keyed.keyring).all(group_id, limit=limit)
    if as_json:
        _echo_json([_device_dict(d) for d in found])
        return
    for d in found:
        click.echo(
            f"{d.account}  {d.group_id:<15} {d.platform or '-':<8} {d.via:<7} "
            f"{d.device_id or '(unreadable)'}  last seen {_when(d.last_seen)}"
        )


@device.command("show")
@click.argument("account")
@_JSON
@click.pass_obj
def device_show(obj: object, account: str, as_json: bool) -> None:
    """One registered device."""
    with _keyed(obj) as keyed:
        found = roster.Roster(keyed.engine, keyed.keyring).get(account)
    if as_json:
        _echo_json(_device_dict(found))
        return
    age = "never set" if found.push_token_age is None else f"{found.push_token_age:.0f} s old"
    for label, value in (
        ("account", found.account),
        ("device id", found.device_id or "(unreadable: no data key opens it)"),
        ("group", found.group_id),
        ("via", f"{found.via} {found.via_ref}"),
        ("platform", found.platform or "-"),
        ("app version", found.app_version or "-"),
        ("push token", age),
        ("last seen", _when(found.last_seen)),
        ("last start", _when(found.last_start)),
        ("registered", _when(found.registered_at)),
        ("subscribed", ", ".join(found.subscriptions) or "-"),
    ):
        click.echo(f"{label:<12} {value}")


@device.command("remove")
@click.argument("account")
@_YES
@click.pass_obj
def device_remove(obj: object, account: str, yes: bool) -> None:
    """Remove a device: its record and subscriptions go, its account is disabled."""
    with _keyed(obj) as keyed:
        store = roster.Roster(keyed.engine, keyed.keyring)
        found = store.get(account)
        click.echo(f"removing device {found.account} ({found.device_id}) of group {found.group_id}")
        _confirm(yes, "remove it?")
        store.remove(account, cli_actor())
    click.echo(f"removed device {account}")
