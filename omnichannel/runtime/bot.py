"""The Bot: handlers for text, files and button presses, and the turn they receive."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any, Protocol, TypeVar, Union

from omnichannel.models import (
    ButtonPress,
    Event,
    FileLink,
    FileMessage,
    InboundMessage,
    Keyboard,
    OutboundMessage,
    TextMessage,
    TextReply,
)
from omnichannel.protocol import agent_text, channel_variables
from omnichannel.runtime.outbox import current_turn_id

__all__ = ["Bot", "Channel", "HandlerResult", "Turn", "to_outbound"]

log = logging.getLogger(__name__)

ChatId = Union[int, str]
Reply = Union[str, OutboundMessage]
HandlerResult = Union[None, Reply, Iterable[Reply]]
Handler = Callable[["Turn"], HandlerResult]
ErrorHandler = Callable[["Turn", BaseException], HandlerResult]
F = TypeVar("F", bound=Callable[..., Any])


class Channel(Protocol):
    """What a turn needs from the channel it came through."""

    name: str

    def send(self, chat_id: ChatId, messages: Sequence[OutboundMessage]) -> None:
        """Queue messages for the visitor of ``chat_id`` (durably, in order)."""
        ...

    def handover(self, turn: Turn, **params: Any) -> None:
        """Hand the conversation to a human; raise :class:`NotSupported` if the channel can't."""
        ...


def to_outbound(result: HandlerResult) -> list[OutboundMessage]:
    """Normalize what a handler returned: ``None``, a ``str``, a message, or an iterable of them."""
    if result is None:
        return []
    if type(result) is str:
        return [TextReply(text=result)]
    if isinstance(result, (TextReply, Keyboard, FileLink)):
        return [result]
    out: list[OutboundMessage] = []
    for item in result:
        if isinstance(item, str):
            out.append(TextReply(text=item))
        elif isinstance(item, (TextReply, Keyboard, FileLink)):
            out.append(item)
        else:
            raise TypeError(
                f"a handler may return None, a str, an outbound message or a list of them; "
                f"got {type(item).__name__}"
            )
    return out


class Turn:
    """One visitor message being handled: what a handler receives.

    Attributes:
        event: the whole inbound event.
        message: the message this turn is about.
        channel: the channel it came through.
        text: the text the agent sees (:func:`omnichannel.agent_text`).
        chat_id: the chat to answer in.
        replies: what this turn has sent so far.
        id: the turn's id in the inbox, the same when a turn is run again after a crash (an
            idempotency key for calls your handler makes); ``None`` outside the runtime.
    """

    def __init__(self, event: Event, message: InboundMessage, channel: Channel) -> None:
        self.event = event
        self.message = message
        self.channel = channel
        self.chat_id: ChatId = event.chat_id
        self.text: str | None = agent_text(message)
        self.replies: list[OutboundMessage] = []
        self.handed_over = False
        self.id: str | None = current_turn_id()

    @cached_property
    def variables(self) -> dict[str, str | None]:
        """The channel variables of the event (:func:`omnichannel.channel_variables`)."""
        return channel_variables(self.event)

    def reply(self, *messages: Reply) -> None:
        """Send messages to the visitor: collected, and stored with the turn's completion (so a
        turn run again after a crash never sends them twice), then delivered in order."""
        out = to_outbound(messages)
        if out:
            self.replies.extend(out)
            self.channel.send(self.chat_id, out)

    def handover(self, **params: Any) -> None:
        """Hand the visitor to a human operator, the way the channel does it.

        Raises:
            NotSupported: the channel has no handover.
        """
        self.channel.handover(self, **params)
        self.handed_over = True

    def __repr__(self) -> str:
        return f"Turn(chat_id={self.chat_id!r}, kind={self.message.kind!r}, text={self.text!r})"


class Bot:
    """A bot: handlers registered with decorators, run once per visitor message.

    The handlers of the message's kind (:meth:`on_text`, :meth:`on_file`, :meth:`on_button`) run
    when there are any, else the :meth:`on_message` handlers; each in registration order. A
    handler returns ``None``, a ``str``, an outbound message or a list of them (sent as replies),
    or calls ``turn.reply(...)``. A bot with no handlers at all echoes the agent text.

    Example::

        bot = Bot()

        @bot.on_text
        def hello(turn):
            return f"You said: {turn.text}"
    """

    def __init__(self) -> None:
        self._by_kind: dict[type[Any], list[Handler]] = {
            TextMessage: [],
            FileMessage: [],
            ButtonPress: [],
        }
        self._any: list[Handler] = []
        self._errors: list[ErrorHandler] = []

    def on_text(self, handler: F) -> F:
        """Register a handler for text messages."""
        self._by_kind[TextMessage].append(handler)
        return handler

    def on_file(self, handler: F) -> F:
        """Register a handler for files (only ready files reach the bot)."""
        self._by_kind[FileMessage].append(handler)
        return handler

    def on_button(self, handler: F) -> F:
        """Register a handler for button presses (``turn.text`` is the button's label)."""
        self._by_kind[ButtonPress].append(handler)
        return handler

    def on_message(self, handler: F) -> F:
        """Register a handler for any message without a handler of its own kind."""
        self._any.append(handler)
        return handler

    def on_error(self, handler: F) -> F:
        """Register ``handler(turn, exc)``, called when a handler raises; it may reply."""
        self._errors.append(handler)
        return handler

    @property
    def is_echo(self) -> bool:
        """True when no handler is registered: the bot echoes the agent text."""
        return not (self._any or any(self._by_kind.values()))

    def handlers_for(self, message: InboundMessage) -> list[Handler]:
        """The handlers that will run for ``message``."""
        return self._by_kind.get(type(message)) or self._any

    def __call__(self, turn: Turn) -> None:
        """Run the bot on a turn: the handlers' replies go out through ``turn.reply``.

        A handler that raises is logged and reported to the :meth:`on_error` handlers; the
        exception is not re-raised (the delivery was already acknowledged).
        """
        if self.is_echo:
            if turn.text is not None:
                turn.reply(turn.text)
            return
        for handler in self.handlers_for(turn.message):
            try:
                turn.reply(*to_outbound(handler(turn)))
            except Exception as exc:
                self._report(turn, exc, handler)

    def _report(self, turn: Turn, exc: BaseException, handler: Callable[..., Any]) -> None:
        name = getattr(handler, "__qualname__", repr(handler))
        log.error(
            "handler %s raised %s for chat %s",
            name,
            type(exc).__name__,
            turn.chat_id,
            exc_info=exc,
        )
        for on_error in self._errors:
            try:
                turn.reply(*to_outbound(on_error(turn, exc)))
            except Exception:
                log.exception("on_error handler %s raised", getattr(on_error, "__qualname__", ""))
