"""The fast path of :func:`omnichannel.parse_event`: decode, then build the models directly.

:func:`parse` decodes the body (with msgspec when the optional ``fast`` extra is installed, else
with :func:`omnichannel.decoding.decode_json`) and hands the value to :func:`build`, a
hand-written reader of the usual shapes that checks every type exactly and builds the frozen
attrs models without their ``__init__`` (see :func:`_twin`). Whenever
it meets anything unusual (a missing or mistyped field, a number where the wire usually has a
string, an unknown kind, a mapping that is not a ``dict``) it gives up and the one error-reporting
path, :func:`omnichannel.codec.structure_event`, structures the value from the start: the results
are equal and every error (type, message, path, missing vs mistyped) comes from one place.

The same holds for decoding: msgspec is used only where it gives exactly what the standard
library gives; on any failure the body is decoded again by :func:`~omnichannel.decoding.decode_json`
(which raises the documented error), and bodies that could be nested deeply enough to meet the
recursion limit never take the msgspec path (its depth budget differs by a frame or two).
``tests/test_parse_fast.py`` checks both paths against each other, with and without msgspec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from omnichannel.codec import structure_event
from omnichannel.decoding import decode_json, shallow_json
from omnichannel.models import (
    Button,
    ButtonPress,
    Event,
    FileInfo,
    FileMessage,
    InboundMessage,
    NewChatEvent,
    NewMessageEvent,
    TextMessage,
    Visitor,
    VisitorFields,
)

__all__ = ["build", "fast_loads", "parse"]

Loads = Callable[[Any], Any]
_UNDECODED: Any = object()
_SMALL = 512  # a body this long cannot nest deeper than shallow_json allows

fast_loads: Loads | None
"""msgspec's untyped JSON decoder when the ``fast`` extra is installed, else ``None`` (set it to
``None`` to parse with the standard library alone)."""

try:
    import msgspec
except ImportError:  # pragma: no cover - the extra is installed in the test environment
    fast_loads = None
else:
    fast_loads = msgspec.json.Decoder().decode


def parse(
    body: bytes | bytearray | memoryview | str | Mapping[str, Any], loads: Loads | None
) -> Event:
    """:func:`omnichannel.parse_event`, decoding with ``loads`` (``None``: the standard library)."""
    if type(body) is bytes or type(body) is str:
        if loads is None:
            value = decode_json(body)
        else:
            value = _UNDECODED
            if len(body) <= _SMALL or shallow_json(body):
                try:
                    value = loads(body)
                except Exception:
                    value = _UNDECODED
            if value is _UNDECODED:
                value = decode_json(body)  # the value, or the documented error
    elif isinstance(body, Mapping):
        value = body
    else:
        value = decode_json(body)
    if type(value) is dict:
        event = build(value)
        if event is not None:
            return event
    return structure_event(value)


# ---------------------------------------------------------------------------------------------
# building frozen attrs instances without __init__
#
# A frozen attrs instance refuses attribute assignment, and its __init__ sets each slot through
# object.__setattr__. Here each model has a twin: a plain class with the very same slots. The
# instance is made as the twin, its slots stored directly (the interpreter's fastest store), and
# then its class is set to the model; CPython allows that between classes of one layout. (A
# __weakref__ slot would break the layout check, hence weakref_slot=False on these models.)

_new = object.__new__


def _twin(cls: type) -> Any:
    """A mutable class with the slots of the attrs class ``cls``, checked to be assignable (and
    ``cls`` to have nothing its ``__init__`` would run: no converter, validator, post-init)."""
    fields = attrs.fields(cls)
    if any(f.converter or f.validator for f in fields) or hasattr(cls, "__attrs_post_init__"):
        raise TypeError(f"{cls.__name__}.__init__ does more than set its fields")
    twin = type(f"_{cls.__name__}", (), {"__slots__": tuple(f.name for f in fields)})
    probe: Any = _new(twin)
    probe.__class__ = cls  # TypeError if the layouts differ
    return twin


try:
    _VisitorFields = _twin(VisitorFields)
    _Visitor = _twin(Visitor)
    _TextMessage = _twin(TextMessage)
    _FileInfo = _twin(FileInfo)
    _FileMessage = _twin(FileMessage)
    _Button = _twin(Button)
    _ButtonPress = _twin(ButtonPress)
    _NewMessageEvent = _twin(NewMessageEvent)
    _NewChatEvent = _twin(NewChatEvent)
except TypeError:  # pragma: no cover - a model or an interpreter that refuses: all goes slow
    ENABLED = False
else:
    ENABLED = True
"""Whether :func:`build` builds (a test asserts it does); else every value takes the slow path."""

_NO_EXTRA = attrs.fields(VisitorFields).extra.default
_NO_FIELDS = VisitorFields()
_NO_VISITOR = Visitor()
_KNOWN_FIELDS = frozenset(("name", "login", "phone", "email", "site"))
_INBOUND_KINDS = frozenset(("visitor", "file_visitor", "keyboard_response"))

# ---------------------------------------------------------------------------------------------
# the usual shapes; None means "not usual: let codec.structure_event decide"
#
# Each reader accepts only what the slow path accepts unchanged (exact types: str, int, dict,
# list; no bool for an int, no number for a string) and returns what the slow path returns.


def build(payload: dict[str, Any]) -> Event | None:
    """The event of a decoded body of a usual shape, or ``None`` when the slow path must decide
    (an error, an unsupported event, a lenient scalar, anything unusual)."""
    if not ENABLED:  # pragma: no cover
        return None
    event = payload.get("event")
    if type(event) is not str or event != "new_message":
        return _new_chat(payload) if event == "new_chat" and type(event) is str else None
    chat_id = payload.get("chat_id")
    if type(chat_id) is not int and (type(chat_id) is not str or not chat_id):
        return None
    visitor = _visitor(payload.get("visitor"))
    if visitor is None:
        return None
    m = payload.get("message")
    if type(m) is not dict:
        return None
    message = _message(m)
    if message is None:
        return None
    e = _new(_NewMessageEvent)
    e.event = "new_message"
    e.chat_id = chat_id
    e.visitor = visitor
    e.message = message
    e.raw = payload
    e.__class__ = NewMessageEvent
    return e  # type: ignore[no-any-return]


def _new_chat(payload: dict[str, Any]) -> NewChatEvent | None:
    chat = payload.get("chat")
    if type(chat) is not dict:
        return None
    chat_id = chat.get("id")
    if type(chat_id) is not int and (type(chat_id) is not str or not chat_id):
        return None
    raw_messages = payload.get("messages")
    if raw_messages is None:
        raw_messages = ()
    elif type(raw_messages) is not list:
        return None
    messages = []
    for item in raw_messages:
        if type(item) is not dict:
            return None
        kind = item.get("kind")
        if type(kind) is str and kind in _INBOUND_KINDS:
            message = _message(item)
            if message is None:
                return None
            messages.append(message)
    visitor = _visitor(payload.get("visitor"))
    if visitor is None:
        return None
    e = _new(_NewChatEvent)
    e.event = "new_chat"
    e.chat_id = chat_id
    e.visitor = visitor
    e.messages = tuple(messages)
    e.raw = payload
    e.__class__ = NewChatEvent
    return e  # type: ignore[no-any-return]


def _visitor(v: object) -> Visitor | None:
    if v is None:
        return _NO_VISITOR
    if type(v) is not dict:
        return None
    vid = v.get("id")
    if type(vid) is not str and vid is not None:
        return None
    f = v.get("fields")
    if f is None:
        fields = _NO_FIELDS
    elif type(f) is dict:
        get = f.get
        name = get("name")
        login = get("login")
        phone = get("phone")
        email = get("email")
        site = get("site")
        if (
            type(name) is str
            and type(login) is str
            and type(phone) is str
            and type(email) is str
            and type(site) is str
            and len(f) == 5
        ):
            extra = _NO_EXTRA  # the five fields and nothing else: the usual case
        else:
            for item in (name, login, phone, email, site):
                if type(item) is not str and item is not None:
                    return None  # a number kept as its text: the slow path's lenient reader
            if _KNOWN_FIELDS.issuperset(f):
                extra = _NO_EXTRA
            else:
                extra = {k: x for k, x in f.items() if k not in _KNOWN_FIELDS}
        fields = _new(_VisitorFields)
        fields.name = name
        fields.login = login
        fields.phone = phone
        fields.email = email
        fields.site = site
        fields.extra = extra
        fields.__class__ = VisitorFields
    else:
        return None
    visitor = _new(_Visitor)
    visitor.id = vid
    visitor.fields = fields
    visitor.__class__ = Visitor
    return visitor  # type: ignore[no-any-return]


def _message(m: dict[str, Any]) -> InboundMessage | None:
    kind = m.get("kind")
    msg_id = m.get("id")
    if type(msg_id) is not str and msg_id is not None:
        return None
    if kind == "visitor":
        text = m.get("text")
        if type(text) is not str:
            return None
        message = _new(_TextMessage)
        message.kind = "visitor"
        message.id = msg_id
        message.text = text
        message.__class__ = TextMessage
        return message  # type: ignore[no-any-return]
    if kind == "file_visitor":
        data = m.get("data")
        if type(data) is not dict:
            return None
        file = _file(data)
        if file is None:
            return None
        message = _new(_FileMessage)
        message.kind = "file_visitor"
        message.id = msg_id
        message.file = file
        message.__class__ = FileMessage
        return message  # type: ignore[no-any-return]
    if kind == "keyboard_response":
        return _button_press(m, msg_id)
    return None


def _file(data: dict[str, Any]) -> FileInfo | None:
    get = data.get
    state = get("state")
    if type(state) is not str and state is not None:
        return None
    ct = get("content_type")
    if ct is None:
        ct = get("media_type")  # Webim 2.0's name
    if type(ct) is not str and ct is not None:
        return None
    url = get("url")
    if url is None:
        if state is None or state == "ready":
            return None  # a ready file must have its url
    elif type(url) is not str:
        return None
    file_id = get("id")
    if type(file_id) is not str and file_id is not None:
        return None
    name = get("name")
    if type(name) is not str and name is not None:
        return None
    size = get("size")
    if type(size) is not int and size is not None:
        return None
    info = _new(_FileInfo)
    info.id = file_id
    info.state = state
    info.name = name
    info.content_type = ct
    info.size = size
    info.url = url
    info.__class__ = FileInfo
    return info  # type: ignore[no-any-return]


def _button_press(m: dict[str, Any], msg_id: str | None) -> ButtonPress | None:
    data = m.get("data")
    if type(data) is not dict:
        return None
    b = data.get("button")
    if type(b) is not dict:
        return None
    bid = b.get("id")
    text = b.get("text")
    if type(bid) is not str or type(text) is not str:
        return None
    request = data.get("request")
    if request is None:
        request_id = None
    elif type(request) is dict:
        request_id = request.get("messageId")
        if type(request_id) is not str and request_id is not None:
            return None
    else:
        return None
    button = _new(_Button)
    button.id = bid
    button.text = text
    button.__class__ = Button
    press = _new(_ButtonPress)
    press.kind = "keyboard_response"
    press.id = msg_id
    press.button = button
    press.request_message_id = request_id
    press.__class__ = ButtonPress
    return press  # type: ignore[no-any-return]
