"""Omnidesk custom channels (seed 003) and the bot-first bridge (variant 2 of seed 001), run
against a local fake Omnidesk.

Run it with one command from the repository root:

    .venv/bin/python examples/omnidesk_custom_channel.py

Part 1 — your app is a channel: a user of your app writes twice (one case, remembered
``user_id``), staff replies arrive on the channel's webhook, form-encoded like Omnidesk, and a
note is skipped.

Part 2 — the bot talks first: a visitor chats with a bot on the omnichannel ``Connector``; on
"operator" the bridge opens an Omnidesk case with the transcript, the staff reply reaches the
visitor's channel server, the visitor's next message lands in the case, and once the case is
closed the bot answers again.

Against a real account, serve ``desk.handle`` at the Webhook URL of the custom channel (with the
secret in it) and ``connector.handle`` where your channel server posts (see
``docs/omnidesk-custom-channel.md``).
"""

from __future__ import annotations

import logging

import requests

from omnichannel import Bot, Connector, Runtime, Turn
from omnichannel.omnidesk import CustomChannel, CustomChannelBridge, StaffReply
from omnichannel.testing import LocalServer, RecordingChannelServer
from omnichannel.testing.events import dumps, text_event
from omnichannel.testing.omnidesk import FakeOmnidesk

DESK_SECRET = "example-custom-channel-secret"


def app_is_a_channel(omnidesk: FakeOmnidesk) -> None:
    """Part 1: messages of an app's user become one case; staff replies come back."""
    print("== part 1: your app as an Omnidesk custom channel ==")
    channel_key = omnidesk.add_custom_channel("Mobile app", channel_type="async")

    def show_reply(reply: StaffReply) -> None:
        print(
            f"  app shows user {reply.custom_user_id!r} a reply from staff {reply.staff_id} "
            f"in case {reply.case_id}: {reply.text!r}"
        )

    desk = CustomChannel(
        omnidesk.client(), channel_key, secret=DESK_SECRET, on_reply=show_reply, inline=True
    )
    with LocalServer(desk) as hooks:
        omnidesk.set_webhook_url(channel_key, hooks.url + desk.webhook_path)
        desk.send("app-user-17", "The app logs me out every hour", user_full_name="Ann")
        desk.send("app-user-17", "I'm on Android 14")
        conversation = desk.conversation("app-user-17")
        assert conversation is not None
        assert conversation.case_id is not None
        print(
            f"  case {conversation.case_id} for Omnidesk user {conversation.user_id}: "
            f"{omnidesk.user_texts(conversation.case_id)}"
        )
        omnidesk.staff_reply(conversation.case_id, "Thanks, Ann! A fix ships tomorrow.")
        omnidesk.staff_reply(conversation.case_id, "internal: bug #881", note=True)
        print("  (the note was not shown to the user)")
    desk.close()


def bot_first(omnidesk: FakeOmnidesk) -> None:
    """Part 2: a bot on another channel hands a visitor to Omnidesk staff."""
    print("== part 2: the bot talks first, Omnidesk staff takes over ==")
    runtime = Runtime(inline=True)  # one store and outbox for both sides
    channel_key = omnidesk.add_custom_channel("Bot handovers", channel_type="sync")
    desk = CustomChannel(omnidesk.client(), channel_key, secret=DESK_SECRET, runtime=runtime)
    bridge = CustomChannelBridge(desk, handover_text="Connecting you to an operator…")

    bot = Bot()

    @bot.on_text
    def answer(turn: Turn) -> str | None:
        if "operator" in (turn.text or "").lower():
            turn.handover()
            return None
        return f"(bot) I can help with orders. You said: {turn.text}"

    with RecordingChannelServer() as visitor_side:
        connector = Connector(
            bridge.wrap(bot),
            token="example-connector-token",
            channel_url=visitor_side.channel_url,
            runtime=runtime,
            handover=bridge.handover,
        )
        with LocalServer(desk) as hooks, LocalServer(connector) as inbound:
            omnidesk.set_webhook_url(channel_key, hooks.url + desk.webhook_path)
            webhook = inbound.url + connector.webhook_path

            def visitor(text: str) -> None:
                print(f"  visitor> {text}")
                body = dumps(text_event(text, chat_id=42, visitor_id="v-9", fields={"name": "Ann"}))
                requests.post(
                    webhook, data=body, headers={"Content-Type": "application/json"}, timeout=5
                )

            visitor_side.on_call = lambda call: print(f"  channel server got> {call.text}")
            visitor("hi")
            visitor("I want an operator")
            conversation = desk.conversation("omnichannel:v-9")
            assert conversation is not None
            assert conversation.case_id is not None
            case_id = conversation.case_id
            print(f"  Omnidesk case {case_id} opened with the transcript:")
            for line in omnidesk.user_texts(case_id)[0].splitlines():
                print(f"    | {line}".rstrip())
            omnidesk.staff_reply(case_id, "Hello Ann, Olga here. How can I help?")
            visitor("My order 1042 is late")
            print(f"  …added to case {case_id}: {omnidesk.user_texts(case_id)[-1]!r}")
            omnidesk.close_case(case_id)
            print(f"  staff closed case {case_id}")
            visitor("thanks!")
        connector.close()


def main() -> None:
    """Run both parts against one fake account."""
    with FakeOmnidesk() as omnidesk:
        app_is_a_channel(omnidesk)
        print()
        bot_first(omnidesk)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
