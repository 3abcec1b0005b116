"""The Bot: handlers for text, files and button presses, middleware, and the turn they receive.

Handlers, error handlers and middleware may be plain functions or ``async def`` functions; the
async ones run on the runtime's event loop (:mod:`omnichannel.runtime.aio`). A turn carries the
conversation's durable ``state``, the visitor's ``user_state`` and the ``history`` of the
conversation (:mod:`omnichannel.runtime.conversation`), committed with the turn.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
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
from omnichannel.rendering import TRANSCRIPT, render_text
from omnichannel.runtime import aio
from omnichannel.runtime.conversation import (
    History,
    TurnRecords,
    conversation_key,
    current_records,
    user_key,
)
from omnichannel.runtime.outbox import current_turn_id

__all__ = [
    "DEFAULT_ERROR_REPLY",
    "Bot",
    "Channel",
    "HandlerResult",
    "Middleware",
    "Turn",
    "history_text",
    "to_outbound",
]

log = logging.getLogger(__name__)

ChatId = Union[int, str]
Reply = Union[str, OutboundMessage]
HandlerResult = Union[None, Reply, Iterable[Reply]]
Handler = Callable[["Turn"], Any]
ErrorHandler = Callable[["Turn", BaseException], Any]
Next = Callable[[], Any]
Middleware = Callable[["Turn", Next], Any]
"""``middleware(turn, next)``: call ``next()`` (``await next()`` in an ``async def`` one) to run
the rest of the chain and the handlers; don't, to stop there (it may reply itself)."""
Matcher = Callable[["Turn"], bool]
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_ERROR_REPLY = "Sorry, something went wrong on our side. Please try again in a moment."
"""What the visitor reads when a handler raises and no ``on_error`` handler dealt with it."""

DAY = 24 * 3600.0


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


_OUTBOUND = (TextReply, Keyboard, FileLink)


def _outbound(messages: tuple[Reply, ...]) -> list[OutboundMessage]:
    # to_outbound of turn.reply's arguments; one reply (the usual case) without the loop
    if len(messages) == 1:
        message = messages[0]
        if type(message) is str:
            return [TextReply(text=message)]
        if isinstance(message, _OUTBOUND):
            return [message]
    return to_outbound(messages)


def history_text(message: OutboundMessage) -> str:
    """The text a reply leaves in the history (a keyboard as its numbered list, a file as its
    link), as a channel without buttons would show it."""
    if isinstance(message, TextReply):  # as written: the transcript keeps markdown, no limit
        return message.text
    return "\n".join(render_text([message], TRANSCRIPT))


def _destination(channel: Any) -> str:
    return str(getattr(channel, "destination", None) or channel.name)


def _store_of(channel: Any) -> Any:
    runtime = getattr(channel, "runtime", None)
    return getattr(runtime, "store", None)


class Turn:
    """One visitor message being handled: what a handler receives.

    Attributes:
        event: the whole inbound event.
        message: the message this turn is about.
        channel: the channel it came through.
        text: the text the agent sees (:func:`omnichannel.agent_text`).
        chat_id: the chat to answer in.
        replies: what this turn has sent so far.
        match: the ``re.Match`` of the pattern that chose the running handler (``None`` when it
            was not chosen by a pattern).
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
        self.match: re.Match[str] | None = None
        self.id: str | None = current_turn_id()
        self.bot: Bot | None = None
        self._records = current_records() or TurnRecords(None)
        self._key: str | None = None

    @cached_property
    def variables(self) -> dict[str, str | None]:
        """The channel variables of the event (:func:`omnichannel.channel_variables`)."""
        return channel_variables(self.event)

    # state and history -------------------------------------------------------------------------
    def _settings(self) -> tuple[float | None, int]:
        bot = self.bot
        return (bot.state_ttl, bot.history_size) if bot is not None else (30 * DAY, 20)

    @property
    def _conversation_key(self) -> str:
        key = self._key
        if key is None:
            key = self._key = conversation_key(_destination(self.channel), self.chat_id)
        return key

    @property
    def state(self) -> dict[str, Any]:
        """The conversation's state: a mutable, JSON-serializable dict kept per channel and chat.

        Changes are saved with the turn's completion, atomically with its replies (a turn run
        again after a crash does not apply them twice); shared by every worker on the store.
        """
        ttl, keep = self._settings()
        return self._records.get(self._conversation_key, ttl=ttl, keep=keep).state

    @property
    def visitor_id(self) -> str:
        """The visitor's id on the channel (the chat id when the channel sends none)."""
        visitor = getattr(self.event, "visitor", None)
        found = getattr(visitor, "id", None)
        return str(found if found not in (None, "") else self.chat_id)

    @property
    def user_state(self) -> dict[str, Any]:
        """The visitor's state (per channel and :attr:`visitor_id`), saved like :attr:`state`."""
        ttl, _ = self._settings()
        key = user_key(_destination(self.channel), self.visitor_id)
        return self._records.get(key, ttl=ttl).state

    @property
    def history(self) -> History:
        """The last messages of the conversation, oldest first, ending with this turn's
        message and the replies sent so far (``Bot(history=N)`` keeps N)."""
        ttl, keep = self._settings()
        if keep <= 0:
            return History()
        return History(self._records.get(self._conversation_key, ttl=ttl, keep=keep).history())

    def _remember(self, role: str, text: str) -> None:
        bot = self.bot
        ttl, keep = (bot.state_ttl, bot.history_size) if bot is not None else (30 * DAY, 20)
        if keep > 0:
            self._records.append(self._conversation_key, role, text, ttl=ttl, keep=keep, at=None)

    # actions --------------------------------------------------------------------------------
    def reply(self, *messages: Reply) -> None:
        """Send messages to the visitor: collected, and stored with the turn's completion (so a
        turn run again after a crash never sends them twice), then delivered in order."""
        out = _outbound(messages)
        if out:
            self.replies.extend(out)
            self.channel.send(self.chat_id, out)
            for message in out:
                self._remember("bot", history_text(message))

    def handover(self, **params: Any) -> None:
        """Hand the visitor to a human operator, the way the channel does it.

        Raises:
            NotSupported: the channel has no handover.
        """
        self.channel.handover(self, **params)
        self.handed_over = True

    def __repr__(self) -> str:
        return f"Turn(chat_id={self.chat_id!r}, kind={self.message.kind!r}, text={self.text!r})"


class _Registered:
    """What ``@bot.on_text`` returns for a callable: the function itself when it was a handler
    (calling it calls the function), or, when it is used as a decorator itself
    (``@bot.on_text(predicate)``), the registration of the decorated handler under it."""

    def __init__(self, bot: Bot, kind: type[Any] | None, fn: Callable[..., Any]) -> None:
        self._bot = bot
        self._kind = kind
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if (
            len(args) == 1
            and not kwargs
            and callable(args[0])
            and not isinstance(args[0], Turn)
            and self._bot._unregister(self._kind, self._fn)
        ):
            predicate = self._fn
            if aio.is_async(predicate):
                raise TypeError("a predicate must be a plain function returning a bool")
            return self._bot._register(self._kind, args[0], predicate)
        return self._fn(*args, **kwargs)


class Bot:
    """A bot: handlers registered with decorators, run once per visitor message.

    The handlers of the message's kind (:meth:`on_text`, :meth:`on_file`, :meth:`on_button`)
    whose pattern matches run, in registration order; when none matches, the handlers of the
    kind registered without a pattern run (so ``@bot.on_text`` is the catch-all beside
    ``@bot.on_text(r"^/help")``); when the kind has none, the :meth:`on_message` ones, chosen
    the same way. A handler returns ``None``, a ``str``, an outbound message or a
    list of them (sent as replies), or calls ``turn.reply(...)``. A bot with no handlers at all
    echoes the agent text. Middleware (:meth:`use`) runs around the handlers.

    Any handler, error handler or middleware may be ``async def``: it runs on an event loop the
    runtime owns (one per process, so an async client made once works in every turn).

    Args:
        history: messages of the conversation kept for ``turn.history`` (0: none kept).
        state_ttl: seconds ``turn.state``, ``turn.user_state`` and the history are kept after
            their last change (``None``: for ever).
        error_reply: sent to the visitor when a handler raises and no :meth:`on_error`
            handler dealt with it (``None``: send nothing).

    Example::

        bot = Bot()

        @bot.on_text
        async def hello(turn):
            turn.state["count"] = turn.state.get("count", 0) + 1
            return f"You said: {turn.text} ({turn.state['count']} messages so far)"
    """

    def __init__(
        self,
        *,
        history: int = 20,
        state_ttl: float | None = 30 * DAY,
        error_reply: str | None = DEFAULT_ERROR_REPLY,
    ) -> None:
        if history < 0:
            raise ValueError("history must be 0 or more")
        self.history_size = history
        self.state_ttl = state_ttl
        self.error_reply = error_reply
        self._by_kind: dict[type[Any], list[tuple[Handler, Matcher | None]]] = {
            TextMessage: [],
            FileMessage: [],
            ButtonPress: [],
        }
        self._any: list[tuple[Handler, Matcher | None]] = []
        self._errors: list[ErrorHandler] = []
        self._middleware: list[Middleware] = []
        self._channels: dict[str, Any] = {}
        self._plain: set[Callable[..., Any]] = set()  # handlers known not to be async

    # registration ---------------------------------------------------------------------------
    def _register(self, kind: type[Any] | None, handler: F, matcher: Matcher | None) -> F:
        aio.check_callable(handler, "a handler")
        (self._any if kind is None else self._by_kind[kind]).append((handler, matcher))
        if inspect.isfunction(handler) and not aio.is_async(handler):
            self._plain.add(handler)
        return handler

    def _unregister(self, kind: type[Any] | None, handler: Callable[..., Any]) -> bool:
        handlers = self._any if kind is None else self._by_kind[kind]
        for i, (registered, matcher) in enumerate(handlers):
            if registered is handler and matcher is None:
                del handlers[i]
                return True
        return False

    def _on(self, kind: type[Any] | None, arg: Any, what: str) -> Any:
        if arg is None:
            return lambda handler: self._register(kind, handler, None)
        if isinstance(arg, (str, re.Pattern)):
            matcher = self._pattern(kind, re.compile(arg))
            return lambda handler: self._register(kind, handler, matcher)
        aio.check_callable(arg, what)
        self._register(kind, arg, None)
        return _Registered(self, kind, arg)

    @staticmethod
    def _pattern(kind: type[Any] | None, pattern: re.Pattern[str]) -> Matcher:
        def matches(turn: Turn) -> bool:
            texts = [turn.text or ""]
            if kind is ButtonPress and isinstance(turn.message, ButtonPress):
                texts.insert(0, turn.message.button.id)
            for text in texts:
                found = pattern.search(text)
                if found is not None:
                    turn.match = found
                    return True
            return False

        matches.pattern = pattern.pattern  # type: ignore[attr-defined]
        return matches

    def on_text(self, pattern: Any = None) -> Any:
        """Register a handler for text messages: ``@bot.on_text``, or only for texts matching
        a regex (``@bot.on_text(r"^/start")``, searched; ``turn.match`` holds the match) or a
        predicate (``@bot.on_text(lambda turn: …)``)."""
        return self._on(TextMessage, pattern, "a text handler")

    def on_file(self, pattern: Any = None) -> Any:
        """Register a handler for files (only ready files reach the bot); a pattern or
        predicate as for :meth:`on_text` (a pattern is searched in the file's text)."""
        return self._on(FileMessage, pattern, "a file handler")

    def on_button(self, pattern: Any = None) -> Any:
        """Register a handler for button presses (``turn.text`` is the button's label); a
        pattern is searched in the button's id, then its label."""
        return self._on(ButtonPress, pattern, "a button handler")

    def on_message(self, pattern: Any = None) -> Any:
        """Register a handler for any message no handler of its own kind took."""
        return self._on(None, pattern, "a message handler")

    def on_error(self, handler: F) -> F:
        """Register ``handler(turn, exc)``, called when a handler or middleware raises; it may
        reply. Once one ran without raising, ``error_reply`` is not sent."""
        aio.check_callable(handler, "an error handler")
        self._errors.append(handler)
        return handler

    def use(self, middleware: F) -> F:
        """Add ``middleware(turn, next)`` around the handlers (in the order added); usable as a
        decorator. It calls ``next()`` (``await next()`` when async) to go on, or returns
        without doing so to stop the turn there (it may reply itself)."""
        aio.check_callable(middleware, "a middleware")
        self._middleware.append(middleware)
        return middleware

    @property
    def is_echo(self) -> bool:
        """True when no handler is registered: the bot echoes the agent text."""
        return not (self._any or any(self._by_kind.values()))

    def handlers_for(self, message: InboundMessage) -> list[Handler]:
        """The handlers registered for ``message``'s kind (before patterns are applied)."""
        own = self._by_kind.get(type(message))
        return [h for h, _ in own] if own else [h for h, _ in self._any]

    def _select(self, turn: Turn) -> list[tuple[Handler, Matcher | None]]:
        # the handlers of the kind whose pattern matches; else its handlers without a pattern;
        # else the same among the on_message ones
        Chosen = list[tuple[Handler, Matcher | None]]
        for candidates in (self._by_kind.get(type(turn.message)) or [], self._any):
            matched: Chosen = [(h, m) for h, m in candidates if m is not None and m(turn)]
            if matched:
                return matched
            bare: Chosen = [(h, None) for h, m in candidates if m is None]
            if bare:
                return bare
        return []

    # state ----------------------------------------------------------------------------------
    def forget(self, channel: Any, chat_id: ChatId) -> None:
        """Erase a conversation: its ``state`` and ``history`` (on request of the visitor).

        ``channel`` is the channel object (or the name of one this bot served since start).
        """
        channel = self._channel(channel)
        key = conversation_key(_destination(channel), chat_id)
        self._erase(channel, key)

    def forget_user(self, channel: Any, visitor_id: object) -> None:
        """Erase a visitor's ``user_state`` on ``channel``."""
        channel = self._channel(channel)
        self._erase(channel, user_key(_destination(channel), visitor_id))

    def _channel(self, channel: Any) -> Any:
        if isinstance(channel, str):
            found = self._channels.get(channel)
            if found is None:
                raise ValueError(
                    f"this bot has served no channel named {channel!r} yet; pass the channel"
                )
            return found
        return channel

    @staticmethod
    def _erase(channel: Any, key: str) -> None:
        records = current_records()
        if records is not None:
            records.forget(key)
        store = _store_of(channel)
        if store is None:
            raise ValueError(f"{channel!r} has no store (not attached to a runtime)")
        store.set_state(key, None)

    # running --------------------------------------------------------------------------------
    def __call__(self, turn: Turn) -> None:
        """Run the bot on a turn: middleware, then the chosen handlers; their replies go out
        through ``turn.reply``.

        A handler or middleware that raises is logged and reported to the :meth:`on_error`
        handlers (else ``error_reply`` is sent); the exception is not re-raised (the delivery
        was already acknowledged).
        """
        turn.bot = self
        self._channels.setdefault(turn.channel.name, turn.channel)
        if turn.text is not None:
            turn._remember("user", turn.text)
        self._run_from(turn, 0)

    def _run_from(self, turn: Turn, index: int) -> None:
        """Run middleware ``index`` onwards, then the handlers, from a worker thread."""
        if index == len(self._middleware):
            self._dispatch(turn)
            return
        middleware = self._middleware[index]
        if aio.is_async(middleware):
            # the rest of the chain runs on the loop too (no thread hop per step)
            aio.run_coroutine(self._arun_from(turn, index))
            return
        called = [False]

        def go_on() -> None:
            if not called[0]:
                called[0] = True
                self._run_from(turn, index + 1)

        try:
            _settle(middleware(turn, go_on))
        except Exception as exc:
            self._failed(turn, exc, middleware)

    async def _arun_from(self, turn: Turn, index: int) -> None:
        """The same, on the event loop: async parts awaited, plain ones run on a thread."""
        if index == len(self._middleware):
            await self._adispatch(turn)
            return
        middleware = self._middleware[index]
        if not aio.is_async(middleware):
            await aio.run_sync(self._run_from, turn, index)
            return
        called = [False]

        async def go_on() -> None:
            if not called[0]:
                called[0] = True
                await self._arun_from(turn, index + 1)

        try:
            await middleware(turn, go_on)
        except Exception as exc:
            await aio.run_sync(self._failed, turn, exc, middleware)

    def _chosen(self, turn: Turn) -> list[Handler]:
        if self.is_echo:
            return [_echo]
        selected = self._select(turn)
        turn.match = None  # each pattern sets it again just before its handler runs
        return [handler if m is None else _matched(handler, m) for handler, m in selected]

    def _dispatch(self, turn: Turn) -> None:
        for handler in self._chosen(turn):
            try:
                if handler is _echo:  # (the bot without handlers: nothing to await)
                    result: Any = turn.text
                elif handler in self._plain:
                    result = _settle(handler(turn))
                else:
                    result = _settle(_invoke(handler, turn))
                if result is not None:
                    turn.reply(*to_outbound(result))
            except Exception as exc:
                self._failed(turn, exc, handler)

    async def _adispatch(self, turn: Turn) -> None:
        for handler in self._chosen(turn):
            if not aio.is_async(handler):
                await aio.run_sync(self._dispatch_one, turn, handler)
                continue
            try:
                result = await handler(turn)
                if inspect.isawaitable(result):
                    result = await result
                turn.reply(*to_outbound(result))
            except Exception as exc:
                await aio.run_sync(self._failed, turn, exc, handler)

    def _dispatch_one(self, turn: Turn, handler: Handler) -> None:
        try:
            turn.reply(*to_outbound(_settle(_invoke(handler, turn))))
        except Exception as exc:
            self._failed(turn, exc, handler)

    def _failed(self, turn: Turn, exc: BaseException, where: Callable[..., Any]) -> None:
        name = getattr(where, "__qualname__", repr(where))
        log.error(
            "handler %s raised %s for chat %s", name, type(exc).__name__, turn.chat_id, exc_info=exc
        )
        handled = False
        for on_error in self._errors:
            try:
                turn.reply(*to_outbound(_settle(_invoke(on_error, turn, exc))))
                handled = True
            except Exception:
                log.exception("on_error handler %s raised", getattr(on_error, "__qualname__", ""))
        if not handled and self.error_reply:
            try:
                turn.reply(self.error_reply)
            except Exception:
                log.exception("the error reply could not be sent to chat %s", turn.chat_id)


def _echo(turn: Turn) -> str | None:
    return turn.text


def _matched(handler: Handler, matcher: Matcher) -> Handler:
    """``handler`` with ``turn.match`` set by its pattern first (patterns set it when run)."""
    if getattr(matcher, "pattern", None) is None:
        return handler
    if aio.is_async(handler):

        async def run_async(turn: Turn) -> Any:
            matcher(turn)
            return await handler(turn)

        functools.update_wrapper(run_async, handler)
        return run_async

    def run(turn: Turn) -> Any:
        matcher(turn)
        return handler(turn)

    functools.update_wrapper(run, handler)
    return run


def _invoke(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``: an ``async def`` one on the runtime's event loop, a plain one here."""
    if aio.is_async(fn):
        return aio.run_coroutine(fn(*args))
    return fn(*args)


def _settle(result: Any) -> Any:
    """A plain function that returned an awaitable (a lambda around a coroutine): await it."""
    if result is None or type(result) is str:
        return result
    if inspect.isawaitable(result):
        return aio.run_coroutine(result)
    return result
