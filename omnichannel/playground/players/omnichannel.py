"""The universal connector's channel server (seed 000), played: :class:`OmnichannelPlayer`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omnichannel.playground.players.base import VISITOR, Player, ShownToPlayer, _json
from omnichannel.runtime.http import Request
from omnichannel.testing import events
from omnichannel.testing.channel import RecordingChannelServer

if TYPE_CHECKING:
    from omnichannel.playground.app import Exchange, Upload

__all__ = ["OmnichannelPlayer", "PlaygroundChannelServer"]


class PlaygroundChannelServer(ShownToPlayer, RecordingChannelServer):
    """The fake channel server, telling its player about every call it answered."""


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
