"""Message tracking pages: search, one message's timeline, recall, push again, and
"why didn't it arrive?" for any recipient.

* ``GET /messages``: the search form and a page of results, newest first; "Older
  messages" continues after the page's last row (:mod:`mpg.server.tracking`).
* ``GET /messages/{id}``: the message, its way through the sending gateway, the server
  and every recipient and device. While it can still move, its timeline fragment
  (``GET /messages/{id}/timeline``) reloads itself every two seconds (htmx); the
  fragment of a final message has no trigger, so the polling stops by itself.
* ``POST /messages/{id}/recall`` and ``POST /messages/{id}/push`` (operator): the
  recall in the sender's name and one more push to a device
  (:mod:`mpg.server.messageops`), audited as the console user.
* ``GET /messages/{id}/explain?recipient=…``: the chain of
  :func:`mpg.server.deliveryfacts.explain_delivery` for that recipient (a fragment for
  htmx, the whole page otherwise).
"""

from __future__ import annotations

import datetime
import urllib.parse
from typing import TYPE_CHECKING, Annotated, Any, Final

import fastapi
from starlette import responses

from mpg import errors
from mpg.server import deliveryfacts, messageops, tracking
from mpg.server.console import deps, render

if TYPE_CHECKING:
    from mpg.server.app import PushServer

router = fastapi.APIRouter()

_ID = fastapi.Path(min_length=1, max_length=50)
_TEXT = fastapi.Query(max_length=200)
#: The search form's fields, as the query string names them.
FIELDS: Final = (
    "message_id",
    "tx_message_id",
    "sender",
    "recipient",
    "app_code",
    "keywords",
    "state",
    "since",
    "until",
)


def _utc(field: str, text: str) -> float | None:
    """A ``datetime-local`` value (``yyyy-MM-ddTHH:mm``), read as UTC; None when empty."""
    if not text.strip():
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.ValidationError(field, "not a date and time (yyyy-mm-ddThh:mm)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@router.get("/messages")
def messages(
    request: fastapi.Request,
    user: deps.Viewer,
    push: deps.Server,
    message_id: Annotated[str, _TEXT] = "",
    tx_message_id: Annotated[str, _TEXT] = "",
    sender: Annotated[str, _TEXT] = "",
    recipient: Annotated[str, _TEXT] = "",
    app_code: Annotated[str, _TEXT] = "",
    keywords: Annotated[str, _TEXT] = "",
    state: Annotated[str, _TEXT] = "",
    since: Annotated[str, _TEXT] = "",
    until: Annotated[str, _TEXT] = "",
    after: Annotated[str, _TEXT] = "",
) -> responses.HTMLResponse:
    """The search form and one page of messages."""
    form = {
        "message_id": message_id,
        "tx_message_id": tx_message_id,
        "sender": sender,
        "recipient": recipient,
        "app_code": app_code,
        "keywords": keywords,
        "state": state,
        "since": since,
        "until": until,
    }
    context: dict[str, Any] = {"form": form, "states": tracking.STATES, "page": None}
    try:
        query = tracking.Query(
            message_id=message_id.strip(),
            tx_message_id=tx_message_id.strip(),
            sender=sender.strip(),
            recipient=recipient.strip(),
            app_code=app_code.strip(),
            keywords=keywords,
            state=state.strip(),
            since=_utc("since", since),
            until=_utc("until", until),
        )
        page = tracking.search(push.engine, push.vault, query, after=after)
    except errors.ValidationError as exc:
        return render.render(
            request, "messages.html", {**context, "error": f"{exc.field}: {exc.reason}"}, 400
        )
    filters = {k: v for k, v in form.items() if v}
    context.update(
        page=page,
        searched=bool(filters),
        older="/messages?" + urllib.parse.urlencode({**filters, "after": page.after})
        if page.after
        else "",
        first="/messages?" + urllib.parse.urlencode(filters) if after else "",
        when=tracking.utc_text,
    )
    return render.render(request, "messages.html", context)


def _timeline_context(push: PushServer, message_id: str) -> dict[str, Any]:
    found = tracking.timeline(push.engine, push.vault, message_id)
    return {
        "t": found,
        "m": found.message,
        "when": tracking.utc_text,
        "words": tracking.STATUS_WORDS,
    }


@router.get("/messages/{message_id}")
def message(
    request: fastapi.Request,
    user: deps.Viewer,
    push: deps.Server,
    message_id: Annotated[str, _ID],
) -> responses.HTMLResponse:
    """One message: its facts, its live timeline, the actions, the explanation form."""
    return render.render(request, "message.html", _timeline_context(push, message_id))


@router.get("/messages/{message_id}/timeline")
def timeline(
    request: fastapi.Request,
    user: deps.Viewer,
    push: deps.Server,
    message_id: Annotated[str, _ID],
) -> responses.HTMLResponse:
    """The timeline fragment the message page reloads while the message moves."""
    return render.render(request, "message_timeline.html", _timeline_context(push, message_id))


def _back(request: fastapi.Request, message_id: str, notice: str) -> responses.RedirectResponse:
    root = request.scope.get("root_path", "")
    query = urllib.parse.urlencode({"notice": notice})
    return responses.RedirectResponse(
        f"{root}/messages/{urllib.parse.quote(message_id)}?{query}", 303
    )


def _refused(
    request: fastapi.Request, push: PushServer, message_id: str, exc: errors.Conflict
) -> responses.HTMLResponse:
    context = {**_timeline_context(push, message_id), "error": str(exc)}
    return render.render(request, "message.html", context, 409)


@router.post("/messages/{message_id}/recall")
def recall(
    request: fastapi.Request,
    user: deps.Operator,
    push: deps.Server,
    message_id: Annotated[str, _ID],
) -> responses.Response:
    """Recall the message in its sender's name (operator)."""
    try:
        outcome = messageops.recall(push.engine, push.vault, push.queues, message_id, user.actor)
    except errors.Conflict as exc:
        return _refused(request, push, message_id, exc)
    return _back(
        request,
        message_id,
        f"Recalled: withdrawn from {outcome.withdrawn} recipient(s) before they had it; "
        f"RECALL sent to {outcome.notified}.",
    )


@router.post("/messages/{message_id}/push")
def push_again(
    request: fastapi.Request,
    user: deps.Operator,
    push: deps.Server,
    message_id: Annotated[str, _ID],
    account: Annotated[str, fastapi.Form(min_length=1, max_length=100)],
) -> responses.Response:
    """Push the message once more to one device that has not fetched it (operator)."""
    try:
        messageops.push_again(push.engine, message_id, account, user.actor)
    except errors.Conflict as exc:
        return _refused(request, push, message_id, exc)
    return _back(request, message_id, f"A new push to {account} is queued.")


@router.get("/messages/{message_id}/explain")
def explain(
    request: fastapi.Request,
    user: deps.Viewer,
    push: deps.Server,
    message_id: Annotated[str, _ID],
    recipient: Annotated[str, fastapi.Query(min_length=1, max_length=200)],
) -> responses.HTMLResponse:
    """Why ``recipient`` did (not) get the message: each link of the chain."""
    explanation = deliveryfacts.explain_delivery(push, message_id, recipient)
    context = {"explanation": explanation, "message_id": message_id}
    if request.headers.get("hx-request"):
        return render.render(request, "message_explain.html", context)
    return render.render(request, "message_explain_page.html", context)
