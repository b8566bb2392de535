"""``mpg send``: insert one Outbox row, as an ERP would.

The row is written with ``State`` 10 (ready), so a running gateway picks it up at once.
Options map one to one to Outbox columns; ``--approval-demo`` fills ``Subject`` and
``Content`` with the approval sample of reference §3, and ``--recall MESSAGEID``
writes the whole recall row of reference §3.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence

import click

from mpg import errors, exitcodes, timefmt
from mpg.cli import content as content_cli
from mpg.cli import context
from mpg.gateway import attachroots
from mpg.storage import states
from mpg.wire import content, model, recipients

#: The sample approval (reference §3): subject, params, pages and reply inputs.
APPROVAL_SUBJECT = "请假单 AF20261123001 待您审批"


def approval_sample() -> tuple[str, str]:
    """The subject and Content XML of the sample approval message of reference §3."""
    params = {"sheetno": "AF20261123001", "sheettype": "absentform"}
    pages = [
        content.Page("page1", "摘要", "王小明 申请事假 2 天（11月24日—11月25日），请审批。"),
        content.Page("page2", "表单", "<p>假别：事假<br/>天数：2<br/>事由：家中有事</p>"),
        content.Page("page3", "签核历程", "2026-11-23 09:00 王小明 提交"),
    ]
    inputs = [
        content.Input(
            "comment", "Comment", type="textbox", isnullable=True, defaultvalue="No comment"
        ),
        content.Input(
            "result",
            type="submit",
            defaultvalue="Approve",
            options=(
                content.Option("btn1", "Approve", "approve"),
                content.Option("btn2", "Disapprove", "disapprove"),
                content.Option("btn3", "Reject", "reject"),
                content.Option("btn4", "Drop", "drop"),
            ),
        ),
    ]
    return APPROVAL_SUBJECT, content.build_approval(params, pages, inputs)


def attachment_entry(spec: str, roots: attachroots.AttachmentRoots) -> str:
    """``PATH`` or ``PATH|0`` / ``PATH|1`` (DownloadFlag) -> an absolute AttachmentList
    entry; a file the gateway would refuse (outside ``attachment_roots``, …) is refused
    now rather than at 99 later."""
    path, sep, flag = spec.rpartition("|")
    if not sep:
        path, flag = spec, ""
    if flag not in ("", "0", "1"):
        raise click.BadParameter(
            f"{spec!r}: the flag after '|' must be 0 or 1", param_hint="--attach"
        )
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise click.BadParameter(f"{path!r} is not a file", param_hint="--attach")
    try:
        roots.check(full)
    except errors.AttachmentRefused as exc:
        raise click.BadParameter(f"{full!r} {exc}", param_hint="--attach") from None
    return f"{full}|{flag}" if flag else full


def _joined(values: Sequence[str]) -> str:
    """Repeated options and ';' lists alike become one ';'-separated column value."""
    return ";".join(name for value in values for name in recipients.split_list(value))


@click.command("send")
@click.option(
    "--to",
    "to",
    multiple=True,
    help="Recipient; repeat the option or give a ';' list (required unless --recall).",
)
@click.option("--bcc", multiple=True, help="Blind-copy recipient; repeatable or a ';' list.")
@click.option(
    "--receiver-type",
    type=click.Choice(sorted(model.RECEIVER_TYPES)),
    default="U",
    show_default=True,
    help="U: accounts, D: device serial numbers.",
)
@click.option("--app-code", default="BPM", show_default=True, help="Channel (AppCode).")
@click.option("--subject", default=None, help="Subject (default: the approval sample's).")
@click.option("--content", "content_text", default=None, help="Content, as text.")
@click.option(
    "--content-file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    default=None,
    help="Read Content from this UTF-8 file ('-': standard input, e.g. from `mpg content`).",
)
@click.option(
    "--recall",
    "recall_id",
    default=None,
    metavar="MESSAGEID",
    help="Send the recall row of reference §3 for this server MessageId (no --to needed).",
)
@click.option(
    "--approval-demo",
    is_flag=True,
    help="Content = the sample approval of reference §3 (ContentType MSG).",
)
@click.option(
    "--content-type",
    type=click.Choice(sorted(model.CONTENT_TYPES), case_sensitive=False),
    default=None,
    help="Default: the document's contenttype when it is one of these, else MSG.",
)
@click.option(
    "--attach",
    "attach",
    multiple=True,
    help="File to send (repeatable); PATH|1 asks for DownloadFlag 1.",
)
@click.option(
    "--priority",
    type=click.Choice(model.PRIORITIES),
    default=model.DEFAULT_PRIORITY,
    show_default=True,
    help="E urgent, H high, N normal, L low.",
)
@click.option("--keywords", default="", help="';'-separated keywords.")
@click.option(
    "--alert/--no-alert",
    default=True,
    show_default=True,
    help="Show a notification on arrival (AlertFlag).",
)
@click.option(
    "--source-domain", default=None, help="SourceDomain (default: the domain of gateway.account)."
)
@click.option("--sender", default=None, help="Sender account (default: gateway.account).")
@click.option("--tx-id", default=None, help="TxMessageId (default: a new GUID).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def send(
    obj: context.CliContext,
    to: tuple[str, ...],
    bcc: tuple[str, ...],
    receiver_type: str,
    app_code: str,
    subject: str | None,
    content_text: str | None,
    content_file: str | None,
    approval_demo: bool,
    recall_id: str | None,
    content_type: str | None,
    attach: tuple[str, ...],
    priority: str,
    keywords: str,
    alert: bool,
    source_domain: str | None,
    sender: str | None,
    tx_id: str | None,
    as_json: bool,
) -> None:
    """Insert one Outbox row (State 10) and print its TxMessageId."""
    chosen = [
        content_text is not None,
        content_file is not None,
        approval_demo,
        recall_id is not None,
    ]
    if sum(chosen) > 1:
        raise click.UsageError(
            "give only one of --content, --content-file, --approval-demo, --recall"
        )
    body = content_text or ""
    if content_file is not None:
        body = content_cli.read_text(content_file)
    if approval_demo:
        sample_subject, body = approval_sample()
        subject = subject if subject is not None else sample_subject
        content_type = "MSG"
    receivers = _joined(to)
    if not receivers and recall_id is None:
        raise click.BadParameter("names no recipient", param_hint="--to")

    gateway = obj.settings.gateway
    domain = source_domain or gateway.account.partition("@")[2]
    if not domain:
        raise errors.CommandError(
            "SourceDomain: give --source-domain or set gateway.account to user@domain",
            exitcodes.USAGE,
        )
    tx = tx_id or str(uuid.uuid4())
    if recall_id is not None:
        recall = content.recall_row(recall_id, source_domain=domain, agent_sender=gateway.account)
        recall.update(
            TxMessageId=tx,
            Sender=sender or gateway.account,
            StatusTime=timefmt.now_text(gateway.clock),
            Priority=priority,
        )
        _report(obj.outbox().insert(recall), as_json)
        return
    roots = attachroots.AttachmentRoots.from_settings(obj.settings)
    row: dict[str, object] = {
        "TxMessageId": tx,
        "AppCode": app_code,
        "SourceDomain": domain,
        "AgentSender": gateway.account,
        "Sender": sender or gateway.account,
        "ReceiverType": receiver_type,
        "ReceiverList": receivers,
        "BccList": _joined(bcc),
        "Subject": subject or "",
        "Content": body,
        "ContentType": (content_type or _declared_type(body)).upper(),
        "AttachmentList": ";".join(attachment_entry(spec, roots) for spec in attach),
        "AlertFlag": alert,
        "State": int(states.OutboxState.READY),
        "StatusTime": timefmt.now_text(gateway.clock),
        "StatusLog": "inserted by mpg send",
        "Priority": priority,
        "Keywords": keywords,
    }
    _report(obj.outbox().insert(row), as_json)


def _report(tx: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"tx_message_id": tx, "state": int(states.OutboxState.READY)}))
    else:
        click.echo(tx)


def _declared_type(body: str) -> str:
    """The ContentType a document declares (``<content contenttype="reply">``), else MSG."""
    try:
        declared = content.parse_content(body).content_type.upper()
    except errors.WireError:
        return "MSG"
    return declared if declared in model.CONTENT_TYPES else "MSG"
