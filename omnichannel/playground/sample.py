"""A small bot that shows what the playground can show: buttons, files, state and a handover.

Run it with ``omnichannel playground --bot omnichannel.playground.sample:bot``:

- ``menu`` answers with a keyboard (buttons on the omnichannel connector, a numbered list you
  answer with a digit on Omnidesk and Webex Connect);
- ``operator`` (or the "Talk to a person" button) hands the conversation over;
- a file is acknowledged with its name;
- any other text is echoed with a count kept in ``turn.state``.
"""

# the decorators with a pattern are typed Any: keep mypy quiet about it in this example
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

from omnichannel.models import Button, Keyboard
from omnichannel.runtime.bot import Bot, Turn

__all__ = ["bot"]

bot = Bot(history=10)

MENU = Keyboard(
    text="How can I help?",
    buttons=[
        [Button(id="delivery", text="Delivery"), Button(id="returns", text="Returns")],
        [Button(id="operator", text="Talk to a person")],
    ],
)


def _hand_over(turn: Turn) -> None:
    # the omnichannel protocol hands over with Webim's redirect_chat, which needs an operator
    # or a department; Omnidesk and Webex Connect hand over as configured
    params = {"dep_key": "support"} if getattr(turn.channel, "kind", "") == "omnichannel" else {}
    turn.reply("Connecting you to a person…")
    turn.handover(**params)


@bot.on_text(r"(?i)^\s*(menu|help|start)\s*$")
def menu(turn: Turn) -> Keyboard:
    return MENU


@bot.on_text(r"(?i)\b(operator|person|human)\b")
def operator(turn: Turn) -> None:
    _hand_over(turn)


@bot.on_button("operator")
def operator_button(turn: Turn) -> None:
    _hand_over(turn)


@bot.on_button
def pressed(turn: Turn) -> str:
    turn.state["choice"] = turn.text
    return f"You chose {turn.text}. Type 'menu' to choose again."


@bot.on_file
def got_file(turn: Turn) -> str:
    received = int(turn.state.get("files", 0)) + 1
    turn.state["files"] = received
    file = getattr(turn.message, "file", None)
    name = getattr(file, "name", None) or "no name"
    return f"Thanks, I got your file {name} (file {received} in this chat)."


@bot.on_text
def echo(turn: Turn) -> str:
    count = int(turn.state.get("count", 0)) + 1
    turn.state["count"] = count
    return f"You said: {turn.text} (message {count}; type 'menu' for buttons)"
