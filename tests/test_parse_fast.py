"""The fast path of ``parse_event`` against the slow path: equal events, identical errors.

``omnichannel._fastparse`` builds the models directly (falling back to
``codec.structure_event`` on anything unusual) and decodes JSON with msgspec when the ``fast``
extra is installed; ``decoding.decode_json`` calls the C scanner directly. The reference here is
what ``parse_event`` was before: ``structure_event(decode_json(body))`` with the scanner
shortcut switched off (``JSONDecoder.decode`` all the way). Every comparison runs with msgspec
(the real library) and with the standard library alone; one test runs in an interpreter where
msgspec cannot be imported. No timings here: they are in ``python -m benchmarks peers``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import fuzz
from benchmarks.payloads import PAYLOADS
from omnichannel import (
    NewMessageEvent,
    PayloadError,
    UnsupportedEvent,
    _fastparse,
    decoding,
    parse_event,
)
from omnichannel.codec import structure_event
from omnichannel.decoding import decode_json
from omnichannel.testing import button_event, file_event, new_chat_event, text_event

ROOT = Path(__file__).resolve().parent.parent

MODES: dict[str, Any] = {"msgspec": _fastparse.fast_loads, "stdlib": None}
needs_msgspec = pytest.mark.skipif(_fastparse.fast_loads is None, reason="msgspec not installed")
MODE_PARAMS = [
    pytest.param("msgspec", marks=needs_msgspec),
    pytest.param("stdlib"),
]


# the reference and the comparison -------------------------------------------------------------
def _no_scan(text: str, index: int) -> Any:
    raise StopIteration(index)


@contextmanager
def slow_decoding() -> Iterator[None]:
    """``decode_json`` as it was: every body through ``JSONDecoder.decode``."""
    saved = decoding._scan
    decoding._scan = _no_scan
    try:
        yield
    finally:
        decoding._scan = saved


def reference(body: Any) -> Any:
    """``parse_event`` before the fast path."""
    with slow_decoding():
        if type(body) is bytes or type(body) is str or not isinstance(body, Mapping):
            return structure_event(decode_json(body))
        return structure_event(body)


def strict(value: Any) -> list[Any]:
    """A value to compare exactly: types kept (``1`` is not ``1.0`` nor ``True``), key order
    kept, attrs instances by every field (``raw`` and ``extra`` too, which ``==`` skips). A flat
    list of tokens, made without recursion (bodies nested 900 deep are valid)."""
    tokens: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if attrs.has(kind):
            names = [f.name for f in attrs.fields(kind)]
            tokens.append((kind, tuple(names)))
            stack.extend(getattr(item, name) for name in reversed(names))
        elif kind is dict or kind is MappingProxyType:
            tokens.append((kind.__name__, tuple(item), tuple(map(type, item))))
            stack.extend(reversed(item.values()))
        elif kind is list or kind is tuple:
            tokens.append((kind.__name__, len(item)))
            stack.extend(reversed(item))
        elif kind is float:
            tokens.append(("float", repr(item)))
        else:
            tokens.append((kind.__name__, item))
    return tokens


def outcome(parse: Callable[[Any], Any], body: Any) -> Any:
    """What parsing ``body`` gives: the event (compared strictly) or the error, with its type,
    message and attributes (``path``, ``problem``, ``missing``; ``field``, ``value``,
    ``payload``)."""
    try:
        result = parse(body)
    except Exception as exc:
        return ("error", type(exc), str(exc), strict(vars(exc)))
    return ("event", strict(result))


def check(body: Any, modes: tuple[str, ...] = ("msgspec", "stdlib")) -> Any:
    """Assert the fast paths give what the reference gives; return that."""
    expected = outcome(reference, body)
    for mode in modes:
        loads = MODES[mode]
        if mode == "msgspec" and loads is None:
            continue
        got = outcome(lambda b, loads=loads: _fastparse.parse(b, loads), body)
        assert got == expected, (mode, body)
    return expected


def forms(payload: dict[str, Any]) -> list[Any]:
    """The payload as every input ``parse_event`` takes: bytes (ASCII escapes and raw UTF-8),
    str, the dict itself, a bytearray."""
    ascii_text = json.dumps(payload)
    utf8_text = json.dumps(payload, ensure_ascii=False)
    return [
        ascii_text.encode(),
        utf8_text.encode(),
        ascii_text,
        utf8_text,
        payload,
        bytearray(utf8_text.encode()),
    ]


# the usual shapes: built by the fast path, equal to the slow path -----------------------------
def _webim_file() -> dict[str, Any]:
    payload = file_event("https://f.example/b.png", state=None, chat_id="c-3", message_id="m-3")
    data = payload["message"]["data"]
    data["media_type"] = data.pop("content_type")
    del data["size"]
    return payload


def _variations() -> dict[str, dict[str, Any]]:
    text = json.loads(PAYLOADS["text"])
    out: dict[str, dict[str, Any]] = {name: json.loads(body) for name, body in PAYLOADS.items()}
    out["no visitor"] = {k: v for k, v in text.items() if k != "visitor"}
    out["visitor null"] = {**text, "visitor": None}
    out["visitor without fields"] = {**text, "visitor": {"id": "v-9"}}
    out["visitor fields null"] = {**text, "visitor": {"id": None, "fields": None}}
    out["some fields"] = {**text, "visitor": {"fields": {"name": "Ann", "phone": None}}}
    out["empty fields"] = {**text, "visitor": {"id": "v", "fields": {}}}
    out["extra fields"] = {
        **text,
        "visitor": {
            "id": "v-1",
            "fields": {
                "name": "Ann",
                "display_name": "A",
                "info": {"k": [1, 2.5, None, True]},
                "avatar_url": "https://a.example/x.png",
            },
        },
    }
    out["only extra fields"] = {**text, "visitor": {"fields": {"custom": 1}}}
    out["extra top-level and message keys"] = {
        **text,
        "ts": 1.5,
        "nested": {"a": [{}]},
        "message": {**text["message"], "created_at": "2024-01-01", "meta": None},
    }
    out["no message id"] = text_event("hi", message_id=None)
    out["string chat id"] = text_event("hi", chat_id="chat-1", message_id="m")
    out["negative and big chat id"] = text_event("hi", chat_id=-(10**30), message_id="m")
    out["empty text"] = text_event("", message_id="m")
    out["unicode"] = text_event(
        "Привет 👋 \u00e9\u0301 \u200b \x00 \"quoted\" \\ / \t\n", message_id="м-1",
        fields={"name": "Аня 🌸", "login": "", "site": "пример.рф"},
    )  # fmt: skip
    out["file"] = file_event("https://f.example/a.pdf", message_id="m-2")
    out["file, Webim 2.0"] = _webim_file()
    out["file uploading, no url"] = {
        "event": "new_message",
        "chat_id": 5,
        "message": {"kind": "file_visitor", "id": "m", "data": {"state": "upload"}},
    }
    out["file, both content_type and media_type"] = file_event(
        "https://f.example/x", message_id="m"
    )
    out["file, both content_type and media_type"]["message"]["data"]["media_type"] = "image/png"
    out["file, empty data but state"] = {
        "event": "new_message",
        "chat_id": 5,
        "message": {"kind": "file_visitor", "data": {"state": "error", "size": 0}},
    }
    out["button"] = button_event("Yes", button_id="b1", message_id="m-5")
    out["button, Webim 2.0 request"] = button_event("No", button_id="b2", message_id="m-6")
    out["button, Webim 2.0 request"]["message"]["data"]["request"] = {"messageId": "m-0"}
    out["button, request without messageId"] = button_event("No", message_id="m")
    out["button, request without messageId"]["message"]["data"]["request"] = {}
    out["new_chat"] = new_chat_event("Hi", "There", chat_id=6)
    out["new_chat"]["messages"].append({"id": "op-1", "kind": "operator", "text": "Hello"})
    out["new_chat"]["messages"].append({"kind": "info"})
    out["new_chat, no messages"] = {"event": "new_chat", "chat": {"id": "c-1"}}
    out["new_chat, messages null"] = {"event": "new_chat", "chat": {"id": 1}, "messages": None}
    out["new_chat, a file and a button"] = {
        "event": "new_chat",
        "chat": {"id": 2},
        "visitor": {"id": "v"},
        "messages": [
            file_event("https://f.example/a", message_id="f")["message"],
            button_event("Yes", message_id="b")["message"],
        ],
    }
    return out


VARIATIONS = _variations()


@pytest.mark.parametrize("name", list(VARIATIONS))
def test_usual_payloads_take_the_fast_path_and_equal_the_slow_path(name: str) -> None:
    payload = VARIATIONS[name]
    assert _fastparse.build(copy.deepcopy(payload)) is not None, "not built by the fast path"
    for body in forms(payload):
        kind, *_ = check(body)
        assert kind == "event"


@pytest.mark.parametrize("mode", MODE_PARAMS)
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_the_seed_payloads(name: str, mode: str) -> None:
    body = PAYLOADS[name]
    event = _fastparse.parse(body, MODES[mode])
    assert type(event) is NewMessageEvent
    assert outcome(lambda b: _fastparse.parse(b, MODES[mode]), body) == outcome(reference, body)


def test_parse_event_uses_msgspec_when_installed() -> None:
    pytest.importorskip("msgspec")
    assert _fastparse.fast_loads is not None
    assert outcome(parse_event, PAYLOADS["file"]) == outcome(reference, PAYLOADS["file"])


def test_the_fast_builder_is_enabled_and_builds_real_models() -> None:
    """The models are built without ``__init__``: they must be the real thing all the same."""
    assert _fastparse.ENABLED
    event = parse_event(PAYLOADS["button"])
    slow = reference(PAYLOADS["button"])
    assert type(event) is NewMessageEvent
    assert type(event.visitor.fields) is type(slow.visitor.fields)
    assert event == slow and hash(event) == hash(slow) and repr(event) == repr(slow)
    assert copy.copy(event) == event
    assert attrs.evolve(event, chat_id=5).chat_id == 5
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.chat_id = 1  # type: ignore[misc]
    assert attrs.asdict(event) == attrs.asdict(slow)


# lenient scalars and errors: the slow path decides, with the same result ----------------------
def _lenient_and_invalid() -> dict[str, Any]:
    text = json.loads(PAYLOADS["text"])
    file = json.loads(PAYLOADS["file"])
    button = json.loads(PAYLOADS["button"])

    def at(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
        payload = copy.deepcopy(payload)
        *parents, last = path.split(".")
        node = payload
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return payload

    out: dict[str, Any] = {}
    for value in (7, "7", " m-7 ", 7.0, 7.5, True, None, "", [], {}):
        out[f"message.id={value!r}"] = at(text, "message.id", value)
        out[f"visitor.id={value!r}"] = at(text, "visitor.id", value)
        out[f"data.button.id={value!r}"] = at(button, "message.data.button.id", value)
        out[f"data.id={value!r}"] = at(file, "message.data.id", value)
    for value in (79001234567, 1.5, True, [], {}, ""):
        out[f"fields.phone={value!r}"] = at(text, "visitor.fields.phone", value)
    for value in ("123", " 12 ", "-5", "", "1.5", 12.0, 12.5, True, None, 2**70, [], "x"):
        out[f"size={value!r}"] = at(file, "message.data.size", value)
    for value in ("123", "", 0, -1, 1.0, True, None, [], {}):
        out[f"chat_id={value!r}"] = at(text, "chat_id", value)
    for path in ("event", "chat_id", "message", "message.kind", "message.text", "visitor.fields"):
        out[f"no {path}"] = at(text, path, _DELETE)
    for path in ("message.data", "message.data.url", "message.data.state"):
        out[f"no {path}"] = at(file, path, _DELETE)
    for path in ("message.data.button", "message.data.button.id", "message.data.button.text"):
        out[f"no {path}"] = at(button, path, _DELETE)
    for value in (1, None, [], "x", True):
        out[f"text={value!r}"] = at(text, "message.text", value)
        out[f"state={value!r}"] = at(file, "message.data.state", value)
        out[f"url={value!r}"] = at(file, "message.data.url", value)
        out[f"content_type={value!r}"] = at(file, "message.data.content_type", value)
        out[f"name={value!r}"] = at(file, "message.data.name", value)
        out[f"button.text={value!r}"] = at(button, "message.data.button.text", value)
        out[f"request={value!r}"] = at(button, "message.data.request", value)
        out[f"request.messageId={value!r}"] = at(
            button, "message.data.request", {"messageId": value}
        )
        out[f"event={value!r}"] = at(text, "event", value)
        out[f"kind={value!r}"] = at(text, "message.kind", value)
        out[f"visitor={value!r}"] = at(text, "visitor", value)
        out[f"message={value!r}"] = at(text, "message", value)
        out[f"data={value!r}"] = at(file, "message.data", value)
        out[f"button={value!r}"] = at(button, "message.data.button", value)
        out[f"fields={value!r}"] = at(text, "visitor.fields", value)
    media = at(file, "message.data.content_type", _DELETE)
    media["message"]["data"]["media_type"] = 5
    out["media_type=5"] = media
    out["unknown event"] = {"event": "chat_closed", "chat_id": 8}
    out["unknown kind"] = at(text, "message.kind", "operator")
    out["new_chat, chat.id missing"] = {"event": "new_chat", "chat": {}}
    out["new_chat, chat.id empty"] = {"event": "new_chat", "chat": {"id": ""}}
    out["new_chat, messages not a list"] = {"event": "new_chat", "chat": {"id": 1}, "messages": 5}
    out["new_chat, a message not an object"] = {
        "event": "new_chat",
        "chat": {"id": 1},
        "messages": [{"kind": "visitor", "text": "a"}, 5],
    }
    out["new_chat, a bad visitor message"] = {
        "event": "new_chat",
        "chat": {"id": 1},
        "messages": [{"kind": "visitor", "text": 5}],
    }
    out["new_chat, a numeric message id"] = {
        "event": "new_chat",
        "chat": {"id": 1},
        "visitor": {"id": 5},
        "messages": [{"kind": "visitor", "text": "a", "id": 5}],
    }
    return out


_DELETE = object()
ODD = _lenient_and_invalid()


@pytest.mark.parametrize("name", list(ODD))
def test_lenient_scalars_and_errors_equal_the_slow_path(name: str) -> None:
    for body in forms(ODD[name]):
        check(body)


def test_a_mapping_that_is_not_a_dict_takes_the_slow_path() -> None:
    payload = json.loads(PAYLOADS["text"])
    proxy = MappingProxyType(payload)
    assert _fastparse.parse(proxy, None) == reference(payload)
    check(proxy)


# bodies that are not the usual JSON: decoding gives what the standard library gives ----------
RAW_BODIES: list[bytes | str] = [
    b"",
    b" ",
    b"null",
    b"[]",
    b"1",
    b'"x"',
    b"{}",
    b"{",
    b"}",
    b'{"event":"new_message"} x',
    b'{"event":"new_message"}{}',
    b' {"event":"x"} \n\t\r',
    b'{"event":"x"}\n',
    b'{"event":"x"} \t\r\n ',
    b'{"event":"x"}\n x',
    '{"event":"x"}\u00a0',
    '{"event":"x"}\u2028',
    PAYLOADS["text"] + b"\r\n",
    b'{"event":"x"}\x0c',
    b'{"event":"x"}\x00',
    b'\xef\xbb\xbf{"event":"x"}',
    "\ufeff" + '{"event":"x"}',
    b'{"event":"x","a":NaN}',
    b'{"event":"x","a":Infinity}',
    b'{"event":"x","a":-Infinity}',
    b'{"event":"x","a":1e400}',
    b'{"event":"x","a":-1e400}',
    b'{"event":"x","a":1e-400}',
    b'{"event":"x","a":-0}',
    b'{"event":"x","a":-0.0}',
    b'{"event":"x","a":1.0,"b":1E2,"c":0.1e1}',
    b'{"event":"x","a":01}',
    b'{"event":"x","a":123456789012345678901234567890}',
    b'{"event":"x","a":-9223372036854775809,"b":18446744073709551616}',
    b'{"event":"x","a":' + b"1" * 5000 + b"}",
    b'{"event":"x","a":' + b"1" * 5000 + b".5}",
    b'{"event":"x","a":0.' + b"1" * 5000 + b"}",
    b'{"event":"x","a":2.2250738585072011e-308,"b":4.9e-324,"c":1.7976931348623157e308}',
    b'{"event":"x","a":1,"a":2,"b":3}',
    b'{"event":"x","\\ud800":1}',
    b'{"event":"x","a":"\\ud83d"}',
    b'{"event":"x","a":"\\ude00x"}',
    b'{"event":"x","a":"\\ud83d\\u0041"}',
    b'{"event":"x","a":"\\ud83d\\ud83d"}',
    b'{"event":"x","a":"\\udc00\\udc00"}',
    b'{"event":"x","a":"\\ud83d\\ude00"}',
    b'{"event":"x","a":"\\u0000\\u001f\\\\\\/\\b\\f\\n\\r\\t"}',
    b'{"event":"x","a":"\x01"}',
    b'{"event":"x","a":"\xff"}',
    b'{"event":"x","a":"\xed\xa0\xbd"}',
    b'{"event":"x","a":"\xc0\xaf"}',
    b'{"event":"x","a":"\xf4\x90\x80\x80"}',
    '{"event":"x","a":"\ud83d"}',
    '{"event":"x","a":"\ud83d\ude00"}',
    b'{"event":"new_message","chat_id":1,"message":{"kind":"visitor","text":"\\ud83d"}}',
    b'{"event":"new_message","chat_id":1,"message":{"kind":"visitor","text":"\\ud83d\\ude00"}}',
    '{"event":"new_message","chat_id":1,"message":{"kind":"visitor","text":"\udc00"}}',
    b'{"event":"x","a":' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"event":"x","a":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"event":"x","a":' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}",
    b'{"event":"x","a":"' + b"[{" * 400 + b'"}',
    b'{"event":"x","a":[' + b"1," * 400 + b"1]}",
    b'{"event":"x","a":true,"b":false,"c":null,"d":tru}',
]


@pytest.mark.parametrize("body", RAW_BODIES, ids=lambda b: repr(b[:40]))
def test_decoding_equals_the_standard_library(body: bytes | str) -> None:
    check(body)


def test_decode_json_takes_the_scanner_only_when_it_decides_alike() -> None:
    """Extra data, errors and deep nesting go through ``JSONDecoder.decode``: same messages."""
    for body in RAW_BODIES:
        if isinstance(body, str):
            continue
        try:
            expected: Any = ("ok", strict(reference_decode(body)))
        except Exception as exc:
            expected = ("error", type(exc), str(exc))
        try:
            got: Any = ("ok", strict(decode_json(body)))
        except Exception as exc:
            got = ("error", type(exc), str(exc))
        assert got == expected, body[:60]


def _reference_inner(body: bytes) -> Any:
    with slow_decoding():
        return structure_event(decode_json(body))


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_nesting_at_the_recursion_limit_decodes_alike(mode: str) -> None:
    """Around the depth where the recursion limit stops ``json`` (wherever the test's stack is),
    the fast path fails or succeeds exactly where the slow one does: a decoder that spends
    fewer frames (msgspec, the scanner called directly) is not used on such bodies."""
    loads = MODES[mode]

    def fast(body: bytes) -> Any:  # as many frames above decode_json as the reference
        return _fastparse.parse(body, loads)

    def slow(body: bytes) -> Any:
        return _reference_inner(body)

    seen = set()
    for depth in range(700, 1000):
        for body in (
            b'{"event":"x","a":' + b"[" * depth + b"]" * depth + b"}",
            b'{"event":"x","a":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}",
        ):
            expected = outcome(slow, body)
            assert outcome(fast, body) == expected, depth
            seen.add(expected[1])  # UnsupportedEvent: decoded; PayloadError: too deep
    assert seen == {UnsupportedEvent, PayloadError}, seen  # the limit was met in the range


def reference_decode(body: bytes | str) -> Any:
    with slow_decoding():
        return decode_json(body)


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_any_json_value_decodes_alike(value: Any, ascii_only: bool) -> None:
    """Through ``UnsupportedEvent.payload`` (the decoded body) and ``VisitorFields.extra``."""
    text = json.dumps({"event": "other", "value": value}, ensure_ascii=ascii_only)
    check(text.encode())
    check(text)
    payload = {
        "event": "new_message",
        "chat_id": 1,
        "visitor": {"fields": {"info": value, "name": "n"}},
        "message": {"kind": "visitor", "text": "t", "x": value},
    }
    check(json.dumps(payload, ensure_ascii=ascii_only).encode())


numbers = st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?\Z")


@settings(max_examples=300, deadline=None)
@given(numbers)
def test_any_json_number_decodes_alike(number: str) -> None:
    check(f'{{"event":"other","n":{number},"m":[{number}]}}'.encode())
    check(f'{{"event":"new_message","chat_id":1,"message":{{"kind":"file_visitor",'
          f'"data":{{"url":"u","size":{number}}}}}}}'.encode())  # fmt: skip


# generated payloads: the protocol's shapes with every optional part varied --------------------
ids = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["12", " 12 ", ""]),
)
texts = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans())
maybe_missing: Any = object()


def _maybe(strategy: Any) -> Any:
    return st.one_of(st.just(maybe_missing), strategy)


def _dict(**items: Any) -> Any:
    return st.fixed_dictionaries(items).map(
        lambda d: {k: v for k, v in d.items() if v is not maybe_missing}
    )


visitor_fields = st.one_of(
    st.none(),
    _dict(
        name=_maybe(texts),
        login=_maybe(texts),
        phone=_maybe(st.one_of(texts, st.floats(allow_nan=False, allow_infinity=False))),
        email=_maybe(st.text(max_size=10)),
        site=_maybe(st.text(max_size=10)),
        display_name=_maybe(st.text(max_size=5)),
        info=_maybe(json_values),
    ),
)
visitors = st.one_of(st.none(), _dict(id=_maybe(ids), fields=_maybe(visitor_fields)))
text_messages = _dict(kind=st.just("visitor"), id=_maybe(ids), text=_maybe(texts))
file_data = _dict(
    id=_maybe(ids),
    state=_maybe(st.sampled_from(["ready", "upload", "error", None, 5])),
    name=_maybe(texts),
    content_type=_maybe(st.one_of(st.text(max_size=12), st.none(), st.integers())),
    media_type=_maybe(st.one_of(st.text(max_size=12), st.none(), st.integers())),
    size=_maybe(st.one_of(st.integers(), st.none(), st.sampled_from(["12", "x", 1.0, True]))),
    url=_maybe(st.one_of(st.text(max_size=12), st.none(), st.integers())),
)
file_messages = _dict(kind=st.just("file_visitor"), id=_maybe(ids), data=_maybe(file_data))
buttons = _dict(id=_maybe(ids), text=_maybe(texts))
requests_ = st.one_of(st.none(), _dict(messageId=_maybe(ids)), st.integers())
button_messages = _dict(
    kind=st.just("keyboard_response"),
    id=_maybe(ids),
    data=_maybe(_dict(button=_maybe(st.one_of(buttons, st.none())), request=_maybe(requests_))),
)
other_messages = _dict(
    kind=_maybe(st.one_of(st.sampled_from(["operator", "info", ""]), st.integers(), st.none())),
    id=_maybe(ids),
    text=_maybe(texts),
)
messages = st.one_of(text_messages, file_messages, button_messages, other_messages)
chat_ids = st.one_of(
    st.integers(),
    st.text(max_size=6),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
new_messages = _dict(
    event=st.just("new_message"),
    chat_id=_maybe(chat_ids),
    visitor=_maybe(visitors),
    message=_maybe(st.one_of(messages, st.none(), st.integers())),
    extra=_maybe(json_values),
)
new_chats = _dict(
    event=st.just("new_chat"),
    chat=_maybe(st.one_of(_dict(id=_maybe(chat_ids)), st.none(), st.text(max_size=3))),
    visitor=_maybe(visitors),
    messages=_maybe(st.one_of(st.lists(messages, max_size=4), st.none(), st.integers())),
)
payloads = st.one_of(new_messages, new_messages, new_chats)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.booleans())
def test_generated_payloads_equal_the_slow_path(payload: dict[str, Any], ascii_only: bool) -> None:
    text = json.dumps(payload, ensure_ascii=ascii_only, allow_nan=False)
    check(text.encode())
    check(text)
    check(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_equal_the_slow_path(body: bytes) -> None:
    check(body)
    check(
        b'{"event":"new_message","chat_id":1,"message":{"kind":"visitor","text":"' + body + b'"}}'
    )


# the fuzz campaign's mutations of the connector's valid payloads ------------------------------
def test_fuzz_mutations_equal_the_slow_path() -> None:
    generator = fuzz.Generator(16, dict.fromkeys(fuzz.ENDPOINTS, 1 << 20))
    kinds: dict[str, int] = {}
    for index in range(3000):
        case = generator.case(index, fuzz.CONNECTOR)
        kind = check(case.body)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
        if index % 5 == 0:
            check(case.body.decode("utf-8", "replace"))
    assert kinds.get("event", 0) > 300 and kinds.get("error", 0) > 300, kinds


# without msgspec ------------------------------------------------------------------------------
def test_without_msgspec_everything_works_as_before() -> None:
    """In an interpreter where msgspec cannot be imported: no fast decoder, the same results."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["msgspec"] = None  # import msgspec raises ImportError
        import tests.test_parse_fast as t
        from omnichannel import _fastparse, parse_event
        assert _fastparse.fast_loads is None
        bodies = [*t.PAYLOADS.values(), *t.RAW_BODIES]
        for payload in [*t.VARIATIONS.values(), *t.ODD.values()]:
            bodies += t.forms(payload)
        for body in bodies:
            assert t.outcome(parse_event, body) == t.outcome(t.reference, body), body
        print("ok", len(bodies))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok ")
