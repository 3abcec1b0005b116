"""One renderer for every channel: what a channel can show, and the fallbacks for what it can't.

A channel declares its :class:`Capabilities` once; :func:`render` turns the bot's outbound
messages into what the channel can send:

- a :class:`~omnichannel.Keyboard` becomes a numbered text list (its ``text`` as the title, then
  ``1. Label`` lines, then the channel's ``keyboard_footer``) where there are no native buttons;
  where the native keyboard message cannot carry a title (the omnichannel / Webim ``keyboard``
  message), the ``text`` goes out as a text message just before the keyboard;
- a :class:`~omnichannel.FileLink` becomes the text ``"name: url"`` (or the bare URL) where the
  channel has no file messages;
- a :class:`~omnichannel.TextReply` loses its markdown where the channel shows no markup, and
  a text longer than ``max_length`` is split on word boundaries into several messages.

:func:`choice_from_text` is the way back: a typed ``2``, ``2.``, ``2)`` or the exact label of a
button becomes that button, so channels without buttons still deliver button presses. Channels
that remember the last keyboard between messages store it with :func:`keyboard_state` and read
it back with :func:`buttons_from_state`.

Everything here is pure: no I/O, no store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from omnichannel.models import Button, FileLink, Keyboard, OutboundMessage, TextReply
from omnichannel.text import numbered_list, plain_text, split_text

__all__ = [
    "OMNICHANNEL",
    "OMNIDESK",
    "TRANSCRIPT",
    "WEBEX_CONNECT",
    "Capabilities",
    "buttons_from_state",
    "choice_from_text",
    "file_text",
    "keyboard_state",
    "numbered_keyboard",
    "render",
    "render_text",
]


def _positive_or_none(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a channel can show; :func:`render` falls back to text for the rest.

    The defaults describe the plainest channel: text only, no markup, no length limit.

    Attributes:
        buttons: the channel has native keyboards; else a keyboard becomes a numbered list.
        keyboard_text: a native keyboard message shows its title (``Keyboard.text``) itself;
            else the title is sent as a text message just before the keyboard.
        files: the channel has native file messages; else a file is sent as a link in text.
        markdown: the channel shows markdown; else texts are sent as plain text.
        max_length: texts longer than this are split into several messages (``None``: never).
        keyboard_footer: a line under numbered keyboards ("Reply with a number").
        skip_empty: empty texts are not sent (a channel that refuses empty messages).
    """

    buttons: bool = False
    keyboard_text: bool = False
    files: bool = False
    markdown: bool = False
    max_length: int | None = attrs.field(default=None, validator=_positive_or_none)
    keyboard_footer: str | None = None
    skip_empty: bool = False


OMNICHANNEL = Capabilities(buttons=True, keyboard_text=False, files=True, max_length=1000)
"""The omnichannel universal connector (Webim Bot API 2.0): native keyboards without a title,
files as ``file_operator`` links, plain text, and 1000 characters per message by default."""

OMNIDESK = Capabilities(skip_empty=True)
"""A message inside an Omnidesk case: text only (keyboards numbered, files as links)."""

WEBEX_CONNECT = Capabilities()
"""A Webex Connect generic-bot ``1001`` message: text only (keyboards numbered, files as links)."""

TRANSCRIPT = Capabilities(markdown=True)
"""A line of a transcript (the Omnidesk bridge): text as written, keyboards numbered, links."""


def numbered_keyboard(keyboard: Keyboard, footer: str | None = None) -> str:
    """A keyboard as numbered text: the title, ``1. Label`` lines, then ``footer``."""
    text = numbered_list(keyboard.text, [button.text for button in keyboard.flat])
    return f"{text}\n{footer}" if footer else text


def file_text(file: FileLink) -> str:
    """A file as text: ``"name: url"``, or the bare URL when the file has no name."""
    return f"{file.name}: {file.url}" if file.name else file.url


def _add_text(
    out: list[OutboundMessage], text: str, capabilities: Capabilities, original: TextReply | None
) -> None:
    limit = capabilities.max_length
    parts = split_text(text, limit) if limit is not None and len(text) > limit else [text]
    for part in parts:
        if not part and capabilities.skip_empty:
            continue
        if original is not None and len(parts) == 1 and part == original.text:
            out.append(original)  # unchanged: the very message (a subclass keeps its fields)
        else:
            out.append(TextReply(text=part))


def _add_prose(out: list[OutboundMessage], message: TextReply, capabilities: Capabilities) -> None:
    text = message.text if capabilities.markdown else plain_text(message.text)
    _add_text(out, text, capabilities, message)


def render(
    messages: OutboundMessage | Iterable[OutboundMessage], capabilities: Capabilities
) -> list[OutboundMessage]:
    """The messages a channel with ``capabilities`` sends for ``messages``, in order.

    - :class:`~omnichannel.TextReply`: plain text unless ``markdown``; split into parts of at
      most ``max_length`` characters. An unchanged text is the very message given.
    - :class:`~omnichannel.Keyboard`: without ``buttons``, the numbered text of
      :func:`numbered_keyboard` (with ``keyboard_footer``); with ``buttons`` but not
      ``keyboard_text``, its ``text`` (when set) as a :class:`~omnichannel.TextReply` first,
      then the keyboard; with both, the keyboard as it is.
    - :class:`~omnichannel.FileLink`: without ``files``, the text of :func:`file_text`.

    Texts that stand for a keyboard or a file are split too, but keep their markup.

    Raises:
        TypeError: an item is not an outbound message.
    """
    items: Iterable[Any] = (
        [messages] if isinstance(messages, (TextReply, Keyboard, FileLink)) else messages
    )
    out: list[OutboundMessage] = []
    for message in items:
        if isinstance(message, TextReply):
            _add_prose(out, message, capabilities)
        elif isinstance(message, Keyboard):
            if not capabilities.buttons:
                text = numbered_keyboard(message, capabilities.keyboard_footer)
                _add_text(out, text, capabilities, None)
                continue
            if message.text and not capabilities.keyboard_text:
                _add_prose(out, TextReply(text=message.text), capabilities)
            out.append(message)
        elif isinstance(message, FileLink):
            if capabilities.files:
                out.append(message)
            else:
                _add_text(out, file_text(message), capabilities, None)
        else:
            raise TypeError(f"expected an outbound message, got {type(message).__name__}")
    return out


def render_text(
    messages: OutboundMessage | Iterable[OutboundMessage], capabilities: Capabilities
) -> list[str]:
    """The texts a text-only channel sends for ``messages`` (:func:`render`, as strings).

    Raises:
        ValueError: ``capabilities`` allow native buttons or files (not text-only).
        TypeError: an item is not an outbound message.
    """
    if capabilities.buttons or capabilities.files:
        raise ValueError("render_text needs the capabilities of a text-only channel")
    return [m.text for m in render(messages, capabilities) if isinstance(m, TextReply)]


_CHOICE = re.compile(r"\s*(\d{1,3})\s*[.)]?\s*")


def choice_from_text(text: str, buttons: Sequence[Button]) -> Button | None:
    """The button a typed answer picks, or ``None``.

    ``"2"``, ``" 2. "`` and ``"2)"`` pick the second button (counted from 1, row by row; a
    number out of range picks nothing); any other text picks the button whose label it is,
    ignoring case and surrounding whitespace.
    """
    match = _CHOICE.fullmatch(text)
    if match is not None:
        index = int(match.group(1))
        return buttons[index - 1] if 1 <= index <= len(buttons) else None
    wanted = text.strip().casefold()
    if not wanted:
        return None
    for button in buttons:
        if button.text.strip().casefold() == wanted:
            return button
    return None


def keyboard_state(keyboard: Keyboard | Iterable[Button]) -> list[list[str]]:
    """The JSON a channel stores to map the next answer back: ``[[id, label], ...]``."""
    buttons = keyboard.flat if isinstance(keyboard, Keyboard) else keyboard
    return [[button.id, button.text] for button in buttons]


def buttons_from_state(state: Any) -> list[Button]:
    """The buttons stored by :func:`keyboard_state` (malformed entries are skipped)."""
    if not isinstance(state, (list, tuple)):
        return []
    return [
        Button(id=str(entry[0]), text=str(entry[1]))
        for entry in state
        if isinstance(entry, (list, tuple)) and len(entry) == 2
    ]
