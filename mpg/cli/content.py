"""``mpg content approval|reply|recall|parse``: build and read the Content formats.

The builders print the document (or write it with ``--out``), ready for ``mpg send
--content-file``, a drop file or an ERP's own INSERT; ``parse`` turns a document into
plain data. No configuration or database is needed.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import click

from mpg import errors, exitcodes
from mpg.wire import content


def _split(spec: str, parts: int, option: str, shape: str) -> list[str]:
    """``A|B|C`` -> its parts; the last one may itself hold '|'."""
    values = spec.split("|", parts - 1)
    if len(values) != parts:
        raise click.BadParameter(f"{spec!r}: expected {shape}", param_hint=option)
    return values


def _params(specs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{spec!r}: expected NAME=VALUE", param_hint="--param")
        params[name] = value
    return params


def read_text(path: str) -> str:
    """A UTF-8 file's text, or standard input for ``-``."""
    if path == "-":
        return sys.stdin.read()
    try:
        return pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.CommandError(f"{path}: cannot read: {exc}", exitcodes.USAGE) from exc


def _emit(document: str, out: str | None) -> None:
    if out is None:
        click.echo(document, nl=False)
    else:
        pathlib.Path(out).write_text(document, encoding="utf-8")


def _built(build: Any, *args: Any) -> str:
    try:
        text: str = build(*args)
    except errors.WireError as exc:
        raise errors.CommandError(str(exc), exitcodes.USAGE) from exc
    return text


_out = click.option(
    "--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write to FILE, not stdout."
)
_param = click.option("--param", "params", multiple=True, help="A param: NAME=VALUE (repeatable).")


@click.group("content")
def content_group() -> None:
    """Build and parse Content documents (approval, reply, recall)."""


@content_group.command("approval")
@_param
@click.option("--page", "pages", multiple=True, help="A page: 'ID|NAME|TEXT' (repeatable).")
@click.option(
    "--page-file", "page_files", multiple=True, help="A page from a file: 'ID|NAME|PATH'."
)
@click.option(
    "--textbox", "textboxes", multiple=True, help="A text input: 'ID|NAME|DEFAULT' (repeatable)."
)
@click.option("--submit", default=None, help="The submit input: 'ID|DEFAULT'.")
@click.option("--option", "options", multiple=True, help="A submit choice: 'ID|NAME|VALUE'.")
@click.option(
    "--from-json",
    "from_json",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Build from data shaped like `mpg content parse --json` prints (any type).",
)
@_out
def approval(
    params: tuple[str, ...],
    pages: tuple[str, ...],
    page_files: tuple[str, ...],
    textboxes: tuple[str, ...],
    submit: str | None,
    options: tuple[str, ...],
    from_json: str | None,
    out: str | None,
) -> None:
    """An approval form (contenttype msg): params, pages and reply inputs."""
    if from_json is not None:
        try:
            data = json.loads(read_text(from_json))
        except json.JSONDecodeError as exc:
            raise errors.CommandError(f"{from_json}: not JSON: {exc}", exitcodes.USAGE) from exc
        _emit(_built(content.from_data, data), out)
        return
    built_pages = [content.Page(*_split(p, 3, "--page", "ID|NAME|TEXT")) for p in pages]
    for spec in page_files:
        page_id, name, path = _split(spec, 3, "--page-file", "ID|NAME|PATH")
        built_pages.append(content.Page(page_id, name, read_text(path)))
    inputs = []
    for spec in textboxes:
        field_id, name, default = _split(spec, 3, "--textbox", "ID|NAME|DEFAULT")
        inputs.append(
            content.Input(field_id, name, type="textbox", isnullable=True, defaultvalue=default)
        )
    if options and submit is None:
        raise click.UsageError("--option needs --submit ID|DEFAULT")
    if submit is not None:
        field_id, default = _split(submit, 2, "--submit", "ID|DEFAULT")
        choices = tuple(content.Option(*_split(o, 3, "--option", "ID|NAME|VALUE")) for o in options)
        inputs.append(content.Input(field_id, type="submit", defaultvalue=default, options=choices))
    _emit(_built(content.build_approval, _params(params), built_pages, inputs), out)


@content_group.command("reply")
@_param
@click.option("--result", "results", multiple=True, help="An answer: 'ID|NAME|VALUE'.")
@click.option(
    "--in-reply-to",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Copy the params of this approval document (--param adds or overrides).",
)
@_out
def reply(
    params: tuple[str, ...], results: tuple[str, ...], in_reply_to: str | None, out: str | None
) -> None:
    """A reply (contenttype reply): the approval's params and the answers."""
    merged: dict[str, str] = {}
    if in_reply_to is not None:
        try:
            merged.update(content.parse_content(read_text(in_reply_to)).params)
        except errors.WireError as exc:
            # As `content parse` of the same file: exit 1 naming it (docs/cli.md).
            raise errors.CommandError(f"{in_reply_to}: {exc}") from exc
    merged.update(_params(params))
    answers = [content.Result(*_split(r, 3, "--result", "ID|NAME|VALUE")) for r in results]
    _emit(_built(content.build_reply, merged, answers), out)


@content_group.command("recall")
@click.argument("message_id")
@_out
def recall(message_id: str, out: str | None) -> None:
    """A recall of the server MessageId of an earlier message (see `mpg send --recall`)."""
    _emit(_built(content.build_recall, message_id), out)


@content_group.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the data as JSON.")
def parse(file: str, as_json: bool) -> None:
    """Parse a Content document into params, pages, inputs and results."""
    try:
        data = content.as_data(content.parse_content(read_text(file)))
    except errors.WireError as exc:
        raise errors.CommandError(f"{file}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(f"contenttype: {data['content_type']}")
    for name, value in data["params"].items():
        click.echo(f"param {name} = {value}")
    for page in data["pages"]:
        click.echo(f"page {page['id']} ({page['name']}): {len(page['text'])} characters")
    for field in data["inputs"]:
        choices = ", ".join(o["value"] for o in field["options"])
        click.echo(f"input {field['id']} ({field['type']})" + (f": {choices}" if choices else ""))
    for result in data["result_list"]:
        click.echo(f"result {result['id']} = {result['value']}")
