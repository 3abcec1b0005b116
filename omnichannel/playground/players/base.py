"""What every player shares: :class:`Player`, the visitor's side of one channel.

A player turns what the page sends (a text, a button press, a file) into the platform's real
webhook and posts it to the channel's endpoint on the local webhook server (so the statuses are
the channel's own), and it sits behind the channel's fake platform, seeing every outbound call
the bot makes (and the fake's answer) and showing it in the chat as that platform would. A
subclass per platform says how.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import requests

from omnichannel.runtime.http import Request, Response
from omnichannel.testing.fake import FakePlatform

if TYPE_CHECKING:
    from omnichannel.playground.app import Exchange, Playground, Upload

__all__ = ["VISITOR", "Player"]

VISITOR = {
    "name": "Ann",
    "login": "ann.smith",
    "phone": "+7 900 123-45-67",
    "email": "ann@example.com",
    "site": "shop.example",
}
"""The visitor the playground writes as (its fields become the channel variables)."""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class ShownToPlayer(FakePlatform[Any]):
    """Put before a fake platform's class: it answers as the fake does, then shows the call to
    its player (the bot's outbound requests on the page's wire)."""

    player: Player | None = None

    def handle(self, request: Request) -> Response:
        """Answer as the fake does, then show the call."""
        started = time.perf_counter()
        response = super().handle(request)
        if self.player is not None:
            self.player.outbound(request, response, time.perf_counter() - started)
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
