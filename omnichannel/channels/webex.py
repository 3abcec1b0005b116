"""Webex Connect generic bots ("Third-party bot", seed 002): typed inbound events, the webhook that
answers inside Webex Connect's five seconds, and the client that posts the bot's replies back.

Webex Connect posts events (``Incoming message``, ``FB POSTBACK``, ``Message Delivery``) with
mixed-case field names to the bot's endpoint and expects the integration's verification token in
the response to every POST, within 5 s; it retries a failed delivery 4 times over an hour and
switches the webhook off after 5 consecutive failures. :class:`WebexConnectBot` therefore
acknowledges at once and runs the :class:`~omnichannel.Bot` afterwards; replies (``eventid``
1001) and the handover (``eventid`` 1002) go to the integration's generated webhook URL through
the runtime's durable, ordered, retrying outbox.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Literal, Union
from urllib.parse import unquote, urlsplit

import attrs
import requests

from omnichannel.codec import decode_json
from omnichannel.errors import ConfigurationError, DeliveryError, PayloadError
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
    TextReply,
    Visitor,
    VisitorFields,
)
from omnichannel.runtime.bot import Bot, Reply, Turn, to_outbound
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Runtime, RuntimeLifecycle
from omnichannel.runtime.sending import RetryPolicy, redact_url, request_with_retries
from omnichannel.text import numbered_list, plain_text, split_text

__all__ = [
    "EVENT_HANDOVER",
    "EVENT_MESSAGE",
    "FB_POSTBACK",
    "INCOMING_MESSAGE",
    "MAX_BODY_BYTES",
    "MESSAGE_DELIVERY",
    "BodyTooLarge",
    "WebexConnectBot",
    "WebexConnectClient",
    "WebexConversation",
    "WebexDeliveryStatus",
    "WebexEvent",
    "WebexIncomingMessage",
    "WebexMessage",
    "WebexPostback",
    "WebexUnknownEvent",
    "format_webex_timestamp",
    "parse_webex_event",
    "parse_webex_timestamp",
]

log = logging.getLogger(__name__)

EVENT_MESSAGE = "1001"
"""``eventid`` of a message from the bot to the customer (seed 002)."""

EVENT_HANDOVER = "1002"
"""``eventid`` of the bot's handover to the contact center (seed 002; meaning **[U]**)."""

INCOMING_MESSAGE = "Incoming message"
"""``Event`` of a customer's message."""

FB_POSTBACK = "FB POSTBACK"
"""``Event`` of a Messenger postback (a pressed button)."""

MESSAGE_DELIVERY = "Message Delivery"
"""``Event`` of a delivery status of a message the bot sent."""

MAX_BODY_BYTES = 256 * 1024
"""Webex Connect's default per-tenant limit for inbound webhook bodies (larger ones get 430)."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


# ---------------------------------------------------------------------------------------------
# timestamps

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?"
    r"\s*(?:Z|[+-]00:?00|GMT|UTC)?",
    re.IGNORECASE,
)


def parse_webex_timestamp(value: str) -> datetime:
    """Parse Webex Connect's GMT ``YYYY-MM-DD hh:mm:ss.SS`` into an aware UTC datetime.

    One to six fractional digits (or none) are accepted, as are a ``T`` separator and a
    trailing ``Z`` / ``+00:00`` / ``GMT``.

    Raises:
        ValueError: the text is not such a timestamp, or names an impossible date or time.
    """
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"expected 'YYYY-MM-DD hh:mm:ss.SS' in GMT, got {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date and time: {exc}") from None


def format_webex_timestamp(when: datetime | None = None) -> str:
    """Format ``when`` (now by default) as Webex Connect's GMT ``YYYY-MM-DD hh:mm:ss.SSS``.

    A naive datetime is taken to be UTC already.
    """
    if when is None:
        when = datetime.now(timezone.utc)
    elif when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


# ---------------------------------------------------------------------------------------------
# inbound models


def _is_bot_conversation(conversation_type: str | None) -> bool:
    return conversation_type is None or conversation_type.strip().upper() == "BOT"


@attrs.frozen(kw_only=True)
class WebexIncomingMessage:
    """``Event: "Incoming message"``: a message from the customer.

    After a handover Webex Connect keeps copying the customer's and the agent's messages to the
    bot; ``conversation_type`` other than ``"BOT"`` marks a conversation the bot must not answer.
    ``raw`` is the decoded body as received, unknown keys included.
    """

    event: str = INCOMING_MESSAGE
    conversation_id: str
    conversation_type: str | None = None
    message: str | None = None
    message_type: str | None = None
    message_id: str | None = None
    media: Any = None
    channel: str | None = None
    timestamp: datetime | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)

    @property
    def for_bot(self) -> bool:
        """True unless ``ConversationType`` names something other than a BOT conversation."""
        return _is_bot_conversation(self.conversation_type)

    @property
    def media_url(self) -> str | None:
        """The media's URL: ``Media`` itself when it is text, its ``url`` key when an object."""
        media = self.media
        if isinstance(media, str):
            return media.strip() or None
        if isinstance(media, Mapping):
            for key, value in media.items():
                if isinstance(key, str) and key.lower() == "url" and isinstance(value, str):
                    return value.strip() or None
        return None


@attrs.frozen(kw_only=True)
class WebexPostback:
    """``Event: "FB POSTBACK"``: the customer pressed a button carrying ``postback_payload``."""

    event: str = FB_POSTBACK
    conversation_id: str
    conversation_type: str | None = None
    postback_payload: str
    channel: str | None = None
    timestamp: datetime | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)

    @property
    def for_bot(self) -> bool:
        """True unless ``ConversationType`` names something other than a BOT conversation."""
        return _is_bot_conversation(self.conversation_type)


@attrs.frozen(kw_only=True)
class WebexDeliveryStatus:
    """``Event: "Message Delivery"``: a reply's status (``Delivered``, ``Read``, ``Failed``)."""

    event: str = MESSAGE_DELIVERY
    conversation_id: str
    conversation_type: str | None = None
    message_id: str | None = None
    channel: str | None = None
    delivery_status: str
    description: str | None = None
    timestamp: datetime | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)

    @property
    def failed(self) -> bool:
        """True for ``DeliveryStatus: "Failed"``."""
        return self.delivery_status.strip().lower() == "failed"


@attrs.frozen(kw_only=True)
class WebexUnknownEvent:
    """An event this SDK does not know: kept as received, acknowledged and otherwise ignored."""

    event: str
    conversation_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)


WebexEvent = Union[WebexIncomingMessage, WebexPostback, WebexDeliveryStatus, WebexUnknownEvent]


# ---------------------------------------------------------------------------------------------
# parsing

_WIRE_NAMES = {
    "event": "Event",
    "conversationid": "Conversationid",
    "conversationtype": "ConversationType",
    "message": "Message",
    "messagetype": "MessageType",
    "messageid": "Messageid",
    "media": "Media",
    "channel": "Channel",
    "timestamp": "Timestamp",
    "postbackpayload": "PostbackPayload",
    "deliverystatus": "DeliveryStatus",
    "description": "Description",
}


def _fold(key: str) -> str:
    # the seed spells keys in mixed case ("Conversationid", "Messagetype"); senders vary
    return key.replace("_", "").replace("-", "").replace(" ", "").lower()


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return "object"


class _Fields:
    """Case- and underscore-insensitive access to an event's fields, with errors naming them."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._by_folded: dict[str, tuple[str, Any]] = {}
        for key, value in data.items():
            if isinstance(key, str):
                self._by_folded.setdefault(_fold(key), (key, value))

    def present(self, folded: str) -> bool:
        return folded in self._by_folded

    def _get(self, folded: str) -> tuple[str, Any]:
        return self._by_folded.get(folded, (_WIRE_NAMES[folded], None))

    def ident(self, folded: str, *, required: bool = False) -> str | None:
        """An identifier: a string or a number (kept as text); empty means absent."""
        name, value = self._get(folded)
        if isinstance(value, bool) or not (value is None or isinstance(value, (str, int, float))):
            raise PayloadError(name, f"expected a string, got {_json_type(value)}")
        text = "" if value is None else str(value).strip()
        if not text:
            if required:
                raise PayloadError(name, "required field is missing", missing=True)
            return None
        return text

    def text(self, folded: str, *, required: bool = False) -> str | None:
        """Content: a string as sent; other JSON is kept as its JSON text (tolerant reader)."""
        name, value = self._get(folded)
        if value is None or value == "":
            if required:
                raise PayloadError(name, "required field is missing", missing=True)
            return None if value is None else ""
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    def raw(self, folded: str) -> Any:
        return self._get(folded)[1]

    def timestamp(self) -> datetime | None:
        name, value = self._get("timestamp")
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise PayloadError(name, f"expected a string, got {_json_type(value)}")
        try:
            return parse_webex_timestamp(value)
        except ValueError as exc:
            raise PayloadError(name, str(exc)) from None


def _kind(event: str) -> Literal["message", "postback", "delivery"] | None:
    folded = " ".join(event.lower().split())
    if folded == "incoming message":
        return "message"
    if folded.endswith("postback"):
        return "postback"
    if folded == "message delivery":
        return "delivery"
    return None


def _looks_like_event(data: Mapping[str, Any]) -> bool:
    return any(isinstance(k, str) and _fold(k) in ("event", "conversationid") for k in data)


def parse_webex_event(body: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> WebexEvent:
    """Parse a Webex Connect bot event into a typed model.

    ``body`` may be the raw bytes, a ``str`` of JSON or a decoded mapping. Field names are
    matched ignoring case and underscores (``Conversationid`` = ``ConversationId`` =
    ``conversation_id``); ``raw`` keeps the body as received. An ``Event`` this SDK does not
    know becomes a :class:`WebexUnknownEvent`.

    Raises:
        PayloadError: the body is not a JSON object, a required field (``Event``,
            ``Conversationid``, a postback's ``PostbackPayload``, a delivery's
            ``DeliveryStatus``) is missing, an identifier is not a string, or ``Timestamp``
            is not a GMT ``YYYY-MM-DD hh:mm:ss.SS``; ``.path`` names the field.
    """
    data: Any = body if isinstance(body, Mapping) else decode_json(body)
    if not isinstance(data, Mapping):
        raise PayloadError("", f"body must be a JSON object, got {_json_type(data)}")
    fields = _Fields(data)
    event = fields.ident("event", required=True)
    assert event is not None
    kind = _kind(event)
    raw = MappingProxyType(dict(data))
    if kind is None:
        value = fields.raw("conversationid")
        conversation = str(value) if isinstance(value, (str, int)) and value != "" else None
        return WebexUnknownEvent(event=event, conversation_id=conversation, raw=raw)
    conversation_id = fields.ident("conversationid", required=True)
    assert conversation_id is not None
    conversation_type = fields.ident("conversationtype")
    channel = fields.ident("channel")
    timestamp = fields.timestamp()
    if kind == "message":
        return WebexIncomingMessage(
            event=event,
            conversation_id=conversation_id,
            conversation_type=conversation_type,
            message=fields.text("message"),
            message_type=fields.ident("messagetype"),
            message_id=fields.ident("messageid"),
            media=fields.raw("media"),
            channel=channel,
            timestamp=timestamp,
            raw=raw,
        )
    if kind == "postback":
        payload = fields.text("postbackpayload", required=True)
        assert payload is not None
        return WebexPostback(
            event=event,
            conversation_id=conversation_id,
            conversation_type=conversation_type,
            postback_payload=payload,
            channel=channel,
            timestamp=timestamp,
            raw=raw,
        )
    status = fields.ident("deliverystatus", required=True)
    assert status is not None
    return WebexDeliveryStatus(
        event=event,
        conversation_id=conversation_id,
        conversation_type=conversation_type,
        message_id=fields.ident("messageid"),
        channel=channel,
        delivery_status=status,
        description=fields.text("description"),
        timestamp=timestamp,
        raw=raw,
    )


# ---------------------------------------------------------------------------------------------
# outbound


@attrs.frozen(kw_only=True)
class WebexMessage(TextReply):
    """A reply with Webex Connect specifics: its ``Messagetype`` and custom params.

    Use it for a channel's rich payload (a WhatsApp list, a Messenger template) that a flow on
    the Webex side turns into the real message. It is a :class:`~omnichannel.TextReply`, so
    other channels send its ``text``. Webex gets it as is: no markdown stripping, no splitting.
    """

    message_type: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)


class BodyTooLarge(DeliveryError, ValueError):
    """A reply body is larger than Webex Connect accepts; it was refused before sending.

    ``size`` and ``limit`` are in bytes of the JSON body.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message, retryable=False)


_RESERVED = ("eventid", "conversation_id", "Timestamp")


class WebexConnectClient:
    """Posts bot events (``eventid`` 1001, 1002, …) to the integration's generated webhook URL.

    Args:
        webhook_url: the URL Webex Connect generated for the bot integration,
            ``https://hooks.{us|eu|uk|au}.webexconnect.io/events/{ID}``. Its ``{ID}`` is a
            secret: it never appears in logs or errors.
        service_key: sent as the ``key`` header when the webhook requires authentication.
        session: a ``requests.Session`` (the test seam; one is created otherwise).
        retry: timeouts and retries of :meth:`post_event` (the outbox makes single attempts).
        max_body_bytes: bodies larger than this are refused before sending
            (Webex Connect's default tenant limit is 256 KB).
    """

    def __init__(
        self,
        webhook_url: str,
        service_key: str | None = None,
        session: requests.Session | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not webhook_url or not webhook_url.startswith(("http://", "https://")):
            raise ConfigurationError("webhook_url must be an http(s) URL")
        self.webhook_url = webhook_url
        self._service_key = service_key or None
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy()
        self.max_body_bytes = max_body_bytes
        parts = urlsplit(webhook_url)
        self._webhook_id = parts.path.rstrip("/").rsplit("/", 1)[-1]
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        self.safe_url = f"{parts.scheme}://{host}/…/***"
        """The webhook URL as logs show it (its secret ID elided)."""

    def __repr__(self) -> str:
        return f"WebexConnectClient({self.safe_url!r})"

    def encode(self, body: Mapping[str, Any]) -> bytes:
        """The exact bytes :meth:`post_event` sends for ``body``.

        Raises:
            BodyTooLarge: the JSON is longer than ``max_body_bytes``.
            ValueError: ``body`` is not JSON-serializable.
        """
        try:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the event body is not JSON-serializable: {exc}") from None
        if len(data) > self.max_body_bytes:
            what = f"eventid {body.get('eventid')} for conversation {body.get('conversation_id')}"
            raise BodyTooLarge(
                f"Webex Connect refuses bodies over {self.max_body_bytes} bytes; this {what} "
                f"is {len(data)} bytes and was not sent (shorten the message or send a link)",
                size=len(data),
                limit=self.max_body_bytes,
            )
        return data

    def post_event(
        self, body: Mapping[str, Any], *, attempts: int | None = None
    ) -> requests.Response:
        """POST one event body; retry per ``retry`` (``attempts=1``: a single attempt).

        Raises:
            BodyTooLarge: refused before sending.
            DeliveryError: the last failure (``retryable`` tells whether a later try may work).
        """
        data = self.encode(body)
        headers = {"Content-Type": "application/json"}
        if self._service_key:
            headers["key"] = self._service_key
        total = attempts if attempts is not None else self.retry.attempts
        secrets = tuple(s for s in (self._service_key, self._webhook_id) if s)
        attempt = 0
        while True:
            attempt += 1
            try:
                # one attempt at a time: the shared helper would log the URL with its secret ID
                return request_with_retries(
                    self.session,
                    "POST",
                    self.webhook_url,
                    data=data,
                    headers=headers,
                    policy=self.retry,
                    attempts=1,
                    secrets=secrets,
                )
            except DeliveryError as exc:
                error = self._scrubbed(exc, attempt)
            if not error.retryable or attempt >= total:
                raise error
            wait = self.retry.delay(attempt, error.retry_after)
            log.info("webex: %s; retry %d/%d in %.2fs", error, attempt, total - 1, wait)
            time.sleep(wait)

    def _scrubbed(self, exc: DeliveryError, attempt: int) -> DeliveryError:
        message = str(exc).replace(redact_url(self.webhook_url), self.safe_url)
        if self._webhook_id:
            message = message.replace(self._webhook_id, "***")
        return DeliveryError(
            message,
            status=exc.status,
            response_text=exc.response_text,
            attempts=attempt,
            retryable=exc.retryable,
            retry_after=exc.retry_after,
        )

    def send_message(
        self,
        conversation_id: str,
        message: str,
        *,
        message_type: str = "text",
        eventid: str = EVENT_MESSAGE,
        **params: Any,
    ) -> requests.Response:
        """Send one message to the customer now (outside the outbox), with custom params."""
        body = _event_body(
            eventid, conversation_id, params, message=message, Messagetype=message_type
        )
        return self.post_event(body)

    def handover(
        self, conversation_id: str, *, eventid: str = EVENT_HANDOVER, **params: Any
    ) -> requests.Response:
        """Send the handover event now (outside the outbox), with custom params."""
        return self.post_event(_event_body(eventid, conversation_id, params))


def _event_body(
    eventid: str, conversation_id: str, *param_sets: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"eventid": eventid, "conversation_id": conversation_id}
    body.update(fields)
    body["Timestamp"] = format_webex_timestamp()
    for params in param_sets:
        for key, value in params.items():
            if key in _RESERVED:
                raise ValueError(f"custom param {key!r} collides with a field the adapter sets")
            body[key] = value
    return body


# ---------------------------------------------------------------------------------------------
# conversation tracking


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


# ---------------------------------------------------------------------------------------------
# the webhook

AckFormat = Union[Literal["text", "json"], Callable[[str], Response]]
DeliveryStatusHandler = Callable[[WebexDeliveryStatus], None]
CopiedMessageHandler = Callable[[WebexIncomingMessage], None]
KeyboardRenderer = Callable[[Keyboard], Mapping[str, Any]]

_NUMBER = re.compile(r"\s*(\d{1,3})\s*[.)]?\s*")


class WebexConnectBot(RuntimeLifecycle):
    """A :class:`~omnichannel.Bot` as a Webex Connect generic-bot integration.

    ``handle(request)`` answers every valid POST at once with the verification token, then runs
    the bot in the background (through the :class:`~omnichannel.Runtime`); a redelivered
    ``Messageid`` is processed once. Texts reach ``@bot.on_text``, media ``@bot.on_file``,
    postbacks (and numbered answers to a keyboard) ``@bot.on_button``; delivery statuses go to
    ``on_delivery_status``. The bot gets the SDK's own :class:`~omnichannel.NewMessageEvent`
    (``chat_id`` = the conversation id) so it stays channel-agnostic.

    Status contract of ``handle``:

    - **200** with the acknowledgement (the token): a valid event, new, repeated or of an
      unknown kind; a verification request (empty body, an object without event fields, GET).
    - **400** (``malformed_status``) with ``{"error": …}`` naming the field: not JSON, not an
      object, a required field missing or of the wrong type, a body over ``max_body``.
    - **503** with ``{"error": …}``: the runtime cannot take the event now (runner full, store
      down), at most ``max_consecutive_refusals`` times in a row; the next such event is
      acknowledged and dropped (logged as an error).

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
        max_consecutive_refusals: 503s answered in a row before an event is dropped instead.
        message_eventid, handover_eventid: the ``eventid`` of a message and of the handover.
        close_eventid: when set, :meth:`close_conversation` sends it.
        message_type: the ``Messagetype`` of text replies.
        custom_params: custom params added to every event the bot sends.
        render_keyboard: ``fn(keyboard) -> fields`` merged into a 1001 body instead of the
            numbered text list (a channel's rich payload).
        numbered_choices: map a numbered answer (or a label) to the last keyboard's button.
        handover_text: sent as a message just before the handover event.
        on_delivery_status: called (in the background) with every delivery status.
        on_copied_message: called with each message recorded but not answered.
        keep_copies: how many unanswered copies :meth:`conversation` keeps per conversation.
        strip_markdown: send markdown as plain text.
        max_message_length: split longer texts into several messages (``None``: never).
        max_reply_bytes: reply bodies over this are refused before sending.
        client, session, retry: the outbound client, or what to build it with.
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`
            (``inline=True`` runs the bot before answering: tests only, never with the
            real Webex Connect and its 5 s limit).
        name: distinguishes several integrations sharing one runtime.
    """

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
            if key in _RESERVED:
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
        self.runtime = runtime or Runtime(store=store, inline=inline, **runtime_options)
        self.ack_format = ack_format
        self.path = path.rstrip("/") if path else None
        self.max_body = max_body
        self.malformed_status = malformed_status
        self.max_consecutive_refusals = max(0, max_consecutive_refusals)
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
        self.name = name
        self.destination = f"webex:{name}"
        self._token = verification_token
        self._refusals = 0
        self._lock = threading.Lock()
        self.runtime.outbox.register(self.destination, self._deliver)

    def __repr__(self) -> str:
        return f"WebexConnectBot(name={self.name!r}, client={self.client!r})"

    # inbound --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one HTTP request to the bot's endpoint (see the status contract above)."""
        if self.path is not None and request.path.rstrip("/") != self.path:
            return Response.error(404, "Not found.")
        if request.method in ("GET", "HEAD"):
            return self._acknowledge()
        if request.method != "POST":
            return Response(
                405,
                b'{"error":"Method not allowed; use POST."}',
                {"Allow": "POST, GET, HEAD", "Content-Type": "application/json"},
            )
        if len(request.body) > self.max_body:
            return self._malformed(f"body is larger than {self.max_body} bytes")
        try:
            return self._accept(request.body)
        except Exception:
            log.exception("webex: internal error while accepting an event")
            return self._refuse("Internal error while accepting the event; retry later.")

    def _accept(self, body: bytes) -> Response:
        if not body.strip():
            log.info("webex: empty POST answered as a verification request")
            return self._acknowledge()
        try:
            data = decode_json(body)
            if not isinstance(data, Mapping):
                raise PayloadError("", f"body must be a JSON object, got {_json_type(data)}")
            if not _looks_like_event(data):
                log.info("webex: POST without event fields answered as a verification request")
                return self._acknowledge()
            event = parse_webex_event(data)
        except PayloadError as exc:
            return self._malformed(str(exc))
        if isinstance(event, WebexUnknownEvent):
            log.info("webex: event %r acknowledged and ignored", event.event)
            return self._acknowledge()
        key = self._delivery_key(event)
        if not self.runtime.accept(key):
            log.info("webex: conversation %s: repeated delivery ignored", event.conversation_id)
            return self._acknowledge()
        try:
            self.runtime.run(self._chat_key(event.conversation_id), self._job(event), key)
        except Exception as exc:
            log.warning("webex: the runtime refused an event: %s", exc)
            return self._refuse("The bot cannot take events right now; retry later.")
        log.info("webex: conversation %s: %s accepted", event.conversation_id, event.event)
        return self._acknowledge()

    def _acknowledge(self) -> Response:
        with self._lock:
            self._refusals = 0
        if callable(self.ack_format):
            return self.ack_format(self._token)
        if self.ack_format == "json":
            return Response.json(200, {"token": self._token})
        return Response(200, self._token, {"Content-Type": "text/plain; charset=utf-8"})

    def _malformed(self, problem: str) -> Response:
        log.info("webex: malformed event refused (%d): %s", self.malformed_status, problem)
        return Response.error(self.malformed_status, f"Malformed Webex Connect event: {problem}")

    def _refuse(self, message: str) -> Response:
        with self._lock:
            if self._refusals < self.max_consecutive_refusals:
                self._refusals += 1
                return Response(
                    503,
                    json.dumps({"error": message}).encode(),
                    {"Content-Type": "application/json", "Retry-After": "60"},
                )
        log.error(
            "webex: an event was acknowledged without being processed after %d refusals in a "
            "row, so that Webex Connect does not switch the webhook off; the event is lost",
            self.max_consecutive_refusals,
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

    def _chat_key(self, conversation_id: str) -> str:
        return f"{self.destination}:{conversation_id}"

    def _job(
        self, event: WebexIncomingMessage | WebexPostback | WebexDeliveryStatus
    ) -> Callable[[], None]:
        if isinstance(event, WebexDeliveryStatus):
            return lambda: self._delivery_status(event)
        return lambda: self._process(event)

    def _delivery_status(self, event: WebexDeliveryStatus) -> None:
        log.info(
            "webex: conversation %s: message %s %s",
            event.conversation_id,
            event.message_id,
            event.delivery_status,
        )
        if self.on_delivery_status is not None:
            self.on_delivery_status(event)

    def _process(self, event: WebexIncomingMessage | WebexPostback) -> None:
        cid = event.conversation_id
        state = self._state(cid)
        state["last_seen"] = time.time()
        if event.channel:
            state["channel"] = event.channel
        if not event.for_bot or state.get("handed_over"):
            if isinstance(event, WebexIncomingMessage):
                self._record_copy(state, event)
            else:
                self._save(cid, state)
                log.info("webex: conversation %s: postback not for the bot, ignored", cid)
            return
        message = self._inbound_message(event, state)
        self._save(cid, state)
        visitor_extra = {"channel": event.channel} if event.channel else {}
        inbound = NewMessageEvent(
            chat_id=cid,
            visitor=Visitor(id=cid, fields=VisitorFields(extra=visitor_extra)),
            message=message,
            raw=event.raw,
        )
        self.bot(Turn(inbound, message, self))

    def _inbound_message(
        self, event: WebexIncomingMessage | WebexPostback, state: dict[str, Any]
    ) -> InboundMessage:
        keyboard: list[list[str]] = state.pop("keyboard", None) or []
        if isinstance(event, WebexPostback):
            payload = event.postback_payload
            label = next((text for bid, text in keyboard if bid == payload), payload)
            return ButtonPress(button=Button(id=payload, text=label))
        url = event.media_url
        if url is not None:
            path = unquote(urlsplit(url).path)
            name = path.rsplit("/", 1)[-1] or None
            content_type = mimetypes.guess_type(path)[0] if name else None
            info = FileInfo(id=event.message_id, name=name, content_type=content_type, url=url)
            return FileMessage(id=event.message_id, file=info)
        text = event.message or ""
        if keyboard and self.numbered_choices:
            button = _choice(text, keyboard)
            if button is not None:
                return ButtonPress(id=event.message_id, button=button)
        return TextMessage(id=event.message_id, text=text)

    def _record_copy(self, state: dict[str, Any], event: WebexIncomingMessage) -> None:
        copy = {
            "message_id": event.message_id,
            "message": event.message,
            "message_type": event.message_type,
            "conversation_type": event.conversation_type,
            "media": event.media_url,
            "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        }
        copies = [*state.get("copies", []), copy]
        state["copies"] = copies[-self.keep_copies :] if self.keep_copies > 0 else []
        self._save(event.conversation_id, state)
        log.info(
            "webex: conversation %s: copied message %s recorded, not answered",
            event.conversation_id,
            event.message_id,
        )
        if self.on_copied_message is not None:
            self.on_copied_message(event)

    # conversation state ---------------------------------------------------------------------
    def _state_key(self, conversation_id: str) -> str:
        return f"{self.destination}:conversation:{conversation_id}"

    def _state(self, conversation_id: str) -> dict[str, Any]:
        state = self.runtime.store.get_state(self._state_key(conversation_id))
        if state is None:
            state = {"conversation_id": conversation_id, "first_seen": time.time()}
        return state

    def _save(self, conversation_id: str, state: Mapping[str, Any]) -> None:
        self.runtime.store.set_state(self._state_key(conversation_id), state)

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
        state = self._state(conversation_id)
        state["handed_over"] = False
        self._save(conversation_id, state)

    def close_conversation(self, conversation_id: str, **params: Any) -> None:
        """Forget ``conversation_id``; send ``close_eventid`` with ``params`` when configured.

        Webex Connect gives the customer a new conversation id once the bot closed the old one.
        """
        if self.close_eventid is not None:
            self._queue(
                conversation_id,
                [_event_body(self.close_eventid, conversation_id, self.custom_params, params)],
            )
        self.runtime.store.set_state(self._state_key(conversation_id), None)

    # outbound -------------------------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        """Where replies go (the integration's generated webhook URL)."""
        return self.client.webhook_url

    def render(self, conversation_id: str, message: OutboundMessage) -> list[dict[str, Any]]:
        """The ``eventid`` 1001 bodies for one outbound message (keyboards → numbered text)."""
        cid = str(conversation_id)
        if isinstance(message, WebexMessage):
            return [self._message_body(cid, message.text, message.message_type, message.params)]
        if isinstance(message, TextReply):
            text = plain_text(message.text) if self.strip_markdown else message.text
            parts = (
                split_text(text, self.max_message_length)
                if self.max_message_length and len(text) > self.max_message_length
                else [text]
            )
            return [self._message_body(cid, part) for part in parts]
        if isinstance(message, Keyboard):
            if self.render_keyboard is not None:
                fields = dict(self.render_keyboard(message))
                text = str(fields.pop("message", message.text or ""))
                message_type = fields.pop("Messagetype", None)
                return [self._message_body(cid, text, message_type, fields)]
            labels = [button.text for button in message.flat]
            return [self._message_body(cid, numbered_list(message.text, labels))]
        # FileLink: Webex bots get no file type of their own here; send the link as text
        text = f"{message.name}: {message.url}" if message.name else message.url
        return [self._message_body(cid, text)]

    def _message_body(
        self,
        conversation_id: str,
        text: str,
        message_type: str | None = None,
        params: Mapping[str, Any] = _EMPTY,
    ) -> dict[str, Any]:
        return _event_body(
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
            state = self._state(cid)
            state["keyboard"] = [[b.id, b.text] for b in keyboard.flat]
            self._save(cid, state)

    def _queue(self, conversation_id: str, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            self.client.encode(body)  # refuse before anything of this call is stored
        for body in bodies:
            self.runtime.outbox.put(
                self.destination, self._chat_key(conversation_id), {"body": body}
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
        body = _event_body(self.handover_eventid, conversation_id, self.custom_params, params)
        self._queue(conversation_id, [body])
        state = self._state(conversation_id)
        state.update(handed_over=True, handed_over_at=time.time(), handover_params=dict(params))
        self._save(conversation_id, state)
        log.info("webex: conversation %s handed over", conversation_id)

    def _deliver(self, payload: Mapping[str, Any]) -> None:
        self.client.post_event(payload["body"], attempts=1)


def _choice(text: str, keyboard: list[list[str]]) -> Button | None:
    match = _NUMBER.fullmatch(text)
    if match is not None:
        index = int(match.group(1))
        if 1 <= index <= len(keyboard):
            button_id, label = keyboard[index - 1]
            return Button(id=button_id, text=label)
        return None
    wanted = text.strip().casefold()
    for button_id, label in keyboard:
        if label.strip().casefold() == wanted:
            return Button(id=button_id, text=label)
    return None
