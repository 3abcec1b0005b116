"""A small bot used by the other examples: greets, shows a keyboard, echoes the rest.

Run it behind the built-in server:
    omnichannel serve --token T --channel-url http://127.0.0.1:9000/channel \
        --bot examples/echo_bot.py:bot
"""

from __future__ import annotations

from omnichannel import Bot, Button, Keyboard, Turn

bot = Bot()


@bot.on_text
def answer(turn: Turn) -> object:
    if turn.text and turn.text.strip().lower() in {"hi", "hello", "start"}:
        name = turn.variables["channel_visitor_firstname"] or "there"
        return [
            f"Hello, {name}! Shall I send you our price list?",
            Keyboard(buttons=[[Button(id="yes", text="Yes"), Button(id="no", text="No")]]),
        ]
    return f"You said: {turn.text}"


@bot.on_button
def pressed(turn: Turn) -> str:
    return f"You pressed {turn.text}"


@bot.on_file
def got_file(turn: Turn) -> str:
    return f"Thanks, I got your file ({turn.text})"
