"""The channel side's wire format: visitors, the events a channel server posts, and their check.

The agent side parses these payloads (:func:`omnichannel.parse_event`); here they are built from
the same typed models (:class:`~omnichannel.TextMessage`, :class:`~omnichannel.FileMessage`,
:class:`~omnichannel.ButtonPress`, :class:`~omnichannel.Visitor`) and checked with that parser
before anything is sent: the platform answers 200 to an unknown ``event`` or ``kind`` and drops
it silently, so an event the agent would not understand must never leave the channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Union

from omnichannel.errors import PayloadError, UnsupportedEvent
from omnichannel.models import (
    Button,
    ButtonPress,
    ChatId,
    Event,
    FileInfo,
    FileMessage,
    InboundMessage,
    NewChatEvent,
    NewMessageEvent,
    TextMessage,
    Visitor,
    VisitorFields,
)
from omnichannel.protocol import channel_variables, parse_event

__all__ = [
    "VisitorLike",
    "button_message",
    "event_payload",
    "file_message",
    "make_visitor",
    "message_payload",
    "new_message_id",
    "preview_variables",
    "text_message",
    "validate_event",
    "visitor_payload",
]

VisitorLike = Union[Visitor, Mapping[str, Any], str, int, None]
"""What the client's ``visitor=`` takes: a :class:`~omnichannel.Visitor`
(:func:`make_visitor`), its wire JSON (``{"id", "fields"}``), just the visitor's id, or
``None`` (the chat id stands in for the visitor id)."""

_FIELDS = ("name", "login", "phone", "email", "site")


def new_message_id() -> str:
    """A fresh client-side message id (``message.id``): 32 hex digits."""
    return uuid.uuid4().hex


def make_visitor(
    visitor_id: str | int,
    *,
    name: str | None = None,
    login: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    site: str | None = None,
    **extra: Any,
) -> Visitor:
    """Your channel's user as the protocol's visitor, so the platform fills its channel variables.

    ============================  ===================  =========================================
    channel variable              visitor field        put there
    ============================  ===================  =========================================
    ``channel_visitor_id``        ``id``               ``visitor_id``: your user's stable id
    ``channel_visitor_firstname`` ``fields.name``      the name to greet them by
    ``channel_visitor_lastname``  —                    (always empty: the protocol has no field)
    ``channel_visitor_account``   ``fields.login``     their login / account name
    ``channel_visitor_phone``     ``fields.phone``     their phone number
    ``channel_visitor_email``     ``fields.email``     their e-mail address
    ``channel_visitor_source``    ``fields.site``      where they write from (site, app, page)
    ============================  ===================  =========================================

    ``extra`` keys (Webim's ``display_name``, ``avatar_url``, ``info`` or your own) are sent as
    further ``fields``; a platform keeps or ignores them.

    Raises:
        ValueError: an empty ``visitor_id``.
    """
    text_id = str(visitor_id)
    if not text_id:
        raise ValueError("a visitor needs a non-empty id")
    return Visitor(
        id=text_id,
        fields=VisitorFields(
            name=name, login=login, phone=phone, email=email, site=site, extra=dict(extra)
        ),
    )


def visitor_payload(visitor: VisitorLike, chat_id: ChatId | None = None) -> dict[str, Any]:
    """The wire JSON of a visitor: ``{"id": …, "fields": {…}}`` (fields that are ``None`` left out).

    ``visitor`` may be a :class:`~omnichannel.Visitor`, a mapping already in wire form (checked),
    a bare id, or ``None``: then ``chat_id`` stands in for the visitor id (the agent side does the
    same for ``turn.visitor_id``).
    """
    if visitor is None:
        if chat_id is None:
            raise ValueError("give a visitor or a chat id")
        return {"id": str(chat_id), "fields": {}}
    if isinstance(visitor, (str, int)):
        return visitor_payload(make_visitor(visitor))
    if isinstance(visitor, Visitor):
        fields: dict[str, Any] = {
            key: getattr(visitor.fields, key)
            for key in _FIELDS
            if getattr(visitor.fields, key) is not None
        }
        for key, value in visitor.fields.extra.items():
            if value is not None:
                fields.setdefault(key, value)
        out: dict[str, Any] = {"fields": fields}
        if visitor.id is not None:
            out["id"] = visitor.id
        elif chat_id is not None:
            out["id"] = str(chat_id)
        return out
    if isinstance(visitor, Mapping):
        payload = dict(visitor)
        # the agent side's own parser checks it (a wrong type names the field)
        parse_event(
            {
                "event": "new_message",
                "chat_id": 1,
                "visitor": payload,
                "message": {"kind": "visitor", "text": ""},
            }
        )
        return payload
    raise TypeError(
        f"visitor: expected a Visitor, a mapping or an id; got {type(visitor).__name__}"
    )


def preview_variables(chat_id: ChatId, visitor: VisitorLike = None) -> dict[str, str | None]:
    """The channel variables the platform will fill for this chat and visitor (seed 000's
    table), to check a visitor mapping before going live."""
    event = parse_event(
        {
            "event": "new_message",
            "chat_id": chat_id,
            "visitor": visitor_payload(visitor, chat_id),
            "message": {"kind": "visitor", "text": ""},
        }
    )
    return channel_variables(event)


# messages ------------------------------------------------------------------------------------
def text_message(text: str, *, message_id: str | None = None) -> TextMessage:
    """A visitor's text (``kind: "visitor"``) with a fresh message id unless given."""
    return TextMessage(id=message_id or new_message_id(), text=text)


def file_message(
    url: str | None = None,
    *,
    name: str | None = None,
    content_type: str | None = None,
    size: int | None = None,
    state: str | None = "ready",
    file_id: str | None = None,
    message_id: str | None = None,
) -> FileMessage:
    """A visitor's file (``kind: "file_visitor"``).

    ``state`` is the sending status: the platform processes the file only when it is
    ``"ready"`` (``None`` leaves the state out: Webim-style platforms read that as ready, a
    platform that follows seed 000 strictly never processes such a file). A file
    is typically sent while it uploads (``state="uploading"``, maybe without ``url``) and again,
    under the same ``file_id`` and a new message id, once it is ``"ready"`` with its ``url``.
    ``file_id`` defaults to the message id.
    """
    message_id = message_id or new_message_id()
    return FileMessage(
        id=message_id,
        file=FileInfo(
            id=file_id or message_id,
            state=state,
            name=name,
            content_type=content_type,
            size=size,
            url=url,
        ),
    )


def button_message(
    button_id: str,
    text: str,
    *,
    message_id: str | None = None,
    request_message_id: str | None = None,
) -> ButtonPress:
    """A press of a keyboard button (``kind: "keyboard_response"``): the button's id and the
    label the visitor saw (the agent receives the label as text). ``request_message_id`` is
    Webim's ``data.request.messageId`` (the keyboard's message), when the channel knows it."""
    return ButtonPress(
        id=message_id or new_message_id(),
        button=Button(id=str(button_id), text=text),
        request_message_id=request_message_id,
    )


def message_payload(message: InboundMessage) -> dict[str, Any]:
    """The wire JSON of one visitor message (the ``message`` of a ``new_message`` event)."""
    out: dict[str, Any] = {}
    if message.id is not None:
        out["id"] = message.id
    if isinstance(message, TextMessage):
        out["kind"] = "visitor"
        out["text"] = message.text
    elif isinstance(message, FileMessage):
        f = message.file
        data: dict[str, Any] = {
            key: value
            for key, value in (
                ("id", f.id),
                ("state", f.state),
                ("name", f.name),
                ("content_type", f.content_type),
                ("size", f.size),
                ("url", f.url),
            )
            if value is not None
        }
        out["kind"] = "file_visitor"
        out["data"] = data
    elif isinstance(message, ButtonPress):
        data = {"button": {"id": message.button.id, "text": message.button.text}}
        if message.request_message_id is not None:
            data["request"] = {"messageId": message.request_message_id}
        out["kind"] = "keyboard_response"
        out["data"] = data
    else:
        raise TypeError(
            f"expected a TextMessage, FileMessage or ButtonPress; got {type(message).__name__}"
        )
    return out


def event_payload(
    event: Event | None = None,
    *,
    chat_id: ChatId | None = None,
    message: InboundMessage | None = None,
    messages: Iterable[InboundMessage] | None = None,
    visitor: VisitorLike = None,
) -> dict[str, Any]:
    """The wire JSON of an event: a typed ``event``, or built from its parts.

    With ``message``: a ``new_message``; with ``messages``: a Webim ``new_chat`` (the chat handed
    to the bot with the visitor's messages so far). The result is checked by
    :func:`validate_event`.
    """
    if event is not None:
        if isinstance(event, NewMessageEvent):
            return event_payload(
                chat_id=event.chat_id, message=event.message, visitor=event.visitor
            )
        if isinstance(event, NewChatEvent):
            return event_payload(
                chat_id=event.chat_id, messages=event.messages, visitor=event.visitor
            )
        raise TypeError(f"expected a NewMessageEvent or NewChatEvent; got {type(event).__name__}")
    if chat_id is None:
        raise PayloadError("chat_id", "required field is missing", missing=True)
    if (message is None) == (messages is None):
        raise ValueError("give exactly one of message and messages")
    if message is not None:
        payload: dict[str, Any] = {
            "event": "new_message",
            "chat_id": chat_id,
            "visitor": visitor_payload(visitor, chat_id),
            "message": message_payload(message),
        }
    else:
        assert messages is not None
        payload = {
            "event": "new_chat",
            "chat": {"id": chat_id},
            "visitor": visitor_payload(visitor, chat_id),
            "messages": [message_payload(m) for m in messages],
        }
    validate_event(payload)
    return payload


_KINDS = frozenset(("visitor", "file_visitor", "keyboard_response"))


def validate_event(payload: Mapping[str, Any]) -> Event:
    """Check an event payload the way the platform will read it; return the typed event.

    Stricter than the platform on purpose: an unknown ``event`` or message ``kind`` (which the
    platform would answer 200 and ignore) is refused, every message must carry an ``id`` (the
    platform's dedupe key for a retried delivery) and a ``new_chat`` must carry at least one
    message of a known kind.

    Raises:
        PayloadError: naming the field (``message.kind``, ``messages.0.id``, ``chat_id``).
    """
    try:
        event = parse_event(payload)
    except UnsupportedEvent as exc:
        raise PayloadError(
            exc.field,
            f"unknown value {exc.value!r}: the platform would accept and silently ignore it",
        ) from None
    if isinstance(event, NewMessageEvent):
        if event.message.id is None:
            raise PayloadError("message.id", "required field is missing", missing=True)
        return event
    raw = payload.get("messages") or []
    for index, item in enumerate(raw):
        kind = item.get("kind") if isinstance(item, Mapping) else None
        if kind not in _KINDS:
            raise PayloadError(
                f"messages.{index}.kind",
                f"unknown value {kind!r}: the platform would skip the message",
            )
        if item.get("id") is None:
            raise PayloadError(f"messages.{index}.id", "required field is missing", missing=True)
    if not event.messages:
        raise PayloadError("messages", "a new_chat needs at least one message", missing=True)
    return event
