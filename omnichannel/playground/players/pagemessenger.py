"""The Page-messenger window: a ``PageMessengerBridge`` and its fake AI, played.

The Page-messenger window is the player of the channel a ``PageMessengerBridge`` is plugged
into, with the bridge and a fake Page-messenger AI on top (:func:`bridged_player`): the visitor
writes on that channel, the bridge forwards to the AI, the AI's answer comes back as a webhook.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import requests

from omnichannel.playground.players.base import Player, _json
from omnichannel.runtime.http import Request, Response
from omnichannel.testing.pagemessenger import FakePageMessenger, ReceivedMessage, WebhookCall

if TYPE_CHECKING:
    from omnichannel.channels.pagemessenger import HandoverRequest, PageMessengerBridge
    from omnichannel.playground.app import Exchange, Playground

__all__ = ["PAGE", "PageMessengerPlayer", "PlaygroundPageMessenger", "bridged_player"]

PAGE = "pagemessenger"
"""The kind of a Page-messenger bridge: played in the window of the channel it bridges."""

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
