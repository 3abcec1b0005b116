"""Omnidesk (variant 1: rules), played: :class:`OmnideskPlayer`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omnichannel.playground.players.base import VISITOR, Player, ShownToPlayer, _json
from omnichannel.runtime.http import Request
from omnichannel.testing.omnidesk import (
    RULE_BODY_NEW_CASE,
    RULE_BODY_UPDATED_CASE,
    FakeOmnidesk,
)

if TYPE_CHECKING:
    from omnichannel.playground.app import Exchange, Playground

__all__ = ["OmnideskPlayer", "PlaygroundOmnidesk"]

_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")


class PlaygroundOmnidesk(ShownToPlayer, FakeOmnidesk):
    """The fake Omnidesk, telling its player about every API call it answered."""


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
