"""A visitor on your messenger talks to a Page-messenger (Selarti) AI sales assistant.

Run it with one command, from the repository root:

    .venv/bin/python examples/pagemessenger_bridge.py

Everything runs on 127.0.0.1: ``FakePageMessenger`` stands in for the Selarti API and its AI,
a ``RecordingChannelServer`` for your messenger's channel server (the side that speaks the
omnichannel protocol). The visitor asks a question, the AI answers, then the visitor asks for a
person: the AI hands the dialog over, the bridge stops forwarding and the visitor is told a
manager will answer.
"""

from __future__ import annotations

import requests

from omnichannel import Connector
from omnichannel.pagemessenger import PageMessengerBridge, PageMessengerClient
from omnichannel.testing import LocalServer, RecordingChannelServer
from omnichannel.testing.events import text_event
from omnichannel.testing.pagemessenger import FakePageMessenger

API_KEY = "demo-api-key"
TASK_ID = "1721129985149x478019552540622850"  # the id of your task of type "Web"
WEBHOOK_SECRET = "demo-webhook-secret"  # use a long random value in production
CONNECTOR_TOKEN = "demo-connector-token"
CHANNEL_TOKEN = "demo-channel-token"


def main() -> None:
    """Run the conversation and print what each side saw."""
    with (
        FakePageMessenger(api_key=API_KEY) as ai,
        RecordingChannelServer(token=CHANNEL_TOKEN) as messenger,
    ):
        # your messenger's channel, as the SDK's omnichannel Connector
        connector = Connector(
            token=CONNECTOR_TOKEN,
            channel_url=messenger.channel_url,
            channel_token=CHANNEL_TOKEN,
            handover_text="A manager will answer you here shortly.",
        )
        # the bridge: visitor messages go to the AI task, its answers come back to the visitor
        bridge = PageMessengerBridge(
            PageMessengerClient(api_key=API_KEY, base_url=ai.base_url),
            TASK_ID,
            connector,
            secret=WEBHOOK_SECRET,
        )
        connector.bot = bridge.bot

        # your web app serves both; here each gets its own local server
        with LocalServer(connector) as app, LocalServer(bridge) as hooks:
            # in the platform: integration "Another", webhook type "All messages", this URL
            ai.webhook_url = hooks.url + bridge.webhook_path

            def visitor_says(text: str) -> None:
                print(f"visitor  -> {text}")
                payload = text_event(text, chat_id=42)
                requests.post(app.url + connector.webhook_path, json=payload, timeout=10)

            ai.answer = lambda received: {"message_text": "Yes! Delivery to Kazan takes 2 days."}
            visitor_says("Hi! Do you deliver to Kazan?")
            messenger.wait_for(1)

            ai.answer = "operator"  # the AI decides a human should take over
            visitor_says("I'd like to talk to a person, please.")
            messenger.wait_for(3)

            visitor_says("Hello? Anyone there?")  # no longer forwarded to the AI
            connector.drain()

        print()
        for received in ai.messages:
            print(f"AI got   <- chat_id={received.chat_id!r}: {received.message}")
        for call in messenger.calls:
            print(f"visitor  <- {call.text}")
        print(f"forwarding to the AI: {bridge.is_forwarding('omnichannel', 42)}")
        connector.close()


if __name__ == "__main__":
    main()
