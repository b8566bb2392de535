"""The Content formats of reference §3: approval (``msg``), reply and recall.

Content is free text by design (integrations may adapt the formats), so nothing
parses it on the way through; these helpers are for callers that want it: ``mpg send``
and ``mpg content`` build approvals, replies and the whole recall row, ``mpg inbox
show --json`` gives a reply's results as data (:func:`as_data`), the server reads the
recalled message id.

A page's text is written as escaped text, so HTML travels intact. When parsing, a
page that holds markup instead (``<page><b>x</b></page>``, as hand-written documents
do) gives that markup back as text, so either spelling reads the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

from lxml import etree

from mpg import errors
from mpg.wire import model, xmlsafe

_DECLARATION: Final = '<?xml version="1.0" encoding="utf-8"?>\n'
RECALL_PARAM: Final = "recallmessageid"
#: The channel of recall rows (reference §3).
RECALL_APP_CODE: Final = "SYS"
#: A recall row is written ready to send ("not yet uploaded").
RECALL_STATE: Final = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of what the phone shows."""

    id: str
    name: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Option:
    """One choice of a ``submit`` input (choosing it sends the reply)."""

    id: str
    name: str
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class Input:
    """One field of ``replyinfo``; ``isnullable`` None means the attribute is absent."""

    id: str
    name: str = ""
    type: str = "textbox"
    isnullable: bool | None = None
    defaultvalue: str = ""
    options: tuple[Option, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """One answered field of a reply's ``submitinfo``."""

    id: str
    name: str
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class Content:
    """A parsed Content document.

    ``results`` keeps the reply's results in order; ``result_values`` maps each result
    id to its value (the last one wins if an id repeats).
    """

    content_type: str  # lowercase
    params: dict[str, str]
    pages: tuple[Page, ...] = ()
    inputs: tuple[Input, ...] = ()
    results: tuple[Result, ...] = ()
    result_values: dict[str, str] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- building


def _set(el: etree._Element, name: str, value: str, where: str) -> None:
    el.set(name, xmlsafe.check_text(value, f"{where}/@{name}"))


def _document(content_type: str, params: Mapping[str, str]) -> etree._Element:
    root = etree.Element("content", {"contenttype": content_type})
    holder = etree.SubElement(root, "params")
    for n, (name, value) in enumerate(params.items(), 1):
        el = etree.SubElement(holder, "param")
        _set(el, "name", name, f"content/params/param[{n}]")
        _set(el, "value", value, f"content/params/param[{n}]")
    return root


def _serialize(root: etree._Element) -> str:
    # Indented for the people who read the Content column; libxml2 never indents an
    # element that holds text, so page texts are not altered.
    body: str = etree.tostring(root, encoding="unicode", pretty_print=True)
    return _DECLARATION + body


def build_approval(
    params: Mapping[str, str], pages: Sequence[Page], inputs: Sequence[Input]
) -> str:
    """An approval ``msg`` document: params, pages to show, inputs to answer with."""
    root = _document("msg", params)
    view = etree.SubElement(root, "view")
    for n, page in enumerate(pages, 1):
        where = f"content/view/page[{n}]"
        el = etree.SubElement(view, "page")
        _set(el, "id", page.id, where)
        _set(el, "name", page.name, where)
        el.text = xmlsafe.check_text(page.text, where)
    replyinfo = etree.SubElement(root, "replyinfo")
    for n, field in enumerate(inputs, 1):
        where = f"content/replyinfo/input[{n}]"
        el = etree.SubElement(replyinfo, "input")
        _set(el, "id", field.id, where)
        if field.name:
            _set(el, "name", field.name, where)
        if field.isnullable is not None:
            el.set("isnullable", "true" if field.isnullable else "false")
        _set(el, "type", field.type, where)
        if field.defaultvalue:
            _set(el, "defaultvalue", field.defaultvalue, where)
        for k, option in enumerate(field.options, 1):
            opt = etree.SubElement(el, "option")
            _set(opt, "id", option.id, f"{where}/option[{k}]")
            _set(opt, "name", option.name, f"{where}/option[{k}]")
            _set(opt, "value", option.value, f"{where}/option[{k}]")
    return _serialize(root)


def build_reply(params: Mapping[str, str], results: Sequence[Result]) -> str:
    """A ``reply`` document: the approval's params and the user's answers."""
    root = _document("reply", params)
    submitinfo = etree.SubElement(root, "submitinfo")
    for n, result in enumerate(results, 1):
        where = f"content/submitinfo/result[{n}]"
        el = etree.SubElement(submitinfo, "result")
        _set(el, "id", result.id, where)
        _set(el, "name", result.name, where)
        _set(el, "value", result.value, where)
    return _serialize(root)


def build_recall(message_id: str) -> str:
    """A ``recall`` document for the server ``MessageId`` of an earlier message."""
    if not message_id:
        raise errors.WireError("recall: message id must not be empty")
    return _serialize(_document("recall", {RECALL_PARAM: message_id}))


# ---------------------------------------------------------------------------- parsing


def _attr(el: etree._Element, name: str, where: str) -> str:
    value = el.get(name)
    if value is None:
        raise errors.WireError(f"{where}: attribute '{name}' missing")
    return value


def _inner_markup(el: etree._Element) -> str:
    parts = [el.text or ""]
    parts.extend(etree.tostring(child, encoding="unicode", with_tail=True) for child in el)
    return "".join(parts)


def _params(el: etree._Element) -> dict[str, str]:
    params: dict[str, str] = {}
    for n, param in enumerate(el.iterchildren("param"), 1):
        where = f"content/params/param[{n}]"
        name = _attr(param, "name", where)
        if name in params:
            raise errors.WireError(f"{where}: param {name!r} repeated")
        params[name] = param.get("value", "")
    return params


def _input(el: etree._Element, where: str) -> Input:
    nullable = el.get("isnullable")
    if nullable is not None and nullable.lower() not in ("true", "false", "1", "0"):
        raise errors.WireError(f"{where}: attribute 'isnullable' must be true or false")
    return Input(
        id=_attr(el, "id", where),
        name=el.get("name", ""),
        type=el.get("type", ""),
        isnullable=None if nullable is None else nullable.lower() in ("true", "1"),
        defaultvalue=el.get("defaultvalue", ""),
        options=tuple(
            Option(
                id=_attr(opt, "id", f"{where}/option[{k}]"),
                name=opt.get("name", ""),
                value=opt.get("value", ""),
            )
            for k, opt in enumerate(el.iterchildren("option"), 1)
        ),
    )


def parse_content(content: str | bytes) -> Content:
    """Parse a Content document (any of reference §3's, or an adapted one).

    Unknown sections are ignored; :class:`errors.WireError` if it is not XML, its root
    is not ``content`` or a param, page, input, option or result lacks its ``id``/``name``.
    """
    root = xmlsafe.parse(content)
    if root.tag != "content":
        raise errors.WireError(f"expected a <content> document, got <{root.tag}>")
    params: dict[str, str] = {}
    pages: list[Page] = []
    inputs: list[Input] = []
    results: list[Result] = []
    for section in root:
        if section.tag == "params":
            params.update(_params(section))
        elif section.tag == "view":
            for n, page in enumerate(section.iterchildren("page"), 1):
                pages.append(
                    Page(
                        id=_attr(page, "id", f"content/view/page[{n}]"),
                        name=page.get("name", ""),
                        text=_inner_markup(page),
                    )
                )
        elif section.tag == "replyinfo":
            inputs.extend(
                _input(el, f"content/replyinfo/input[{n}]")
                for n, el in enumerate(section.iterchildren("input"), 1)
            )
        elif section.tag == "submitinfo":
            for n, el in enumerate(section.iterchildren("result"), 1):
                where = f"content/submitinfo/result[{n}]"
                results.append(
                    Result(
                        id=_attr(el, "id", where),
                        name=el.get("name", ""),
                        value=el.get("value", ""),
                    )
                )
    return Content(
        content_type=root.get("contenttype", "").lower(),
        params=params,
        pages=tuple(pages),
        inputs=tuple(inputs),
        results=tuple(results),
        result_values={r.id: r.value for r in results},
    )


def parse_recall(content: str | bytes) -> str:
    """The ``recallmessageid`` param of a recall document.

    Raises :class:`errors.WireError` if the document is not XML or has no non-empty
    ``recallmessageid`` param (the ``contenttype`` attribute is not required).
    """
    message_id = parse_content(content).params.get(RECALL_PARAM, "").strip()
    if not message_id:
        raise errors.WireError(f"recall content has no '{RECALL_PARAM}' param")
    return message_id


# ------------------------------------------------------------------------- plain data


def as_data(parsed: Content) -> dict[str, Any]:
    """A parsed document as plain data (JSON-ready) that :func:`from_data` builds back.

    ``results`` maps each result id to its value (what an ERP script reads);
    ``result_list`` keeps the results in order with their names.
    """
    return {
        "content_type": parsed.content_type,
        "params": dict(parsed.params),
        "pages": [dataclasses.asdict(page) for page in parsed.pages],
        "inputs": [
            {**dataclasses.asdict(field), "options": [dataclasses.asdict(o) for o in field.options]}
            for field in parsed.inputs
        ],
        "results": dict(parsed.result_values),
        "result_list": [dataclasses.asdict(result) for result in parsed.results],
    }


def from_data(data: Mapping[str, Any]) -> str:
    """Build a document from plain data shaped like :func:`as_data`'s.

    ``content_type`` ``msg`` builds an approval, ``reply`` a reply (from
    ``result_list``, else ``results``), ``recall`` a recall of the
    ``recallmessageid`` param. Raises :class:`errors.WireError` naming what is wrong.
    """
    kind = str(data.get("content_type", "")).lower()
    params = {str(k): str(v) for k, v in dict(data.get("params") or {}).items()}
    try:
        if kind == "msg":
            pages = [Page(**page) for page in data.get("pages") or []]
            inputs = [
                Input(
                    **{k: v for k, v in field.items() if k != "options"},
                    options=tuple(Option(**o) for o in field.get("options") or []),
                )
                for field in data.get("inputs") or []
            ]
            return build_approval(params, pages, inputs)
        if kind == "reply":
            listed = data.get("result_list")
            if listed:
                results = [Result(**r) for r in listed]
            else:
                values = dict(data.get("results") or {})
                results = [Result(str(k), str(k), str(v)) for k, v in values.items()]
            return build_reply(params, results)
        if kind == "recall":
            return build_recall(params.get(RECALL_PARAM, ""))
    except TypeError as exc:
        raise errors.WireError(f"content data: {exc}") from None
    raise errors.WireError(f"content data: content_type must be msg, reply or recall, not {kind!r}")


def recall_row(message_id: str, *, source_domain: str, agent_sender: str) -> dict[str, object]:
    """The whole recall Outbox row of reference §3 for the server ``MessageId``.

    AppCode ``SYS``, ReceiverType ``U``, ReceiverList ``psereceiver`` (the server's
    receiving agent), Subject ``[Recall]: <MessageId>``, AlertFlag 0, ContentType
    ``RECALL``, State 10 and the recall document as Content.
    """
    return {
        "AppCode": RECALL_APP_CODE,
        "SourceDomain": source_domain,
        "AgentSender": agent_sender,
        "ReceiverType": "U",
        "ReceiverList": model.SERVER_AGENT,
        "BccList": "",
        "Subject": f"[Recall]: {message_id}",
        "Content": build_recall(message_id),
        "ContentType": "RECALL",
        "AttachmentList": "",
        "AlertFlag": False,
        "State": RECALL_STATE,
        "StatusLog": "recall message",
    }
