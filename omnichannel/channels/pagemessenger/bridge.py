"""The bridge between a Page-messenger AI task and the visitors of any channel of the SDK: it
forwards visitor messages to the AI through the outbox and serves the AI's answer webhook on the
webhook pipeline (stored before the 200, run by a worker)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from omnichannel.channels.pagemessenger.client import PageMessengerClient
from omnichannel.channels.pagemessenger.messages import AIMessage, AIMessageType, parse_ai_webhook
from omnichannel.errors import ConfigurationError, NotSupported, PayloadError
from omnichannel.models import ChatId, TextReply
from omnichannel.runtime.bot import Bot, Channel, Turn
from omnichannel.runtime.conversation import record_for
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
from omnichannel.runtime.stores import update_state

__all__ = [
    "DEFAULT_HANDOVER_TEXT",
    "HandoverHook",
    "HandoverRequest",
    "PageMessengerBridge",
    "PageMessengerWebhook",
    "default_ai_chat_id",
]

log = logging.getLogger(__name__)

DEFAULT_HANDOVER_TEXT = "Thank you! A manager will continue this conversation shortly."
"""What the visitor reads when the AI hands over and the channel has no handover of its own."""


def default_ai_chat_id(channel_name: str, chat_id: ChatId) -> str:
    """The AI's ``chat_id`` for a visitor: ``"{channel name}:{chat id}"`` (``omnichannel:42``).

    Stable for as long as the channel keeps its chat id, and unique across channels.
    """
    return f"{channel_name}:{chat_id}"


@attrs.frozen(kw_only=True)
class HandoverRequest:
    """What a handover hook receives when the AI stops answering a visitor.

    Attributes:
        channel: the channel the visitor writes on.
        chat_id: the visitor's chat on that channel.
        ai_chat_id: the ``chat_id`` the AI knows the visitor by.
        reason: ``"operator"`` (handed to a human) or ``"close"`` (dialog closed).
        message: the webhook that said so.
        turn: the visitor's last turn when this process still has it, else ``None`` (after a
            restart, or once the in-memory window of recent turns forgot it).
    """

    channel: Channel
    chat_id: ChatId
    ai_chat_id: str
    reason: str
    message: AIMessage
    turn: Turn | None


HandoverHook = Callable[[HandoverRequest], None]


def _wire(message: AIMessage) -> dict[str, Any]:
    """The webhook as a JSON-ready mapping that :meth:`AIMessage.from_mapping` reads back: the
    payload as received, or for a message built in code its fields (``message_type`` as text)."""
    if message.raw:
        return dict(message.raw)
    skip = ("raw", "message_type", "message_type_raw")
    data: dict[str, Any] = {
        f.name: getattr(message, f.name) for f in attrs.fields(AIMessage) if f.name not in skip
    }
    if message.message_type_raw is not None:
        data["message_type"] = message.message_type_raw
    elif message.message_type is not None:
        data["message_type"] = message.message_type.value
    if isinstance(data.get("contacts"), Mapping):
        data["contacts"] = dict(data["contacts"])
    return {k: v for k, v in data.items() if v is not None}


class PageMessengerWebhook(WebhookChannel):
    """The AI's answer webhook of a :class:`PageMessengerBridge`, on the webhook pipeline.

    It checks the URL's secret (403), parses the webhook (400), routes it to the visitor's
    channel and stores it in the runtime's durable inbox (with its ``message_id`` as the dedupe
    key) before answering 200; a worker then delivers the AI's message and runs the handover.
    It also delivers the bridge's outbox items (``send_message_external``). Made by the bridge:
    serve :meth:`PageMessengerBridge.handle`.
    """

    kind = "pagemessenger"

    def __init__(
        self,
        bridge: PageMessengerBridge,
        runtime: Runtime,
        name: str,
        *,
        secret: str,
        max_body: int,
    ) -> None:
        self.bridge = bridge
        self.max_body = max_body
        self._secret = secret.encode()
        self._attach(runtime, name)

    def __repr__(self) -> str:
        return f"PageMessengerWebhook(name={self.name!r})"

    def verify(self, request: Request) -> Response | None:
        """403 unless the URL's last segment is the secret (compared in constant time)."""
        given = request.path.rstrip("/").rsplit("/", 1)[-1].encode()
        if not hmac.compare_digest(given, self._secret):
            return Response.error(403, "Forbidden: the webhook URL's secret does not match.")
        return None

    def parse(self, request: Request) -> list[Delivery] | Response:
        """400 naming the field for a malformed body; else the bridge's routing of it."""
        try:
            message = parse_ai_webhook(request.body, request.content_type or None)
        except PayloadError as exc:
            log.info("pagemessenger: rejected webhook: %s", exc)
            return Response.error(400, f"Malformed webhook: {exc}")
        return self.bridge._deliveries(message)

    def process(self, payload: Mapping[str, Any]) -> None:
        """Deliver one stored AI message to its visitor (and hand over when it says so)."""
        self.bridge._process(payload)

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Send one stored visitor message to the AI (one attempt; the outbox retries)."""
        self.bridge.client.send_message_external(
            str(payload["task_id"]), str(payload["chat_id"]), str(payload["message"]), attempts=1
        )


class PageMessengerBridge:
    """Connects an AI task of Page messenger to the visitors of any channel of the SDK.

    Plug :attr:`bot` into a channel (``Connector(bridge.bot, …)`` or ``connector.bot =
    bridge.bot``): every visitor message (text; a button's label; a file as
    ``file:{type}|{id}|{url}``) is queued in the runtime's outbox and sent to the AI with
    ``send_message_external(task_id, chat_id=…, message=…)``, durably and in order per visitor.
    The AI's ``chat_id`` is ``chat_id_for(channel.name, chat_id)``
    (:func:`default_ai_chat_id`: ``"omnichannel:42"``).

    Serve :meth:`handle` at ``…/{secret}`` (:attr:`webhook_path`) and give that URL to the
    platform's integration. Each webhook is stored in the runtime's durable inbox before it is
    answered 200 (:attr:`webhook`, a :class:`~omnichannel.WebhookChannel`); a worker then sends
    the AI's messages (``message_type`` in ``deliver_types``: bot, operator and unknown by
    default) to the visitor on the channel they wrote from, with the channel's ``send``
    (durable). When a webhook says ``operator`` or ``close``, the bridge stops forwarding that
    visitor to the AI (a flag in ``runtime.store``) and calls the handover hook once
    (:meth:`default_handover` unless ``handover`` is given).

    Routing survives a restart: chat → channel is kept in ``runtime.store`` (use a SQLite or
    Redis store for that), and channels are found by name in a registry (``channel``,
    ``channels``, :meth:`add_channel`; a channel that delivers a turn is added by itself).

    Args:
        client: the :class:`PageMessengerClient`.
        task_id: the id of the platform's task of type "Web".
        channel: the channel the bot is plugged into (its ``runtime`` is shared when it has one).
        channels: more channels (Omnidesk, Webex, other connectors) by their ``name``.
        secret: the secret last segment of the webhook URL (compared in constant time).
        runtime: the store/inbox/outbox/workers to use; else the channel's, else a new one made
            from ``store``, ``inline`` and ``runtime_options``.
        handover: ``hook(request: HandoverRequest)`` run when the AI stops answering.
        handover_text: the message :meth:`default_handover` sends when the channel has no
            handover (``None``: send nothing).
        handover_params: keyword arguments for the channel's ``handover(turn, **params)``.
        deliver_types: which ``message_type`` values reach the visitor: the AI's, an
            operator's, and a missing or unknown one (delivered as the AI's text, since the
            wire values are unconfirmed; leave ``UNKNOWN`` out to drop those).
        chat_id_for: ``(channel_name, chat_id) -> str``, the AI's chat id of a visitor.
        path_prefix: where :attr:`webhook_path` lives (``/pagemessenger/{secret}``); only the
            last path segment is checked, so the bridge can be mounted anywhere.
        max_body: webhook bodies over this many bytes get 413.
        recent_turns: how many visitors' last turns are kept in memory for handovers.
        name: distinguishes several bridges sharing one runtime (the store's destination is
            ``pagemessenger:{name}``).
    """

    def __init__(
        self,
        client: PageMessengerClient,
        task_id: str,
        channel: Channel | None = None,
        *,
        secret: str,
        channels: Iterable[Channel] = (),
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        handover: HandoverHook | None = None,
        handover_text: str | None = DEFAULT_HANDOVER_TEXT,
        handover_params: Mapping[str, Any] | None = None,
        deliver_types: Iterable[AIMessageType] = (
            AIMessageType.BOT,
            AIMessageType.OPERATOR,
            AIMessageType.UNKNOWN,
        ),
        chat_id_for: Callable[[str, ChatId], str] = default_ai_chat_id,
        path_prefix: str = "/pagemessenger",
        max_body: int = 1 << 20,
        recent_turns: int = 10_000,
        name: str = "pagemessenger",
        **runtime_options: Any,
    ) -> None:
        if not task_id:
            raise ConfigurationError("task_id must be the id of the platform's task of type Web")
        if not secret or "/" in secret:
            raise ConfigurationError("secret must be a non-empty URL path segment")
        if runtime is None:
            shared = getattr(channel, "runtime", None)
            runtime = (
                shared
                if isinstance(shared, Runtime)
                else Runtime(store=store, inline=inline, **runtime_options)
            )
        self.client = client
        self.task_id = str(task_id)
        self.runtime = runtime
        self.name = name
        self.handover_text = handover_text
        self.handover_params = dict(handover_params or {})
        self.deliver_types = frozenset(deliver_types)
        self.chat_id_for = chat_id_for
        self.path_prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.recent_turns = recent_turns
        self._secret = secret
        self._handover = handover or self.default_handover
        self._channels: dict[str, Channel] = {}
        self._turns: OrderedDict[str, Turn] = OrderedDict()
        self._lock = threading.Lock()
        for each in (channel, *channels):
            if each is not None:
                self.add_channel(each)
        self.bot = Bot()
        """The bot to plug into a channel: it forwards every visitor message to the AI."""
        self.bot.on_message(self.forward)
        self.webhook = PageMessengerWebhook(self, runtime, name, secret=secret, max_body=max_body)
        """The AI webhook's channel on the runtime's pipeline (what :meth:`handle` runs)."""

    def __repr__(self) -> str:
        return (
            f"PageMessengerBridge(name={self.name!r}, task_id={self.task_id!r}, "
            f"channels={sorted(self._channels)!r})"
        )

    @property
    def destination(self) -> str:
        """The bridge's id in the store (``pagemessenger:{name}``)."""
        return self.webhook.destination

    @property
    def max_body(self) -> int:
        """Webhook bodies over this many bytes get 413."""
        return self.webhook.max_body

    @max_body.setter
    def max_body(self, value: int) -> None:
        self.webhook.max_body = value

    @property
    def webhook_path(self) -> str:
        """The path to give the platform's integration (it contains the secret)."""
        return f"{self.path_prefix}/{self._secret}"

    @property
    def channels(self) -> dict[str, Channel]:
        """The registered channels by name."""
        with self._lock:
            return dict(self._channels)

    def add_channel(self, channel: Channel) -> None:
        """Register a channel by its ``name`` so the AI's answers can be routed to it."""
        with self._lock:
            known = self._channels.get(channel.name)
            if known is not None and known is not channel:
                log.warning("pagemessenger: channel %r replaced by another object", channel.name)
            self._channels[channel.name] = channel

    # state ----------------------------------------------------------------------------------
    def _route_key(self, ai_chat_id: str) -> str:
        return f"{self.destination}:route:{ai_chat_id}"

    def _stop_key(self, ai_chat_id: str) -> str:
        return f"{self.destination}:stopped:{ai_chat_id}"

    def ai_chat_id(self, channel_name: str, chat_id: ChatId) -> str:
        """The ``chat_id`` the AI knows the visitor of ``chat_id`` on ``channel_name`` by."""
        return self.chat_id_for(channel_name, chat_id)

    def is_forwarding(self, channel_name: str, chat_id: ChatId) -> bool:
        """False once the AI handed this visitor over (``operator``) or closed the dialog."""
        key = self._stop_key(self.ai_chat_id(channel_name, chat_id))
        return self.runtime.store.get_state(key) is None

    def resume(self, channel_name: str, chat_id: ChatId) -> None:
        """Forward this visitor to the AI again (after the human is done).

        A later webhook that still says ``operator`` or ``close`` stops it again.
        """
        key = self._stop_key(self.ai_chat_id(channel_name, chat_id))
        update_state(self.runtime.store, key, lambda _current: None)

    def route(self, ai_chat_id: str) -> tuple[str, ChatId] | None:
        """The channel name and chat id of the visitor the AI knows as ``ai_chat_id``."""
        state = self.runtime.store.get_state(self._route_key(ai_chat_id))
        if state is None:
            return None
        channel_name, chat_id = state.get("channel"), state.get("chat_id")
        if not isinstance(channel_name, str) or not isinstance(chat_id, (int, str)):
            return None
        return channel_name, chat_id

    # visitor → AI ---------------------------------------------------------------------------
    def forward(self, turn: Turn) -> None:
        """Queue the turn's text for the AI (the handler of :attr:`bot`; usable in your own).

        Nothing is sent when the turn has no text (a file that is not ready) or when the AI
        handed this visitor over.
        """
        channel = turn.channel
        if channel.name not in self._channels:
            self.add_channel(channel)
        ai_chat_id = self.ai_chat_id(channel.name, turn.chat_id)
        with self._lock:
            self._turns[ai_chat_id] = turn
            self._turns.move_to_end(ai_chat_id)
            while len(self._turns) > self.recent_turns:
                self._turns.popitem(last=False)
        route = {"channel": channel.name, "chat_id": turn.chat_id}
        route_key = self._route_key(ai_chat_id)
        if self.runtime.store.get_state(route_key) != route:
            update_state(self.runtime.store, route_key, lambda _current: route)
        if turn.text is None:
            return
        if self.runtime.store.get_state(self._stop_key(ai_chat_id)) is not None:
            log.info("pagemessenger: chat %s is with a human; not forwarded", ai_chat_id)
            return
        self.runtime.outbox.put(
            self.destination,
            f"{self.destination}:{ai_chat_id}",
            {"task_id": self.task_id, "chat_id": ai_chat_id, "message": turn.text},
        )

    # AI → visitor ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one AI webhook: 405 for a method other than POST, 403 for a wrong secret,
        413 for a body over ``max_body``, 400 naming the field for a malformed body, 503 when
        the visitor's channel is not registered here, 503 with ``Retry-After`` when the
        webhook cannot be stored now (the inbox is full, the store is down), else 200
        ``{"result": "ok"}`` once it is stored (or was a repeat, or is for an unknown chat)."""
        return self.webhook.handle(request)

    def accept(self, message: AIMessage) -> Response:
        """Route and store a parsed webhook (what :meth:`handle` does after checking the
        request): 200 once stored, 503 when its channel is not registered or the runtime
        cannot take it now."""
        deliveries = self._deliveries(message)
        if isinstance(deliveries, Response):
            return deliveries
        request = Request("POST", self.webhook_path)
        return self.runtime.admit(self.webhook, request, deliveries)

    def _deliveries(self, message: AIMessage) -> list[Delivery] | Response:
        ai_chat_id = message.external_chat_id
        if message.task_id is not None and message.task_id != self.task_id:
            log.warning(
                "pagemessenger: webhook for task %s reached the bridge of task %s",
                message.task_id,
                self.task_id,
            )
        route = self.route(ai_chat_id)
        if route is None:
            log.warning("pagemessenger: webhook for unknown chat %s ignored", ai_chat_id)
            return []
        channel_name, chat_id = route
        if channel_name not in self.channels:
            log.error(
                "pagemessenger: chat %s belongs to channel %r, which is not registered",
                ai_chat_id,
                channel_name,
            )
            return Response.error(503, f"Channel {channel_name!r} is not registered.")
        key = None
        if message.message_id is not None:
            key = f"{self.destination}:webhook:{message.message_id}"
        payload = {"message": _wire(message), "channel": channel_name, "chat_id": chat_id}
        return [Delivery(chat=ai_chat_id, key=key, payload=payload)]

    def _process(self, payload: Mapping[str, Any]) -> None:
        message = AIMessage.from_mapping(payload["message"])
        channel_name, chat_id = str(payload["channel"]), payload["chat_id"]
        channel = self.channels.get(channel_name)
        if channel is None:
            # raising runs the turn again later: the channel may be registered by then
            raise ConfigurationError(
                f"pagemessenger: channel {channel_name!r} is not registered in this process"
            )
        self._apply(message, channel, chat_id)

    def _apply(self, message: AIMessage, channel: Channel, chat_id: ChatId) -> None:
        text = message.message_text
        kind = message.message_type or AIMessageType.UNKNOWN  # absent: as an unknown value
        if kind in self.deliver_types and text and text.strip():
            channel.send(chat_id, [TextReply(text=text)])
            role = "operator" if message.message_type is AIMessageType.OPERATOR else "bot"
            record_for(channel, chat_id, role, text)  # the visitor's turn.history
        reason = message.handover_reason
        if reason is None:
            return
        ai_chat_id = message.external_chat_id
        stop_key = self._stop_key(ai_chat_id)
        if self.runtime.store.get_state(stop_key) is not None:
            return
        stopped = {"reason": reason, "at": time.time(), "message_id": message.message_id}
        first = [False]

        def stop(current: dict[str, Any] | None) -> dict[str, Any]:
            first[0] = current is None
            return stopped if current is None else current

        update_state(self.runtime.store, stop_key, stop)
        if not first[0]:
            return  # another webhook stopped it meanwhile: one handover only
        log.info("pagemessenger: chat %s handed over (%s)", ai_chat_id, reason)
        with self._lock:
            turn = self._turns.get(ai_chat_id)
        request = HandoverRequest(
            channel=channel,
            chat_id=chat_id,
            ai_chat_id=ai_chat_id,
            reason=reason,
            message=message,
            turn=turn,
        )
        try:
            self._handover(request)
        except Exception:
            log.exception("pagemessenger: handover hook raised for chat %s", ai_chat_id)

    def default_handover(self, request: HandoverRequest) -> None:
        """Hand the visitor to a human the way their channel does it.

        With the visitor's last turn in memory: ``channel.handover(turn, **handover_params)``
        (the omnichannel ``Connector`` sends its ``handover_text``; Omnidesk and Webex adapters
        do their own handover). When the channel has no handover (``NotSupported``), or after a
        restart (no turn), a plain message is sent instead: the channel's ``handover_text``
        attribute when it has one, else the bridge's ``handover_text``.
        """
        if request.turn is not None:
            try:
                request.turn.handover(**self.handover_params)
                return
            except NotSupported:
                log.info(
                    "pagemessenger: channel %r has no handover; sending a message",
                    request.channel.name,
                )
        else:
            log.info(
                "pagemessenger: no turn in memory for chat %s; sending a message instead of "
                "the channel's handover",
                request.ai_chat_id,
            )
        text = getattr(request.channel, "handover_text", None) or self.handover_text
        if isinstance(text, str) and text:
            request.channel.send(request.chat_id, [TextReply(text=text)])

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start background delivery (resuming messages stored by an earlier run)."""
        self.runtime.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until queued work and outbound messages are done."""
        return self.runtime.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish queued work and messages, then stop (the runtime is shared with the channel
        when it came from there: close only once)."""
        return self.runtime.close(timeout)
