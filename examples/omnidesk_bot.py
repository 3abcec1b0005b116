"""A bot behind Omnidesk rules (variant 1 of seed 001), run against a local fake Omnidesk.

Run it with one command from the repository root:

    .venv/bin/python examples/omnidesk_bot.py

It starts ``FakeOmnidesk`` (the helpdesk) and the bot's rule webhook on 127.0.0.1, then plays
a case: the user writes in, the "new case" and "updated case" rules post the omnichannel JSON to
the bot, the bot answers in the case as staff (a menu rendered as a numbered list, answered by a
typed number), answers a question from the knowledge base, and finally hands the case to the
operators by removing the bot label, adding the "operators" label and setting the group.

Against a real account, build the client with your credentials and serve ``channel.handle`` from
your web app at the URL the rules post to (see ``docs/omnidesk-rules.md``)::

    client = OmnideskClient.for_subdomain("acme", "bot@acme.io", os.environ["OMNIDESK_API_KEY"])
"""

from __future__ import annotations

import logging

from omnichannel import Bot, Button, Keyboard, Turn
from omnichannel.omnidesk import CaseHandover, KnowledgeBaseAnswers, OmnideskChannel
from omnichannel.testing import LocalServer
from omnichannel.testing.omnidesk import FakeOmnidesk

WEBHOOK_SECRET = "example-rule-secret"  # the last segment of the URL the rules post to
BOT_STAFF_ID = 7  # the staff member the bot writes as


def build_bot() -> Bot:
    """The bot: channel-agnostic handlers (the same bot runs on any omnichannel adapter)."""
    bot = Bot()

    @bot.on_text
    def on_text(turn: Turn) -> object:
        text = (turn.text or "").strip().lower()
        if "operator" in text or "human" in text:
            turn.handover()
            return None
        if text in ("hi", "hello", "menu") or text.startswith("hello"):
            return Keyboard(
                text="Hello! I'm the shop's bot. What can I do for you?",
                buttons=[Button(id="track", text="Track my order"), Button(id="faq", text="FAQ")],
            )
        return None  # no answer of its own: the knowledge base answers

    @bot.on_button
    def on_button(turn: Turn) -> str:
        if turn.text == "Track my order":
            return "Your order #1042 left the warehouse today."
        return "Ask me anything, e.g. 'delivery' or 'returns'. Type 'operator' for a human."

    return bot


def main() -> None:
    """Play the demo case and print what happened in Omnidesk."""
    with FakeOmnidesk() as omnidesk:
        bot_label = omnidesk.add_label("bot")
        operators = omnidesk.add_label("operators")
        omnidesk.add_kb_article(
            "Delivery", "<p>We deliver in <b>2 working days</b> across the country.</p>"
        )
        channel = OmnideskChannel(
            build_bot(),
            client=omnidesk.client(),
            secret=WEBHOOK_SECRET,
            staff_id=BOT_STAFF_ID,
            bot_label=bot_label,
            handover=CaseHandover(
                remove_labels=[bot_label],
                add_labels=[operators],
                group_id=3,
                text="I'm passing you to a colleague, please hold on.",
            ),
            knowledge_base=KnowledgeBaseAnswers(no_answer="Sorry, I don't know that one."),
            keyboard_footer="(reply with a number)",
        )
        with LocalServer(channel) as server:
            rule_url = server.url + channel.webhook_path
            case_id = omnidesk.open_case("Hello, I have a question", labels=[bot_label])
            print(f"case {case_id} opened with the bot label {bot_label}")
            omnidesk.fire_rule(rule_url, case_id, new_case=True)  # the "new case" rule
            channel.drain()  # the bot runs after the webhook answered: wait for its replies
            for text in ("1", "delivery", "operator please"):
                omnidesk.user_message(case_id, text)
                omnidesk.fire_rule(rule_url, case_id)  # the "updated case" rule
                channel.drain()
            print()
            for message in omnidesk.case_messages(case_id):
                who = "bot " if message["staff_id"] else "user"
                first, *rest = message["content"].split("\n")
                print(f"{who}> {first}")
                for line in rest:
                    print(f"      {line}" if line else "")
            case = omnidesk.case(case_id)
            print()
            print(f"after the handover: labels {case['labels']}, group {case['group_id']}")
        channel.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
