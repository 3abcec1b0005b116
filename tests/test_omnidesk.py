"""Omnidesk (issue 5): the REST client, the bot behind rules (variant 1), custom channels
(seed 003) and the variant-2 bridge — all over real HTTP against FakeOmnidesk on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from omnichannel import Bot, Button, Connector, DeliveryError, Keyboard, Runtime, Turn
from omnichannel.errors import NotSupported
from omnichannel.models import NewMessageEvent, OutboundMessage, TextMessage
from omnichannel.omnidesk import (
    Case,
    CaseHandover,
    CustomChannel,
    CustomChannelBridge,
    KnowledgeBaseAnswers,
    OmnideskChannel,
    OmnideskClient,
    OmnideskError,
    StaffReply,
    parse_staff_reply,
)
from omnichannel.runtime.http import Request
from omnichannel.runtime.stores import MemoryStore, QueueItem, StateSnapshot
from omnichannel.testing import FakeOmnidesk, LocalServer, RecordingChannelServer
from omnichannel.testing.events import dumps, text_event

SECRET = "rule-secret-3f9a"
DESK_SECRET = "desk-secret-77c1"


@pytest.fixture
def fake() -> Iterator[FakeOmnidesk]:
    with FakeOmnidesk(retry_after=0.05) as server:
        yield server


@pytest.fixture
def client(fake: FakeOmnidesk) -> OmnideskClient:
    return fake.client()


def echo_bot() -> Bot:
    bot = Bot()

    @bot.on_text
    def echo(turn: Turn) -> str:
        return f"You said: {turn.text}"

    return bot


def serve(handler: Any) -> LocalServer:
    return LocalServer(handler).start()


# ---------------------------------------------------------------------------------------------
# the client


def test_client_creates_cases_adds_messages_and_returns_typed_results(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    case = client.create_case(user_email="ann@example.com", subject="Help", content="Hi there")
    assert isinstance(case, Case)
    assert isinstance(case.case_id, int) and isinstance(case.user_id, int)
    assert case.status == "open" and not case.closed
    assert isinstance(case.created_at, datetime)

    message = client.add_message(case.case_id, "Hello from the bot", staff_id=9)
    assert message.from_staff and message.staff_id == 9 and message.case_id == case.case_id
    assert fake.staff_texts(case.case_id) == ["Hello from the bot"]

    messages = client.list_messages(case.case_id)
    assert [m.content for m in messages] == ["Hi there", "Hello from the bot"]
    assert client.get_case(case.case_id).case_id == case.case_id

    sent = fake.calls_to("POST", r"/api/cases\.json$")[0]
    assert sent.body == {
        "case": {"user_email": "ann@example.com", "subject": "Help", "content": "Hi there"}
    }
    with pytest.raises(ValueError, match="user_email, user_phone or user_custom_id"):
        client.create_case(content="no identity")


def test_subdomain_form_and_configuration_errors() -> None:
    client = OmnideskClient.for_subdomain("acme", "bot@acme.io", "k")
    assert client.base_url == "https://acme.omnidesk.ru"
    assert OmnideskClient("https://acme.omnidesk.ru/api/", "e", "k").base_url == (
        "https://acme.omnidesk.ru"
    )
    with pytest.raises(ValueError, match="base_url"):
        OmnideskClient("acme.omnidesk.ru", "e", "k")
    with pytest.raises(ValueError, match="page_size"):
        OmnideskClient("https://acme.omnidesk.ru", "e", "k", page_size=101)


def test_lists_are_paged_into_python_lists(fake: FakeOmnidesk, client: OmnideskClient) -> None:
    ids = [fake.add_label(f"label {i}") for i in range(230)]
    labels = client.list_labels()
    assert [label.label_id for label in labels] == ids
    assert labels[5].title == "label 5"
    pages = fake.calls_to("GET", r"/api/labels\.json$")
    assert [(c.query["page"], c.query["limit"]) for c in pages] == [
        ("1", "100"),
        ("2", "100"),
        ("3", "100"),
    ]
    assert len(client.list_labels(max_items=7)) == 7
    assert fake.calls[-1].query["limit"] == "7"
    assert len(client.list_labels(max_items=150)) == 150


def test_errors_are_typed_with_omnidesks_error_code(client: OmnideskClient) -> None:
    with pytest.raises(OmnideskError) as caught:
        client.get_case(999)
    error = caught.value
    assert isinstance(error, DeliveryError)
    assert (error.error, error.status, error.retryable) == ("case_not_found", 404, False)
    assert "case_not_found" in str(error)


def test_the_api_key_never_appears_in_errors_logs_or_reprs(
    fake: FakeOmnidesk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "wrong-key-5b1e0c9d"
    client = OmnideskClient(fake.url, fake.email, wrong_key)
    with pytest.raises(OmnideskError) as caught:
        client.list_labels()
    error = caught.value
    assert error.status == 401 and error.error == "wrong_credentials"
    assert "no staff with API key ***" in error.response_text  # the fake echoed it: scrubbed
    for text in (str(error), error.response_text, repr(error), repr(client), repr(vars(client))):
        assert wrong_key not in text
    good = fake.client()
    fake.rate_limit_next(1)
    good.list_labels()
    assert fake.api_key not in repr(good) and fake.api_key not in repr(vars(good))
    assert wrong_key not in caplog.text and fake.api_key not in caplog.text


def test_rate_limits_are_waited_out_429_and_old_403(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    fake.add_label("bot")
    fake.rate_limit_next(2, retry_after=0.1)
    started = time.monotonic()
    assert len(client.list_labels()) == 1
    assert time.monotonic() - started >= 0.2  # retry_after honoured twice
    fake.rate_limit_next(1, status=403)  # older accounts: 403 "rate limit exceeded"
    assert len(client.list_labels()) == 1
    started = time.monotonic()
    fake.rate_limit_next(1, retry_after=0.3, retry_after_in="body")
    assert len(client.list_labels()) == 1
    assert time.monotonic() - started >= 0.3  # the body's retry_after, not the 10 ms backoff
    statuses = [c.status for c in fake.calls_to("GET", r"labels")]
    assert statuses == [429, 429, 200, 403, 200, 429, 200]


def test_other_403s_fail_at_once_and_5xx_are_retried(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    fake.fail_next(1, status=403, error="access_denied")
    with pytest.raises(OmnideskError) as caught:
        client.list_labels()
    assert (caught.value.error, caught.value.retryable) == ("access_denied", False)
    assert len(fake.calls) == 1
    fake.fail_next(2, status=503)
    assert client.list_labels() == []


def test_users_custom_channels_and_knowledge_base(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    channel = fake.add_custom_channel("Mobile app", webhook_url="https://app.example/hook/s3cr3t")
    [info] = client.list_custom_channels()
    assert (info.channel_api_key, info.title, info.channel_type) == (channel, "Mobile app", "async")
    assert "s3cr3t" not in repr(info)
    case = client.create_case(user_custom_id="u-7", channel=channel, content="hello")
    [user] = client.find_users(user_custom_id="u-7", user_custom_channel=channel)
    assert user.user_id == case.user_id and user.custom_id == "u-7"

    fake.add_kb_article(
        {"1": "Доставка", "2": "Delivery"}, {"1": "<p>2 дня</p>", "2": "<p>2 days</p>"}
    )
    [article] = OmnideskClient(
        fake.url, fake.email, fake.api_key, language_id="2"
    ).search_kb_articles("deliv")
    assert (article.title, article.text) == ("Delivery", "2 days")
    assert client.get_kb_article(article.article_id).titles == {"1": "Доставка", "2": "Delivery"}
    with pytest.raises(ValueError, match="3 characters"):
        client.search_kb_articles("ab")


def test_label_edits_can_replace_the_whole_list(fake: FakeOmnidesk) -> None:
    bot_label, human = fake.add_label("bot"), fake.add_label("human")
    case_id = fake.open_case("hi", labels=[bot_label])
    client = fake.client(replace_labels=True)
    client.edit_case(case_id, remove_labels=[bot_label], add_labels=[human])
    assert fake.case(case_id)["labels"] == [human]
    assert fake.edits[-1][1] == {"labels": [human]}


# ---------------------------------------------------------------------------------------------
# variant 1: the bot behind Omnidesk rules


@pytest.fixture
def rules(fake: FakeOmnidesk, client: OmnideskClient) -> Iterator[tuple[OmnideskChannel, str]]:
    channel = OmnideskChannel(echo_bot(), client=client, secret=SECRET, staff_id=42, inline=True)
    server = serve(channel)
    yield channel, server.url + channel.webhook_path
    server.stop()
    channel.close()


def test_a_rule_webhook_gets_a_staff_reply_in_the_right_case(
    fake: FakeOmnidesk, rules: tuple[OmnideskChannel, str]
) -> None:
    _, url = rules
    other = fake.open_case("first case", user_email="bob@example.com")
    case_id = fake.open_case("Where is my order?")
    answer = fake.fire_rule(url, case_id, new_case=True)
    assert (answer.status_code, answer.json()) == (200, {"result": "ok"})
    assert fake.staff_texts(case_id) == ["You said: Where is my order?"]
    assert fake.staff_texts(other) == []
    assert fake.case_messages(case_id)[-1]["staff_id"] == 42


def test_an_unfilled_placeholder_never_reaches_the_bot_or_the_customer(
    fake: FakeOmnidesk, rules: tuple[OmnideskChannel, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omnichannel")
    _, url = rules
    case_id = fake.open_case("")
    body = {"event": "new_message", "chat_id": case_id,
            "message": {"kind": "visitor", "text": "[case_description]"}}  # fmt: skip
    answer = requests.post(url, json=body, timeout=10)
    assert answer.status_code == 200
    assert fake.staff_texts(case_id) == []
    assert "[case_description] was not filled in" in caplog.text


def test_rule_deliveries_are_deduplicated_without_message_ids(
    fake: FakeOmnidesk, rules: tuple[OmnideskChannel, str]
) -> None:
    _, url = rules
    case_id = fake.open_case("Hello")
    fake.fire_rule(url, case_id, new_case=True)
    fake.fire_rule(url, case_id)  # the "updated case" rule fires for the same first message
    fake.fire_rule(url, case_id, new_case=True)  # a retry
    assert fake.staff_texts(case_id) == ["You said: Hello"]
    fake.user_message(case_id, "Thanks")
    fake.fire_rule(url, case_id)
    # a rule firing on the bot's own reply is not answered
    own = (
        '{"event": "new_message", "chat_id": [case_id],'
        ' "message": {"kind": "visitor", "text": "You said: Thanks"}}'
    )
    assert fake.fire_rule(url, case_id, template=own).status_code == 200
    assert fake.staff_texts(case_id) == ["You said: Hello", "You said: Thanks"]


def test_a_form_encoded_rule_body_is_accepted_and_keyed_like_json(
    fake: FakeOmnidesk, rules: tuple[OmnideskChannel, str]
) -> None:
    _, url = rules
    case_id = fake.open_case("Hello")
    form = {
        "event": "new_message",
        "chat_id": str(case_id),
        "message[kind]": "visitor",
        "message[text]": "Hello",
        "visitor[id]": "2001",
        "visitor[fields][phone]": "[user_phone]",
    }
    assert requests.post(url, data=form, timeout=5).status_code == 200
    fake.fire_rule(url, case_id, new_case=True)  # the same message as JSON: a repeat
    assert fake.staff_texts(case_id) == ["You said: Hello"]


def test_rule_webhook_refuses_wrong_secrets_and_malformed_bodies(
    fake: FakeOmnidesk, rules: tuple[OmnideskChannel, str]
) -> None:
    channel, url = rules
    case_id = fake.open_case("hi")
    wrong = url.replace(SECRET, "guess")
    answer = fake.fire_rule(wrong, case_id)
    assert answer.status_code == 403 and SECRET not in answer.text
    assert requests.post(url, data=b"{not json", timeout=5).status_code == 400
    missing = requests.post(
        url, json={"event": "new_message", "message": {"kind": "visitor", "text": "x"}}, timeout=5
    )
    assert missing.status_code == 400 and "chat_id" in missing.json()["error"]
    assert fake.staff_texts(case_id) == []
    assert SECRET not in repr(channel)


def test_keyboards_become_numbered_text_and_a_typed_number_presses_the_button(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    bot = Bot()

    @bot.on_text
    def menu(turn: Turn) -> Keyboard:
        return Keyboard(
            text="What would you like?",
            buttons=[Button(id="tea", text="Tea"), Button(id="coffee", text="Coffee")],
        )

    @bot.on_button
    def picked(turn: Turn) -> str:
        assert isinstance(turn.message.button, Button)  # type: ignore[union-attr]
        return f"pressed {turn.message.button.id}"  # type: ignore[union-attr]

    channel = OmnideskChannel(
        bot, client=client, secret=SECRET, inline=True, keyboard_footer="Reply with a number."
    )
    with LocalServer(channel) as server:
        url = server.url + channel.webhook_path
        case_id = fake.open_case("menu please")
        fake.fire_rule(url, case_id, new_case=True)
        fake.user_message(case_id, " 2. ")
        fake.fire_rule(url, case_id)
        fake.user_message(case_id, "menu")
        fake.fire_rule(url, case_id)
        fake.user_message(case_id, "tea")  # the exact label works too
        fake.fire_rule(url, case_id)
    menu_text = "What would you like?\n1. Tea\n2. Coffee\nReply with a number."
    assert fake.staff_texts(case_id) == [menu_text, "pressed coffee", menu_text, "pressed tea"]
    channel.close()


def test_a_handover_edits_the_case_as_configured(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    bot_label, operators = fake.add_label("bot"), fake.add_label("operators")
    bot = Bot()

    @bot.on_text
    def answer(turn: Turn) -> str | None:
        if "operator" in (turn.text or ""):
            turn.handover()
            return None
        return "I am a bot"

    channel = OmnideskChannel(
        bot,
        client=client,
        secret=SECRET,
        inline=True,
        bot_label=bot_label,
        handover=CaseHandover(
            remove_labels=[bot_label], add_labels=[operators], group_id=7, text="Passing you on"
        ),
    )
    with LocalServer(channel) as server:
        url = server.url + channel.webhook_path
        case_id = fake.open_case("hi", labels=[bot_label])
        fake.fire_rule(url, case_id, new_case=True)
        fake.user_message(case_id, "operator please")
        fake.fire_rule(url, case_id)
        case = fake.case(case_id)
        assert case["labels"] == [operators] and case["group_id"] == 7
        assert fake.edits == [
            (case_id, {"add_labels": [operators], "delete_labels": [bot_label], "group_id": 7})
        ]
        assert fake.staff_texts(case_id) == ["I am a bot", "Passing you on"]
        # a rule that fired before the label was gone is left alone
        fake.user_message(case_id, "hello?")
        fake.fire_rule(url, case_id)
        assert fake.staff_texts(case_id) == ["I am a bot", "Passing you on"]
    channel.close()


def test_knowledge_base_answers_when_the_bot_has_none(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    fake.add_kb_article("Delivery times", "<p>We deliver in <b>2 days</b>.</p>")
    bot = Bot()

    @bot.on_text
    def nothing(turn: Turn) -> None:
        return None

    channel = OmnideskChannel(
        bot,
        client=client,
        secret=SECRET,
        inline=True,
        knowledge_base=KnowledgeBaseAnswers(no_answer="Let me find a colleague."),
    )
    with LocalServer(channel) as server:
        url = server.url + channel.webhook_path
        case_id = fake.open_case("delivery")
        fake.fire_rule(url, case_id, new_case=True)
        fake.user_message(case_id, "refunds")
        fake.fire_rule(url, case_id)
    assert fake.staff_texts(case_id) == [
        "Delivery times\n\nWe deliver in 2 days.",
        "Let me find a colleague.",
    ]
    channel.close()


def test_a_rate_limited_burst_of_50_replies_all_arrive_none_twice(fake: FakeOmnidesk) -> None:
    runtime = Runtime(outbox_backoff=0.02, outbox_cap=0.2, workers=4)
    channel = OmnideskChannel(
        echo_bot(), client=fake.client(), secret=SECRET, runtime=runtime, staff_id=3
    )
    cases = [fake.open_case(f"start {n}") for n in range(5)]
    fake.rate_limit(10, window=0.2)  # 5 POSTs per 0.2 s: the burst must wait
    with LocalServer(channel) as server:
        url = server.url + channel.webhook_path
        for i in range(10):
            for case_id in cases:
                fake.user_message(case_id, f"message {i}")
                assert fake.fire_rule(url, case_id).status_code == 200
        fake.wait_for(lambda: sum(len(fake.staff_texts(c)) for c in cases) >= 50, timeout=30)
        assert channel.drain(10)
    for case_id in cases:
        assert fake.staff_texts(case_id) == [f"You said: message {i}" for i in range(10)]
    assert fake.rate_limited > 0
    assert runtime.store.dead_letters() == []
    channel.close()


# ---------------------------------------------------------------------------------------------
# seed 003: custom channels


@pytest.fixture
def desk(
    fake: FakeOmnidesk, client: OmnideskClient
) -> Iterator[tuple[CustomChannel, list[StaffReply], str]]:
    replies: list[StaffReply] = []
    channel_key = fake.add_custom_channel("My app")
    desk = CustomChannel(
        client, channel_key, secret=DESK_SECRET, on_reply=replies.append, inline=True
    )
    server = serve(desk)
    url = server.url + desk.webhook_path
    fake.set_webhook_url(channel_key, url)
    yield desk, replies, url
    server.stop()
    desk.close()


def test_a_users_first_and_second_messages_land_in_one_case(
    fake: FakeOmnidesk, client: OmnideskClient, desk: tuple[CustomChannel, list[StaffReply], str]
) -> None:
    channel, _, _ = desk
    channel.send("user-1", "My app crashes", user_full_name="Ann", user_email="ann@example.com")
    channel.send("user-1", "It happens on start")
    conversation = channel.conversation("user-1")
    assert conversation is not None and conversation.case_id is not None
    case = fake.case(conversation.case_id)
    assert case["channel"] == channel.channel and case["user_id"] == conversation.user_id
    assert fake.user_texts(conversation.case_id) == ["My app crashes", "It happens on start"]
    messages = fake.calls_to("POST", r"/messages\.json$")
    assert [c.body for c in messages] == [
        {"message": {"content": "It happens on start", "user_id": conversation.user_id}}
    ]
    [user] = client.find_users(user_custom_id="user-1", user_custom_channel=channel.channel)
    assert user.user_id == conversation.user_id
    channel.send("user-2", "Another user")
    other = channel.conversation("user-2")
    assert other is not None and other.case_id != conversation.case_id


def test_a_new_case_is_created_when_the_old_one_is_gone(
    fake: FakeOmnidesk, desk: tuple[CustomChannel, list[StaffReply], str]
) -> None:
    channel, _, _ = desk
    channel.send("user-1", "first")
    first = channel.conversation("user-1")
    assert first is not None and first.case_id is not None
    del fake.cases[first.case_id]
    channel.send("user-1", "second")
    second = channel.conversation("user-1")
    assert second is not None and second.case_id not in (None, first.case_id)
    assert fake.user_texts(second.case_id) == ["second"]  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["form", "json"])
def test_a_staff_reply_reaches_the_callback_with_correct_types(
    fake: FakeOmnidesk, desk: tuple[CustomChannel, list[StaffReply], str], encoding: str
) -> None:
    channel, replies, _ = desk
    channel.send("user-1", "Hi")
    conversation = channel.conversation("user-1")
    assert conversation is not None and conversation.case_id is not None
    answer = fake.staff_reply(
        conversation.case_id,
        "Ok!",
        staff_id=7234,
        encoding=encoding,
        attachments=[{"url": "https://files.example/a.pdf", "file_name": "a.pdf", "file_size": 10}],
    )
    assert answer.status_code == 200
    [reply] = replies
    assert reply.case_id == conversation.case_id and reply.user_id == conversation.user_id
    assert (reply.staff_id, reply.custom_user_id, reply.content) == (7234, "user-1", "Ok!")
    assert reply.note is False and reply.sent_via_rule is False
    assert isinstance(reply.message_id, int) and isinstance(reply.created_at, datetime)
    assert [(a.url, a.name, a.size) for a in reply.attachments] == [
        ("https://files.example/a.pdf", "a.pdf", 10)
    ]


def test_notes_are_skipped_unless_asked_and_repeats_are_dropped(
    fake: FakeOmnidesk, desk: tuple[CustomChannel, list[StaffReply], str]
) -> None:
    channel, replies, url = desk
    channel.send("user-1", "Hi")
    case_id = channel.conversation("user-1").case_id  # type: ignore[union-attr]
    assert fake.staff_reply(case_id, "internal: refund approved", note=True).status_code == 200
    assert replies == []
    body = {"type": "message_new", "object": {"message_id": 1, "case_id": case_id, "content": "x"}}
    requests.post(url, json=body, timeout=5)
    requests.post(url, json=body, timeout=5)
    assert [r.content for r in replies] == ["x"]
    channel.include_notes = True
    fake.staff_reply(case_id, "another note", note=True)
    assert [r.note for r in replies] == [False, True]


def test_a_wrong_webhook_secret_gets_403_and_reaches_nothing(
    fake: FakeOmnidesk, desk: tuple[CustomChannel, list[StaffReply], str]
) -> None:
    channel, replies, url = desk
    channel.send("user-1", "Hi")
    case_id = channel.conversation("user-1").case_id  # type: ignore[union-attr]
    wrong = url.replace(DESK_SECRET, "desk-secret-guess")
    answer = fake.staff_reply(case_id, "Ok!", url=wrong)
    assert answer.status_code == 403 and DESK_SECRET not in answer.text
    garbage = requests.post(wrong, data=b"\xff\xfe", timeout=5)
    assert garbage.status_code == 403
    assert replies == []
    assert DESK_SECRET not in repr(channel)
    # the secret may also travel as ?secret=
    base = url.rsplit("/", 1)[0] + "/hook"
    assert fake.staff_reply(case_id, "Ok!", url=f"{base}?secret={DESK_SECRET}").status_code == 200
    assert len(replies) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (
            b"type=message_new&object[message_id]=5&object[content]=hi",
            "application/x-www-form-urlencoded",
            "object.case_id",
        ),
        (
            b"type=message_new&object[message_id]=abc&object[case_id]=1",
            "application/x-www-form-urlencoded",
            "object.message_id",
        ),
        (
            b"type=message_new&object[message_id]=5&object[case_id]=1&object[note]=maybe",
            "application/x-www-form-urlencoded",
            "object.note",
        ),
        (b"type=message_new", "application/x-www-form-urlencoded", "object"),
        (b'{"type": "message_new", "object": [1, 2]}', "application/json", "object"),
        (
            b'{"type": "message_new", "object": {"message_id": 1, "case_id": {"x": 1}}}',
            "application/json",
            "object.case_id",
        ),
        (b"{not json", "application/json", "not valid JSON"),
    ],
)
def test_malformed_bodies_get_400_naming_the_field(
    desk: tuple[CustomChannel, list[StaffReply], str], body: bytes, content_type: str, field: str
) -> None:
    _, replies, url = desk
    answer = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=5)
    assert answer.status_code == 400
    assert field in answer.json()["error"]
    assert replies == []


def test_parse_staff_reply_reads_omnidesks_form_and_json() -> None:
    form = (
        "type=message_new&object[message_id]=42535907&object[case_id]=21755012"
        "&object[staff_id]=7234&object[user_id]=20023294&object[custom_user_id]=my_u_id123456"
        "&object[content]=Ok%21&object[note]=0&object[sent_via_rule]=1"
        "&object[created_at]=Thu%2C+26+Apr+2018+20%3A17%3A10+%2B0300"
        "&object[attachments][0][url]=https%3A%2F%2Fx.io%2Fa.png&object[attachments][1][url]=https%3A%2F%2Fx.io%2Fb.png"
    )
    reply = parse_staff_reply(form)  # no content type: sniffed
    assert (reply.message_id, reply.case_id, reply.staff_id, reply.user_id) == (
        42535907,
        21755012,
        7234,
        20023294,
    )
    assert (reply.custom_user_id, reply.content, reply.note, reply.sent_via_rule) == (
        "my_u_id123456",
        "Ok!",
        False,
        True,
    )
    assert reply.created_at is not None and reply.created_at.utcoffset().total_seconds() == 3 * 3600  # type: ignore[union-attr]
    assert [a.url for a in reply.attachments] == ["https://x.io/a.png", "https://x.io/b.png"]
    as_json = json.dumps({"type": "message_new", "object": {**reply.raw["object"], "note": "1"}})
    parsed = parse_staff_reply(as_json.encode(), "application/json; charset=utf-8")
    assert parsed.note is True and parsed.message_id == 42535907


# ---------------------------------------------------------------------------------------------
# variant 2: the bridge


def test_the_bridge_hands_a_visitor_to_omnidesk_and_back(fake: FakeOmnidesk) -> None:
    runtime = Runtime(inline=True)
    channel_key = fake.add_custom_channel("Bot handovers", channel_type="sync")
    desk = CustomChannel(fake.client(), channel_key, secret=DESK_SECRET, runtime=runtime)
    bridge = CustomChannelBridge(desk, handover_text="Connecting you to an operator.")
    bot = Bot()
    bot_turns: list[str] = []

    @bot.on_text
    def answer(turn: Turn) -> str | None:
        bot_turns.append(turn.text or "")
        if turn.text == "operator":
            turn.handover()
            return None
        return f"Bot: {turn.text}"

    lock = threading.Lock()
    with RecordingChannelServer(token="visitor-side") as visitor_side:
        connector = Connector(
            bridge.wrap(bot),
            token="connector-token",
            channel_url=visitor_side.channel_url,
            channel_token="visitor-side",
            runtime=runtime,
            handover=bridge.handover,
        )
        with LocalServer(desk) as desk_hooks, LocalServer(connector) as inbound:
            fake.set_webhook_url(channel_key, desk_hooks.url + desk.webhook_path)
            webhook = inbound.url + connector.webhook_path

            def visitor(text: str) -> None:
                with lock:
                    body = dumps(
                        text_event(text, chat_id=42, visitor_id="v-9", fields={"name": "Ann"})
                    )
                    answer = requests.post(
                        webhook, data=body, headers={"Content-Type": "application/json"}, timeout=5
                    )
                    assert answer.status_code == 200

            visitor("hello")
            visitor("operator")
            assert visitor_side.texts(42) == ["Bot: hello", "Connecting you to an operator."]
            conversation = desk.conversation("omnichannel:v-9")
            assert conversation is not None and conversation.case_id is not None
            case_id = conversation.case_id
            transcript = fake.user_texts(case_id)[0]
            lines = transcript.splitlines()
            assert lines[0] == "Conversation with the bot before the handover:"
            assert [line.split("] ", 1)[1] for line in lines[2:]] == [
                "Visitor: hello",
                "Bot: Bot: hello",
                "Visitor: operator",
                "Bot: Connecting you to an operator.",
            ]
            assert fake.case(case_id)["channel"] == channel_key

            assert fake.staff_reply(case_id, "Hi Ann, I'm Olga.").status_code == 200
            assert visitor_side.texts(42)[-1] == "Hi Ann, I'm Olga."
            fake.staff_reply(case_id, "note: VIP", note=True)
            visitor("my order is 123")  # goes to the case, not to the bot
            assert fake.user_texts(case_id)[-1] == "my order is 123"
            assert bot_turns == ["hello", "operator"]
            assert visitor_side.texts(42) == [
                "Bot: hello",
                "Connecting you to an operator.",
                "Hi Ann, I'm Olga.",
            ]

            fake.close_case(case_id)
            visitor("thanks")  # the case is closed: the bot answers again
            assert bot_turns[-1] == "thanks" and visitor_side.texts(42)[-1] == "Bot: thanks"
            assert bridge.transcript("omnichannel", 42)[0].text == "thanks"
        connector.close()


def test_direct_request_without_http_is_handled_too(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    channel = OmnideskChannel(echo_bot(), client=client, secret=SECRET, inline=True)
    case_id = fake.open_case("hi")
    body = json.dumps(
        {
            "event": "new_message",
            "chat_id": case_id,
            "message": {"id": "m1", "kind": "visitor", "text": "ping"},
        }
    )
    response = channel.handle(
        Request("POST", f"/hooks/{SECRET}", {"Content-Type": "text/plain"}, body.encode())
    )
    assert response.status == 200
    assert fake.staff_texts(case_id) == ["You said: ping"]
    response = channel.handle(Request("GET", f"/hooks/{SECRET}"))
    assert response.status == 405
    too_big = b"x" * (channel.max_body + 1)
    assert channel.handle(Request("POST", f"/hooks/{SECRET}", {}, too_big)).status == 413
    assert channel.handle(Request("POST", "/hooks/guess", {}, too_big)).status == 403
    assert fake.staff_texts(case_id) == ["You said: ping"]
    channel.close()


# ---------------------------------------------------------------------------------------------
# the durable inbox: a 200 only for what is stored


class FlakyStore(MemoryStore):
    """A memory store whose inbox admission fails while ``down`` (the injected fault)."""

    down = False

    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        if self.down:
            raise ConnectionError("store unavailable (injected fault)")
        return super().inbox_admit(item, dedupe_key, ttl)


def test_a_rule_post_is_answered_200_only_once_its_turn_is_stored(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    store = MemoryStore()
    front = OmnideskChannel(
        echo_bot(), client=client, secret=SECRET, runtime=Runtime(store=store, background=False)
    )
    case_id = fake.open_case("Where is my order?")
    with LocalServer(front) as server:
        answer = fake.fire_rule(server.url + front.webhook_path, case_id, new_case=True)
        assert (answer.status_code, answer.json()) == (200, {"result": "ok"})
        assert store.pending("inbox") == 1  # stored before the 200, not run here
        assert fake.calls == [] and fake.staff_texts(case_id) == []
    # another process on the same store (here: a second runtime) runs the turn
    worker = OmnideskChannel(
        echo_bot(), client=client, secret=SECRET, runtime=Runtime(store=store, inline=True)
    )
    assert worker.drain(10)
    assert fake.staff_texts(case_id) == ["You said: Where is my order?"]
    assert (store.pending("inbox"), store.pending("outbox")) == (0, 0)
    worker.close()
    front.close()


def test_a_store_outage_answers_503_with_retry_after_and_the_retry_runs_once(
    fake: FakeOmnidesk, client: OmnideskClient
) -> None:
    store = FlakyStore()
    channel = OmnideskChannel(
        echo_bot(),
        client=client,
        secret=SECRET,
        runtime=Runtime(store=store, inline=True, retry_after=7),
    )
    case_id = fake.open_case("Hello")
    with LocalServer(channel) as server:
        url = server.url + channel.webhook_path
        store.down = True
        answer = fake.fire_rule(url, case_id, new_case=True)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "7"
        assert store.pending("inbox") == 0 and fake.staff_texts(case_id) == []
        store.down = False
        assert fake.fire_rule(url, case_id, new_case=True).status_code == 200  # the retry
        assert fake.fire_rule(url, case_id, new_case=True).status_code == 200  # and a repeat
    assert fake.staff_texts(case_id) == ["You said: Hello"]
    channel.close()


def test_a_store_outage_refuses_staff_replies_until_it_is_back(fake: FakeOmnidesk) -> None:
    store = FlakyStore()
    replies: list[StaffReply] = []
    channel_key = fake.add_custom_channel("My app")
    desk = CustomChannel(
        fake.client(), channel_key, secret=DESK_SECRET, on_reply=replies.append, store=store
    )  # background workers: the handler runs after the answer
    with LocalServer(desk) as server:
        url = server.url + desk.webhook_path
        body = {"type": "message_new", "object": {"message_id": 9, "case_id": 5, "content": "x"}}
        store.down = True
        answer = requests.post(url, json=body, timeout=5)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        store.down = False
        assert requests.post(url, json=body, timeout=5).status_code == 200
        assert requests.post(url, json=body, timeout=5).status_code == 200
        assert desk.drain(10)
    assert [(r.message_id, r.content) for r in replies] == [(9, "x")]
    desk.close()


class SlowStateStore(MemoryStore):
    """State reads take a moment, as over a network: a read-modify-write without
    compare-and-set would lose concurrent updates."""

    def load_state(self, key: str) -> StateSnapshot:
        snapshot = super().load_state(key)
        time.sleep(0.001)
        return snapshot

    def get_state(self, key: str) -> dict[str, Any] | None:
        value = super().get_state(key)
        time.sleep(0.001)
        return value


class StubChannel:
    """A visitor-side channel that records what the bot sends."""

    name = "stub"

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    def send(self, chat_id: Any, messages: Any) -> None:
        self.sent.extend(messages)

    def handover(self, turn: Turn, **params: Any) -> None:
        raise NotSupported("stub")


def test_concurrent_transcript_updates_lose_no_line(fake: FakeOmnidesk) -> None:
    runtime = Runtime(store=SlowStateStore(), inline=True)
    desk = CustomChannel(fake.client(), "cch1", secret=DESK_SECRET, runtime=runtime)
    bridge = CustomChannelBridge(desk, max_transcript_lines=1000)
    bot = bridge.wrap(echo_bot())
    channel = StubChannel()

    def visitor(n: int) -> None:
        for i in range(10):
            event = NewMessageEvent(chat_id=42, message=TextMessage(text=f"v{n} m{i}"))
            bot(Turn(event, event.message, channel))

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    lines = bridge.transcript("stub", 42)
    expected = {f"v{n} m{i}" for n in range(4) for i in range(10)}
    assert sorted(line.text for line in lines if line.sender == "visitor") == sorted(expected)
    assert sorted(line.text for line in lines if line.sender == "bot") == sorted(
        f"You said: {text}" for text in expected
    )
    assert len(channel.sent) == 40
    runtime.close()
