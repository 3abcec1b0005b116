"""Webex Connect's generic bot integration, played: :class:`WebexPlayer`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests

from omnichannel.playground.players.base import Player, ShownToPlayer, _json
from omnichannel.runtime.http import Request
from omnichannel.testing.webex import FakeWebexConnect, incoming_message_event

if TYPE_CHECKING:
    from omnichannel.playground.app import Exchange, Upload

__all__ = ["PlaygroundWebex", "WebexPlayer"]


class PlaygroundWebex(ShownToPlayer, FakeWebexConnect):
    """The fake Webex Connect, telling its player about every event the bot posted."""


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
