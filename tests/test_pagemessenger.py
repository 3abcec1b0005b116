"""Acceptance of the Page-messenger (Selarti) adapter over real HTTP on 127.0.0.1: a visitor on
an omnichannel ``Connector`` talks to the AI of a ``FakePageMessenger`` through the bridge."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest
import requests

from omnichannel import (
    Connector,
    DeliveryError,
    MemoryStore,
    PayloadError,
    RetryPolicy,
    Runtime,
)
from omnichannel.pagemessenger import (
    DEFAULT_HANDOVER_TEXT,
    AIMessageType,
    HandoverRequest,
    PageMessengerAuthError,
    PageMessengerBridge,
    PageMessengerClient,
    PageMessengerError,
    parse_ai_webhook,
)
from omnichannel.runtime.conversation import conversation_key
from omnichannel.testing import FakePageMessenger, LocalServer, RecordingChannelServer
from omnichannel.testing.events import button_event, file_event, text_event

API_KEY = "pm-api-key-4f1d2c9e8b7a"
TASK_ID = "1721129985149x478019552540622850"
SECRET = "hook-secret-0a9b8c7d6e5f"
CONNECTOR_TOKEN = "connector-token-31337"
CHANNEL_TOKEN = "channel-token-27182"
HANDOVER_TEXT = "An operator will answer you here."
FAST = RetryPolicy(attempts=2, backoff=0.01, cap=0.05, timeout=5.0)
BOOLEAN_FIELDS = ("close", "get_contact", "interest", "is_bot", "operator", "success")


@attrs.define
class Stack:
    """A running system: channel server ← Connector ⇄ bridge ⇄ fake AI."""

    connector: Connector
    bridge: PageMessengerBridge
    client: PageMessengerClient
    inbound: LocalServer  # serves the connector
    hooks: LocalServer  # serves the bridge

    def post_event(self, payload: dict[str, Any]) -> requests.Response:
        """The channel server posts a visitor event to the connector over HTTP."""
        url = self.inbound.url + self.connector.webhook_path
        return requests.post(url, json=payload, timeout=10)

    @property
    def webhook_url(self) -> str:
        return self.hooks.url + self.bridge.webhook_path

    def stop(self) -> None:
        self.inbound.stop()
        self.hooks.stop()


def make_stack(
    fake: FakePageMessenger,
    channel_server: RecordingChannelServer,
    *,
    api_key: str = API_KEY,
    store: Any = None,
    handover_text: str | None = HANDOVER_TEXT,
    **bridge_options: Any,
) -> Stack:
    connector = Connector(
        token=CONNECTOR_TOKEN,
        channel_url=channel_server.channel_url,
        channel_token=CHANNEL_TOKEN,
        handover_text=handover_text,
        store=store,
        outbox_backoff=0.05,
    )
    connector.client.retry = FAST
    client = PageMessengerClient(api_key=api_key, base_url=fake.base_url, retry=FAST)
    bridge = PageMessengerBridge(client, TASK_ID, connector, secret=SECRET, **bridge_options)
    connector.bot = bridge.bot
    stack = Stack(
        connector=connector,
        bridge=bridge,
        client=client,
        inbound=LocalServer(connector).start(),
        hooks=LocalServer(bridge).start(),
    )
    fake.webhook_url = stack.webhook_url
    return stack


@pytest.fixture
def fake() -> Iterator[FakePageMessenger]:
    with FakePageMessenger(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def channel_server() -> Iterator[RecordingChannelServer]:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as server:
        yield server


@pytest.fixture
def stack(fake: FakePageMessenger, channel_server: RecordingChannelServer) -> Iterator[Stack]:
    built = make_stack(fake, channel_server)
    yield built
    built.stop()
    built.connector.close(timeout=5)


# --- the round trip ----------------------------------------------------------------------------


def test_visitor_message_reaches_the_ai_and_the_answer_reaches_the_visitor(
    stack: Stack, fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    assert stack.post_event(text_event("Hello", chat_id=42)).json() == {"result": "ok"}

    [received] = fake.wait_for_messages(1)
    assert (received.task_id, received.chat_id, received.message) == (
        TASK_ID,
        "omnichannel:42",
        "Hello",
    )
    [call] = channel_server.wait_for(1)
    assert (call.method, call.chat_id, call.text) == ("send_message", 42, "AI: Hello")
    assert call.headers["Authorization"] == f"Token {CHANNEL_TOKEN}"
    assert [w.status for w in fake.wait_for_webhooks(1)] == [200]
    assert fake.auth_calls == 1

    # a second visitor is a second dialog for the AI, answered in their own chat
    stack.post_event(text_event("Bonjour", chat_id="c-7"))
    assert fake.wait_for_messages(2)[1].chat_id == "omnichannel:c-7"
    channel_server.wait_for(2)
    assert channel_server.texts("c-7") == ["AI: Bonjour"]
    assert channel_server.texts(42) == ["AI: Hello"]
    assert fake.auth_calls == 1  # the token is reused


def test_the_ai_and_operator_answers_enter_the_visitors_history(
    stack: Stack, fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    stack.post_event(text_event("Hello", chat_id=42))
    channel_server.wait_for(1)
    (sent,) = fake.wait_for_messages(1)
    operator = fake.ai_payload(sent, message_type="operator", message_text="A human here.")
    assert fake.post_webhook(operator).status == 200
    channel_server.wait_for(2)
    assert stack.bridge.drain(5)
    key = conversation_key(stack.connector.destination, 42)
    record = stack.connector.runtime.store.get_state(key) or {}
    assert [line[:2] for line in record["history"]] == [
        ["user", "Hello"],
        ["bot", "AI: Hello"],
        ["operator", "A human here."],
    ]


def test_files_and_buttons_reach_the_ai_as_their_text(
    stack: Stack, fake: FakePageMessenger
) -> None:
    fake.answer = "silent"
    stack.post_event(
        file_event("https://files.example/a.pdf", content_type="application/pdf", file_id="f-9")
    )
    stack.post_event(button_event("Yes, please"))
    received = fake.wait_for_messages(2)
    assert [m.message for m in received] == [
        "file:application/pdf|f-9|https://files.example/a.pdf",
        "Yes, please",
    ]
    assert {m.chat_id for m in received} == {"omnichannel:1"}


def test_the_bridge_renews_an_expired_token_while_forwarding(
    stack: Stack, fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    stack.post_event(text_event("one", chat_id=3))
    channel_server.wait_for(1)
    fake.expire_tokens()
    stack.post_event(text_event("two", chat_id=3))
    channel_server.wait_for(2)
    assert channel_server.texts(3) == ["AI: one", "AI: two"]
    assert (fake.auth_calls, fake.unauthorized) == (2, 1)


# --- the client --------------------------------------------------------------------------------


def test_an_expired_token_is_renewed_once_and_a_second_401_is_a_typed_error(
    fake: FakePageMessenger,
) -> None:
    client = PageMessengerClient(api_key=API_KEY, base_url=fake.base_url, retry=FAST)
    assert client.send_message_external(TASK_ID, "u-1", "one") == {}
    assert fake.auth_calls == 1

    fake.expire_tokens()
    client.send_message_external(TASK_ID, "u-1", "two")
    assert (fake.auth_calls, fake.unauthorized) == (2, 1)
    assert [m.message for m in fake.messages] == ["one", "two"]

    fake.refuse_tokens()
    with pytest.raises(PageMessengerAuthError) as info:
        client.send_message_external(TASK_ID, "u-1", "three")
    assert isinstance(info.value, PageMessengerError)
    assert isinstance(info.value, DeliveryError)
    assert (info.value.status, info.value.retryable) == (401, False)
    assert (fake.auth_calls, fake.unauthorized) == (3, 3)  # one renewal, then no loop
    assert len(fake.messages) == 2

    # a token without an API key cannot be renewed: refused at once, no auth call
    fake.refuse_tokens(False)
    stale = PageMessengerClient(token="stale-token-8d7f", base_url=fake.base_url, retry=FAST)
    with pytest.raises(PageMessengerAuthError) as info:
        stale.send_message_external(TASK_ID, "u-1", "four")
    assert fake.auth_calls == 3
    assert "stale-token-8d7f" not in str(info.value)


def test_retryable_failures_are_retried_and_typed(fake: FakePageMessenger) -> None:
    client = PageMessengerClient(api_key=API_KEY, base_url=fake.base_url, retry=FAST)
    fake.fail_next(1, 503)
    client.send_message_external(TASK_ID, "u-2", "after one 503")
    assert [m.message for m in fake.messages] == ["after one 503"]

    fake.fail_next(2, 503)
    with pytest.raises(PageMessengerError) as info:
        client.send_message_external(TASK_ID, "u-2", "lost")
    assert (info.value.status, info.value.retryable, info.value.attempts) == (503, True, 2)
    assert "send_message_external" in str(info.value)


# --- the webhook model -------------------------------------------------------------------------

TRUE_FORMS: list[Any] = [True, "true", "True", "yes", "YES", 1, "1"]
FALSE_FORMS: list[Any] = [False, "false", "no", 0, "0", "", None]


def _form(payload: dict[str, Any]) -> bytes:
    def text(value: Any) -> str:
        if value is None:
            return ""  # a form has no null: the field is empty
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return urlencode({k: text(v) for k, v in payload.items()}).encode()


@pytest.mark.parametrize("encoding", ["json", "form"])
@pytest.mark.parametrize(
    ("wire", "expected"),
    [(v, True) for v in TRUE_FORMS] + [(v, False) for v in FALSE_FORMS],
    ids=lambda v: repr(v),
)
def test_every_boolean_form_parses(wire: Any, expected: bool, encoding: str) -> None:
    payload = {"external_chat_id": "omnichannel:1", **dict.fromkeys(BOOLEAN_FIELDS, wire)}
    if encoding == "json":
        message = parse_ai_webhook(json.dumps(payload).encode(), "application/json")
    else:
        message = parse_ai_webhook(_form(payload), "application/x-www-form-urlencoded")
    assert {f: getattr(message, f) for f in BOOLEAN_FIELDS} == dict.fromkeys(
        BOOLEAN_FIELDS, expected
    )


def test_webhook_fields_are_typed_and_unknown_ones_kept() -> None:
    body = {
        "external_chat_id": 123456789,
        "message_id": 17211299851490,
        "task_id": TASK_ID,
        "message_type": "moderator",
        "message_text": "Hi",
        "contacts": {"phone": "+79000000000"},
        "brand_new_field": [1, 2],
    }
    message = parse_ai_webhook(json.dumps(body))  # no content type: sniffed as JSON
    assert (message.external_chat_id, message.message_id) == ("123456789", "17211299851490")
    assert message.message_type is AIMessageType.UNKNOWN
    assert message.message_type_raw == "moderator"
    assert message.contacts == {"phone": "+79000000000"}
    assert message.extra == {"brand_new_field": [1, 2]}
    assert (message.operator, message.close, message.handover_reason) == (False, False, None)

    form = parse_ai_webhook(b"external_chat_id=x%3A1&message_type=Bot&operator=yes&close=1")
    assert form.message_type is AIMessageType.BOT
    assert form.handover_reason == "operator"

    # a flag that is no boolean does not lose the AI's answer: not set, kept raw
    odd = parse_ai_webhook({"external_chat_id": "x", "interest": "maybe", "message_text": "Hi"})
    assert (odd.interest, odd.raw["interest"], odd.message_text) == (False, "maybe", "Hi")
    with pytest.raises(PayloadError) as info:
        parse_ai_webhook({"message_text": "Hi"})
    assert info.value.path == "external_chat_id" and info.value.missing


def test_a_missing_or_unknown_message_type_is_delivered_as_the_ais_text(
    stack: Stack, fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    stack.post_event(text_event("Hello", chat_id=42))
    channel_server.wait_for(1)
    (sent,) = fake.wait_for_messages(1)
    odd = ({"message_type": "assistant"}, {"message_type": None}, {"interest": "maybe"})
    for n, fields in enumerate(odd, 1):
        payload = fake.ai_payload(sent, message_text=f"answer {n}")
        payload.update(fields)
        payload["message_id"] = f"extra-{n}"
        assert fake.post_webhook(payload).status == 200
        channel_server.wait_for(n + 1)
    assert channel_server.texts(42) == ["AI: Hello", "answer 1", "answer 2", "answer 3"]


# --- handover ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "booleans"),
    [("json", (True, False)), ("form", ("yes", "no")), ("json", (1, 0))],
    ids=["json-bool", "form-yes-no", "json-1-0"],
)
def test_an_operator_webhook_stops_forwarding_and_hands_over(
    stack: Stack,
    fake: FakePageMessenger,
    channel_server: RecordingChannelServer,
    encoding: Any,
    booleans: tuple[Any, Any],
) -> None:
    fake.encoding, fake.booleans, fake.answer = encoding, booleans, "operator"
    stack.post_event(text_event("I want a human", chat_id=42))
    fake.wait_for_messages(1)
    channel_server.wait_for(2)
    # the AI's last words, then the Connector's handover (its handover_text)
    assert channel_server.texts(42) == [fake.handover_message, HANDOVER_TEXT]
    assert not stack.bridge.is_forwarding("omnichannel", 42)

    fake.answer = "echo"
    assert stack.post_event(text_event("hello?", chat_id=42)).status_code == 200
    assert stack.connector.drain(5)
    assert len(fake.messages) == 1  # not forwarded any more

    # the flag stays set in later webhooks: no second handover
    repeat = fake.ai_payload(fake.messages[0], operator=True, message_text="")
    assert fake.post_webhook(repeat).status == 200
    assert stack.bridge.drain(5)
    assert channel_server.texts(42) == [fake.handover_message, HANDOVER_TEXT]

    # other visitors still talk to the AI; resume() gives this one back to it
    stack.post_event(text_event("hi", chat_id=43))
    assert fake.wait_for_messages(2)[1].chat_id == "omnichannel:43"
    stack.bridge.resume("omnichannel", 42)
    stack.post_event(text_event("back again", chat_id=42))
    assert fake.wait_for_messages(3)[2].message == "back again"


def test_close_on_a_channel_without_handover_sends_the_default_text(
    fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    built = make_stack(fake, channel_server, handover_text=None)
    try:
        fake.answer = "close"
        built.post_event(text_event("bye", chat_id=9))
        channel_server.wait_for(2)
        assert channel_server.texts(9) == [fake.close_message, DEFAULT_HANDOVER_TEXT]
        assert not built.bridge.is_forwarding("omnichannel", 9)
    finally:
        built.stop()
        built.connector.close(timeout=5)


def test_a_custom_handover_hook_gets_the_visitors_last_turn(
    fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    seen: list[HandoverRequest] = []
    built = make_stack(fake, channel_server, handover=seen.append)
    try:
        fake.answer = "operator"
        built.post_event(text_event("call me", chat_id=11))
        fake.wait_for_webhooks(1)
        assert built.bridge.drain(5)
        [request] = seen
        assert (request.reason, request.chat_id, request.ai_chat_id) == (
            "operator",
            11,
            "omnichannel:11",
        )
        assert request.channel is built.connector
        assert request.turn is not None
        assert request.turn.text == "call me"
        assert channel_server.texts(11) == [fake.handover_message]  # the hook sent nothing
    finally:
        built.stop()
        built.connector.close(timeout=5)


def test_answers_are_routed_after_a_restart(
    fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    store = MemoryStore()  # stands in for SQLite / Redis: it outlives both "processes"
    first = make_stack(fake, channel_server, store=store)
    fake.answer = "silent"
    first.post_event(text_event("remember me", chat_id=77))
    fake.wait_for_messages(1)
    first.stop()
    assert first.connector.close(timeout=5)

    second = make_stack(fake, channel_server, store=store)
    try:
        answer = fake.ai_payload(fake.messages[0], message_text="Welcome back", operator=True)
        assert fake.post_webhook(answer).status == 200
        channel_server.wait_for(2)
        # no turn in memory after the restart: the handover falls back to a plain message
        assert channel_server.texts(77) == ["Welcome back", HANDOVER_TEXT]
    finally:
        second.stop()
        second.connector.close(timeout=5)


# --- webhook protection and errors -------------------------------------------------------------


def test_a_webhook_with_a_wrong_secret_gets_403(
    stack: Stack, fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    fake.answer = "silent"
    stack.post_event(text_event("hi", chat_id=5))
    [received] = fake.wait_for_messages(1)
    payload = fake.ai_payload(received, message_text="forged")

    for wrong in ("x" * len(SECRET), SECRET[:-1], SECRET + "0"):
        call = fake.post_webhook(payload, url=f"{stack.hooks.url}/pagemessenger/{wrong}")
        assert call.status == 403
        assert SECRET not in call.body
        assert "error" in json.loads(call.body)
    assert requests.get(stack.webhook_url, timeout=5).status_code == 405
    assert stack.bridge.drain(5)
    assert channel_server.calls == []


@pytest.mark.parametrize(
    ("raw", "content_type", "names"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (b'{"message_text": "hi"}', "application/json", "external_chat_id"),
        (b'{"external_chat_id": {"id": 1}}', "application/json", "external_chat_id"),
        (b'{"external_chat_id": "a", "contacts": true}', "application/json", "contacts"),
        (b"message_text=a&close=2", "application/x-www-form-urlencoded", "external_chat_id"),
        (b"\xff\xfe", "application/json", "UTF-8"),
    ],
)
def test_a_malformed_webhook_gets_400_naming_the_problem(
    stack: Stack, fake: FakePageMessenger, raw: bytes, content_type: str, names: str
) -> None:
    call = fake.post_webhook({}, url=stack.webhook_url, raw=raw, content_type=content_type)
    assert call.status == 400
    error = json.loads(call.body)["error"]
    assert names in error
    assert "Traceback" not in error


def test_repeated_and_unknown_webhooks(
    stack: Stack, fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    fake.answer = "silent"
    stack.post_event(text_event("hi", chat_id=8))
    [received] = fake.wait_for_messages(1)
    answer = fake.ai_payload(received, message_text="only once")
    assert [fake.post_webhook(answer).status for _ in range(3)] == [200, 200, 200]
    unknown = fake.ai_payload(external_chat_id="omnichannel:404", message_text="lost")
    assert fake.post_webhook(unknown).status == 200
    user_echo = fake.ai_payload(received, message_type="user", message_text="hi")
    assert fake.post_webhook(user_echo).status == 200
    assert stack.bridge.drain(5)
    assert channel_server.texts() == ["only once"]


def test_an_overloaded_bridge_answers_503_with_retry_after(
    fake: FakePageMessenger, channel_server: RecordingChannelServer
) -> None:
    overloaded = Runtime(max_pending=0, retry_after=7)
    built = make_stack(fake, channel_server, runtime=overloaded)
    try:
        built.bridge.start()
        built.post_event(text_event("hi", chat_id=6))
        [received] = fake.wait_for_messages(1)
        [call] = fake.wait_for_webhooks(1)
        assert call.status == 503, "the AI's answer is refused, not acknowledged and dropped"

        answer = fake.ai_payload(received, message_text="later")
        refused = requests.post(built.webhook_url, json=answer, timeout=5)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "7"
        assert overloaded.store.pending("inbox") == 0
        assert channel_server.calls == []

        overloaded.max_pending = 100  # the backlog cleared: the platform's retry is taken
        accepted = requests.post(built.webhook_url, json=answer, timeout=5)
        assert (accepted.status_code, accepted.json()) == (200, {"result": "ok"})
        channel_server.wait_for(1)
        assert channel_server.texts(6) == ["later"]
    finally:
        built.stop()
        built.bridge.close(timeout=5)
        built.connector.close(timeout=5)


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_never_reach_errors_reprs_or_logs(
    fake: FakePageMessenger,
    channel_server: RecordingChannelServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "wrong-key-5e6f7a8b9c"
    client = PageMessengerClient(api_key=wrong_key, base_url=fake.base_url, retry=FAST)
    with pytest.raises(PageMessengerAuthError) as info:
        client.authenticate()
    # the fake repeats the key in its error body, as some APIs do: it must be scrubbed
    assert wrong_key not in str(info.value)
    assert wrong_key not in info.value.response_text
    assert "***" in info.value.response_text
    assert wrong_key not in repr(client)

    # an error body that repeats the key and the token (a 400 here) is scrubbed as well
    good_client = PageMessengerClient(api_key=API_KEY, base_url=fake.base_url, retry=FAST)
    token = good_client.authenticate()
    fake.fail_next(1, 400, message=f"bad call with key {API_KEY} and token {token}")
    with pytest.raises(PageMessengerError) as bad:
        good_client.send_message_external(TASK_ID, "u-3", "hi")
    assert bad.value.status == 400
    for text in (str(bad.value), bad.value.response_text, repr(good_client)):
        assert API_KEY not in text
        assert token not in text
    assert "bad call with key ***" in str(bad.value)

    # through the bridge: the message is dead-lettered without the key in its error
    built = make_stack(fake, channel_server, api_key=wrong_key)
    try:
        built.post_event(text_event("hi", chat_id=1))
        assert built.connector.drain(5)
        [dead] = built.connector.runtime.store.dead_letters()
        assert dead.last_error is not None
        assert "refused the API key" in dead.last_error
        assert wrong_key not in dead.last_error
        assert SECRET not in repr(built.bridge)
    finally:
        built.stop()
        built.connector.close(timeout=5)

    # a working round trip logs neither the key, the token nor the webhook secret
    good = make_stack(fake, channel_server)
    try:
        good.post_event(text_event("hello", chat_id=2))
        channel_server.wait_for(1)
        assert API_KEY not in repr(good.client)
        assert fake.issued_tokens
        for token in fake.issued_tokens:
            assert token not in repr(good.client)
    finally:
        good.stop()
        good.connector.close(timeout=5)
    # (urllib3's own debug lines show the URLs the test and the fake request: not ours to scrub)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("omnichannel"))
    assert "pagemessenger" in ours
    for secret in (wrong_key, API_KEY, SECRET, *fake.issued_tokens):
        assert secret not in ours
