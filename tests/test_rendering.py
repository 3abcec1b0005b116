"""One renderer (issue 11): capabilities, the fallbacks of ``render``, ``choice_from_text``, and
the same bot's keyboard on the omnichannel connector, Omnidesk rules and Webex Connect — over
real HTTP against the fake platforms on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import requests

from omnichannel import (
    Bot,
    Button,
    ButtonPress,
    Connector,
    FileLink,
    Keyboard,
    OmnichannelClient,
    TextReply,
    Turn,
)
from omnichannel.omnidesk import OmnideskChannel
from omnichannel.rendering import (
    OMNICHANNEL,
    OMNIDESK,
    TRANSCRIPT,
    WEBEX_CONNECT,
    Capabilities,
    buttons_from_state,
    choice_from_text,
    file_text,
    keyboard_state,
    numbered_keyboard,
    render,
    render_text,
)
from omnichannel.testing import LocalServer, RecordingChannelServer
from omnichannel.testing.events import button_event, text_event
from omnichannel.testing.omnidesk import FakeOmnidesk
from omnichannel.testing.webex import FakeWebexConnect
from omnichannel.webex import WebexConnectBot, WebexMessage

APPLES = Button(id="a", text="Apples")
BANANAS = Button(id="b", text="Bananas")
MENU = Keyboard(text="Pick one", buttons=[[APPLES], [BANANAS]])
NUMBERED = "Pick one\n1. Apples\n2. Bananas"

TOKEN = "render-token-5d1e"
CHANNEL_TOKEN = "render-channel-token-91ab"
SECRET = "render-rule-secret-0c4f"
WEBEX_TOKEN = "render-verify-77aa"

TEXT_ONLY = Capabilities()
BUTTONS = Capabilities(buttons=True)


# ---------------------------------------------------------------------------------------------
# render: each fallback, each capability


def test_keyboards_become_numbered_text_without_buttons() -> None:
    assert render(MENU, TEXT_ONLY) == [TextReply(text=NUMBERED)]
    footer = Capabilities(keyboard_footer="Reply with a number.")
    assert render_text(MENU, footer) == [NUMBERED + "\nReply with a number."]
    untitled = Keyboard(buttons=[APPLES, BANANAS])
    assert render_text(untitled, TEXT_ONLY) == ["1. Apples\n2. Bananas"]
    assert numbered_keyboard(MENU) == NUMBERED


def test_a_keyboard_title_goes_first_where_the_keyboard_message_cannot_carry_it() -> None:
    assert render(MENU, BUTTONS) == [TextReply(text="Pick one"), MENU]
    assert render(MENU, OMNICHANNEL) == [TextReply(text="Pick one"), MENU]
    # the title is a text like any other: plain text unless the channel shows markdown
    bold = Keyboard(text="**Pick** one", buttons=[APPLES])
    assert render(bold, BUTTONS) == [TextReply(text="Pick one"), bold]
    assert render(bold, attrs.evolve(BUTTONS, markdown=True))[0] == TextReply(text="**Pick** one")


def test_a_keyboard_stays_whole_where_it_carries_its_title_or_has_none() -> None:
    assert render(MENU, Capabilities(buttons=True, keyboard_text=True)) == [MENU]
    untitled = Keyboard(buttons=[APPLES])
    assert render(untitled, OMNICHANNEL) == [untitled]
    assert render(Keyboard(text="", buttons=[APPLES]), OMNICHANNEL) == [untitled]
    # a footer belongs to the numbered list only
    assert render(untitled, attrs.evolve(OMNICHANNEL, keyboard_footer="x")) == [untitled]


def test_files_become_links_in_text_without_file_messages() -> None:
    named = FileLink(url="https://x/price.pdf", name="price.pdf", media_type="application/pdf")
    bare = FileLink(url="https://x/a")
    assert render_text([named, bare], TEXT_ONLY) == [
        "price.pdf: https://x/price.pdf",
        "https://x/a",
    ]
    assert file_text(named) == "price.pdf: https://x/price.pdf"
    assert render([named, bare], Capabilities(files=True)) == [named, bare]


def test_markdown_becomes_plain_text_unless_the_channel_shows_it() -> None:
    reply = TextReply(text="**Bold** and [docs](https://x/docs)")
    assert render(reply, TEXT_ONLY) == [TextReply(text="Bold and docs (https://x/docs)")]
    assert render(reply, Capabilities(markdown=True))[0] is reply
    plain = TextReply(text="nothing to strip")
    assert render(plain, TEXT_ONLY)[0] is plain  # an unchanged text is the very message
    # numbered keyboards and links keep their characters
    starred = Keyboard(text="*Pick*", buttons=[Button(id="s", text="snake_case **x**")])
    assert render_text(starred, TEXT_ONLY) == ["*Pick*\n1. snake_case **x**"]


def test_long_texts_are_split_into_parts_of_max_length() -> None:
    long_text = " ".join(f"word{i}" for i in range(60))
    caps = Capabilities(max_length=50)
    parts = render_text(TextReply(text=long_text), caps)
    assert len(parts) > 1 and all(len(p) <= 50 for p in parts)
    assert " ".join(parts) == long_text
    # the numbered text of a long keyboard is split too
    big = Keyboard(text="Choose", buttons=[Button(id=str(i), text=f"option {i}") for i in range(9)])
    numbered = render_text(big, caps)
    assert len(numbered) > 1 and all(len(p) <= 50 for p in numbered)
    assert "\n".join(numbered) == numbered_keyboard(big)
    assert render_text(TextReply(text=long_text), TEXT_ONLY) == [long_text]


def test_empty_texts_are_skipped_only_where_the_channel_says_so() -> None:
    assert render_text([TextReply(text=""), TextReply(text="x")], TEXT_ONLY) == ["", "x"]
    assert render_text([TextReply(text=""), TextReply(text="x")], OMNIDESK) == ["x"]


def test_render_keeps_order_and_subclasses_and_refuses_what_is_not_a_message() -> None:
    rich = WebexMessage(text="hi", message_type="template")
    out = render([rich, MENU, FileLink(url="https://x/f")], OMNICHANNEL)
    assert out == [rich, TextReply(text="Pick one"), MENU, FileLink(url="https://x/f")]
    assert out[0] is rich
    with pytest.raises(TypeError):
        render(["a string"], OMNICHANNEL)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="text-only"):
        render_text(MENU, OMNICHANNEL)
    with pytest.raises(ValueError, match="max_length"):
        Capabilities(max_length=0)


def test_the_declared_capabilities_of_each_channel() -> None:
    assert Capabilities(buttons=True, files=True, max_length=1000) == OMNICHANNEL
    assert Capabilities(skip_empty=True) == OMNIDESK
    assert Capabilities() == WEBEX_CONNECT
    assert Capabilities(markdown=True) == TRANSCRIPT

    client = OmnichannelClient("http://127.0.0.1:9/channel")
    assert client.capabilities == OMNICHANNEL
    client = OmnichannelClient(
        "http://127.0.0.1:9/channel", strip_markdown=False, max_message_length=None
    )
    assert client.capabilities == attrs.evolve(OMNICHANNEL, markdown=True, max_length=None)
    connector = Connector(token=TOKEN, client=client, inline=True)
    assert connector.capabilities == client.capabilities
    connector.close()

    with FakeOmnidesk() as fake:
        desk = OmnideskChannel(
            client=fake.client(),
            secret=SECRET,
            inline=True,
            max_message_length=500,
            keyboard_footer="Reply with a number.",
        )
        assert desk.capabilities == attrs.evolve(
            OMNIDESK, max_length=500, keyboard_footer="Reply with a number."
        )
        desk.close()

    webex = WebexConnectBot(
        None, "http://127.0.0.1:9/events/X", WEBEX_TOKEN, inline=True, strip_markdown=False
    )
    assert webex.capabilities == attrs.evolve(WEBEX_CONNECT, markdown=True)
    webex.close(0)


# ---------------------------------------------------------------------------------------------
# choice_from_text


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("2", BANANAS),
        (" 2. ", BANANAS),
        ("2)", BANANAS),
        ("1", APPLES),
        ("\t1 .\n", APPLES),
        ("bananas", BANANAS),
        ("  APPLES ", APPLES),
        ("0", None),
        ("3", None),
        ("-1", None),
        ("2 bananas", None),
        ("banana", None),
        ("", None),
        ("   ", None),
    ],
)
def test_a_typed_number_or_label_picks_a_button(typed: str, expected: Button | None) -> None:
    assert choice_from_text(typed, MENU.flat) == expected


def test_keyboards_are_stored_as_id_label_pairs() -> None:
    state = keyboard_state(MENU)
    assert state == [["a", "Apples"], ["b", "Bananas"]]
    assert json.loads(json.dumps(state)) == state
    assert buttons_from_state(state) == [APPLES, BANANAS]
    assert keyboard_state([APPLES]) == [["a", "Apples"]]
    assert buttons_from_state([["a", "Apples"], ["broken"], "x", [1, 2]]) == [
        APPLES,
        Button(id="1", text="2"),
    ]
    assert buttons_from_state(None) == []


# ---------------------------------------------------------------------------------------------
# end to end: one bot, three channels, the same keyboard and the same button back


def menu_bot(pressed: list[str]) -> Bot:
    bot = Bot()

    @bot.on_text
    def menu(turn: Turn) -> Keyboard:
        return Keyboard(
            text="Pick one",
            buttons=[[Button(id="a", text="Apples")], [Button(id="b", text="Bananas")]],
        )

    @bot.on_button
    def picked(turn: Turn) -> str:
        assert isinstance(turn.message, ButtonPress)
        pressed.append(turn.message.button.id)
        return f"picked {turn.message.button.id}"

    return bot


def post(url: str, payload: Any) -> requests.Response:
    return requests.post(
        url, data=json.dumps(payload), headers={"Content-Type": "application/json"}, timeout=10
    )


def test_the_keyboard_title_reaches_the_omnichannel_visitor_before_the_keyboard() -> None:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            menu_bot([]),
            token=TOKEN,
            channel_url=channel.channel_url,
            channel_token=CHANNEL_TOKEN,
            inline=True,
        )
        with LocalServer(connector) as server:
            assert post(server.url + connector.webhook_path, text_event("hi", chat_id=3)).ok
        connector.close()
    assert [c.body for c in channel.calls] == [
        {"chat_id": 3, "message": {"kind": "operator", "text": "Pick one"}},
        {
            "chat_id": 3,
            "message": {
                "kind": "keyboard",
                "buttons": [[{"id": "a", "text": "Apples"}], [{"id": "b", "text": "Bananas"}]],
            },
        },
    ]


def test_one_bot_renders_the_same_keyboard_and_gets_the_same_button_on_every_channel() -> None:
    pressed: list[str] = []
    bot = menu_bot(pressed)

    # the omnichannel connector: native buttons, the title first; a keyboard_response press
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            bot,
            token=TOKEN,
            channel_url=channel.channel_url,
            channel_token=CHANNEL_TOKEN,
            inline=True,
        )
        with LocalServer(connector) as server:
            url = server.url + connector.webhook_path
            assert post(url, text_event("hi", chat_id=8)).ok
            assert post(url, button_event("Bananas", button_id="b", chat_id=8)).ok
        connector.close()
    messages = [c.message for c in channel.calls]
    assert messages == [TextReply(text="Pick one"), MENU, TextReply(text="picked b")]
    assert pressed == ["b"]

    # Omnidesk rules: numbered text in the case; a typed "2" and a typed label
    with FakeOmnidesk(retry_after=0.05) as fake:
        desk = OmnideskChannel(bot, client=fake.client(), secret=SECRET, inline=True)
        with LocalServer(desk) as server:
            url = server.url + desk.webhook_path
            case_id = fake.open_case("hi")
            fake.fire_rule(url, case_id, new_case=True)
            for typed in ("2", "menu", "bananas"):
                fake.user_message(case_id, typed)
                assert fake.fire_rule(url, case_id).ok
        desk.close()
    assert fake.staff_texts(case_id) == [NUMBERED, "picked b", NUMBERED, "picked b"]
    assert pressed == ["b", "b", "b"]

    # Webex Connect: numbered text in 1001 messages; a typed "2" and a typed label
    with FakeWebexConnect(WEBEX_TOKEN, time_factor=0.001, timeout=5.0) as webex:
        adapter = WebexConnectBot(bot, webex.webhook_url, WEBEX_TOKEN, inline=True)
        with LocalServer(adapter) as server:
            webex.bot_url = server.url + "/webex"
            for typed in ("hi", "2", "menu", "bananas"):
                webex.send_message("conv-r", typed).wait()
            assert adapter.drain()
        adapter.close(5)
        assert webex.texts("conv-r") == [NUMBERED, "picked b", NUMBERED, "picked b"]
    assert pressed == ["b"] * 5
