"""Typed models of the Omnichannel protocol: inbound events and messages, outbound messages.

Pure attrs classes: no I/O, no JSON. Serialization lives in :mod:`omnichannel.codec`.

The inbound models have no ``__weakref__`` slot (``weakref_slot=False``): the fast parser
(:mod:`omnichannel._fastparse`) builds them as plain classes of the same layout and then sets
their class, which CPython refuses for slotted classes that carry a ``__weakref__`` slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal, Union

import attrs

__all__ = [
    "Button",
    "ButtonPress",
    "Event",
    "FileInfo",
    "FileLink",
    "FileMessage",
    "InboundMessage",
    "Keyboard",
    "NewChatEvent",
    "NewMessageEvent",
    "OutboundMessage",
    "SendMessage",
    "TextMessage",
    "TextReply",
    "Visitor",
    "VisitorFields",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

ChatId = Union[int, str]


@attrs.frozen(kw_only=True, weakref_slot=False)
class VisitorFields:
    """The visitor's profile as the channel sends it (``visitor.fields``).

    The seed's fields (``name, login, phone, email, site``) are typed attributes; every other
    key (Webim's ``display_name``, ``avatar_url``, ``info``, a channel's own) is kept as received
    in ``extra``, so a channel adding a field breaks nobody. :meth:`get` reads either.
    """

    name: str | None = None
    login: str | None = None
    phone: str | None = None
    email: str | None = None
    site: str | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False)

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``: a typed attribute for the seed's five fields, else from ``extra``."""
        if key in _KNOWN_VISITOR_FIELDS:
            value = getattr(self, key)
            return default if value is None else value
        return self.extra.get(key, default)


_KNOWN_VISITOR_FIELDS = frozenset(("name", "login", "phone", "email", "site"))


@attrs.frozen(kw_only=True, weakref_slot=False)
class Visitor:
    """The person writing to the agent: a pseudo-unique id from the channel and their fields."""

    id: str | None = None
    fields: VisitorFields = VisitorFields()


@attrs.frozen(kw_only=True, weakref_slot=False)
class Button:
    """One button of a keyboard: the id the bot chose and the label the visitor sees."""

    id: str
    text: str


@attrs.frozen(kw_only=True, weakref_slot=False)
class TextMessage:
    """A text from the visitor (``kind: "visitor"``)."""

    kind: Literal["visitor"] = attrs.field(default="visitor", init=False)
    id: str | None = None
    text: str


@attrs.frozen(kw_only=True, weakref_slot=False)
class FileInfo:
    """What the channel tells about a file (``message.data`` of a ``file_visitor``).

    Webim 2.0 names the type ``media_type`` and sends no ``state`` nor ``id``; the codec maps
    ``media_type`` to ``content_type`` and a missing ``state`` stays ``None`` (meaning ready).
    """

    id: str | None = None
    state: str | None = None
    name: str | None = None
    content_type: str | None = None
    size: int | None = None
    url: str | None = None


@attrs.frozen(kw_only=True, weakref_slot=False)
class FileMessage:
    """A file from the visitor (``kind: "file_visitor"``). The SDK never downloads it."""

    kind: Literal["file_visitor"] = attrs.field(default="file_visitor", init=False)
    id: str | None = None
    file: FileInfo

    @property
    def ready(self) -> bool:
        """True when the file may be processed: ``state == "ready"``, or no state (Webim 2.0)."""
        return self.file.state is None or self.file.state == "ready"


@attrs.frozen(kw_only=True, weakref_slot=False)
class ButtonPress:
    """A press of a keyboard button (``kind: "keyboard_response"``).

    ``request_message_id`` is Webim 2.0's ``data.request.messageId`` (the keyboard's message).
    """

    kind: Literal["keyboard_response"] = attrs.field(default="keyboard_response", init=False)
    id: str | None = None
    button: Button
    request_message_id: str | None = None


InboundMessage = Union[TextMessage, FileMessage, ButtonPress]


@attrs.frozen(kw_only=True, weakref_slot=False)
class NewMessageEvent:
    """``event: "new_message"``: one message from a visitor in chat ``chat_id``.

    ``raw`` is the decoded payload as received, unknown keys included.
    """

    event: Literal["new_message"] = attrs.field(default="new_message", init=False)
    chat_id: ChatId
    visitor: Visitor = Visitor()
    message: InboundMessage
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)

    @property
    def messages(self) -> tuple[InboundMessage, ...]:
        """The event's messages in order (here: exactly one)."""
        return (self.message,)


@attrs.frozen(kw_only=True, weakref_slot=False)
class NewChatEvent:
    """Webim 2.0 ``event: "new_chat"``: a chat handed to the bot, with its visitor messages.

    ``messages`` holds the visitor messages of kinds the SDK knows, in order; the history's
    operator and service messages stay in ``raw``.
    """

    event: Literal["new_chat"] = attrs.field(default="new_chat", init=False)
    chat_id: ChatId
    visitor: Visitor = Visitor()
    messages: tuple[InboundMessage, ...] = ()
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)


Event = Union[NewMessageEvent, NewChatEvent]


def _rows(value: Iterable[Iterable[Button]] | Iterable[Button]) -> tuple[tuple[Button, ...], ...]:
    rows: tuple[Any, ...] = tuple(value)
    if rows and isinstance(rows[0], Button):
        # a flat list of buttons is one row
        return (tuple(rows),)
    return tuple(tuple(row) for row in rows)


@attrs.frozen(kw_only=True)
class TextReply:
    """A text from the agent to the visitor (``kind: "operator"``). Plain text, no markup."""

    kind: Literal["operator"] = attrs.field(default="operator", init=False)
    text: str


@attrs.frozen(kw_only=True)
class Keyboard:
    """A keyboard (``kind: "keyboard"``): rows of buttons. A flat list of buttons is one row.

    ``text`` is not part of the wire format: the omnichannel connector sends it as an operator
    text just before the keyboard, channels without buttons as the title of the numbered list
    they render instead (see :mod:`omnichannel.rendering`).
    """

    kind: Literal["keyboard"] = attrs.field(default="keyboard", init=False)
    buttons: tuple[tuple[Button, ...], ...] = attrs.field(converter=_rows)
    text: str | None = attrs.field(default=None, eq=False)

    @property
    def flat(self) -> tuple[Button, ...]:
        """All buttons, row by row."""
        return tuple(b for row in self.buttons for b in row)


@attrs.frozen(kw_only=True)
class FileLink:
    """A file from the agent, sent as a link (``kind: "file_operator"``)."""

    kind: Literal["file_operator"] = attrs.field(default="file_operator", init=False)
    url: str
    name: str | None = None
    media_type: str | None = None


OutboundMessage = Union[TextReply, Keyboard, FileLink]


@attrs.frozen(kw_only=True)
class SendMessage:
    """The body of ``POST {channel_url}/send_message``: one outbound message for one chat."""

    chat_id: ChatId
    message: OutboundMessage
