"""A Webex Connect generic bot, run against a local fake Webex Connect.

Run it with one command from the repository root:

    .venv/bin/python examples/webex_connect_bot.py

It starts ``FakeWebexConnect`` (the platform) and the bot's webhook on 127.0.0.1, plays a short
conversation (a greeting, a menu answered by number, a Messenger postback, a delivery failure,
a handover to the contact center and a message copied after it) and prints what the bot sent.
Against the real Webex Connect, serve ``adapter.handle`` from your web app (see
``docs/webex-connect.md``) with the integration's generated webhook URL and tokens.
"""

from __future__ import annotations

import logging

from omnichannel import Bot, Button, Keyboard, Turn
from omnichannel.testing import LocalServer
from omnichannel.testing.webex import FakeWebexConnect
from omnichannel.webex import WebexConnectBot, WebexDeliveryStatus

VERIFICATION_TOKEN = "example-verification-token"
SERVICE_KEY = "example-service-key"

log = logging.getLogger("webex_connect_bot")


def build_bot() -> Bot:
    """The bot: channel-agnostic handlers (the same bot runs on any omnichannel adapter)."""
    bot = Bot()

    @bot.on_text
    def on_text(turn: Turn) -> object:
        text = (turn.text or "").strip().lower()
        if text in ("agent", "human", "operator"):
            turn.handover(queue="support", reason="customer asked for a human")
            return None
        if text == "menu":
            return Keyboard(
                text="What would you like?",
                buttons=[Button(id="plans", text="Plans"), Button(id="help", text="Help")],
            )
        return f"Hello! You wrote: {turn.text}. Type 'menu' or 'agent'."

    @bot.on_button
    def on_button(turn: Turn) -> str:
        assert turn.message.kind == "keyboard_response"
        return f"You chose {turn.text} ({turn.message.button.id})."

    return bot


def on_delivery_status(status: WebexDeliveryStatus) -> None:
    """Webex Connect reports what happened to a message the bot sent."""
    if status.failed:
        log.warning("message %s failed: %s", status.message_id, status.description)


def main() -> None:
    """Play the demo conversation and print the bot's events."""
    with FakeWebexConnect(
        VERIFICATION_TOKEN, service_key=SERVICE_KEY, time_factor=0.001, timeout=5.0
    ) as webex:
        adapter = WebexConnectBot(
            build_bot(),
            webex.webhook_url,
            VERIFICATION_TOKEN,
            SERVICE_KEY,
            handover_text="Connecting you to an agent…",
            on_delivery_status=on_delivery_status,
        )
        with LocalServer(adapter) as server:
            webex.bot_url = server.url + "/webex"
            print(f"Webex Connect verifies the bot endpoint: {webex.verify()}")
            conversation = "demo-conversation-1"
            for text in ("hi", "menu", "2", "menu"):
                webex.send_message(conversation, text).wait()
                adapter.drain()
            webex.send_postback(conversation, "plans").wait()  # a Messenger button press
            adapter.drain()
            webex.send_delivery_status(
                conversation, "wx-out-1", "Failed", description="Recipient not reachable"
            ).wait()
            webex.send_message(conversation, "agent").wait()
            adapter.drain()
            webex.send_message(conversation, "hello? (copied to the bot, not answered)").wait()
            adapter.drain()
            for event in webex.events:
                print(f"eventid {event.eventid}: {event.message or event.params}")
            record = adapter.conversation(conversation)
            if record is not None:
                print(f"handed over: {record.handed_over}; copies kept: {len(record.copies)}")
        adapter.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
