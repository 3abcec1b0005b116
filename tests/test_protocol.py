"""The core protocol: parsing every kind and shape, errors naming the field, conversions."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import omnichannel
from omnichannel import (
    CHANNEL_VARIABLES,
    Button,
    ButtonPress,
    FileLink,
    FileMessage,
    Keyboard,
    NewChatEvent,
    NewMessageEvent,
    PayloadError,
    SendMessage,
    TextMessage,
    TextReply,
    UnsupportedEvent,
    agent_text,
    channel_variables,
    dumps,
    file_to_text,
    parse_event,
    parse_send_message,
)
from omnichannel.codec import unstructure

VISITOR = {
    "id": "v-1",
    "fields": {
        "name": "Ann",
        "login": "ann",
        "phone": "+7900",
        "email": "a@x.io",
        "site": "shop.example",
    },
}


def event(message: Any, **extra: Any) -> dict[str, Any]:
    return {"event": "new_message", "chat_id": 123, "visitor": VISITOR, "message": message, **extra}


TEXT = event({"id": "m-1", "kind": "visitor", "text": "Hello"})
FILE_DATA = {
    "id": "f-1",
    "state": "ready",
    "name": "a.pdf",
    "content_type": "application/pdf",
    "size": 2048,
    "url": "https://files.example/a.pdf",
}
FILE = event({"id": "m-2", "kind": "file_visitor", "data": FILE_DATA})
BUTTON = event(
    {"id": "m-3", "kind": "keyboard_response", "data": {"button": {"id": "b1", "text": "Yes"}}}
)


# parsing every kind ---------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["bytes", "str", "mapping", "bytearray"])
def test_text_message_parses_from_every_input_form(form: str) -> None:
    raw = json.dumps(TEXT)
    body: Any = {
        "bytes": raw.encode(),
        "str": raw,
        "mapping": TEXT,
        "bytearray": bytearray(raw.encode()),
    }[form]
    parsed = parse_event(body)
    assert isinstance(parsed, NewMessageEvent)
    assert parsed.chat_id == 123
    assert parsed.message == TextMessage(id="m-1", text="Hello")
    assert parsed.visitor.id == "v-1"
    assert parsed.visitor.fields.name == "Ann"
    assert parsed.raw == TEXT
    assert agent_text(parsed) == "Hello"


def test_file_message_parses_and_renders_as_file_text() -> None:
    parsed = parse_event(json.dumps(FILE).encode())
    message = parsed.messages[0]
    assert isinstance(message, FileMessage)
    assert message.file.size == 2048
    assert message.ready
    assert file_to_text(message) == "file:application/pdf|f-1|https://files.example/a.pdf"
    assert agent_text(message) == "file:application/pdf|f-1|https://files.example/a.pdf"


@pytest.mark.parametrize("state", ["uploading", "processing", "error", "READY", ""])
def test_file_not_ready_is_parsed_but_has_no_agent_text(state: str) -> None:
    payload = event({"id": "m", "kind": "file_visitor", "data": {**FILE_DATA, "state": state}})
    message = parse_event(payload).messages[0]
    assert isinstance(message, FileMessage)
    assert not message.ready
    assert agent_text(message) is None


def test_file_not_ready_may_lack_its_url() -> None:
    data = {k: v for k, v in FILE_DATA.items() if k != "url"}
    message = parse_event(
        event({"kind": "file_visitor", "data": {**data, "state": "uploading"}})
    ).messages[0]
    assert isinstance(message, FileMessage)
    assert message.file.url is None


def test_button_press_gives_its_label() -> None:
    parsed = parse_event(BUTTON)
    message = parsed.messages[0]
    assert message == ButtonPress(id="m-3", button=Button(id="b1", text="Yes"))
    assert agent_text(parsed) == "Yes"


# Webim 2.0 shapes -----------------------------------------------------------------------------
def test_webim_file_uses_media_type_no_state_and_message_id() -> None:
    payload = event(
        {
            "id": "msg-77",
            "kind": "file_visitor",
            "data": {
                "name": "p.png",
                "media_type": "image/png",
                "url": "https://x/p.png",
                "size": 5,
            },
        }
    )
    message = parse_event(payload).messages[0]
    assert isinstance(message, FileMessage)
    assert message.ready
    assert message.file.content_type == "image/png"
    assert agent_text(message) == "file:image/png|msg-77|https://x/p.png"


def test_webim_button_press_keeps_request_message_id() -> None:
    payload = event(
        {
            "id": "m",
            "kind": "keyboard_response",
            "data": {"button": {"id": "say_hi", "text": "Say hi"}, "request": {"messageId": "k-9"}},
        }
    )
    message = parse_event(payload).messages[0]
    assert isinstance(message, ButtonPress)
    assert message.request_message_id == "k-9"
    assert message.button.id == "say_hi"


def test_webim_new_chat_keeps_visitor_messages_in_order() -> None:
    payload = {
        "event": "new_chat",
        "chat": {"id": 555},
        "visitor": {
            "id": "v",
            "fields": {"display_name": "Bob", "avatar_url": "https://a", "x-crm": 7},
        },
        "messages": [
            {"id": "1", "kind": "visitor", "text": "first"},
            {"id": "2", "kind": "operator", "text": "from the history"},
            {"id": "3", "kind": "info", "text": "chat started"},
            {
                "id": "4",
                "kind": "keyboard_response",
                "data": {"button": {"id": "b", "text": "second"}},
            },
        ],
    }
    parsed = parse_event(payload)
    assert isinstance(parsed, NewChatEvent)
    assert parsed.chat_id == 555
    assert [m.id for m in parsed.messages] == ["1", "4"]
    assert agent_text(parsed) == "first\nsecond"
    assert parsed.visitor.fields.get("display_name") == "Bob"
    assert parsed.visitor.fields.extra == {
        "display_name": "Bob",
        "avatar_url": "https://a",
        "x-crm": 7,
    }
    assert channel_variables(parsed)["channel_conversation_id"] == "555"
    assert channel_variables(parsed)["channel_chat_id"] == "555|omnichannel"


def test_unknown_visitor_fields_are_kept() -> None:
    payload = event(
        TEXT["message"], visitor={"id": "v", "fields": {"name": "A", "loyalty": {"tier": 2}}}
    )
    fields = parse_event(payload).visitor.fields
    assert fields.extra == {"loyalty": {"tier": 2}}
    assert fields.get("loyalty") == {"tier": 2}
    assert fields.get("name") == "A"


def test_numeric_ids_and_phone_are_kept_as_text() -> None:
    payload = event(
        {"id": 17, "kind": "keyboard_response", "data": {"button": {"id": 3, "text": "Three"}}},
        visitor={"id": 99, "fields": {"phone": 79001234567}},
    )
    parsed = parse_event(payload)
    message = parsed.messages[0]
    assert isinstance(message, ButtonPress)
    assert (message.id, message.button.id) == ("17", "3")
    assert parsed.visitor.id == "99"
    assert parsed.visitor.fields.phone == "79001234567"


def test_string_chat_id_is_accepted_and_kept() -> None:
    parsed = parse_event({**TEXT, "chat_id": "c-1"})
    assert parsed.chat_id == "c-1"
    assert channel_variables(parsed)["channel_chat_id"] == "c-1|omnichannel"


def test_visitor_is_optional() -> None:
    payload = {k: v for k, v in TEXT.items() if k != "visitor"}
    variables = channel_variables(parse_event(payload))
    assert variables["channel_visitor_id"] is None
    assert variables["channel_visitor_firstname"] is None


# unicode --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["Привет, мир", "こんにちは", "👋🏽 family: 👨‍👩‍👧", "a\u0000b", "\u202eRTL"]
)
def test_unicode_and_emoji_survive_bytes_parsing(text: str) -> None:
    body = json.dumps(
        event({"id": "m", "kind": "visitor", "text": text}), ensure_ascii=False
    ).encode()
    assert agent_text(parse_event(body)) == text


def test_non_utf8_bytes_are_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_event(b'{"event": "new_message", "x": "\xff"}')


# channel variables ----------------------------------------------------------------------------
def test_channel_variables_are_exactly_the_seed_table() -> None:
    variables = channel_variables(parse_event(TEXT))
    assert tuple(variables) == CHANNEL_VARIABLES
    assert variables == {
        "channel_visitor_id": "v-1",
        "channel_conversation_id": "123",
        "channel_visitor_firstname": "Ann",
        "channel_visitor_lastname": None,
        "channel_visitor_account": "ann",
        "channel_visitor_phone": "+7900",
        "channel_visitor_email": "a@x.io",
        "channel_visitor_source": "shop.example",
        "channel_chat_id": "123|omnichannel",
    }


# errors name the field ------------------------------------------------------------------------
def without(payload: dict[str, Any], dotted: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(payload))
    *parents, last = dotted.split(".")
    target = copy
    for part in parents:
        target = target[part]
    del target[last]
    return copy


def replace(payload: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(payload))
    *parents, last = dotted.split(".")
    target = copy
    for part in parents:
        target = target[part]
    target[last] = value
    return copy


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        (TEXT, "event"),
        (TEXT, "chat_id"),
        (TEXT, "message"),
        (TEXT, "message.kind"),
        (TEXT, "message.text"),
        (FILE, "message.data"),
        (FILE, "message.data.url"),
        (BUTTON, "message.data"),
        (BUTTON, "message.data.button"),
        (BUTTON, "message.data.button.id"),
        (BUTTON, "message.data.button.text"),
    ],
)
def test_every_missing_required_field_is_named(payload: dict[str, Any], path: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_event(without(payload, path))
    assert caught.value.path == path
    assert caught.value.missing
    assert path in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("payload", "path", "value"),
    [
        (TEXT, "chat_id", 1.5),
        (TEXT, "chat_id", True),
        (TEXT, "chat_id", ""),
        (TEXT, "chat_id", [1]),
        (TEXT, "event", 7),
        (TEXT, "message", "hello"),
        (TEXT, "message.kind", 3),
        (TEXT, "message.text", 42),
        (TEXT, "message.id", {"a": 1}),
        (TEXT, "visitor", []),
        (TEXT, "visitor.id", 1.5),
        (TEXT, "visitor.fields", "x"),
        (TEXT, "visitor.fields.email", ["a"]),
        (FILE, "message.data", [1]),
        (FILE, "message.data.url", 5),
        (FILE, "message.data.state", 1),
        (FILE, "message.data.size", "big"),
        (FILE, "message.data.content_type", False),
        (FILE, "message.data.name", {}),
        (FILE, "message.data.id", 2.5),
        (BUTTON, "message.data.button", "Yes"),
        (BUTTON, "message.data.button.text", None),
        (BUTTON, "message.data.button.text", 1),
        (BUTTON, "message.data.button.id", True),
    ],
)
def test_every_mistyped_field_is_named(payload: dict[str, Any], path: str, value: Any) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_event(replace(payload, path, value))
    assert caught.value.path == path
    assert path in str(caught.value)


def test_new_chat_errors_name_the_message_index() -> None:
    payload = {
        "event": "new_chat",
        "chat": {"id": 1},
        "messages": [{"kind": "visitor", "text": "a"}, {"kind": "visitor"}],
    }
    with pytest.raises(PayloadError) as caught:
        parse_event(payload)
    assert caught.value.path == "messages.1.text"
    with pytest.raises(PayloadError, match="chat.id"):
        parse_event({"event": "new_chat", "chat": {}})


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"{", b"[1, 2]", b'"text"', b"null", b"[" * 100_000]
)
def test_bodies_that_are_not_an_object_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_event(body)


def test_unknown_event_and_kind_are_unsupported_not_payload_errors() -> None:
    with pytest.raises(UnsupportedEvent) as caught:
        parse_event({**TEXT, "event": "chat_closed"})
    assert not isinstance(caught.value, PayloadError)
    assert caught.value.field == "event"
    assert caught.value.value == "chat_closed"
    assert caught.value.payload["chat_id"] == 123
    with pytest.raises(UnsupportedEvent) as caught:
        parse_event(replace(TEXT, "message.kind", "sticker"))
    assert caught.value.field == "message.kind"


# outbound: exact JSON both ways ---------------------------------------------------------------
OUTBOUND = [
    (TextReply(text="Hi!"), {"chat_id": 123, "message": {"kind": "operator", "text": "Hi!"}}),
    (
        Keyboard(buttons=[[Button(id="b1", text="Yes"), Button(id="b2", text="No")]]),
        {
            "chat_id": 123,
            "message": {
                "kind": "keyboard",
                "buttons": [[{"id": "b1", "text": "Yes"}, {"id": "b2", "text": "No"}]],
            },
        },
    ),
    (
        FileLink(url="https://x/a.pdf", name="a.pdf", media_type="application/pdf"),
        {
            "chat_id": 123,
            "message": {
                "kind": "file_operator",
                "data": {
                    "url": "https://x/a.pdf",
                    "name": "a.pdf",
                    "media_type": "application/pdf",
                },
            },
        },
    ),
]


@pytest.mark.parametrize(("message", "wire"), OUTBOUND)
def test_outbound_serializes_to_exactly_the_protocol_json(
    message: Any, wire: dict[str, Any]
) -> None:
    envelope = SendMessage(chat_id=123, message=message)
    assert unstructure(envelope) == wire
    assert json.loads(dumps(envelope)) == wire
    assert parse_send_message(dumps(envelope)) == envelope
    assert parse_send_message(wire) == envelope


def test_keyboard_accepts_a_flat_row_and_keeps_unicode() -> None:
    keyboard = Keyboard(buttons=[Button(id="1", text="Да ✅"), Button(id="2", text="Нет")])
    assert keyboard.buttons == ((Button(id="1", text="Да ✅"), Button(id="2", text="Нет")),)
    assert "Да ✅".encode() in dumps(SendMessage(chat_id=1, message=keyboard))


def test_models_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        TextReply(text="a").text = "b"  # type: ignore[misc]


def test_outbound_parse_errors_name_the_field() -> None:
    with pytest.raises(PayloadError, match=r"message\.buttons\.0\.1\.text"):
        parse_send_message(
            {
                "chat_id": 1,
                "message": {
                    "kind": "keyboard",
                    "buttons": [[{"id": "a", "text": "A"}, {"id": "b"}]],
                },
            }
        )


def test_public_names_are_exported() -> None:
    for name in (
        "parse_event",
        "agent_text",
        "file_to_text",
        "channel_variables",
        "PayloadError",
        "UnsupportedEvent",
    ):
        assert name in omnichannel.__all__


# properties -----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "event",
        "chat_id",
        "visitor",
        "message",
        "chat",
        "messages",
        "id",
        "kind",
        "text",
        "data",
        "button",
        "fields",
        "state",
        "url",
    ]
)
payload_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(
        ["new_message", "new_chat", "visitor", "file_visitor", "keyboard_response", "ready"]
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_raises_only_protocol_errors(value: Any) -> None:
    try:
        parse_event(json.dumps(value).encode())
    except (PayloadError, UnsupportedEvent):
        pass


@settings(max_examples=500, deadline=None)
@given(payload_like)
def test_payload_shaped_values_raise_only_protocol_errors(value: Any) -> None:
    try:
        result = parse_event(value) if isinstance(value, dict) else parse_event(json.dumps(value))
    except (PayloadError, UnsupportedEvent):
        return
    assert isinstance(result, (NewMessageEvent, NewChatEvent))
    for message in result.messages:
        text = agent_text(message)
        assert text is None or isinstance(text, str)
    assert tuple(channel_variables(result)) == CHANNEL_VARIABLES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_errors(body: bytes) -> None:
    try:
        parse_event(body)
    except (PayloadError, UnsupportedEvent):
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.text(),
    st.lists(
        st.lists(st.tuples(st.text(min_size=1), st.text()), min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    ),
)
def test_outbound_round_trips(text: str, rows: list[list[tuple[str, str]]]) -> None:
    for message in (
        TextReply(text=text),
        Keyboard(buttons=[[Button(id=i, text=t) for i, t in row] for row in rows]),
        FileLink(url="https://x/" + text, name=text or None, media_type=None),
    ):
        envelope = SendMessage(chat_id=7, message=message)
        assert parse_send_message(dumps(envelope)) == envelope
