"""Variant 2 of seed 001: a bot talks to the visitor on any channel of the SDK and hands the
visitor to Omnidesk staff through a custom channel, with the transcript so far.

:class:`CustomChannelBridge` wraps the bot (recording the transcript), opens the case at the
handover, forwards the visitor's messages to the case while it is open and carries staff replies
back to the visitor's channel. Read-modify-write of its state (the transcript, the end of a
handover) is a compare-and-set (:func:`~omnichannel.runtime.stores.update_state`): workers of
several processes never lose each other's lines.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs

from omnichannel.channels.omnidesk.custom_channel import CustomChannel, StaffReply
from omnichannel.channels.omnidesk.models import OmnideskError
from omnichannel.models import (
    ChatId,
    FileLink,
    FileMessage,
    InboundMessage,
    OutboundMessage,
    TextReply,
)
from omnichannel.rendering import TRANSCRIPT, render_text
from omnichannel.runtime.bot import Bot, Channel, Turn, history_text
from omnichannel.runtime.conversation import record_for
from omnichannel.runtime.stores import Store, update_state

__all__ = ["CustomChannelBridge", "TranscriptLine", "render_transcript"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen(kw_only=True)
class TranscriptLine:
    """One line of a conversation before a handover: who (``"visitor"`` or ``"bot"``), the text,
    and when (Unix seconds)."""

    sender: str
    text: str
    at: float


def render_transcript(
    lines: Sequence[TranscriptLine],
    *,
    heading: str | None = "Conversation with the bot before the handover:",
    visitor_label: str = "Visitor",
    bot_label: str = "Bot",
) -> str:
    """The transcript as the text of the case's first message::

    Conversation with the bot before the handover:

    [2024-05-01 12:00:01 UTC] Visitor: Hello
    [2024-05-01 12:00:02 UTC] Bot: Hi! How can I help?
    """
    out = [heading, ""] if heading else []
    for line in lines:
        when = datetime.fromtimestamp(line.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        who = visitor_label if line.sender == "visitor" else bot_label
        out.append(f"[{when}] {who}: {line.text}")
    return "\n".join(out).strip()


def _reply_text(message: OutboundMessage) -> str:
    # a transcript line: text as written, keyboards numbered, files as links
    return "\n".join(render_text(message, TRANSCRIPT))


class _BridgedBot(Bot):
    """The user's bot with the bridge around it (see :meth:`CustomChannelBridge.wrap`)."""

    def __init__(self, inner: Bot, bridge: CustomChannelBridge) -> None:
        super().__init__()
        self.inner = inner
        self.bridge = bridge

    def on_text(self, pattern: Any = None) -> Any:
        """Register on the wrapped bot."""
        return self.inner.on_text(pattern)

    def on_file(self, pattern: Any = None) -> Any:
        """Register on the wrapped bot."""
        return self.inner.on_file(pattern)

    def on_button(self, pattern: Any = None) -> Any:
        """Register on the wrapped bot."""
        return self.inner.on_button(pattern)

    def on_message(self, pattern: Any = None) -> Any:
        """Register on the wrapped bot."""
        return self.inner.on_message(pattern)

    def on_error(self, handler: F) -> F:
        """Register on the wrapped bot."""
        return self.inner.on_error(handler)

    def use(self, middleware: F) -> F:
        """Add middleware to the wrapped bot."""
        return self.inner.use(middleware)

    def forget(self, channel: Any, chat_id: ChatId) -> None:
        """Erase a conversation's state and history (see :meth:`Bot.forget`)."""
        self.inner.forget(channel, chat_id)

    @property
    def is_echo(self) -> bool:
        """As the wrapped bot."""
        return self.inner.is_echo

    def handlers_for(self, message: InboundMessage) -> list[Callable[[Turn], Any]]:
        """As the wrapped bot."""
        return self.inner.handlers_for(message)

    def __call__(self, turn: Turn) -> None:
        """Forward to the case while handed over; else record and run the wrapped bot."""
        self.bridge._run(self.inner, turn)


class CustomChannelBridge:
    """Variant 2 of seed 001: the bot talks to the visitor on any channel of the SDK and hands
    the visitor to Omnidesk staff through a :class:`CustomChannel`.

    Wire it up with :meth:`wrap` and :meth:`handover`::

        bridge = CustomChannelBridge(desk)
        connector = Connector(bridge.wrap(bot), token=…, channel_url=…,
                              handover=bridge.handover)

    How the transcript is recorded: the wrapped bot stores every visitor text before the bot runs
    and every reply after it (and those sent before ``turn.handover()`` at the handover) in the
    custom channel's store, per chat, keeping the last ``max_transcript_lines``. On
    ``turn.handover()`` a new case is created through the custom channel with the rendered
    transcript (:func:`render_transcript`) as its first message, from the visitor (Omnidesk shows
    who wrote what inside it), and the stored transcript is cleared.

    While the case is open, the visitor's messages are added to the case as the user instead of
    reaching the bot, and staff replies (notes skipped) go back to the visitor's channel with
    ``channel.send(chat_id, [TextReply(…)])`` (attachments as :class:`~omnichannel.FileLink`).
    Before forwarding a visitor message the case status is read; once it is ``closed`` (see
    ``closed_statuses``) the handover ends and the bot answers again.

    Args:
        desk: the :class:`CustomChannel` cases are opened through.
        channels: the visitor-side channels (by their ``name``); the channel of a handed-over
            turn is remembered too, but after a restart staff replies need it registered here
            or with :meth:`connect`.
        user_custom_id: ``fn(turn) -> str``, the visitor's id in Omnidesk (default
            ``"{channel name}:{visitor id or chat id}"``).
        subject: the new case's subject (a string, or ``fn(turn) -> str``).
        handover_text: sent to the visitor when the handover starts ("An operator will answer
            here soon").
        labels, group_id: applied to the new case.
        check_case_status: read the case before forwarding a visitor message, to notice that
            it was closed.
        closed_statuses: statuses that end the handover.
        max_transcript_lines: lines kept per chat.
    """

    def __init__(
        self,
        desk: CustomChannel,
        *,
        channels: Iterable[Channel] = (),
        user_custom_id: Callable[[Turn], str] | None = None,
        subject: str | Callable[[Turn], str] = "Conversation handed over by the bot",
        handover_text: str | None = None,
        labels: Iterable[int] = (),
        group_id: int | None = None,
        check_case_status: bool = True,
        closed_statuses: Iterable[str] = ("closed",),
        max_transcript_lines: int = 50,
        name: str = "bridge",
    ) -> None:
        self.desk = desk
        self.user_custom_id = user_custom_id or _default_user_custom_id
        self.subject = subject
        self.handover_text = handover_text
        self.labels = tuple(int(i) for i in labels)
        self.group_id = group_id
        self.check_case_status = check_case_status
        self.closed_statuses = frozenset(closed_statuses)
        self.max_transcript_lines = max_transcript_lines
        self.name = name
        self._prefix = f"{desk.destination}:{name}"
        self._channels: dict[str, Channel] = {}
        self._recorded: weakref.WeakKeyDictionary[Turn, int] = weakref.WeakKeyDictionary()
        self.connect(*channels)
        desk.on_reply(self._on_staff_reply)

    def __repr__(self) -> str:
        return f"CustomChannelBridge(desk={self.desk!r}, channels={sorted(self._channels)!r})"

    @property
    def store(self) -> Store:
        """The store the bridge keeps transcripts and handovers in (the custom channel's)."""
        return self.desk.runtime.store

    def connect(self, *channels: Channel) -> None:
        """Register visitor-side channels staff replies may have to reach."""
        for channel in channels:
            self._channels[channel.name] = channel

    def wrap(self, bot: Bot) -> Bot:
        """``bot`` with the bridge around it: give this to the visitor-side channel."""
        return _BridgedBot(bot, self)

    # keys -----------------------------------------------------------------------------------
    def _chat_key(self, channel: str, chat_id: ChatId) -> str:
        return f"{self._prefix}:chat:{channel}:{chat_id}"

    def _transcript_key(self, channel: str, chat_id: ChatId) -> str:
        return f"{self._prefix}:transcript:{channel}:{chat_id}"

    def _user_key(self, user_custom_id: str) -> str:
        return f"{self._prefix}:user:{user_custom_id}"

    # transcript -----------------------------------------------------------------------------
    def transcript(self, channel: str, chat_id: ChatId) -> list[TranscriptLine]:
        """The recorded lines of a chat since its last handover."""
        state = self.store.get_state(self._transcript_key(channel, chat_id)) or {}
        return [
            TranscriptLine(sender=str(s), text=str(t), at=float(a))
            for s, t, a in state.get("lines", [])
        ]

    def _record(self, channel: str, chat_id: ChatId, lines: Iterable[tuple[str, str]]) -> None:
        new = [[sender, text, time.time()] for sender, text in lines if text]
        if not new:
            return

        def append(current: dict[str, Any] | None) -> dict[str, Any]:
            kept = [*(current or {}).get("lines", []), *new]
            return {"lines": kept[-self.max_transcript_lines :]}

        # compare-and-set: workers of other processes may record lines of the chat too
        update_state(self.store, self._transcript_key(channel, chat_id), append)

    def _record_replies(self, turn: Turn) -> None:
        done = self._recorded.get(turn, 0)
        fresh = turn.replies[done:]
        self._recorded[turn] = len(turn.replies)
        self._record(turn.channel.name, turn.chat_id, (("bot", _reply_text(m)) for m in fresh))

    def _forget_lines(self, channel: str, chat_id: ChatId, sent: Sequence[TranscriptLine]) -> None:
        """Drop the lines that went into a case (a line recorded meanwhile stays)."""
        gone = {(line.sender, line.text, line.at) for line in sent}

        def drop(current: dict[str, Any] | None) -> dict[str, Any] | None:
            rest = [
                line
                for line in (current or {}).get("lines", [])
                if (str(line[0]), str(line[1]), float(line[2])) not in gone
            ]
            return {"lines": rest} if rest else None

        update_state(self.store, self._transcript_key(channel, chat_id), drop)

    # handover state -------------------------------------------------------------------------
    def active_handover(self, channel: str, chat_id: ChatId) -> str | None:
        """The ``user_custom_id`` of the chat's open handover, or ``None``."""
        state = self.store.get_state(self._chat_key(channel, chat_id))
        if state and state.get("active"):
            return str(state["user_custom_id"])
        return None

    def end_handover(self, channel: str, chat_id: ChatId) -> None:
        """End a chat's handover: the bot answers the visitor again."""
        ended = [False]

        def end(current: dict[str, Any] | None) -> dict[str, Any] | None:
            ended[0] = bool(current and current.get("active"))
            return {**current, "active": False} if current else None

        update_state(self.store, self._chat_key(channel, chat_id), end)
        if ended[0]:
            log.info("omnidesk bridge: %s chat %s is back with the bot", channel, chat_id)

    def _case_closed(self, user_custom_id: str) -> bool:
        conversation = self.desk.conversation(user_custom_id)
        if conversation is None or conversation.case_id is None:
            return False  # the case is still being created
        try:
            case = self.desk.client.get_case(conversation.case_id)
        except OmnideskError as exc:
            if exc.error == "case_not_found" or exc.status == 404:
                return True
            log.warning("omnidesk bridge: could not read case %s: %s", conversation.case_id, exc)
            return False
        return case.status in self.closed_statuses

    # the bot side ---------------------------------------------------------------------------
    def _run(self, bot: Bot, turn: Turn) -> None:
        channel = turn.channel.name
        user = self.active_handover(channel, turn.chat_id)
        if user is not None:
            if self.check_case_status and self._case_closed(user):
                self.end_handover(channel, turn.chat_id)
            else:
                self._forward(user, turn)
                return
        self._record(channel, turn.chat_id, [("visitor", turn.text or "")])
        try:
            bot(turn)
        finally:
            self._record_replies(turn)
            self._recorded.pop(turn, None)

    def _forward(self, user_custom_id: str, turn: Turn) -> None:
        message = turn.message
        if isinstance(message, FileMessage):
            if not message.ready or not message.file.url:
                return
            text = message.file.name or message.file.url
            self.desk.send(user_custom_id, text, attachment_urls=[message.file.url])
        elif turn.text:
            self.desk.send(user_custom_id, turn.text)

    def handover(self, turn: Turn, params: Mapping[str, Any]) -> None:
        """Open an Omnidesk case with the transcript (the ``handover=`` callable of a
        :class:`~omnichannel.Connector`). Parameters: ``text`` (sent to the visitor first),
        ``subject``, ``user_custom_id``, ``labels``, ``group_id``."""
        params = dict(params)
        text = params.pop("text", self.handover_text)
        subject = params.pop("subject", None)
        if subject is None:
            subject = self.subject(turn) if callable(self.subject) else self.subject
        user = str(params.pop("user_custom_id", None) or self.user_custom_id(turn))
        labels = params.pop("labels", self.labels)
        group_id = params.pop("group_id", self.group_id)
        if params:
            raise TypeError(f"unknown handover parameter(s): {', '.join(sorted(params))}")
        if text:
            turn.reply(text)
        channel = turn.channel.name
        self.connect(turn.channel)
        self._record_replies(turn)
        lines = self.transcript(channel, turn.chat_id)
        content = render_transcript(lines) if lines else (turn.text or "(no messages)")
        fields = turn.event.visitor.fields
        self.store.set_state(
            self._chat_key(channel, turn.chat_id),
            {"user_custom_id": user, "active": True, "since": time.time()},
        )
        self.store.set_state(self._user_key(user), {"channel": channel, "chat_id": turn.chat_id})
        self.desk.send(
            user,
            content,
            user_full_name=fields.name,
            user_email=fields.email,
            user_phone=fields.phone,
            subject=subject,
            labels=labels,
            group_id=group_id,
            new_case=True,
        )
        self._forget_lines(channel, turn.chat_id, lines)
        log.info("omnidesk bridge: %s chat %s handed over as %s", channel, turn.chat_id, user)

    # the staff side -------------------------------------------------------------------------
    def _on_staff_reply(self, reply: StaffReply) -> None:
        user = reply.custom_user_id or self.desk.user_for_case(reply.case_id)
        target = self.store.get_state(self._user_key(user)) if user else None
        if not target:
            log.info("omnidesk bridge: reply to case %s is for no bridged chat", reply.case_id)
            return
        channel = self._channels.get(str(target["channel"]))
        if channel is None:
            log.error(
                "omnidesk bridge: staff reply %s is for channel %r, which is not connected "
                "(call bridge.connect(channel) at start-up)",
                reply.message_id,
                target["channel"],
            )
            return
        messages: list[OutboundMessage] = []
        if reply.text:
            messages.append(TextReply(text=reply.text))
        messages.extend(
            FileLink(url=a.url, name=a.name, media_type=a.mime_type)
            for a in reply.attachments
            if a.url
        )
        if messages:
            channel.send(target["chat_id"], messages)
            for message in messages:  # the visitor's turn.history: what the operator said
                record_for(channel, target["chat_id"], "operator", history_text(message))


def _default_user_custom_id(turn: Turn) -> str:
    visitor = turn.event.visitor.id
    return f"{turn.channel.name}:{visitor if visitor else turn.chat_id}"
