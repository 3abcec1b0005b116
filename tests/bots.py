"""Bots the process tests load with ``--bot tests/bots.py:bot``.

``OMNICHANNEL_TEST_BOT_DELAY`` (seconds) makes each turn slow; ``OMNICHANNEL_TEST_BOT_MARKS``
names a file where each turn appends one line when it starts (so a test knows turns are running).
"""

from __future__ import annotations

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
