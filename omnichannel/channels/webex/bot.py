"""The Webex Connect generic bot on the webhook pipeline: its status contract (the verification
token as the acknowledgement, 400 for what can never be read, capped 503s), the conversation
record it keeps, and the rendering of the bot's replies into ``eventid`` 1001 / 1002 bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union
from urllib.parse import unquote, urlsplit

import attrs

from omnichannel.channels.webex.client import (
    EVENT_HANDOVER,
    EVENT_MESSAGE,
    MAX_BODY_BYTES,
    RESERVED_FIELDS,
    WebexConnectClient,
    WebexMessage,
    event_body,
)
from omnichannel.channels.webex.events import (
    WebexDeliveryStatus,
    WebexIncomingMessage,
    WebexPostback,
    WebexUnknownEvent,
    looks_like_event,
    parse_webex_event,
)
from omnichannel.decoding import decode_object
from omnichannel.errors import ConfigurationError, PayloadError
from omnichannel.models import (
    Button,
    ButtonPress,
    ChatId,
    FileInfo,
    FileMessage,
    InboundMessage,
    Keyboard,
    NewMessageEvent,
    OutboundMessage,
    TextMessage,
    Visitor,
    VisitorFields,
)
from omnichannel.rendering import (
    WEBEX_CONNECT,
    Capabilities,
    buttons_from_state,
    choice_from_text,
    keyboard_state,
    render_text,
)
from omnichannel.runtime.bot import Bot, Reply, Turn, to_outbound
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
from omnichannel.runtime.sending import RetryPolicy
from omnichannel.runtime.stores import update_state

if TYPE_CHECKING:
    import requests

__all__ = [
    "AckFormat",
    "CopiedMessageHandler",
    "DeliveryStatusHandler",
    "KeyboardRenderer",
    "MalformedEvent",
    "WebexConnectBot",
    "WebexConversation",
]

log = logging.getLogger(__name__)

AckFormat = Union[Literal["text", "json"], Callable[[str], Response]]
"""How the verification token is returned: as the body, as ``{"token": …}``, or ``fn(token)``."""

DeliveryStatusHandler = Callable[[WebexDeliveryStatus], None]
CopiedMessageHandler = Callable[[WebexIncomingMessage], None]
KeyboardRenderer = Callable[[Keyboard], Mapping[str, Any]]

_EMPTY: Mapping[str, Any] = {}


@attrs.frozen(kw_only=True)
class WebexConversation:
    """What the adapter keeps about one conversation id (until the bot closes it).

    ``copies`` are the messages Webex Connect copied to the bot that it did not answer (after a
    handover, or of a non-BOT conversation type), newest last, at most ``keep_copies``.
    """

    conversation_id: str
    channel: str | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    handed_over: bool = False
    handed_over_at: float | None = None
    handover_params: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    copies: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class MalformedEvent:
    """An event that could not be read, acknowledged so as not to reach Webex Connect's limit of
    consecutive failures: the problem and the body's first 4 KiB."""

    problem: str
    body: bytes = attrs.field(repr=False)


def _access_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "").strip()
    if header:
        scheme, _, rest = header.partition(" ")
        return rest.strip() if rest and scheme.lower() in ("bearer", "token") else header
    return request.headers.get("x-access-token") or request.query_params.get("access_token")


def _body_text(body: bytes) -> str:
    # decode_json accepted it, so it is JSON in UTF-8, -16 or -32 (RFC 8259 detection)
    return body.decode(json.detect_encoding(body))


class WebexConnectBot(WebhookChannel):
    """A :class:`~omnichannel.Bot` as a Webex Connect generic-bot integration.

    ``handle(request)`` stores each valid event in the runtime's durable inbox (with its dedupe
    mark) and only then answers with the verification token, well inside Webex Connect's five
    seconds; a worker runs the bot afterwards (through the :class:`~omnichannel.Runtime`), and a
    redelivered ``Messageid`` is processed once. Texts reach ``@bot.on_text``, media
    ``@bot.on_file``, postbacks (and numbered answers to a keyboard) ``@bot.on_button``; delivery
    statuses go to ``on_delivery_status``. The bot gets the SDK's own
    :class:`~omnichannel.NewMessageEvent` (``chat_id`` = the conversation id) so it stays
    channel-agnostic.

    Status contract of ``handle``:

    - **200** with the acknowledgement (the token): a valid event once it is stored (new), or a
      repeated one, or one of an unknown kind; a verification request (empty body, an object
      without event fields, GET, HEAD).
    - **400** (``malformed_status``) with ``{"error": …}`` naming the field: not JSON, not an
      object, a required field missing or of the wrong type, a body over ``max_body``.
    - **404** for another path than ``path`` (when set); **405** with ``Allow: POST, GET, HEAD``
      for another method.
    - **503** with ``{"error": …}`` and ``Retry-After``: the event cannot be stored now (the
      inbox holds ``max_pending`` turns, the store is down, an internal error), at most
      ``max_consecutive_refusals`` times in a row. The next such event is answered 200: it is
      admitted over the bound when the store works, and lost (logged as an error) only when the
      store itself is down. Every acknowledgement starts the count again.

    Why 400: Webex Connect documents 400 among the statuses it does not retry, so a body it can
    never accept is refused once instead of five times in a row, and 503s are capped so the
    adapter is never the cause of five consecutive failures (which switch the webhook off).

    Args:
        bot: the bot (an echo bot when ``None``).
        webhook_url: the webhook URL Webex Connect generated for the integration (replies are
            posted there), or give ``client``.
        verification_token: the integration's verification token (returned in every answer).
        service_key: sent as the ``key`` header with every reply when set.
        ack_format: ``"text"`` (the token as the body, ``text/plain``), ``"json"``
            (``{"token": …}``) or ``fn(token) -> Response``.
        path: when set, other paths get 404.
        max_body: inbound bodies over this many bytes are refused (``malformed_status``).
        malformed_status: the 4xx for a malformed body (400 by default).
        max_consecutive_refusals: refusals (503, or ``malformed_status`` for a malformed event)
            answered in a row before an event is acknowledged anyway, whatever it is: Webex
            Connect switches the webhook off after five consecutive failures. A malformed event
            acknowledged so is logged (WARNING) and kept in :attr:`malformed_events`.
        access_token: the IMI BOT access token (seed 002: "for verification in every
            interaction"): when set, every event must carry it (``Authorization: Bearer …`` or
            the bare token, an ``X-Access-Token`` header, or an ``access_token`` query
            parameter), else 401 (missing) or 403 (wrong), and the bot never sees it.
        secret: when set, the webhook URL's last path segment (:attr:`webhook_path`), compared
            in constant time; any other path gets 403.
        message_eventid, handover_eventid: the ``eventid`` of a message and of the handover.
        close_eventid: when set, :meth:`close_conversation` sends it.
        message_type: the ``Messagetype`` of text replies.
        custom_params: custom params added to every event the bot sends.
        render_keyboard: ``fn(keyboard) -> fields`` merged into a 1001 body instead of the
            numbered text list (a channel's rich payload).
        numbered_choices: map a numbered answer (or a label) to the last keyboard's button.
        handover_text: sent as a message just before the handover event.
        on_delivery_status: called (in a worker) with every delivery status.
        on_copied_message: called (in a worker) with each message recorded but not answered.
        keep_copies: how many unanswered copies :meth:`conversation` keeps per conversation.
        strip_markdown: send markdown as plain text.
        max_message_length: split longer texts into several messages (``None``: never).
        max_reply_bytes: reply bodies over this are refused before sending.
        client, session, retry: the outbound client, or what to build it with.
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`
            (``inline=True`` runs the bot before answering: tests only, never with the
            real Webex Connect and its 5 s limit).
        name: distinguishes several integrations sharing one runtime (the store's destination
            is ``webex:{name}``).
    """

    kind = "webex"
    allowed_methods = ("POST", "GET", "HEAD")

    def __init__(
        self,
        bot: Bot | None,
        webhook_url: str | None,
        verification_token: str,
        service_key: str | None = None,
        *,
        ack_format: AckFormat = "text",
        path: str | None = None,
        max_body: int = 1 << 20,
        malformed_status: int = 400,
        max_consecutive_refusals: int = 2,
        access_token: str | None = None,
        secret: str | None = None,
        message_eventid: str = EVENT_MESSAGE,
        handover_eventid: str = EVENT_HANDOVER,
        close_eventid: str | None = None,
        message_type: str = "text",
        custom_params: Mapping[str, Any] | None = None,
        render_keyboard: KeyboardRenderer | None = None,
        numbered_choices: bool = True,
        handover_text: str | None = None,
        on_delivery_status: DeliveryStatusHandler | None = None,
        on_copied_message: CopiedMessageHandler | None = None,
        keep_copies: int = 50,
        strip_markdown: bool = True,
        max_message_length: int | None = None,
        max_reply_bytes: int = MAX_BODY_BYTES,
        client: WebexConnectClient | None = None,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        name: str = "webex",
        **runtime_options: Any,
    ) -> None:
        if not verification_token:
            raise ConfigurationError("verification_token must be a non-empty string")
        if not 400 <= malformed_status < 500:
            raise ConfigurationError("malformed_status must be a 4xx status")
        if ack_format not in ("text", "json") and not callable(ack_format):
            raise ConfigurationError('ack_format must be "text", "json" or a callable')
        for key in custom_params or {}:
            if key in RESERVED_FIELDS:
                raise ConfigurationError(
                    f"custom param {key!r} collides with a field the adapter sets"
                )
        if client is None:
            if webhook_url is None:
                raise ConfigurationError("give webhook_url (or a ready client)")
            client = WebexConnectClient(
                webhook_url, service_key, session, retry=retry, max_body_bytes=max_reply_bytes
            )
        self.bot = bot if bot is not None else Bot()
        self.client = client
        self.ack_format = ack_format
        self.path = path.rstrip("/") if path else None
        self.max_body = max_body
        self.malformed_status = malformed_status
        self.max_consecutive_refusals = max(0, max_consecutive_refusals)
        if secret is not None and (not secret or "/" in secret):
            raise ConfigurationError("secret must be a non-empty URL path segment")
        self._access_token = access_token.encode() if access_token else None
        self._secret = secret.encode() if secret else None
        self.malformed_events: deque[MalformedEvent] = deque(maxlen=100)
        self.message_eventid = message_eventid
        self.handover_eventid = handover_eventid
        self.close_eventid = close_eventid
        self.message_type = message_type
        self.custom_params: Mapping[str, Any] = dict(custom_params or {})
        self.render_keyboard = render_keyboard
        self.numbered_choices = numbered_choices
        self.handover_text = handover_text
        self.on_delivery_status = on_delivery_status
        self.on_copied_message = on_copied_message
        self.keep_copies = keep_copies
        self.strip_markdown = strip_markdown
        self.max_message_length = max_message_length
        self._token = verification_token
        self._refusals = 0
        self._lock = threading.Lock()
        self._attach(runtime, name, store=store, inline=inline, **runtime_options)

    def __repr__(self) -> str:
        return f"WebexConnectBot(name={self.name!r}, client={self.client!r})"

    # inbound: the pipeline's hooks ----------------------------------------------------------
    def route(self, request: Request) -> Response | None:
        """404 for another path than ``path`` (when set; with a ``secret``, ``path/{secret}``),
        unless a framework's URL rule chose the request (then only the secret is checked)."""
        if self.path is None or request.routed:
            return None
        path = request.path.rstrip("/")
        if self._secret is not None:
            path = path.rsplit("/", 1)[0]
        if path != self.path:
            return Response.error(404, "Not found.")
        return None

    @property
    def webhook_path(self) -> str:
        """The path to give Webex Connect: ``/webex/{secret}`` with a ``secret``, else ``path``
        (or ``/webex``). It contains the secret: never log it."""
        if self._secret is not None:
            return f"{self.path or '/webex'}/{self._secret.decode()}"
        return self.path or "/webex"

    def verify(self, request: Request) -> Response | None:
        """The URL's secret (403), a GET or HEAD verification request (answered with the
        token), and the access token of an event (401 / 403)."""
        if self._secret is not None:
            given = request.path.rstrip("/").rsplit("/", 1)[-1].encode()
            if not hmac.compare_digest(given, self._secret):
                return Response.error(403, "Forbidden: the webhook URL's secret does not match.")
        if request.method in ("GET", "HEAD"):
            return self._acknowledge()
        if self._access_token is not None and request.body.strip():
            given_token = _access_token(request)
            if given_token is None:
                log.info("webex: an event without the access token refused (401)")
                return Response.error(401, "The access token is missing.")
            if not hmac.compare_digest(given_token.encode(), self._access_token):
                log.info("webex: an event with a wrong access token refused (403)")
                return Response.error(403, "Forbidden: wrong access token.")
        return None

    def too_large(self) -> Response:
        """A body over ``max_body`` is malformed (``malformed_status``: 413 would be retried)."""
        return self._malformed(f"body is larger than {self.max_body} bytes")

    def parse(self, request: Request) -> list[Delivery] | Response:
        """One delivery per event; a verification request or a malformed body is answered now."""
        body = request.body
        if not body.strip():
            log.info("webex: empty POST answered as a verification request")
            return self._acknowledge()
        try:
            data = decode_object(body, forms=False)
            if not looks_like_event(data):
                log.info("webex: POST without event fields answered as a verification request")
                return self._acknowledge()
            event = parse_webex_event(data)
        except PayloadError as exc:
            return self._malformed(str(exc), body)
        if isinstance(event, WebexUnknownEvent):
            log.info("webex: event %r acknowledged and ignored", event.event)
            return []
        return [
            Delivery(
                chat=event.conversation_id,
                key=self._delivery_key(event),
                payload={"body": _body_text(body)},
            )
        ]

    def acknowledge(self, request: Request, deliveries: Sequence[Delivery]) -> Response:
        """The verification token (``ack_format``); ends a run of refusals."""
        return self._acknowledge()

    def unavailable(self, retry_after: int) -> Response | None:
        """503 + ``Retry-After``, at most ``max_consecutive_refusals`` times in a row.

        Then ``None``: the runtime acknowledges the event anyway (admitted over
        ``max_pending`` when the store works), so that the adapter never causes the five
        consecutive failures that switch the webhook off.
        """
        with self._lock:
            refuse = self._refusals < self.max_consecutive_refusals
            if refuse:
                self._refusals += 1
        if refuse:
            return super().unavailable(retry_after)
        log.warning(
            "webex: %d refusals in a row: the next event is acknowledged anyway, so that "
            "Webex Connect does not switch the webhook off",
            self.max_consecutive_refusals,
        )
        return None

    def internal_error(self) -> Response:
        """An unexpected error counts as a refusal (503, capped like the others)."""
        refusal = self.unavailable(self.runtime.retry_after)
        if refusal is not None:
            return refusal
        log.error("webex: an event was acknowledged after an internal error; it is lost")
        return self._acknowledge()

    def process(self, payload: Mapping[str, Any]) -> None:
        """Run one stored event: a message or postback through the bot, a status to its hook."""
        event = parse_webex_event(payload["body"])
        if isinstance(event, WebexDeliveryStatus):
            self._delivery_status(event)
        elif isinstance(event, (WebexIncomingMessage, WebexPostback)):
            self._process(event)

    def _acknowledge(self) -> Response:
        with self._lock:
            self._refusals = 0
        if callable(self.ack_format):
            return self.ack_format(self._token)
        if self.ack_format == "json":
            return Response.json(200, {"token": self._token})
        return Response(200, self._token, {"Content-Type": "text/plain; charset=utf-8"})

    def _malformed(self, problem: str, body: bytes = b"") -> Response:
        # a refusal like a 503: at most max_consecutive_refusals in a row, then acknowledged
        with self._lock:
            refuse = self._refusals < self.max_consecutive_refusals
            if refuse:
                self._refusals += 1
        if refuse:
            log.info("webex: malformed event refused (%d): %s", self.malformed_status, problem)
            return Response.error(
                self.malformed_status, f"Malformed Webex Connect event: {problem}"
            )
        self.malformed_events.append(MalformedEvent(problem=problem, body=body[:4096]))
        log.warning(
            "webex: malformed event acknowledged (%d refusals in a row already; Webex Connect "
            "switches the webhook off after 5) and recorded in malformed_events: %s",
            self.max_consecutive_refusals,
            problem,
        )
        return self._acknowledge()

    def _delivery_key(
        self, event: WebexIncomingMessage | WebexPostback | WebexDeliveryStatus
    ) -> str:
        prefix = f"{self.destination}:{event.conversation_id}"
        if isinstance(event, WebexIncomingMessage) and event.message_id:
            return f"{prefix}:{event.message_id}"
        if isinstance(event, WebexDeliveryStatus) and event.message_id:
            return f"{prefix}:{event.message_id}:status:{event.delivery_status.lower()}"
        # no id on the wire (postbacks): a redelivery repeats the body, timestamp included
        canonical = json.dumps(dict(event.raw), sort_keys=True, ensure_ascii=False, default=str)
        return f"{prefix}:body:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"

    # running an event (in a worker) ---------------------------------------------------------
    def _delivery_status(self, event: WebexDeliveryStatus) -> None:
        log.info(
            "webex: conversation %s: message %s %s",
            event.conversation_id,
            event.message_id,
            event.delivery_status,
        )
        if self.on_delivery_status is not None:
            try:
                self.on_delivery_status(event)
            except Exception:
                log.exception("webex: on_delivery_status raised")

    def _process(self, event: WebexIncomingMessage | WebexPostback) -> None:
        cid = event.conversation_id
        outcome: dict[str, Any] = {}

        def change(state: dict[str, Any]) -> None:
            state["last_seen"] = time.time()
            if event.channel:
                state["channel"] = event.channel
            answered = event.for_bot and not state.get("handed_over")
            outcome["answered"] = answered
            outcome["keyboard"] = []
            if answered:
                outcome["keyboard"] = state.pop("keyboard", None) or []
            elif isinstance(event, WebexIncomingMessage):
                copies = [*state.get("copies", []), _copy_record(event)]
                state["copies"] = copies[-self.keep_copies :] if self.keep_copies > 0 else []

        self._change_state(cid, change)
        if not outcome["answered"]:
            if isinstance(event, WebexIncomingMessage):
                self._copied(event)
            else:
                log.info("webex: conversation %s: postback not for the bot, ignored", cid)
            return
        message = self._inbound_message(event, outcome["keyboard"])
        visitor_extra = {"channel": event.channel} if event.channel else {}
        inbound = NewMessageEvent(
            chat_id=cid,
            visitor=Visitor(id=cid, fields=VisitorFields(extra=visitor_extra)),
            message=message,
            raw=event.raw,
        )
        self.bot(Turn(inbound, message, self))

    def _inbound_message(
        self, event: WebexIncomingMessage | WebexPostback, keyboard: Any
    ) -> InboundMessage:
        buttons = buttons_from_state(keyboard)
        if isinstance(event, WebexPostback):
            payload = event.postback_payload
            label = next((b.text for b in buttons if b.id == payload), payload)
            return ButtonPress(button=Button(id=payload, text=label))
        url = event.media_url
        if url is not None:
            path = unquote(urlsplit(url).path)
            name = path.rsplit("/", 1)[-1] or None
            content_type = mimetypes.guess_type(path)[0] if name else None
            info = FileInfo(id=event.message_id, name=name, content_type=content_type, url=url)
            return FileMessage(id=event.message_id, file=info)
        text = event.message or ""
        if buttons and self.numbered_choices:
            button = choice_from_text(text, buttons)
            if button is not None:
                return ButtonPress(id=event.message_id, button=button)
        return TextMessage(id=event.message_id, text=text)

    def _copied(self, event: WebexIncomingMessage) -> None:
        log.info(
            "webex: conversation %s: copied message %s recorded, not answered",
            event.conversation_id,
            event.message_id,
        )
        if self.on_copied_message is not None:
            try:
                self.on_copied_message(event)
            except Exception:
                log.exception("webex: on_copied_message raised")

    # conversation state ---------------------------------------------------------------------
    def _state_key(self, conversation_id: str) -> str:
        return f"{self.destination}:conversation:{conversation_id}"

    def _change_state(self, conversation_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Read-modify-write of the conversation record (compare-and-set: nothing is lost).

        ``change(state)`` edits the record in place; it runs again on fresh state when another
        writer got there first, so it must not have other effects.
        """

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            state = current
            if state is None:
                state = {"conversation_id": conversation_id, "first_seen": time.time()}
            change(state)
            return state

        update_state(self.runtime.store, self._state_key(conversation_id), apply)

    def conversation(self, conversation_id: str) -> WebexConversation | None:
        """What is kept about ``conversation_id``, or ``None`` (never seen, or closed)."""
        state = self.runtime.store.get_state(self._state_key(conversation_id))
        if state is None:
            return None
        return WebexConversation(
            conversation_id=conversation_id,
            channel=state.get("channel"),
            first_seen=state.get("first_seen"),
            last_seen=state.get("last_seen"),
            handed_over=bool(state.get("handed_over")),
            handed_over_at=state.get("handed_over_at"),
            handover_params=dict(state.get("handover_params") or {}),
            copies=tuple(state.get("copies") or ()),
        )

    def resume(self, conversation_id: str) -> None:
        """Let the bot answer ``conversation_id`` again after a handover (the agent is done)."""
        self._change_state(conversation_id, lambda state: state.update(handed_over=False))

    def close_conversation(self, conversation_id: str, **params: Any) -> None:
        """Forget ``conversation_id``; send ``close_eventid`` with ``params`` when configured.

        Webex Connect gives the customer a new conversation id once the bot closed the old one.
        """
        if self.close_eventid is not None:
            self._queue(
                conversation_id,
                [event_body(self.close_eventid, conversation_id, self.custom_params, params)],
            )
        self.runtime.store.set_state(self._state_key(conversation_id), None)

    # outbound -------------------------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        """Where replies go (the integration's generated webhook URL)."""
        return self.client.webhook_url

    @property
    def capabilities(self) -> Capabilities:
        """What a 1001 message shows: :data:`~omnichannel.rendering.WEBEX_CONNECT` (text only)
        with this adapter's ``strip_markdown`` and ``max_message_length``."""
        return attrs.evolve(
            WEBEX_CONNECT,
            markdown=not self.strip_markdown,
            max_length=self.max_message_length or None,
        )

    def render(self, conversation_id: str, message: OutboundMessage) -> list[dict[str, Any]]:
        """The ``eventid`` 1001 bodies for one outbound message.

        A :class:`WebexMessage` is sent as it is; a keyboard goes through ``render_keyboard``
        when set; everything else through :func:`omnichannel.rendering.render` (keyboards as
        numbered text, files as links, markdown stripped, long texts split).
        """
        cid = str(conversation_id)
        if isinstance(message, WebexMessage):
            return [self._message_body(cid, message.text, message.message_type, message.params)]
        if isinstance(message, Keyboard) and self.render_keyboard is not None:
            fields = dict(self.render_keyboard(message))
            text = str(fields.pop("message", message.text or ""))
            message_type = fields.pop("Messagetype", None)
            return [self._message_body(cid, text, message_type, fields)]
        return [self._message_body(cid, text) for text in render_text(message, self.capabilities)]

    def _message_body(
        self,
        conversation_id: str,
        text: str,
        message_type: str | None = None,
        params: Mapping[str, Any] = _EMPTY,
    ) -> dict[str, Any]:
        return event_body(
            self.message_eventid,
            conversation_id,
            self.custom_params,
            params,
            message=text,
            Messagetype=message_type or self.message_type,
        )

    def send(self, chat_id: ChatId, messages: Sequence[OutboundMessage]) -> None:
        """Queue messages for conversation ``chat_id``: stored first, delivered in order.

        Raises:
            BodyTooLarge: a body is over the limit; nothing of this call was queued.
        """
        cid = str(chat_id)
        bodies: list[dict[str, Any]] = []
        keyboard: Keyboard | None = None
        for message in messages:
            bodies.extend(self.render(cid, message))
            if isinstance(message, Keyboard) and self.render_keyboard is None:
                keyboard = message
        self._queue(cid, bodies)
        if keyboard is not None and self.numbered_choices:
            buttons = keyboard_state(keyboard)
            self._change_state(cid, lambda state: state.update(keyboard=buttons))

    def _queue(self, conversation_id: str, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            self.client.encode(body)  # refuse before anything of this call is stored
        for body in bodies:
            self.runtime.outbox.put(
                self.destination, self.chat_key(conversation_id), {"body": body}
            )

    def reply(self, conversation_id: ChatId, *messages: Reply) -> None:
        """Write to a conversation outside a turn."""
        self.send(conversation_id, to_outbound(messages))

    def handover(self, turn: Turn, **params: Any) -> None:
        """``turn.handover(**params)``: hand the conversation to the contact center."""
        if self.handover_text:
            turn.reply(self.handover_text)
        self.hand_over(str(turn.chat_id), **params)

    def hand_over(self, conversation_id: str, **params: Any) -> None:
        """Send the handover event (``handover_eventid``) with ``params`` as custom params.

        From then on the bot does not answer the conversation: Webex Connect routes the
        customer to the contact center and copies messages to the bot, which records them.
        """
        body = event_body(self.handover_eventid, conversation_id, self.custom_params, params)
        self._queue(conversation_id, [body])
        at = time.time()
        self._change_state(
            conversation_id,
            lambda state: state.update(
                handed_over=True, handed_over_at=at, handover_params=dict(params)
            ),
        )
        log.info("webex: conversation %s handed over", conversation_id)

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Post one stored event body to Webex Connect (one attempt; the outbox retries)."""
        self.client.post_event(payload["body"], attempts=1)


def _copy_record(event: WebexIncomingMessage) -> dict[str, Any]:
    return {
        "message_id": event.message_id,
        "message": event.message,
        "message_type": event.message_type,
        "conversation_type": event.conversation_type,
        "media": event.media_url,
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
    }
