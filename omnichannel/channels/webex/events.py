"""Webex Connect bot events: the typed models of what Webex Connect posts to the bot, their parser
(mixed-case wire names matched loosely) and the GMT timestamps both directions use."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Literal, Union

import attrs

from omnichannel.decoding import decode_object, missing, read_id, read_timestamp
from omnichannel.errors import PayloadError

__all__ = [
    "FB_POSTBACK",
    "INCOMING_MESSAGE",
    "MESSAGE_DELIVERY",
    "WebexDeliveryStatus",
    "WebexEvent",
    "WebexIncomingMessage",
    "WebexPostback",
    "WebexUnknownEvent",
    "format_webex_timestamp",
    "parse_webex_event",
    "parse_webex_timestamp",
]

log = logging.getLogger(__name__)

INCOMING_MESSAGE = "Incoming message"
"""``Event`` of a customer's message."""

FB_POSTBACK = "FB POSTBACK"
"""``Event`` of a Messenger postback (a pressed button)."""

MESSAGE_DELIVERY = "Message Delivery"
"""``Event`` of a delivery status of a message the bot sent."""


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
        return read_id(value, name, required=required)

    def text(self, folded: str, *, required: bool = False) -> str | None:
        """Content: a string as sent; other JSON is kept as its JSON text (tolerant reader)."""
        name, value = self._get(folded)
        if value is None or value == "":
            if required:
                missing(name)
            return None if value is None else ""
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    def raw(self, folded: str) -> Any:
        return self._get(folded)[1]

    def timestamp(self) -> datetime | None:
        """The event's time; one that cannot be read is ``None`` (the event is kept: its
        ``raw`` has the text), never a reason to refuse the event."""
        name, value = self._get("timestamp")
        try:
            return read_timestamp(value, name)
        except PayloadError as exc:
            log.info("webex: %s; the event is kept without a time", exc)
            return None


def _kind(event: str) -> Literal["message", "postback", "delivery"] | None:
    folded = " ".join(event.lower().split())
    if folded == "incoming message":
        return "message"
    if folded.endswith("postback"):
        return "postback"
    if folded == "message delivery":
        return "delivery"
    return None


def looks_like_event(data: Mapping[str, Any]) -> bool:
    """True when ``data`` has an ``Event`` or ``Conversationid`` field (else: a verification)."""
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
            is not a GMT ``YYYY-MM-DD hh:mm:ss.SS``; ``.path`` names the field. An unreadable
            ``Timestamp`` is not an error: the event's ``timestamp`` is ``None``.
    """
    data: Any = body if isinstance(body, Mapping) else decode_object(body, forms=False)
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
