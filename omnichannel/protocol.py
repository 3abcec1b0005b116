"""The seed's pure functions: parse an inbound event, the text the agent sees, channel variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omnichannel import _fastparse
from omnichannel.models import (
    ButtonPress,
    Event,
    FileMessage,
    InboundMessage,
    NewMessageEvent,
    TextMessage,
)

__all__ = [
    "CHANNEL_VARIABLES",
    "agent_text",
    "channel_chat_id",
    "channel_variables",
    "file_to_text",
    "parse_event",
]

CHANNEL_VARIABLES = (
    "channel_visitor_id",
    "channel_conversation_id",
    "channel_visitor_firstname",
    "channel_visitor_lastname",
    "channel_visitor_account",
    "channel_visitor_phone",
    "channel_visitor_email",
    "channel_visitor_source",
    "channel_chat_id",
)
"""The channel variables of the protocol, in the seed's order."""


def parse_event(body: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Event:
    """Parse an inbound webhook body into a typed event.

    ``body`` may be the raw bytes, a ``str`` of JSON, or an already decoded mapping. With the
    ``fast`` extra installed (``pip install 'omnichannel[fast]'``: msgspec) JSON is decoded with
    msgspec, else with the standard library; the results and errors are the same.

    Raises:
        PayloadError: the body is not JSON, or a field is missing or has the wrong type; the
            message and ``.path`` name the field (``message.data.button``).
        UnsupportedEvent: valid JSON whose ``event`` or ``message.kind`` is unknown; the
            protocol acknowledges these with 200 and ignores them.
    """
    return _fastparse.parse(body, _fastparse.fast_loads)


def file_to_text(file_message: FileMessage) -> str:
    """The text the agent sees for a file: ``file:{content_type}|{file_id}|{url}``.

    Webim 2.0 files carry no ``data.id``: the message id stands in for it. A missing type is
    rendered empty. The readiness of the file is not checked here (see :func:`agent_text`).
    """
    f = file_message.file
    file_id = f.id if f.id is not None else file_message.id
    return f"file:{f.content_type or ''}|{file_id or ''}|{f.url or ''}"


def _message_text(message: InboundMessage) -> str | None:
    if type(message) is TextMessage:
        return message.text
    if type(message) is ButtonPress:
        return message.button.text
    if type(message) is FileMessage:
        return file_to_text(message) if message.ready else None
    raise TypeError(f"not an inbound message: {type(message).__name__}")


def agent_text(message_or_event: InboundMessage | Event) -> str | None:
    """The text the agent sees for a message, or for an event's messages.

    - text: the text itself;
    - file: :func:`file_to_text` when the file is ready, else ``None`` (not processed);
    - button press: the button's label.

    For a ``new_chat`` event with several messages, the texts are joined with newlines; ``None``
    when none of them has a text.
    """
    if isinstance(message_or_event, NewMessageEvent):
        return _message_text(message_or_event.message)
    messages = getattr(message_or_event, "messages", None)
    if messages is None:
        return _message_text(message_or_event)  # type: ignore[arg-type]
    texts = [t for t in map(_message_text, messages) if t is not None]
    return "\n".join(texts) if texts else None


def channel_chat_id(chat_id: int | str) -> str:
    """The platform's ``channel_chat_id``: ``"{chat_id}|omnichannel"``."""
    return f"{chat_id}|omnichannel"


def channel_variables(event: Event) -> dict[str, str | None]:
    """Map an event to the channel variables of the protocol (keys exactly as the seed's table)."""
    visitor = event.visitor
    fields = visitor.fields
    return {
        "channel_visitor_id": visitor.id,
        "channel_conversation_id": str(event.chat_id),
        "channel_visitor_firstname": fields.name,
        "channel_visitor_lastname": None,
        "channel_visitor_account": fields.login,
        "channel_visitor_phone": fields.phone,
        "channel_visitor_email": fields.email,
        "channel_visitor_source": fields.site,
        "channel_chat_id": channel_chat_id(event.chat_id),
    }
