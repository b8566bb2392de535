"""The phone agent: registration, the device's own API calls, and its messages.

Messages travel over the sealed protocol as for a gateway, with the same pieces: the
gateway's :class:`~mpg.gateway.client.PushClient` fetches, acknowledges and submits;
the gateway's :class:`~mpg.gateway.inbound.InboundWorker` stores a fetched batch in
the local Inbox exactly once (``RxMessageId`` is the key) before acknowledging it; the
Inbox is the contract table (:mod:`mpg.storage.inbox`) in a SQLite file of the state
folder. The JSON API (:mod:`mpg.agent.api_client`) carries registration, push token,
start, subscriptions and read reports.

An answer to an approval (reference §3) is a ``REPLY`` to the account that sent the
approval (its ``AgentSender``: the sender's gateway). Its ``TxMessageId`` is derived
from the device's account and the approval's ``RxMessageId``, so sending the same
answer again (the first answer was lost on the way back) is the same message to the
server, and a different second answer is refused by it: one answer per approval.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import uuid
from typing import Any, Final

import sqlalchemy as sa

from mpg import config, errors, timefmt
from mpg.agent import api_client, state
from mpg.gateway import client as client_mod
from mpg.gateway import inbound
from mpg.storage import database, inbox, outbox
from mpg.wire import content, keys, model

#: Namespace of the replies' TxMessageIds (uuid5 of account and RxMessageId).
REPLY_NAMESPACE: Final = uuid.UUID("6f1d9c52-3c1e-4f7e-9a55-2d0b8e1c7a41")
SUBJECT_WIDTH: Final = 200
#: Result ids of a reply when the approval names none (reference §3's example).
DEFAULT_SUBMIT_ID: Final = "result"
DEFAULT_COMMENT_ID: Final = "comment"
#: A phone writes its own times in local time, as the gateway does by default.
CLOCK: Final[timefmt.Clock] = "local"


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched:
    """One fetch: the RxMessageIds newly stored, repeated deliveries, receipts."""

    new: tuple[str, ...]
    repeated: int
    receipts: int


def reply_tx_id(account: str, rx_message_id: str) -> str:
    """The TxMessageId of the device's answer to one received message."""
    return str(uuid.uuid5(REPLY_NAMESPACE, f"{account}\n{rx_message_id}"))


class Agent:
    """A phone's agent over its state folder. Close it when done."""

    def __init__(self, root: pathlib.Path) -> None:
        self.folder = state.StateFolder(root)
        self.state = self.folder.load()
        self._engine: sa.Engine | None = None
        self._push: client_mod.PushClient | None = None

    def close(self) -> None:
        """Close the connections it opened."""
        if self._push is not None:
            self._push.close()
            self._push = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Settings and registration.

    def configure(
        self,
        *,
        server_url: str | None = None,
        ca_file: str | None = None,
        device_id: str | None = None,
        platform: str | None = None,
        app_version: str | None = None,
    ) -> None:
        """Change the settings given (kept with the next save)."""
        s = self.state
        if server_url:
            s.server_url = api_client.check_server_url(server_url)
        if ca_file:
            s.ca_file = str(pathlib.Path(ca_file).resolve())
        if device_id:
            s.device_id = device_id
        if platform:
            s.platform = platform
        if app_version:
            s.app_version = app_version

    def register_email(self, email: str) -> int:
        """Ask for a verification code mailed to ``email`` (:meth:`confirm` sends it);
        seconds the code is valid."""
        with self._anonymous_api() as api:
            seconds = api.register_email(email, self._device())
        s = self.state
        s.pending_email, s.pending_choice, s.offered_groups = email, "", []
        self.folder.save(s)
        return seconds

    def confirm(
        self, code: str, group: str | None = None
    ) -> api_client.Registration | api_client.GroupChoice:
        """Send the mailed code; registered, or the groups to choose from (then
        :meth:`choose`: the code is used up, the choice token kept does it)."""
        email = self._pending_email()
        with self._anonymous_api() as api:
            answer = api.confirm_email(email, code, group, self._device())
        if isinstance(answer, api_client.Registration):
            self._keep(answer)
        else:
            self._offer(answer)
        return answer

    def choose(self, group: str) -> api_client.Registration:
        """Join ``group``, one of those a confirmation offered (its choice token)."""
        email = self._pending_email()
        if not self.state.pending_choice:
            raise errors.ValidationError(
                "group", "no groups are waiting for a choice; run `mpg device confirm CODE`"
            )
        with self._anonymous_api() as api:
            answer = api.choose_group(email, self.state.pending_choice, group, self._device())
        self._keep(answer)
        return answer

    def register_code(self, code: str) -> api_client.Registration:
        """Register with a registration code."""
        with self._anonymous_api() as api:
            answer = api.register_code(code, self._device())
        self._keep(answer)
        return answer

    def register_id_token(
        self, id_token: str, nonce: str | None, group: str | None = None
    ) -> api_client.Registration | api_client.GroupChoice:
        """Register with an ID token from the organisation's identity provider; when its
        tenant maps to several groups, the groups (send the token again with ``group``)."""
        with self._anonymous_api() as api:
            answer = api.register_id_token(id_token.strip(), nonce, group, self._device())
        if isinstance(answer, api_client.Registration):
            self._keep(answer)
        return answer

    def use_account(self, account: str, credential_token: str) -> None:
        """Use an account made by hand (``mpg server account add --kind device``)."""
        credential = keys.parse_credential(credential_token)
        self._keep(
            api_client.Registration(
                account,
                keys.format_credential(credential),
                credential.key_id,
                api_client.Group(""),
                (),
            )
        )

    def _device(self) -> dict[str, str]:
        s = self.state
        return api_client.device_fields(s.device_id, s.platform, s.app_version)

    def _pending_email(self) -> str:
        if not self.state.pending_email:
            raise errors.ValidationError(
                "email", "no e-mail registration is waiting; run `mpg device register --email`"
            )
        return self.state.pending_email

    def _offer(self, choice: api_client.GroupChoice) -> None:
        """Keep the choice token and the groups offered, for :meth:`choose`."""
        self.state.pending_choice = choice.token
        self.state.offered_groups = [dataclasses.asdict(g) for g in choice.groups]
        self.folder.save(self.state)

    def _keep(self, reg: api_client.Registration) -> None:
        """Save a registration: the credential first, then the state naming it."""
        if self._push is not None:
            self._push.close()
            self._push = None
        self.folder.save_credential(reg.credential)
        s = self.state
        s.account, s.key_id = reg.account, reg.key_id
        s.pending_email, s.pending_choice, s.offered_groups = "", "", []
        s.group = dataclasses.asdict(reg.group) if reg.group.id else {}
        s.categories = [dict(c) for c in reg.categories]
        self.folder.save(s)

    def save(self) -> None:
        """Write the state (settings changed by :meth:`configure`)."""
        self.folder.save(self.state)

    # The device's own API calls.

    def api(self) -> api_client.DeviceApi:
        """A client of the JSON API that authenticates as this device."""
        credential = self._credential()
        token = keys.device_token(self.state.account, credential.key_id, credential.secret)
        return api_client.DeviceApi(self._server_url(), self.state.ca_file or None, token)

    def set_push_token(self, token: str, platform: str | None = None) -> Any:
        """Set the push token on the server and keep it."""
        with self.api() as api:
            answer = api.set_push_token(token, platform or self.state.platform)
        self.state.push_token = token
        self.folder.save(self.state)
        return answer

    def subscribe(self, category: str, *, on: bool = True) -> list[dict[str, Any]]:
        """Subscribe to (``on``) or unsubscribe from a category; the categories after it
        (kept as the local list)."""
        with self.api() as api:
            answer = api.subscribe(category) if on else api.unsubscribe(category)
        self.state.categories = answer
        self.folder.save(self.state)
        return answer

    def subscriptions(self) -> list[dict[str, Any]]:
        """The group's categories from the server, subscribed or not (kept locally)."""
        with self.api() as api:
            answer = api.subscriptions()
        self.state.categories = answer
        self.folder.save(self.state)
        return answer

    def start(self) -> dict[str, Any]:
        """Report an app start; ``{categories, added}`` (the categories are kept)."""
        with self.api() as api:
            answer = api.start(self.state.app_version)
        self.state.categories = answer["categories"]
        self.folder.save(self.state)
        return answer

    # Messages (sealed protocol).

    def fetch(self, max_items: int = 200, wait: float = 0.0) -> Fetched:
        """Fetch one batch into the local Inbox and acknowledge it."""
        push = self._push_client()
        repo = self.inbox()
        batch = push.fetch(max_items, wait)
        ids = [d.rx_message_id for d in batch.deliveries]
        before = repo.existing(ids) if ids else set()
        worker = inbound.InboundWorker(
            self._gateway_settings(),
            repo,
            outbox.OutboxRepository(self._inbox_engine(), self.state.account),
            push,
            stop=threading.Event(),
        )
        worker.handle(batch)
        new = tuple(rx for rx in dict.fromkeys(ids) if rx not in before)
        return Fetched(new, len(ids) - len(new), len(batch.receipts))

    def inbox(self) -> inbox.InboxRepository:
        """The local Inbox (the SQLite file of the state folder, made on first use)."""
        return inbox.InboxRepository(self._inbox_engine(), self._account())

    def message(self, rx_message_id: str) -> dict[str, Any]:
        """One local Inbox row with its attachments; a clear error when there is none."""
        row = self.inbox().get(rx_message_id)
        if row is None:
            raise errors.ValidationError("RxMessageId", f"no message {rx_message_id} in the Inbox")
        return row

    def read(self, rx_message_id: str) -> tuple[bool, Any]:
        """Mark a message read here (0 -> 29) and report it to the server.

        Returns whether the local row changed and the server's answer. The report is
        sent even for a row read before, so a report that failed is repeated simply
        by reading again.
        """
        row = self.message(rx_message_id)
        moved = self.inbox().mark_read([rx_message_id]) == 1
        with self.api() as api:
            answer = api.report_read(str(row["MessageId"]))
        return moved, answer

    def reply(
        self, rx_message_id: str, answer: str, comment: str | None = None
    ) -> tuple[model.OutgoingMessage, model.SubmitResult]:
        """Answer an approval with a REPLY to its sender's gateway (sealed submit)."""
        row = self.message(rx_message_id)
        msg = reply_message(row, self._account(), answer, comment, CLOCK)
        [result] = self._push_client().submit([msg])
        if not result.accepted:
            raise errors.RefusedByServer(200, "reply_refused", f"reply refused: {result.reason}")
        return msg, result

    # Plumbing.

    def _account(self) -> str:
        if not self.state.account:
            raise errors.ConfigError(
                f"{self.folder.root}: not registered; run `mpg device register` first"
            )
        return self.state.account

    def _server_url(self) -> str:
        if not self.state.server_url:
            raise errors.ConfigError("no server; give --server URL to `mpg device register`")
        return self.state.server_url

    def _anonymous_api(self) -> api_client.DeviceApi:
        return api_client.DeviceApi(self._server_url(), self.state.ca_file or None)

    def _gateway_settings(self) -> config.GatewaySettings:
        return config.GatewaySettings(
            account=self._account(),
            server_url=self._server_url(),
            ca_bundle=pathlib.Path(self.state.ca_file) if self.state.ca_file else None,
            secret_file=self.folder.credential_path,
            clock=CLOCK,
        )

    def _credential(self) -> keys.Credential:
        self._account()
        return keys.parse_credential(self._gateway_settings().credential_text())

    def _push_client(self) -> client_mod.PushClient:
        if self._push is None:
            self._push = client_mod.PushClient(self._gateway_settings(), self._credential())
        return self._push

    def _inbox_engine(self) -> sa.Engine:
        if self._engine is None:
            path = self.folder.prepare_inbox()
            engine = database.create_engine(f"sqlite:///{path}")
            database.init_db(engine)
            self._engine = engine
        return self._engine


def reply_message(
    row: dict[str, Any], account: str, answer: str, comment: str | None, clock: timefmt.Clock
) -> model.OutgoingMessage:
    """The REPLY to the approval in Inbox ``row``: its params, the chosen answer (one of
    the submit input's options when it lists them) and the comment.

    ``SourceDomain`` is empty: a device's account has no domain, and the recipient is
    the sender's account as the server wrote it, which must not be qualified again.
    """
    rx = str(row["RxMessageId"])
    try:
        approval = content.parse_content(str(row.get("Content") or ""))
    except errors.WireError as exc:
        raise errors.ValidationError("Content", f"not an approval: {exc}", row=rx) from exc
    submit = next((i for i in approval.inputs if i.type == "submit"), None)
    textbox = next((i for i in approval.inputs if i.type == "textbox"), None)
    if submit is not None and submit.options:
        values = [o.value for o in submit.options]
        chosen = next((v for v in values if v.casefold() == answer.casefold()), None)
        if chosen is None:
            raise errors.ValidationError(
                "answer", f"{answer!r} is not offered; choose one of {', '.join(values)}", row=rx
            )
        answer = chosen
    results = [
        content.Result(
            submit.id if submit else DEFAULT_SUBMIT_ID,
            (submit.name if submit else "") or "Result",
            answer,
        )
    ]
    if comment is None and textbox is not None and textbox.isnullable is False:
        comment = textbox.defaultvalue  # a required field left as the form fills it
    if comment is not None:
        results.append(
            content.Result(
                textbox.id if textbox else DEFAULT_COMMENT_ID,
                (textbox.name if textbox else "") or "Comment",
                comment,
            )
        )
    sender = str(row.get("AgentSender") or "")
    if not sender:
        raise errors.ValidationError("AgentSender", "is empty: no one to reply to", row=rx)
    subject = "Re: " + str(row.get("Subject") or "")
    return model.OutgoingMessage(
        tx_message_id=reply_tx_id(account, rx),
        app_code=str(row.get("AppCode") or ""),
        source_domain="",
        agent_sender=account,
        sender="",
        receiver_type="U",
        receivers=(sender,),
        bcc=(),
        subject=subject[: SUBJECT_WIDTH - 1] + "…" if len(subject) > SUBJECT_WIDTH else subject,
        content=content.build_reply(approval.params, results),
        content_type="REPLY",
        alert_flag=True,
        priority=model.DEFAULT_PRIORITY,
        keywords="",
        transmit_time=timefmt.now_text(clock),
    )
