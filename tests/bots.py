"""Bots the process tests load with ``--bot tests/bots.py:bot`` (or ``:counter``,
``:visitor_counter``, ``:chat_visitor_counter``, ``:historian``).

``OMNICHANNEL_TEST_BOT_DELAY`` (seconds) makes each turn slow; ``OMNICHANNEL_TEST_BOT_MARKS``
names a file where each turn appends one line when it starts (so a test knows turns are running).
"""

from __future__ import annotations

import json
import os
import time

from omnichannel import Bot, Turn

DELAY = float(os.environ.get("OMNICHANNEL_TEST_BOT_DELAY", "0") or 0)
MARKS = os.environ.get("OMNICHANNEL_TEST_BOT_MARKS")

bot = Bot()


@bot.on_text
def slow_echo(turn: Turn) -> str | None:
    """Mark the start, wait ``DELAY``, echo the text."""
    if MARKS:
        fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{turn.chat_id} {turn.text}\n".encode())
        finally:
            os.close(fd)
    if DELAY:
        time.sleep(DELAY)
    return turn.text


def _mark_and_wait(turn: Turn) -> None:
    """Mark the turn (``"{pid} {chat id} {text}"``, one line), then wait ``DELAY``."""
    if MARKS:
        fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {turn.chat_id} {turn.text}\n".encode())
        finally:
            os.close(fd)
    if DELAY:
        time.sleep(DELAY)


counter = Bot()
"""``--bot tests/bots.py:counter``: counts the chat's messages in ``turn.state``; replies
``"{text} n={count}"`` (marks and delays as :data:`bot` does, between the read and the write)."""


@counter.on_text
def count(turn: Turn) -> str:
    n = turn.state.get("n", 0) + 1
    _mark_and_wait(turn)
    turn.state["n"] = n
    return f"{turn.text} n={n}"


visitor_counter = Bot()
"""``--bot tests/bots.py:visitor_counter``: counts the visitor's messages (every chat) in
``turn.user_state``; replies ``"{text} u={count}"``."""


@visitor_counter.on_text
def count_visitor(turn: Turn) -> str:
    n = turn.user_state.get("n", 0) + 1
    _mark_and_wait(turn)
    turn.user_state["n"] = n
    return f"{turn.text} u={n}"


historian = Bot()
"""``--bot tests/bots.py:historian``: echoes ``"echo {text}"``; to ``"show"`` it answers the
history as JSON ``[[role, text], ...]``."""


@historian.on_text
def echo_or_show(turn: Turn) -> str:
    if turn.text == "show":
        return json.dumps([[entry.role, entry.text] for entry in turn.history])
    return f"echo {turn.text}"


chat_visitor_counter = Bot()
"""``--bot tests/bots.py:chat_visitor_counter``: counts the visitor's messages per chat, each
chat under its own key of ``turn.user_state`` (``"n{chat id}"``); replies ``"{text} u={count}"``."""


@chat_visitor_counter.on_text
def count_visitor_per_chat(turn: Turn) -> str:
    key = f"n{turn.chat_id}"
    n = turn.user_state.get(key, 0) + 1
    _mark_and_wait(turn)
    turn.user_state[key] = n
    return f"{turn.text} u={n}"
