"""The platforms the playground plays, one player per channel.

A player is the visitor's side of one channel: it turns what the page sends (a text, a button
press, a file) into the platform's real webhook and posts it to the channel's endpoint on the
local webhook server (so the statuses are the channel's own), and it sits behind the channel's
fake platform, seeing every outbound call the bot makes (and the fake's answer) and showing it
in the chat as that platform would.

The Page-messenger window is the player of the channel a ``PageMessengerBridge`` is plugged
into, with the bridge and a fake Page-messenger AI on top (:func:`bridged_player`): the visitor
writes on that channel, the bridge forwards to the AI, the AI's answer comes back as a webhook.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import requests

from omnichannel.runtime.http import Request, Response
from omnichannel.testing import events
from omnichannel.testing.channel import RecordingChannelServer
from omnichannel.testing.omnidesk import (
    RULE_BODY_NEW_CASE,
    RULE_BODY_UPDATED_CASE,
    FakeOmnidesk,
)
from omnichannel.testing.pagemessenger import FakePageMessenger, ReceivedMessage, WebhookCall
from omnichannel.testing.webex import FakeWebexConnect, incoming_message_event

if TYPE_CHECKING:
    from omnichannel.channels.pagemessenger import HandoverRequest, PageMessengerBridge
    from omnichannel.playground.app import Exchange, Playground, Upload

__all__ = [
    "PAGE",
    "PLAYERS",
    "OmnichannelPlayer",
    "OmnideskPlayer",
    "PageMessengerPlayer",
    "Player",
    "PlaygroundChannelServer",
    "PlaygroundOmnidesk",
    "PlaygroundPageMessenger",
    "PlaygroundWebex",
    "WebexPlayer",
    "bridged_player",
]

PAGE = "pagemessenger"
"""The kind of a Page-messenger bridge: played in the window of the channel it bridges."""

VISITOR = {
    "name": "Ann",
    "login": "ann.smith",
    "phone": "+7 900 123-45-67",
    "email": "ann@example.com",
    "site": "shop.example",
}
"""The visitor the playground writes as (its fields become the channel variables)."""

_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _seen(player: Player | None, request: Request, response: Response, started: float) -> None:
    if player is not None:
        player.outbound(request, response, time.perf_counter() - started)


class PlaygroundChannelServer(RecordingChannelServer):
    """The fake channel server, telling its player about every call it answered."""

    player: Player | None = None

    def handle(self, request: Request) -> Response:
        """Answer as the fake does, then show the call."""
        started = time.perf_counter()
        response = super().handle(request)
        _seen(self.player, request, response, started)
        return response


class PlaygroundOmnidesk(FakeOmnidesk):
    """The fake Omnidesk, telling its player about every API call it answered."""

    player: Player | None = None

    def handle(self, request: Request) -> Response:
        """Answer as the fake does, then show the call."""
        started = time.perf_counter()
        response = super().handle(request)
        _seen(self.player, request, response, started)
        return response


class PlaygroundWebex(FakeWebexConnect):
    """The fake Webex Connect, telling its player about every event the bot posted."""

    player: Player | None = None

    def handle(self, request: Request) -> Response:
        """Answer as the fake does, then show the call."""
        started = time.perf_counter()
        response = super().handle(request)
        _seen(self.player, request, response, started)
        return response


class Player:
    """The visitor's side of one channel (a subclass per platform).

    Attributes:
        chat_id: the conversation the page shows (a new one with :meth:`new_chat`).
        messages: that conversation's bubbles, oldest first.
        operator: why the conversation is with a person now (``None``: with the bot).
    """

    kind = ""
    title = ""
    buttons = False
    files = False
    uploading = False
    hint = ""
    faked = ""
    bot_name = "The bot"
    """Who runs the turns (the page says "{bot_name} saw a text message")."""

    def __init__(self, app: Playground, channel: Any, fake: Any, spec: Mapping[str, Any]) -> None:
        self.app = app
        self.channel = channel
        self.fake = fake
        self.spec = dict(spec)
        self.destination: str = channel.destination
        self.name = str(spec.get("name") or self.kind)
        self.lock = threading.Lock()  # one visitor action of this channel at a time
        self.http = requests.Session()
        self.http.trust_env = False  # loopback: never through a proxy of the environment
        self._chats = itertools.count(1)
        self._ids = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]  # message ids a reused store has not seen
        self.messages: list[dict[str, Any]] = []
        self.operator: str | None = None
        self.mode = "ok"
        self.visitor_id: str | None = None
        self.variables: dict[str, Any] | None = None
        self.chat_id: Any = self.new_chat_id()
        fake.player = self

    # identity -------------------------------------------------------------------------------
    def new_chat_id(self) -> Any:
        """The id of a fresh conversation."""
        raise NotImplementedError

    def message_id(self) -> str:
        """A fresh platform message id."""
        return f"pg-{self._run}-{next(self._ids)}"

    @property
    def chat_key(self) -> str:
        """The store's ordering key of the current conversation."""
        return self.channel.chat_key(self.chat_id)  # type: ignore[no-any-return]

    @property
    def platform(self) -> Any:
        """The fake the page's "Fake platform" panel controls (:meth:`set_mode`)."""
        return self.fake

    def destinations(self) -> list[str]:
        """The store destinations whose items and turns are this chat window's."""
        return [self.destination]

    def secrets(self) -> Sequence[str]:
        """Values to mask besides the configuration's (tokens a fake issued)."""
        return ()

    def fakes(self) -> list[tuple[str, Any]]:
        """The fakes behind this window: ``(what it fakes, the fake)``."""
        return [(self.faked, self.fake)]

    def close(self) -> None:
        """Close the HTTP sessions (the playground stops)."""
        self.http.close()

    def describe(self) -> dict[str, Any]:
        """What the page needs to draw this channel's chat window."""
        return {
            "id": self.destination,
            "kind": self.kind,
            "name": self.name,
            "title": self.title,
            "buttons": self.buttons,
            "files": self.files,
            "uploading": self.uploading,
            "hint": self.hint,
            "faked": self.faked,
            "fake_url": self.platform.url,
            "webhook": self.app.mask(str(self.channel.webhook_path)),
            "note": None,
            "wire": {},
            "give_back": "Give back to the bot",
        }

    def view(self) -> dict[str, Any]:
        """The conversation as the page shows it."""
        return {
            "channel": self.destination,
            "chat": self.chat_id,
            "messages": self.messages[-200:],
            "operator": self.operator,
            "mode": self.mode,
        }

    def channel_record(self) -> Any:
        """What the channel itself keeps about the conversation (``None``: nothing)."""
        return None

    # the visitor's actions (the page's buttons) -------------------------------------------
    def prepare_text(self, text: str) -> None:
        """Whatever the platform does with a text before it calls the bot."""

    def send_text(self, text: str) -> Exchange:
        """The visitor writes ``text``."""
        with self.lock:
            self.prepare_text(text)
            exchange = self.app.begin(self, {"kind": "text", "text": text})
            self.app.add_message(self, "visitor", text, exchange=exchange)
            self.post_text(exchange, text)
            return exchange

    def press(self, button_id: str, text: str) -> Exchange:
        """The visitor presses a keyboard button."""
        with self.lock:
            exchange = self.app.begin(self, {"kind": "button", "text": text, "button": button_id})
            self.app.add_message(self, "visitor", text, exchange=exchange, pressed=button_id)
            self.post_button(exchange, button_id, text)
            return exchange

    def send_file(self, upload: Upload, state: str) -> Exchange:
        """The visitor sends a file, ready or still uploading."""
        with self.lock:
            file = {
                "id": upload.id,
                "name": upload.name,
                "url": upload.url,
                "state": state,
                "content_type": upload.content_type,
                "size": len(upload.data),
            }
            exchange = self.app.begin(
                self, {"kind": "file", "text": f"{upload.name} ({state})", "state": state}
            )
            self.app.add_message(self, "visitor", upload.name, exchange=exchange, file=file)
            self.post_file(exchange, upload, state)
            return exchange

    def file_ready(self, upload: Upload) -> Exchange:
        """A file sent while uploading finished: the platform sends it again, ready."""
        with self.lock:
            for message in self.messages:
                file = message.get("file")
                if file is not None and file["id"] == upload.id:
                    file["state"] = "ready"
            exchange = self.app.begin(
                self, {"kind": "file", "text": f"{upload.name} (ready)", "state": "ready"}
            )
            self.app.publish_chat(self)
            self.post_file(exchange, upload, "ready")
            return exchange

    def new_chat(self) -> None:
        """Start a new conversation (the old one stays in the store)."""
        with self.lock:
            self.chat_id = self.new_chat_id()
            self.messages = []
            self.operator = None
            self.variables = None
            self.app.publish_chat(self)
            self.app.state_dirty(self)

    def give_back(self) -> None:
        """The operator hands the conversation back to the bot."""
        with self.lock:
            note = self.return_to_bot()
            self.operator = None
            self.app.add_message(self, "system", note)

    def return_to_bot(self) -> str:
        """Undo the handover on the platform; return the note to show."""
        return "An operator gave the conversation back to the bot."

    def set_mode(self, mode: str) -> None:
        """How the fake platform answers the bot's calls from now on."""
        if mode == "fail-next":
            self.platform.fail_next(1, 503)
            return
        statuses = {"ok": None, "down": 503, "refuse": 400}
        if mode not in statuses:
            raise ValueError(f"mode: expected ok, fail-next, down or refuse, got {mode!r}")
        self.platform.always(statuses[mode])
        self.mode = mode

    # the platform's webhooks ----------------------------------------------------------------
    def post_text(self, exchange: Exchange, text: str) -> None:
        raise NotImplementedError

    def post_button(self, exchange: Exchange, button_id: str, text: str) -> None:
        self.app.note(exchange, f"{self.title} has no buttons: answer with the number.")

    def post_file(self, exchange: Exchange, upload: Upload, state: str) -> None:
        self.app.note(exchange, f"{self.title} sends no files to the bot.")

    def post(
        self,
        exchange: Exchange,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Post ``body`` to the channel's webhook, as the platform does."""
        self.app.post_webhook(
            self, exchange, str(self.channel.webhook_path), body, content_type, headers or {}
        )

    def ack_note(self, response: requests.Response) -> str | None:
        """What to say about the webhook's answer (``None``: nothing)."""
        return None

    # the bot's calls ------------------------------------------------------------------------
    def outbound(self, request: Request, response: Response, elapsed: float) -> None:
        """The fake answered one of the bot's calls: show it on the wire and in the chat."""
        chat = self.chat_of(request)
        self.app.record_call(self, chat, request, response, elapsed)
        if 200 <= response.status < 300 and chat is not None and str(chat) == str(self.chat_id):
            self.show(request)

    def chat_of(self, request: Request) -> Any:
        """The conversation a call is about (``None``: not known)."""
        return None

    def show(self, request: Request) -> None:
        """Show an accepted call of the current conversation in the chat."""

    def summarize(self, payload: Mapping[str, Any]) -> str:
        """One line about an outbox item."""
        return json.dumps(dict(payload), ensure_ascii=False)[:120]


class OmnichannelPlayer(Player):
    """The channel server of the universal connector (seed 000), played."""

    kind = "omnichannel"
    title = "Omnichannel connector"
    buttons = True
    files = True
    uploading = True
    hint = "The channel server shows keyboards as buttons; files can arrive still uploading."
    faked = "channel server"

    def new_chat_id(self) -> Any:
        return 1000 + next(self._chats)

    def _identity(self) -> dict[str, Any]:
        self.visitor_id = f"visitor-{self.chat_id}"
        return {
            "chat_id": self.chat_id,
            "message_id": self.message_id(),
            "visitor_id": self.visitor_id,
            "fields": VISITOR,
        }

    def _event(self, exchange: Exchange, payload: dict[str, Any]) -> None:
        if self.operator is not None:
            self.app.note(
                exchange,
                "Not posted to the bot: the channel server redirected this chat to an operator.",
            )
            return
        self.post(exchange, events.dumps(payload))

    def post_text(self, exchange: Exchange, text: str) -> None:
        self._event(exchange, events.text_event(text, **self._identity()))

    def post_button(self, exchange: Exchange, button_id: str, text: str) -> None:
        self._event(exchange, events.button_event(text, button_id=button_id, **self._identity()))

    def post_file(self, exchange: Exchange, upload: Upload, state: str) -> None:
        payload = events.file_event(
            upload.url,
            content_type=upload.content_type,
            name=upload.name,
            state=state,
            size=len(upload.data),
            file_id=upload.id,
            **self._identity(),
        )
        self._event(exchange, payload)

    def chat_of(self, request: Request) -> Any:
        body = _json(request.body)
        return body.get("chat_id") if isinstance(body, dict) else None

    def show(self, request: Request) -> None:
        method = request.path.rstrip("/").rsplit("/", 1)[-1]
        body = _json(request.body) or {}
        if method == "send_message":
            message = body.get("message") or {}
            kind = message.get("kind")
            if kind == "operator":
                self.app.add_message(self, "bot", str(message.get("text", "")))
            elif kind == "keyboard":
                self.app.add_message(self, "bot", "", buttons=message.get("buttons") or [])
            elif kind == "file_operator":
                data = message.get("data") or {}
                file = {"name": data.get("name") or data.get("url"), "url": data.get("url")}
                self.app.add_message(self, "bot", str(file["name"]), file=file)
        elif method == "redirect_chat":
            where = ", ".join(f"{k}={v}" for k, v in body.items() if k != "chat_id")
            self.app.hand_over(self, f"redirect_chat ({where})")
        elif method == "close_chat":
            self.app.add_message(self, "system", "The bot closed the chat (close_chat).")

    def return_to_bot(self) -> str:
        return "The operator gave the chat back: the channel server posts it to the bot again."

    def summarize(self, payload: Mapping[str, Any]) -> str:
        method = str(payload.get("method"))
        message = (payload.get("body") or {}).get("message") or {}
        kind = message.get("kind")
        if kind == "operator":
            return f"/{method} operator: {message.get('text', '')}"
        if kind:
            return f"/{method} {kind}"
        return f"/{method}"


class OmnideskPlayer(Player):
    """Omnidesk (variant 1: rules), played: a case per conversation, the rule's webhook."""

    kind = "omnidesk"
    title = "Omnidesk rules"
    hint = "A case shows text only: answer a numbered list with its number."
    faked = "Omnidesk account (REST API)"

    def __init__(self, app: Playground, channel: Any, fake: Any, spec: Mapping[str, Any]) -> None:
        label = spec.get("bot_label")
        self.bot_label: int | None = int(label) if label is not None else None
        self._first = False
        super().__init__(app, channel, fake, spec)

    def new_chat_id(self) -> Any:
        return None  # the case is opened by the first message

    def prepare_text(self, text: str) -> None:
        if self.chat_id is None:
            self.chat_id = self.fake.open_case(
                text,
                channel="chat",
                user_email=VISITOR["email"],
                user_full_name=VISITOR["name"],
                user_phone=VISITOR["phone"],
                labels=[self.bot_label] if self.bot_label is not None else [],
            )
            self._first = True
        else:
            self.fake.user_message(self.chat_id, text)
            self._first = False

    def _fires(self) -> bool:
        if self.bot_label is None:
            return self.operator is None
        return self.bot_label in self.fake.case(self.chat_id)["labels"]

    def post_text(self, exchange: Exchange, text: str) -> None:
        if not self._fires():
            self.app.note(
                exchange,
                "The rule did not fire: the case no longer carries the bot's label, so the "
                "message waits for the operators in Omnidesk.",
            )
            return
        template = RULE_BODY_NEW_CASE if self._first else RULE_BODY_UPDATED_CASE
        self.post(exchange, self._rule_body(template).encode())

    def _rule_body(self, template: str) -> str:
        """Seed 001's rule body with the placeholders filled, as Omnidesk does."""
        case = self.fake.case(self.chat_id)
        messages = self.fake.case_messages(self.chat_id)
        user = self.fake.users[case["user_id"]]
        self.visitor_id = str(user["user_id"])
        from_user = [m for m in messages if m["user_id"]]
        values: dict[str, Any] = {
            "case_id": self.chat_id,
            "user_id": user["user_id"],
            "user_email": user["user_email"],
            "user_full_name": user["user_full_name"],
            "user_phone": user["user_phone"],
            "case_description": messages[0]["content"] if messages else "",
            "last_message": from_user[-1]["content"] if from_user else "",
        }

        def fill(match: re.Match[str]) -> str:
            value = values.get(match[1])
            if value is None:
                return match[0]
            if isinstance(value, int):
                return str(value)
            return json.dumps(str(value), ensure_ascii=False)[1:-1]

        return _PLACEHOLDER.sub(fill, template)

    def chat_of(self, request: Request) -> Any:
        found = re.match(r"/api/cases/(\d+)", request.path)
        return int(found[1]) if found else None

    def show(self, request: Request) -> None:
        body = _json(request.body) or {}
        if request.method == "POST" and request.path.endswith("/messages.json"):
            message = body.get("message") or {}
            self.app.add_message(self, "bot", str(message.get("content", "")))
        elif request.method == "PUT":
            changes = body.get("case") or {}
            removed = [int(i) for i in changes.get("delete_labels") or []]
            what = ", ".join(f"{k}={v}" for k, v in changes.items())
            if self.bot_label is not None and self.bot_label in removed:
                self.app.hand_over(self, f"the case was edited ({what})")
            else:
                self.app.add_message(self, "system", f"The bot edited the case: {what}.")

    def channel_record(self) -> Any:
        if self.chat_id is None:
            return None
        return {
            "case": self.fake.case(self.chat_id),
            "channel's record": self.channel.case_state(self.chat_id),
        }

    def return_to_bot(self) -> str:
        if self.chat_id is not None and self.bot_label is not None:
            labels = self.fake.cases[self.chat_id]["labels"]
            if self.bot_label not in labels:
                labels.append(self.bot_label)
        grace = getattr(self.channel, "handover_grace", 0)
        return (
            "An operator gave the case back (the bot's label is on it again). The channel "
            f"leaves a case alone for {grace:g} s after a handover (handover_grace)."
        )

    def summarize(self, payload: Mapping[str, Any]) -> str:
        if payload.get("op") == "add_message":
            return f"staff message: {payload.get('content', '')}"
        if payload.get("op") == "edit_case":
            return f"edit case: {json.dumps(payload.get('changes'), ensure_ascii=False)}"
        return str(payload.get("op"))


class WebexPlayer(Player):
    """Webex Connect's generic bot integration, played: Incoming message events."""

    kind = "webex"
    title = "Webex Connect"
    files = True
    hint = "Webex Connect shows text only: answer a numbered list with its number."
    faked = "Webex Connect integration"

    def new_chat_id(self) -> Any:
        return f"conv-{self._run}-{next(self._chats)}"

    def _headers(self) -> dict[str, str]:
        token = self.spec.get("access_token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def post_text(self, exchange: Exchange, text: str) -> None:
        self.visitor_id = str(self.chat_id)
        event = incoming_message_event(str(self.chat_id), text, message_id=self.message_id())
        self.post(exchange, json.dumps(event, ensure_ascii=False).encode(), headers=self._headers())

    def post_file(self, exchange: Exchange, upload: Upload, state: str) -> None:
        if state != "ready":
            self.app.note(exchange, "Webex Connect sends a file once it is there (no states).")
            return
        kind = "image" if upload.content_type.startswith("image/") else "document"
        event = incoming_message_event(
            str(self.chat_id), "", message_id=self.message_id(), media=upload.url, message_type=kind
        )
        self.post(exchange, json.dumps(event, ensure_ascii=False).encode(), headers=self._headers())

    def ack_note(self, response: requests.Response) -> str | None:
        if response.status_code != 200:
            return None
        token = str(self.spec.get("verification_token", ""))
        body = response.text.strip()
        ok = body == token
        if not ok:
            answer = _json(response.content)
            ok = isinstance(answer, dict) and token in answer.values()
        if ok:
            return "answered with the verification token: Webex Connect counts it delivered"
        return "the answer does not carry the verification token: Webex Connect would retry"

    def chat_of(self, request: Request) -> Any:
        body = _json(request.body)
        return body.get("conversation_id") if isinstance(body, dict) else None

    def show(self, request: Request) -> None:
        body = _json(request.body) or {}
        eventid = str(body.get("eventid"))
        if eventid == str(getattr(self.channel, "message_eventid", "1001")):
            self.app.add_message(self, "bot", str(body.get("message", "")))
        elif eventid == str(getattr(self.channel, "handover_eventid", "1002")):
            fixed = ("eventid", "conversation_id", "Timestamp")
            params = ", ".join(f"{k}={v}" for k, v in body.items() if k not in fixed)
            self.app.hand_over(self, f"event {eventid}" + (f" ({params})" if params else ""))
        else:
            self.app.add_message(self, "system", f"The bot sent event {eventid}.")

    def channel_record(self) -> Any:
        conversation = self.channel.conversation(str(self.chat_id))
        if conversation is None:
            return None
        import attrs

        return attrs.asdict(conversation)

    def return_to_bot(self) -> str:
        self.channel.resume(str(self.chat_id))
        return "The contact center gave the conversation back: the bot answers it again."

    def summarize(self, payload: Mapping[str, Any]) -> str:
        body = payload.get("body") or {}
        eventid = body.get("eventid")
        if body.get("message") is not None:
            return f"event {eventid}: {body.get('message')}"
        return f"event {eventid}"


_ASKS_FOR_A_PERSON = re.compile(r"(?i)\b(operator|person|human|manager)\b")


class PlaygroundPageMessenger(FakePageMessenger):
    """The fake Page-messenger API and AI, telling its player about every call the bridge made
    and posting the AI's answers to the bridge through the playground, so the wire shows them.

    The AI echoes (``AI: {message}``), and answers ``operator`` (a handover) to a message that
    asks for a person (``operator``, ``person``, ``human``, ``manager``).
    """

    player: PageMessengerPlayer | None = None

    def __init__(self, api_key: str = "fake-page-messenger-key", **options: Any) -> None:
        super().__init__(api_key, **options)
        self.answer = self._reply
        self._links: dict[int, Exchange | None] = {}
        self._local = threading.local()

    def handle(self, request: Request) -> Response:
        """Answer as the fake does, then show the call."""
        started = time.perf_counter()
        response = super().handle(request)
        if self.player is not None:
            self.player.ai_called(request, response, time.perf_counter() - started)
        return response

    def record(self, call: ReceivedMessage) -> ReceivedMessage:
        """Record a message the AI received, and the exchange it belongs to (the outbox item
        that sent it is still in flight now; the answer is posted from another thread)."""
        if self.player is not None:
            exchange = self.player.exchange_of(call.chat_id)
            with self._cond:
                self._links[id(call)] = exchange
        return super().record(call)

    def _reply(self, received: ReceivedMessage) -> Mapping[str, Any]:
        with self._cond:
            self._local.exchange = self._links.pop(id(received), None)
        if _ASKS_FOR_A_PERSON.search(received.message):
            return {"message_text": self.handover_message, "operator": True}
        return {"message_text": f"{self.echo_prefix}{received.message}"}

    def post_webhook(
        self,
        payload: Mapping[str, Any],
        *,
        encoding: Literal["json", "form"] | None = None,
        url: str | None = None,
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> WebhookCall:
        """Post the AI's answer to the bridge through the playground (a test's own ``url``,
        ``raw`` body or form goes out as the fake posts it)."""
        player = self.player
        exchange: Exchange | None = getattr(self._local, "exchange", None)
        self._local.exchange = None
        plain = url is None and raw is None and (encoding or self.encoding) == "json"
        if player is None or not plain:
            return super().post_webhook(
                payload, encoding=encoding, url=url, raw=raw, content_type=content_type
            )
        response = player.ai_answered(exchange, dict(payload))
        call = WebhookCall(
            payload=dict(payload),
            encoding="json",
            status=response.status_code if response is not None else None,
            body=response.text if response is not None else "no answer",
        )
        with self._cond:
            self.webhooks.append(call)
            self._cond.notify_all()
        return call


class PageMessengerPlayer(Player):
    """The Page-messenger window: the player of the channel a ``PageMessengerBridge`` is
    plugged into, with the bridge and its fake AI (:func:`bridged_player` puts this class before
    that channel's player class: the visitor's side is that player's, unchanged).

    The visitor's webhook goes to the channel, whose bot (the bridge's) queues the text for the
    AI (``send_message_external``, through the outbox); the fake AI answers with a webhook to the
    bridge, whose turn sends the answer on the visitor's channel. An ``operator`` answer stops
    the bridge forwarding this conversation: the window shows it with an operator until
    **Give back to the AI** (``bridge.resume()``). The "Fake platform" panel controls the AI.
    """

    kind = PAGE
    title = "Page messenger"
    hint = (
        "Your bot does not answer here: this channel's bot is a PageMessengerBridge, which sends "
        "each message to the Page messenger AI (a fake: it answers “AI: …”, and "
        "hands you over when you ask for an operator)."
    )
    faked = "Page messenger AI (Selarti API)"
    bot_name = "The bridge's bot (PageMessengerBridge.bot)"
    visitor: type[Player] = Player
    """The player class of the bridged channel (set by :func:`bridged_player`)."""

    def __init__(
        self,
        app: Playground,
        channel: Any,
        fake: Any,
        spec: Mapping[str, Any],
        *,
        bridge: PageMessengerBridge,
        ai: PlaygroundPageMessenger,
        bridge_spec: Mapping[str, Any],
    ) -> None:
        self.bridge = bridge
        self.ai = ai
        self.bridge_spec = dict(bridge_spec)
        self.ai_operator: str | None = None
        self.ai_http = requests.Session()
        self.ai_http.trust_env = False
        super().__init__(app, channel, fake, spec)
        ai.player = self
        # the bridge's handover hook (a configuration gives none: the bridge's default), then
        # the window's: the hook is where the bridge stops forwarding a visitor to the AI
        hook = bridge._handover

        def handover(request: HandoverRequest) -> None:
            try:
                hook(request)
            finally:
                self.ai_handed_over(request)

        bridge._handover = handover

    # the window -----------------------------------------------------------------------------
    @property
    def platform(self) -> Any:
        return self.ai

    def destinations(self) -> list[str]:
        return [self.destination, self.bridge.destination]

    def secrets(self) -> Sequence[str]:
        return list(self.ai.issued_tokens)

    def fakes(self) -> list[tuple[str, Any]]:
        return [(self.faked, self.ai), (self.visitor.faked, self.fake)]

    def close(self) -> None:
        super().close()
        self.ai_http.close()

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described.update(
            note=(
                f"The visitor writes on {self.visitor.title} {self.name!r} (the fake "
                f"{self.visitor.faked} at {self.fake.url}); its bot is the bridge "
                f"{self.bridge.name!r} (task {self.bridge.task_id}), whose webhook is "
                f"{self.app.mask(self.bridge.webhook_path)}."
            ),
            wire={
                "inbound": f"Webhook: the visitor → {self.visitor.title} (the bridge's bot)",
                "outbound": "The bridge's call: the outbox → the AI (send_message_external)",
            },
            give_back="Give back to the AI",
        )
        return described

    def view(self) -> dict[str, Any]:
        viewed = super().view()
        viewed["operator"] = self.operator or self.ai_operator
        return viewed

    def ai_chat_id(self, chat: Any = None) -> str:
        """The AI's ``chat_id`` of ``chat`` (the current conversation by default)."""
        return self.bridge.ai_chat_id(self.channel.name, self.chat_id if chat is None else chat)

    def channel_record(self) -> Any:
        record = super().channel_record()
        if self.chat_id is None:
            return record
        ai_chat = self.ai_chat_id()
        bridge = {
            "ai_chat_id": ai_chat,
            "route": self.bridge.route(ai_chat),
            "forwarding": self.bridge.is_forwarding(self.channel.name, self.chat_id),
        }
        return {"bridge": bridge, "channel": record} if record is not None else {"bridge": bridge}

    # the visitor ----------------------------------------------------------------------------
    def post(
        self,
        exchange: Exchange,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if self.chat_id is not None and not self.bridge.is_forwarding(
            self.channel.name, self.chat_id
        ):
            self.app.note(
                exchange,
                "The bridge does not forward this to the AI: the AI handed the visitor over. "
                "Give back to the AI calls bridge.resume().",
            )
        super().post(exchange, body, content_type=content_type, headers=headers)

    def new_chat(self) -> None:
        self.ai_operator = None
        super().new_chat()

    def return_to_bot(self) -> str:
        notes = []
        if self.ai_operator is not None and self.chat_id is not None:
            self.bridge.resume(self.channel.name, self.chat_id)
            notes.append(
                "A manager gave the visitor back to the AI (bridge.resume()): the bridge "
                "forwards this conversation again."
            )
        self.ai_operator = None
        if self.operator is not None or not notes:
            notes.append(super().return_to_bot())
        return " ".join(notes)

    def summarize(self, payload: Mapping[str, Any]) -> str:
        if "task_id" in payload and "message" in payload:
            return f"send_message_external: {payload['message']}"
        return super().summarize(payload)

    # the AI ---------------------------------------------------------------------------------
    def exchange_of(self, ai_chat: str) -> Exchange | None:
        """The exchange whose outbox item is sending to the AI for ``ai_chat`` now."""
        return self.app.exchange_of(self, self.bridge.webhook.chat_key(ai_chat))

    def ai_called(self, request: Request, response: Response, elapsed: float) -> None:
        """The fake AI answered one of the bridge's calls: show it on the wire."""
        body = _json(request.body)
        ai_chat = body.get("chat_id") if isinstance(body, dict) else None
        chat = None
        if isinstance(ai_chat, str):
            route = self.bridge.route(ai_chat)
            if route is not None and route[0] == self.channel.name:
                chat = route[1]
        else:  # /wf/auth names no chat: the current conversation's
            ai_chat = self.ai_chat_id() if self.chat_id is not None else ""
        queue_key = self.bridge.webhook.chat_key(ai_chat)
        self.app.record_call(self, chat, request, response, elapsed, queue_key=queue_key)

    def ai_answered(
        self, exchange: Exchange | None, payload: dict[str, Any]
    ) -> requests.Response | None:
        """The fake AI posts its answer to the bridge: through the playground, on the wire."""
        ai_chat = str(payload.get("external_chat_id"))
        notes = []
        for flag in ("operator", "close"):
            if payload.get(flag) is True:
                notes.append(
                    f"{flag}: true — the bridge stops forwarding this visitor to the AI "
                    "and hands them over on their channel."
                )
        exchange, relay = self.app.relay(
            self,
            exchange,
            "Webhook: the AI → the bridge",
            badge="AI",
            summary=f"AI webhook: {payload.get('message_text') or ''}",
            then="The bridge's calls: the outbox → the visitor's channel",
            ignored="Acknowledged, but nothing was stored: a repeated message_id, or a chat "
            "the bridge does not know.",
            notes=notes,
        )
        return self.app.post_webhook(
            self,
            exchange,
            str(self.bridge.webhook_path),
            json.dumps(payload, ensure_ascii=False).encode(),
            "application/json",
            {},
            relay=relay,
            chat_key=self.bridge.webhook.chat_key(ai_chat),
            session=self.ai_http,
        )

    def ai_handed_over(self, request: HandoverRequest) -> None:
        """The bridge stopped forwarding a visitor (the AI answered ``operator`` or ``close``)."""
        if request.channel is not self.channel or str(request.chat_id) != str(self.chat_id):
            return  # an earlier conversation
        self.ai_operator = f"the AI answered {request.reason}"
        if request.reason == "operator":
            text = "Handed over to a manager: the AI answered operator."
        else:
            text = f"The AI closed the dialog ({request.reason})."
        self.app.add_message(
            self, "system", f"{text} The bridge no longer forwards this conversation to the AI."
        )
        self.app.state_dirty(self)


_BRIDGED: dict[type[Player], type[PageMessengerPlayer]] = {}


def bridged_player(visitor: type[Player]) -> type[PageMessengerPlayer]:
    """The Page-messenger window over a channel played by ``visitor``: a class with
    :class:`PageMessengerPlayer` first and ``visitor`` after it."""
    made = _BRIDGED.get(visitor)
    if made is None:
        namespace = {"visitor": visitor, "__module__": __name__}
        made = cast(
            "type[PageMessengerPlayer]",
            type(f"PageMessenger{visitor.__name__}", (PageMessengerPlayer, visitor), namespace),
        )
        _BRIDGED[visitor] = made
    return made


PLAYERS: dict[str, tuple[type[Player], type[Any]]] = {
    "omnichannel": (OmnichannelPlayer, PlaygroundChannelServer),
    "omnidesk": (OmnideskPlayer, PlaygroundOmnidesk),
    "webex": (WebexPlayer, PlaygroundWebex),
    PAGE: (PageMessengerPlayer, PlaygroundPageMessenger),
}
"""The kinds the playground plays: the player and the fake platform of each (a Page-messenger
bridge is played in the window of the channel it bridges: :func:`bridged_player`)."""
