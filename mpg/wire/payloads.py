"""Build and parse the XML payloads of ``docs/protocol.md`` (bytes in, bytes out).

Builders check every text against XML 1.0 and raise :class:`errors.WireError` naming
the field (``submit/message[2]/subject: character U+0001 ...``), so that a caller can
fail the one row that holds it. Parsers go through :func:`xmlsafe.parse` and check
the structure, the required attributes and their types; their errors name the place
(``submit/message[2]: attribute 'tx' missing``). Unknown attributes are ignored (room
to add some within version 1); unknown elements are refused.

Every message of a burst passes through here, so each item takes one of two paths.
The fast path checks the whole item at once (one search for characters XML cannot
carry over all its texts, the required values present) and builds or reads it without
naming any place. Only when that check fails does the checked path (``*_checked``,
``_parse_*``) run, field by field, to raise the error that names the place; the two
give the same bytes and the same objects (tests/unit/test_payloads_equivalence.py).
This made them 15-22 % cheaper per item (docs/benchmarks.md, 2026-12-01 (2)).

Texts travel as element text or attribute values and come back exactly, including
leading and trailing whitespace, tabs, ``\\r`` and ``\\n`` (lxml writes the characters
that XML would normalise as character references). Payloads are written in UTF-8
without an XML declaration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from lxml import etree

from mpg import errors
from mpg.wire import model, xmlsafe

_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_UNSIGNED: Final = re.compile(r"[0-9]{1,18}")
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})
_BOOLEANS: Final = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}


# --------------------------------------------------------------------------- building


def _text(value: str, where: str) -> str:
    if not isinstance(value, str):
        raise errors.WireError(f"{where}: expected text, got {type(value).__name__}")
    return xmlsafe.check_text(value, where)


def _nonempty(value: str, where: str) -> str:
    if not value:
        raise errors.WireError(f"{where}: must not be empty")
    return _text(value, where)


def _count(value: int, where: str, *, minimum: int = 0) -> str:
    # bool is an int subclass; True must not travel as "1" where a count is meant.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise errors.WireError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return str(value)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _boolean(value: bool) -> str:
    return "true" if value else "false"


def _all_xml_text(texts: Iterable[str]) -> bool:
    """Whether every one of ``texts`` is text that XML 1.0 can carry.

    One regex pass over them all: the fast path of the builders. When it says no, the
    builder runs its per-field checks, which name the field at fault.
    """
    try:
        joined = "".join(texts)
    except TypeError:  # a value that is not text: the per-field checks name it
        return False
    return xmlsafe.is_xml_text(joined)


def _is_count(value: int) -> bool:
    # Exactly int: bool must be refused, and other subclasses may print otherwise.
    return type(value) is int and value >= 0


def _time(value: str, where: str) -> str:
    if not _TIME.fullmatch(value):
        raise errors.WireError(f"{where}: expected yyyy-MM-dd HH:mm:ss, got {value!r}")
    return value


def _text_element(parent: etree._Element, tag: str, value: str, where: str) -> None:
    etree.SubElement(parent, tag).text = _text(value, f"{where}/{tag}")


def _account_list(parent: etree._Element, tag: str, accounts: Sequence[str], where: str) -> None:
    holder = etree.SubElement(parent, tag)
    for n, account in enumerate(accounts, 1):
        etree.SubElement(holder, "r").text = _nonempty(account, f"{where}/{tag}/r[{n}]")


def _attachments(parent: etree._Element, infos: Sequence[model.AttachmentInfo], where: str) -> None:
    if not infos:
        return
    sub = etree.SubElement
    holder = sub(parent, "attachments")
    for n, info in enumerate(infos, 1):
        name, download = info.file_name, info.download_flag
        if (
            _all_xml_text((name, info.file_type, info.sha256))
            and name
            and _is_count(info.seq_no)
            and _is_count(info.file_size)
            and type(download) is int
            and (download == 0 or download == 1)
            and _SHA256.fullmatch(info.sha256)
        ):
            sub(
                holder,
                "attachment",
                {
                    "seq": str(info.seq_no),
                    "name": name,
                    "type": info.file_type,
                    "size": str(info.file_size),
                    "download": str(download),
                    "sha256": info.sha256,
                },
            )
        else:
            _add_attachment_checked(holder, info, f"{where}/attachments/attachment[{n}]")


def _add_attachment_checked(holder: etree._Element, info: model.AttachmentInfo, at: str) -> None:
    """One ``attachment``, field by field, raising the error that names the field."""
    if info.download_flag not in (0, 1) or isinstance(info.download_flag, bool):
        raise errors.WireError(f"{at}/@download: expected 0 or 1, got {info.download_flag!r}")
    if not _SHA256.fullmatch(info.sha256):
        raise errors.WireError(f"{at}/@sha256: expected 64 lowercase hex digits")
    etree.SubElement(
        holder,
        "attachment",
        {
            "seq": _count(info.seq_no, f"{at}/@seq"),
            "name": _nonempty(info.file_name, f"{at}/@name"),
            "type": _text(info.file_type, f"{at}/@type"),
            "size": _count(info.file_size, f"{at}/@size"),
            "download": str(info.download_flag),
            "sha256": info.sha256,
        },
    )


def _message_where(n: int, msg: model.OutgoingMessage) -> str:
    where = f"submit/message[{n}]"
    tx = getattr(msg, "tx_message_id", "")
    if isinstance(tx, str) and tx and xmlsafe.is_xml_text(tx):
        # The tx id lets the gateway fail the right row without counting.
        where += f" (tx {tx})"
    return where


def _message_passes(msg: model.OutgoingMessage) -> bool:
    """Whether every field of ``msg`` but its attachments passes the fast checks."""
    receivers, bcc, keywords = msg.receivers, msg.bcc, msg.keywords
    # Tuples and lists only: the accounts are read twice, to check and to write.
    return bool(
        isinstance(receivers, (tuple, list))
        and isinstance(bcc, (tuple, list))
        and _all_xml_text(
            (
                msg.tx_message_id,
                msg.app_code,
                msg.source_domain,
                msg.agent_sender,
                msg.sender,
                msg.receiver_type,
                msg.content_type,
                msg.priority,
                msg.transmit_time,
                msg.subject,
                keywords or "",
                msg.content,
                *receivers,
                *bcc,
            )
        )
        and msg.tx_message_id
        and "" not in receivers
        and "" not in bcc
        and msg.receiver_type in model.RECEIVER_TYPES
        and msg.priority in model.PRIORITIES
        and _TIME.fullmatch(msg.transmit_time)
    )


def _message_text(n: int, msg: model.OutgoingMessage) -> str:
    """Message ``n`` of a ``submit`` as text: written directly when it passes the fast
    checks (its attachments, if any, through lxml), else field by field through lxml
    (:func:`_add_message_checked`); the bytes are those lxml writes either way."""
    if not _message_passes(msg):
        el = _add_message_checked(etree.Element("submit"), n, msg)
        return str(etree.tostring(el, encoding="unicode"))
    a, t = _attribute_value, _element_text
    # receiverType, priority and transmitTime matched their forms: nothing to escape.
    head = (
        f'<message tx="{a(msg.tx_message_id)}" appCode="{a(msg.app_code)}"'
        f' sourceDomain="{a(msg.source_domain)}" agentSender="{a(msg.agent_sender)}"'
        f' sender="{a(msg.sender)}" receiverType="{msg.receiver_type}"'
        f' contentType="{a(msg.content_type)}" alertFlag="{"1" if msg.alert_flag else "0"}"'
        f' priority="{msg.priority}" transmitTime="{msg.transmit_time}">'
    )
    receivers = "".join(f"<r>{t(account)}</r>" for account in msg.receivers)
    parts = [head, f"<receivers>{receivers}</receivers>" if receivers else "<receivers/>"]
    if msg.bcc:
        parts.append("<bcc>" + "".join(f"<r>{t(account)}</r>" for account in msg.bcc) + "</bcc>")
    parts.append(f"<subject>{t(msg.subject)}</subject>")
    if msg.keywords:
        parts.append(f"<keywords>{t(msg.keywords)}</keywords>")
    parts.append(f"<content>{t(msg.content)}</content>")
    parts.append(_attachments_text(msg.attachments, _message_where(n, msg)))
    parts.append("</message>")
    return "".join(parts)


def _attachments_text(infos: Sequence[model.AttachmentInfo], where: str) -> str:
    """The ``attachments`` of a message or delivery, through lxml ('' for none)."""
    if not infos:
        return ""
    holder = etree.Element("holder")
    _attachments(holder, infos, where)
    return str(etree.tostring(holder[0], encoding="unicode"))


def _add_message_checked(
    root: etree._Element, n: int, msg: model.OutgoingMessage
) -> etree._Element:
    """One ``message`` of a ``submit``, field by field, raising the error that names the field."""
    where = _message_where(n, msg)
    if msg.receiver_type not in model.RECEIVER_TYPES:
        raise errors.WireError(f"{where}/@receiverType: expected U or D")
    if msg.priority not in model.PRIORITIES:
        raise errors.WireError(f"{where}/@priority: expected one of E, H, N, L")
    el = etree.SubElement(
        root,
        "message",
        {
            "tx": _nonempty(msg.tx_message_id, f"{where}/@tx"),
            "appCode": _text(msg.app_code, f"{where}/@appCode"),
            "sourceDomain": _text(msg.source_domain, f"{where}/@sourceDomain"),
            "agentSender": _text(msg.agent_sender, f"{where}/@agentSender"),
            "sender": _text(msg.sender, f"{where}/@sender"),
            "receiverType": msg.receiver_type,
            "contentType": _text(msg.content_type, f"{where}/@contentType"),
            "alertFlag": _flag(msg.alert_flag),
            "priority": msg.priority,
            "transmitTime": _time(msg.transmit_time, f"{where}/@transmitTime"),
        },
    )
    _account_list(el, "receivers", msg.receivers, where)
    if msg.bcc:
        _account_list(el, "bcc", msg.bcc, where)
    _text_element(el, "subject", msg.subject, where)
    if msg.keywords:
        _text_element(el, "keywords", msg.keywords, where)
    _text_element(el, "content", msg.content, where)
    _attachments(el, msg.attachments, where)
    return el


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, encoding="utf-8")


def build_message(msg: model.OutgoingMessage) -> bytes:
    """One message's piece of a ``submit`` payload (see :func:`join_submit`).

    Lets the gateway build each message once: to measure it when it is taken, and to
    send it in whatever batch it ends up in.
    """
    return _message_text(1, msg).encode("utf-8")


_SUBMIT_OPEN: Final = b"<submit>"
_SUBMIT_CLOSE: Final = b"</submit>"
#: Bytes a ``submit`` payload adds around its messages' pieces.
SUBMIT_FRAME_BYTES: Final = len(_SUBMIT_OPEN) + len(_SUBMIT_CLOSE)


def join_submit(pieces: Iterable[bytes]) -> bytes:
    """The ``submit`` payload made of pieces from :func:`build_message`, in order."""
    return _SUBMIT_OPEN + b"".join(pieces) + _SUBMIT_CLOSE


def build_submit(msgs: Iterable[model.OutgoingMessage]) -> bytes:
    """The ``submit`` payload for ``msgs``, in order."""
    pieces = [_message_text(n, msg) for n, msg in enumerate(msgs, 1)]
    if not pieces:
        return b"<submit/>"
    return ("<submit>" + "".join(pieces) + "</submit>").encode("utf-8")


def build_submitted(results: Iterable[model.SubmitResult]) -> bytes:
    """The answer to ``submit``: one ``result`` per message, in the same order.

    A result that passes the fast checks is written as text (the bytes lxml writes for
    it); one that does not goes through lxml field by field, to name the fault.
    """
    parts: list[str] = []
    for n, res in enumerate(results, 1):
        text = _result_text(res)
        if not text:
            holder = etree.Element("submitted")
            _add_result_checked(holder, n, res)
            text = str(etree.tostring(holder[0], encoding="unicode"))
        parts.append(text)
    if not parts:
        return b"<submitted/>"
    return ("<submitted>" + "".join(parts) + "</submitted>").encode("utf-8")


def _result_text(res: model.SubmitResult) -> str:
    """One ``result`` as text, or '' when a check fails."""
    tx, message_id, reason, unknown = res.tx_message_id, res.message_id, res.reason, res.unknown
    if not (
        res.recall is None
        and isinstance(unknown, (tuple, list))
        and _all_xml_text((tx, message_id or "", reason or "", *unknown))
        and tx
        and "" not in unknown
        and _is_count(res.recipients)
        and (message_id or not res.accepted)
    ):
        return ""
    a = _attribute_value
    text = (
        f'<result tx="{a(tx)}" accepted="{"true" if res.accepted else "false"}"'
        f' recipients="{res.recipients}"'
        f' servedAtOnce="{"true" if res.served_at_once else "false"}"'
    )
    if message_id:
        text += f' messageId="{a(message_id)}"'
    if reason:
        text += f' reason="{a(reason)}"'
    if not unknown:
        return text + "/>"
    names = "".join(f"<unknown>{_element_text(account)}</unknown>" for account in unknown)
    return f"{text}>{names}</result>"


def _add_result_checked(root: etree._Element, n: int, res: model.SubmitResult) -> None:
    """One ``result`` of :func:`build_submitted`, field by field, naming the field at fault."""
    where = f"submitted/result[{n}]"
    if res.accepted and not res.message_id:
        raise errors.WireError(f"{where}: an accepted result needs a messageId")
    attrib = {
        "tx": _nonempty(res.tx_message_id, f"{where}/@tx"),
        "accepted": _boolean(res.accepted),
        "recipients": _count(res.recipients, f"{where}/@recipients"),
        "servedAtOnce": _boolean(res.served_at_once),
    }
    if res.message_id:
        attrib["messageId"] = _text(res.message_id, f"{where}/@messageId")
    if res.reason:
        attrib["reason"] = _text(res.reason, f"{where}/@reason")
    el = etree.SubElement(root, "result", attrib)
    for k, account in enumerate(res.unknown, 1):
        etree.SubElement(el, "unknown").text = _nonempty(account, f"{where}/unknown[{k}]")
    if res.recall is not None:
        rc = res.recall
        etree.SubElement(
            el,
            "recall",
            {
                "messageId": _nonempty(rc.recalled_message_id, f"{where}/recall/@messageId"),
                "withdrawn": _count(rc.withdrawn, f"{where}/recall/@withdrawn"),
                "notified": _count(rc.notified, f"{where}/recall/@notified"),
            },
        )


def build_fetch(max_items: int, wait_seconds: float, acked: Iterable[str] = ()) -> bytes:
    """The ``fetch`` payload: up to ``max_items`` entries, waiting up to ``wait_seconds``,
    after acknowledging the queue entries ``acked`` (as :func:`build_ack` would)."""
    wait = float(wait_seconds)
    if not math.isfinite(wait) or wait < 0:
        raise errors.WireError(f"fetch/@wait: expected a finite number >= 0, got {wait_seconds!r}")
    wait_text = str(int(wait)) if wait.is_integer() else repr(wait)
    root = etree.Element(
        "fetch", {"max": _count(max_items, "fetch/@max", minimum=1), "wait": wait_text}
    )
    acked = list(acked)
    if acked:
        _add_entries(etree.SubElement(root, "ack"), acked, "fetch/ack")
    return _serialize(root)


def build_deliveries(batch: model.FetchBatch) -> bytes:
    """The answer to ``fetch``: every delivery, then every receipt.

    An item whose fields all pass the fast checks is written as text directly,
    escaped as lxml escapes (attachments through lxml); an item whose check failed goes
    through lxml field by field, to name the fault. Either way the
    bytes are those lxml writes for the same tree (tests/unit/test_payloads_text.py).
    """
    parts: list[str] = []
    for n, d in enumerate(batch.deliveries, 1):
        if _delivery_passes(d):
            parts.append(_delivery_text(n, d))
        else:
            parts.append(_delivery_checked_text(n, d))
    for n, r in enumerate(batch.receipts, 1):
        parts.append(_receipt_text(r) or _receipt_checked_text(n, r))
    if not parts:
        return b"<deliveries/>"
    return ("<deliveries>" + "".join(parts) + "</deliveries>").encode("utf-8")


def _delivery_passes(d: model.Delivery) -> bool:
    """Whether every field of ``d`` but its attachments passes the fast checks."""
    return bool(
        _all_xml_text(
            (
                d.rx_message_id,
                d.message_id,
                d.app_code,
                d.source_domain,
                d.agent_sender,
                d.sender,
                d.owner,
                d.receiver_type,
                d.content_type,
                d.priority,
                d.transmit_time,
                d.receiver_list,
                d.bcc_list,
                d.subject,
                d.keywords or "",
                d.content,
            )
        )
        and d.rx_message_id
        and d.message_id
        and d.receiver_type in model.RECEIVER_TYPES
        and d.priority in model.PRIORITIES
        and _TIME.fullmatch(d.transmit_time)
    )


def _delivery_text(n: int, d: model.Delivery) -> str:
    """Delivery ``n``, which :func:`_delivery_passes`, as text (its attachments, if
    any, through lxml)."""
    a, t = _attribute_value, _element_text
    keywords = d.keywords
    # receiverType, priority and transmitTime matched their forms: nothing to escape.
    return (
        f'<delivery rx="{a(d.rx_message_id)}" messageId="{a(d.message_id)}"'
        f' appCode="{a(d.app_code)}" sourceDomain="{a(d.source_domain)}"'
        f' agentSender="{a(d.agent_sender)}" sender="{a(d.sender)}" owner="{a(d.owner)}"'
        f' receiverType="{d.receiver_type}" contentType="{a(d.content_type)}"'
        f' alertFlag="{"1" if d.alert_flag else "0"}" priority="{d.priority}"'
        f' transmitTime="{d.transmit_time}">'
        f"<receiverList>{t(d.receiver_list)}</receiverList>"
        f"<bccList>{t(d.bcc_list)}</bccList><subject>{t(d.subject)}</subject>"
        + (f"<keywords>{t(keywords)}</keywords>" if keywords else "")
        + f"<content>{t(d.content)}</content>"
        + _attachments_text(d.attachments, f"deliveries/delivery[{n}]")
        + "</delivery>"
    )


def _delivery_checked_text(n: int, d: model.Delivery) -> str:
    """Delivery ``n`` field by field (:func:`_add_delivery_checked`), which names the
    field at fault."""
    holder = etree.Element("deliveries")
    _add_delivery_checked(holder, n, d)
    return str(etree.tostring(holder[0], encoding="unicode"))


def _receipt_text(r: model.Receipt) -> str:
    """One ``receipt`` as text, or '' when a check fails (lxml then names the fault)."""
    entry, tx, message_id = r.entry_id, r.tx_message_id, r.message_id
    if not (
        _all_xml_text((entry, tx, message_id))
        and entry
        and tx
        and message_id
        and _is_count(r.served)
        and _is_count(r.recalled)
    ):
        return ""
    a = _attribute_value
    return (
        f'<receipt entry="{a(entry)}" tx="{a(tx)}" messageId="{a(message_id)}"'
        f' served="{r.served}" recalled="{r.recalled}"/>'
    )


def _receipt_checked_text(n: int, r: model.Receipt) -> str:
    """Receipt ``n`` field by field, which names the field at fault."""
    holder = etree.Element("deliveries")
    _add_receipt_checked(holder, n, r)
    return str(etree.tostring(holder[0], encoding="unicode"))


#: What lxml escapes in element text, and in attribute values.
_TEXT_ESCAPED: Final = re.compile("[&<>\r]")
_ATTRIBUTE_ESCAPED: Final = re.compile('[&<>"\n\r\t]')


def _element_text(value: str) -> str:
    """``value`` as element text, escaped as lxml escapes it."""
    if _TEXT_ESCAPED.search(value) is None:
        return value
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attribute_value(value: str) -> str:
    """``value`` as a double-quoted attribute value, escaped as lxml escapes it."""
    if _ATTRIBUTE_ESCAPED.search(value) is None:
        return value
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _add_delivery_checked(root: etree._Element, n: int, d: model.Delivery) -> None:
    """One ``delivery`` of :func:`build_deliveries`, field by field, naming the field at fault."""
    where = f"deliveries/delivery[{n}]"
    if d.receiver_type not in model.RECEIVER_TYPES:
        raise errors.WireError(f"{where}/@receiverType: expected U or D")
    if d.priority not in model.PRIORITIES:
        raise errors.WireError(f"{where}/@priority: expected one of E, H, N, L")
    el = etree.SubElement(
        root,
        "delivery",
        {
            "rx": _nonempty(d.rx_message_id, f"{where}/@rx"),
            "messageId": _nonempty(d.message_id, f"{where}/@messageId"),
            "appCode": _text(d.app_code, f"{where}/@appCode"),
            "sourceDomain": _text(d.source_domain, f"{where}/@sourceDomain"),
            "agentSender": _text(d.agent_sender, f"{where}/@agentSender"),
            "sender": _text(d.sender, f"{where}/@sender"),
            "owner": _text(d.owner, f"{where}/@owner"),
            "receiverType": d.receiver_type,
            "contentType": _text(d.content_type, f"{where}/@contentType"),
            "alertFlag": _flag(d.alert_flag),
            "priority": d.priority,
            "transmitTime": _time(d.transmit_time, f"{where}/@transmitTime"),
        },
    )
    _text_element(el, "receiverList", d.receiver_list, where)
    _text_element(el, "bccList", d.bcc_list, where)
    _text_element(el, "subject", d.subject, where)
    if d.keywords:
        _text_element(el, "keywords", d.keywords, where)
    _text_element(el, "content", d.content, where)
    _attachments(el, d.attachments, where)


def _add_receipt_checked(root: etree._Element, n: int, r: model.Receipt) -> None:
    """One ``receipt`` of :func:`build_deliveries`, field by field, naming the field at fault."""
    where = f"deliveries/receipt[{n}]"
    etree.SubElement(
        root,
        "receipt",
        {
            "entry": _nonempty(r.entry_id, f"{where}/@entry"),
            "tx": _nonempty(r.tx_message_id, f"{where}/@tx"),
            "messageId": _nonempty(r.message_id, f"{where}/@messageId"),
            "served": _count(r.served, f"{where}/@served"),
            "recalled": _count(r.recalled, f"{where}/@recalled"),
        },
    )


def _add_entries(holder: etree._Element, entry_ids: Iterable[str], where: str) -> None:
    for n, entry in enumerate(entry_ids, 1):
        etree.SubElement(holder, "entry", {"id": _nonempty(entry, f"{where}/entry[{n}]/@id")})


def build_ack(entry_ids: Iterable[str]) -> bytes:
    """The ``ack`` payload for the queue entries the caller has stored."""
    root = etree.Element("ack")
    _add_entries(root, entry_ids, "ack")
    return _serialize(root)


def build_acked(count: int) -> bytes:
    """The answer to ``ack``: how many entries were removed from the queue."""
    return _serialize(etree.Element("acked", {"count": _count(count, "acked/@count")}))


def build_history(message_id: str, events: Iterable[model.ServerEvent]) -> bytes:
    """The answer to ``history``: one message's server-side events, oldest first."""
    root = etree.Element("history", {"messageId": _nonempty(message_id, "history/@messageId")})
    for n, ev in enumerate(events, 1):
        where = f"history/event[{n}]"
        etree.SubElement(
            root,
            "event",
            {
                "at": _nonempty(ev.at, f"{where}/@at"),
                "kind": _nonempty(ev.kind, f"{where}/@kind"),
                "account": _text(ev.account, f"{where}/@account"),
                "detail": _text(ev.detail, f"{where}/@detail"),
            },
        )
    return _serialize(root)


# ---------------------------------------------------------------------------- parsing


def _root(data: bytes, tag: str) -> etree._Element:
    root = xmlsafe.parse(data)
    if root.tag != tag:
        raise errors.WireError(f"expected a <{tag}> document, got <{root.tag}>")
    return root


def _attr(el: etree._Element, name: str, where: str) -> str:
    value = el.get(name)
    if value is None:
        raise errors.WireError(f"{where}: attribute '{name}' missing")
    return value


def _attr_nonempty(el: etree._Element, name: str, where: str) -> str:
    value = _attr(el, name, where)
    if not value:
        raise errors.WireError(f"{where}: attribute '{name}' is empty")
    return value


def _int(text: str, name: str, where: str, *, minimum: int = 0) -> int:
    if not _UNSIGNED.fullmatch(text) or int(text) < minimum:
        raise errors.WireError(
            f"{where}: attribute '{name}' must be an integer >= {minimum}, got {text!r}"
        )
    return int(text)


def _int_attr(
    el: etree._Element, name: str, where: str, *, default: int | None = None, minimum: int = 0
) -> int:
    text = el.get(name)
    if text is None:
        if default is None:
            raise errors.WireError(f"{where}: attribute '{name}' missing")
        return default
    return _int(text, name, where, minimum=minimum)


def _bool_attr(el: etree._Element, name: str, where: str, *, default: bool | None = None) -> bool:
    text = el.get(name)
    if text is None:
        if default is None:
            raise errors.WireError(f"{where}: attribute '{name}' missing")
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise errors.WireError(f"{where}: attribute '{name}' must be true/false/1/0, got {text!r}")


def _choice_attr(el: etree._Element, name: str, where: str, allowed: Iterable[str]) -> str:
    value = _attr(el, name, where)
    if value not in allowed:
        raise errors.WireError(f"{where}: attribute '{name}' has unknown value {value!r}")
    return value


def _time_attr(el: etree._Element, name: str, where: str) -> str:
    value = _attr(el, name, where)
    if not _TIME.fullmatch(value):
        raise errors.WireError(
            f"{where}: attribute '{name}' must be yyyy-MM-dd HH:mm:ss, got {value!r}"
        )
    return value


def _children(
    el: etree._Element, where: str, allowed: Mapping[str, bool]
) -> dict[str, etree._Element]:
    """The child elements by tag; ``allowed`` maps each tag to whether it is required."""
    found: dict[str, etree._Element] = {}
    for child in el:
        tag = child.tag
        if tag not in allowed:
            raise errors.WireError(f"{where}: unexpected element <{tag}>")
        if tag in found:
            raise errors.WireError(f"{where}: element <{tag}> repeated")
        found[str(tag)] = child
    for tag, required in allowed.items():
        if required and tag not in found:
            raise errors.WireError(f"{where}: element <{tag}> missing")
    return found


def _only_text(el: etree._Element, at: str) -> str:
    """The text of the element at path ``at``, which must have no child elements."""
    if len(el):
        raise errors.WireError(f"{at}: must hold text only")
    return el.text or ""


def _kid_text(kids: Mapping[str, etree._Element], tag: str, where: str) -> str:
    el = kids.get(tag)
    return "" if el is None else _only_text(el, f"{where}/{tag}")


def _items(el: etree._Element, tag: str, where: str) -> list[tuple[str, etree._Element]]:
    """The children of ``el``, which must all be ``<tag>``, with their paths."""
    items = []
    for n, child in enumerate(el, 1):
        if child.tag != tag:
            raise errors.WireError(f"{where}: unexpected element <{child.tag}>")
        items.append((f"{where}/{tag}[{n}]", child))
    return items


def _account_items(el: etree._Element | None, where: str) -> tuple[str, ...]:
    if el is None:
        return ()
    accounts = []
    for at, child in _items(el, "r", f"{where}/{el.tag}"):
        account = _only_text(child, at)
        if not account:
            raise errors.WireError(f"{at}: empty account")
        accounts.append(account)
    return tuple(accounts)


def _parse_attachments(el: etree._Element | None, where: str) -> tuple[model.AttachmentInfo, ...]:
    if el is None:
        return ()
    infos = []
    for at, child in _items(el, "attachment", f"{where}/attachments"):
        download = _int_attr(child, "download", at)
        if download not in (0, 1):
            raise errors.WireError(f"{at}: attribute 'download' must be 0 or 1")
        sha256 = _attr(child, "sha256", at)
        if not _SHA256.fullmatch(sha256):
            raise errors.WireError(f"{at}: attribute 'sha256' must be 64 lowercase hex digits")
        infos.append(
            model.AttachmentInfo(
                seq_no=_int_attr(child, "seq", at),
                file_name=_attr_nonempty(child, "name", at),
                file_type=_attr(child, "type", at),
                file_size=_int_attr(child, "size", at),
                download_flag=download,
                sha256=sha256,
            )
        )
    return tuple(infos)


_MESSAGE_CHILDREN: Final = {
    "receivers": True,
    "bcc": False,
    "subject": False,
    "keywords": False,
    "content": False,
    "attachments": False,
}


def parse_submit(data: bytes) -> list[model.OutgoingMessage]:
    """The messages of a ``submit`` payload, in order."""
    root = _root(data, "submit")
    msgs = []
    for n, el in enumerate(root, 1):
        msg = _message_or_none(el, n) if el.tag == "message" else None
        if msg is None:
            # A stranger anywhere in the document is reported before any message's fault.
            _items(root, "message", "submit")
            msg = _parse_message_checked(el, f"submit/message[{n}]")
        msgs.append(msg)
    return msgs


def _accounts_or_none(holder: etree._Element) -> tuple[str, ...] | None:
    """The accounts of a ``<receivers>`` or ``<bcc>``, or None if any is malformed."""
    accounts = []
    for r in holder:
        text = r.text
        if r.tag != "r" or not text or len(r):
            return None
        accounts.append(text)
    return tuple(accounts)


_MESSAGE_TEXTS: Final = frozenset({"subject", "keywords", "content"})


def _message_or_none(el: etree._Element, n: int) -> model.OutgoingMessage | None:
    """The ``n``-th message of a submit, or None when anything is wrong with it.

    The normal path: one read of each attribute and child. On None the caller runs
    :func:`_parse_message_checked`, which finds the first problem and names it.
    """
    get = el.get
    tx = get("tx")
    app_code = get("appCode")
    source_domain = get("sourceDomain")
    agent_sender = get("agentSender")
    sender = get("sender")
    receiver_type = get("receiverType")
    content_type = get("contentType")
    alert_flag = _BOOLEANS.get(get("alertFlag", ""))
    priority = get("priority")
    transmit_time = get("transmitTime")
    if (
        not tx
        or app_code is None
        or source_domain is None
        or agent_sender is None
        or sender is None
        or content_type is None
        or alert_flag is None
        or receiver_type is None
        or receiver_type not in model.RECEIVER_TYPES
        or priority is None
        or priority not in model.PRIORITIES
        or transmit_time is None
        or not _TIME.fullmatch(transmit_time)
    ):
        return None
    texts: dict[str, str] = {}
    receivers: tuple[str, ...] | None = None
    bcc: tuple[str, ...] | None = None
    attachments: etree._Element | None = None
    for child in el:
        tag = child.tag
        if tag in _MESSAGE_TEXTS:
            if tag in texts or len(child):
                return None
            texts[tag] = child.text or ""
        elif tag == "receivers" and receivers is None:
            receivers = _accounts_or_none(child)
            if receivers is None:
                return None
        elif tag == "bcc" and bcc is None:
            bcc = _accounts_or_none(child)
            if bcc is None:
                return None
        elif tag == "attachments" and attachments is None:
            attachments = child
        else:
            return None
    if receivers is None:
        return None
    # Positional: keyword arguments cost more per call with this many fields. The
    # round-trip tests catch a change of the model's field order.
    return model.OutgoingMessage(
        tx,
        app_code,
        source_domain,
        agent_sender,
        sender,
        receiver_type,
        receivers,
        () if bcc is None else bcc,
        texts.get("subject", ""),
        texts.get("content", ""),
        content_type,
        alert_flag,
        priority,
        texts.get("keywords", ""),
        transmit_time,
        () if attachments is None else _parse_attachments(attachments, f"submit/message[{n}]"),
    )


def _parse_message_checked(el: etree._Element, where: str) -> model.OutgoingMessage:
    """One message of :func:`parse_submit`, attribute by attribute, naming the first problem."""
    kids = _children(el, where, _MESSAGE_CHILDREN)
    return model.OutgoingMessage(
        tx_message_id=_attr_nonempty(el, "tx", where),
        app_code=_attr(el, "appCode", where),
        source_domain=_attr(el, "sourceDomain", where),
        agent_sender=_attr(el, "agentSender", where),
        sender=_attr(el, "sender", where),
        receiver_type=_choice_attr(el, "receiverType", where, model.RECEIVER_TYPES),
        receivers=_account_items(kids["receivers"], where),
        bcc=_account_items(kids.get("bcc"), where),
        subject=_kid_text(kids, "subject", where),
        content=_kid_text(kids, "content", where),
        content_type=_attr(el, "contentType", where),
        alert_flag=_bool_attr(el, "alertFlag", where),
        priority=_choice_attr(el, "priority", where, model.PRIORITIES),
        keywords=_kid_text(kids, "keywords", where),
        transmit_time=_time_attr(el, "transmitTime", where),
        attachments=_parse_attachments(kids.get("attachments"), where),
    )


def parse_submitted(data: bytes) -> list[model.SubmitResult]:
    """The results of a ``submitted`` answer, in the order of the messages."""
    root = _root(data, "submitted")
    results = []
    for n, el in enumerate(root, 1):
        res = _result_or_none(el) if el.tag == "result" else None
        if res is None:
            # A stranger anywhere in the document is reported before any result's fault.
            _items(root, "result", "submitted")
            res = _parse_result_checked(el, f"submitted/result[{n}]")
        results.append(res)
    return results


def _result_or_none(el: etree._Element) -> model.SubmitResult | None:
    """The result at ``el`` if it has no children and good attributes, else None."""
    if len(el):
        return None
    get = el.get
    tx = get("tx")
    accepted = _BOOLEANS.get(get("accepted", ""))
    message_id = get("messageId", "")
    recipients = get("recipients")
    served_at_once = _BOOLEANS.get(get("servedAtOnce", "false"))
    if (
        not tx
        or accepted is None
        or (accepted and not message_id)
        or served_at_once is None
        or (recipients is not None and not _UNSIGNED.fullmatch(recipients))
    ):
        return None
    return model.SubmitResult(
        tx_message_id=tx,
        accepted=accepted,
        message_id=message_id,
        recipients=0 if recipients is None else int(recipients),
        reason=get("reason", ""),
        served_at_once=served_at_once,
    )


def _parse_result_checked(el: etree._Element, where: str) -> model.SubmitResult:
    """One result of :func:`parse_submitted`, attribute by attribute, naming the first problem."""
    unknown: list[str] = []
    recall: model.RecallOutcome | None = None
    for n, child in enumerate(el, 1):
        if child.tag == "unknown":
            account = _only_text(child, f"{where}/unknown[{n}]")
            if not account:
                raise errors.WireError(f"{where}/unknown[{n}]: empty account")
            unknown.append(account)
        elif child.tag == "recall":
            at = f"{where}/recall"
            if recall is not None:
                raise errors.WireError(f"{at}: repeated")
            recall = model.RecallOutcome(
                recalled_message_id=_attr_nonempty(child, "messageId", at),
                withdrawn=_int_attr(child, "withdrawn", at),
                notified=_int_attr(child, "notified", at),
            )
        else:
            raise errors.WireError(f"{where}: unexpected element <{child.tag}>")
    accepted = _bool_attr(el, "accepted", where)
    message_id = el.get("messageId", "")
    if accepted and not message_id:
        raise errors.WireError(f"{where}: attribute 'messageId' missing")
    return model.SubmitResult(
        tx_message_id=_attr_nonempty(el, "tx", where),
        accepted=accepted,
        message_id=message_id,
        recipients=_int_attr(el, "recipients", where, default=0),
        unknown=tuple(unknown),
        reason=el.get("reason", ""),
        served_at_once=_bool_attr(el, "servedAtOnce", where, default=False),
        recall=recall,
    )


def parse_fetch(data: bytes) -> model.FetchRequest:
    """The request of a ``fetch`` payload: ``max``, ``wait`` and the entries its
    ``<ack>`` acknowledges (none when it has none)."""
    root = _root(data, "fetch")
    acked: tuple[str, ...] = ()
    for n, child in enumerate(root, 1):
        if child.tag != "ack" or n > 1:
            raise errors.WireError(f"fetch: unexpected element <{child.tag}>")
        acked = tuple(_entry_ids(child, "fetch/ack"))
    max_items = _int_attr(root, "max", "fetch", minimum=1)
    wait_text = _attr(root, "wait", "fetch")
    wait = float(wait_text) if _DECIMAL.fullmatch(wait_text) else math.nan
    if not math.isfinite(wait):
        raise errors.WireError(
            f"fetch: attribute 'wait' must be a finite number >= 0, got {wait_text!r}"
        )
    return model.FetchRequest(max_items, wait, acked)


_DELIVERY_CHILDREN: Final = {
    "receiverList": False,
    "bccList": False,
    "subject": False,
    "keywords": False,
    "content": False,
    "attachments": False,
}


_DELIVERY_TEXTS: Final = frozenset(_DELIVERY_CHILDREN) - {"attachments"}


def _delivery_or_none(el: etree._Element, n: int) -> model.Delivery | None:
    """The ``n``-th delivery of an answer, or None when anything is wrong with it.

    The normal path: one read of each attribute and child. On None the caller runs
    :func:`_parse_delivery`, which finds the first problem and names it.
    """
    get = el.get
    rx = get("rx")
    message_id = get("messageId")
    app_code = get("appCode")
    source_domain = get("sourceDomain")
    agent_sender = get("agentSender")
    sender = get("sender")
    owner = get("owner")
    receiver_type = get("receiverType")
    content_type = get("contentType")
    alert_flag = _BOOLEANS.get(get("alertFlag", ""))
    priority = get("priority")
    transmit_time = get("transmitTime")
    if (
        not rx
        or not message_id
        or app_code is None
        or source_domain is None
        or agent_sender is None
        or sender is None
        or owner is None
        or content_type is None
        or alert_flag is None
        or receiver_type is None
        or receiver_type not in model.RECEIVER_TYPES
        or priority is None
        or priority not in model.PRIORITIES
        or transmit_time is None
        or not _TIME.fullmatch(transmit_time)
    ):
        return None
    texts: dict[str, str] = {}
    attachments: etree._Element | None = None
    for child in el:
        tag = child.tag
        if tag in _DELIVERY_TEXTS:
            if tag in texts or len(child):
                return None
            texts[tag] = child.text or ""
        elif tag == "attachments" and attachments is None:
            attachments = child
        else:
            return None
    # Positional: keyword arguments cost more per call with this many fields. The
    # round-trip tests catch a change of the model's field order.
    return model.Delivery(
        rx,
        message_id,
        app_code,
        source_domain,
        agent_sender,
        sender,
        owner,
        receiver_type,
        texts.get("receiverList", ""),
        texts.get("bccList", ""),
        texts.get("subject", ""),
        texts.get("content", ""),
        content_type,
        alert_flag,
        priority,
        texts.get("keywords", ""),
        transmit_time,
        () if attachments is None else _parse_attachments(attachments, f"deliveries/delivery[{n}]"),
    )


def _parse_delivery(el: etree._Element, where: str) -> model.Delivery:
    """One delivery, attribute by attribute, naming the first problem."""
    kids = _children(el, where, _DELIVERY_CHILDREN)
    return model.Delivery(
        rx_message_id=_attr_nonempty(el, "rx", where),
        message_id=_attr_nonempty(el, "messageId", where),
        app_code=_attr(el, "appCode", where),
        source_domain=_attr(el, "sourceDomain", where),
        agent_sender=_attr(el, "agentSender", where),
        sender=_attr(el, "sender", where),
        owner=_attr(el, "owner", where),
        receiver_type=_choice_attr(el, "receiverType", where, model.RECEIVER_TYPES),
        receiver_list=_kid_text(kids, "receiverList", where),
        bcc_list=_kid_text(kids, "bccList", where),
        subject=_kid_text(kids, "subject", where),
        content=_kid_text(kids, "content", where),
        content_type=_attr(el, "contentType", where),
        alert_flag=_bool_attr(el, "alertFlag", where),
        priority=_choice_attr(el, "priority", where, model.PRIORITIES),
        keywords=_kid_text(kids, "keywords", where),
        transmit_time=_time_attr(el, "transmitTime", where),
        attachments=_parse_attachments(kids.get("attachments"), where),
    )


def _receipt_or_none(el: etree._Element) -> model.Receipt | None:
    """The receipt at ``el`` if it is well formed, else None (see :func:`_parse_receipt`)."""
    if len(el):
        return None
    get = el.get
    entry = get("entry")
    tx = get("tx")
    message_id = get("messageId")
    served = get("served")
    recalled = get("recalled")
    if (
        not entry
        or not tx
        or not message_id
        or served is None
        or recalled is None
        or not _UNSIGNED.fullmatch(served)
        or not _UNSIGNED.fullmatch(recalled)
    ):
        return None
    return model.Receipt(
        entry_id=entry,
        tx_message_id=tx,
        message_id=message_id,
        served=int(served),
        recalled=int(recalled),
    )


def _parse_receipt(el: etree._Element, where: str) -> model.Receipt:
    if len(el):
        raise errors.WireError(f"{where}: must be empty")
    return model.Receipt(
        entry_id=_attr_nonempty(el, "entry", where),
        tx_message_id=_attr_nonempty(el, "tx", where),
        message_id=_attr_nonempty(el, "messageId", where),
        served=_int_attr(el, "served", where),
        recalled=_int_attr(el, "recalled", where),
    )


def parse_deliveries(data: bytes) -> model.FetchBatch:
    """The deliveries and receipts of a ``deliveries`` answer, each in document order."""
    deliveries: list[model.Delivery] = []
    receipts: list[model.Receipt] = []
    for el in _root(data, "deliveries"):
        tag = el.tag
        if tag == "delivery":
            n = len(deliveries) + 1
            delivery = _delivery_or_none(el, n)
            if delivery is None:
                delivery = _parse_delivery(el, f"deliveries/delivery[{n}]")
            deliveries.append(delivery)
        elif tag == "receipt":
            receipt = _receipt_or_none(el)
            if receipt is None:
                receipt = _parse_receipt(el, f"deliveries/receipt[{len(receipts) + 1}]")
            receipts.append(receipt)
        else:
            raise errors.WireError(f"deliveries: unexpected element <{tag}>")
    return model.FetchBatch(deliveries=tuple(deliveries), receipts=tuple(receipts))


def _entry_ids(holder: etree._Element, where: str) -> list[str]:
    return [_attr_nonempty(el, "id", at) for at, el in _items(holder, "entry", where)]


def parse_ack(data: bytes) -> list[str]:
    """The queue entry ids of an ``ack`` payload, in order."""
    return _entry_ids(_root(data, "ack"), "ack")


def parse_acked(data: bytes) -> int:
    """The count of an ``acked`` answer."""
    root = _root(data, "acked")
    if len(root):
        raise errors.WireError("acked: must be empty")
    return _int_attr(root, "count", "acked")


def parse_history(data: bytes) -> tuple[str, list[model.ServerEvent]]:
    """``(message_id, events)`` of a ``history`` answer."""
    root = _root(data, "history")
    message_id = _attr_nonempty(root, "messageId", "history")
    events = []
    for where, el in _items(root, "event", "history"):
        if len(el):
            raise errors.WireError(f"{where}: must be empty")
        events.append(
            model.ServerEvent(
                at=_attr_nonempty(el, "at", where),
                kind=_attr_nonempty(el, "kind", where),
                account=_attr(el, "account", where),
                detail=el.get("detail", ""),
            )
        )
    return message_id, events
