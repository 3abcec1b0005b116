"""A fuzz campaign over every inbound endpoint of the SDK (issue 13, build point 4).

``python -m benchmarks fuzz [--cases N] [--seed S] [--time SECONDS] [--http]``

Each case is a request to one of the five inbound endpoints (the omnichannel ``Connector``, the
Omnidesk rules channel, the Omnidesk custom channel, the Webex Connect bot, the Page-messenger
webhook), built from a valid payload of that endpoint and then mutated: wrong types at every
path of the JSON, missing, extra and repeated keys, deep nesting, lone surrogate escapes in
every string and id, truncation, random bytes, invalid UTF-8, PHP-style form bodies, wrong or
missing content types, wrong methods, path tricks, oversized bodies, a top-level ``null``,
``[]``, ``1`` or ``"x"``. Cases run in-process through ``handle(Request(...))`` (the bulk), on
runtimes that only admit (``inline=False, background=False``: no worker runs a bot), mostly on
a memory store and a share on a SQLite store; ``--http`` sends a share over real HTTP to
:class:`~omnichannel.integrations.server.LocalServer` and to the WSGI shim served by
``wsgiref``. A sample of visitor texts (lone surrogates first) runs with the worker running
(``inline=True``, no-op transports) to find messages that were acknowledged and then lost.

For every case the runner records:

- **escaped**: ``handle()`` raised;
- **tracebacks**: a logging record with ``exc_info`` (any level) or any ERROR record;
- **undocumented**: an answer outside the endpoint's documented status table (:data:`TABLES`,
  from its docs page): a status the table does not give that class of input, any 5xx for a
  client-side fault (except the Connector's documented ``malformed_status`` 500, which must
  name the problem), an error body that is not ``{"error": …}``, a 405 without ``Allow``, a
  Webex answer that is not 2xx after ``max_consecutive_refusals`` non-2xx in a row;
- **lost** (worker sample): an acknowledged message whose turn failed, or whose reply was not
  committed or not delivered.

The campaign is deterministic given ``--seed`` (and the case count); ``--time`` stops it early.
The exit status is nonzero when any count is nonzero.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from omnichannel import Connector, Request, Response, Runtime
from omnichannel.omnidesk import CustomChannel, OmnideskChannel, OmnideskClient
from omnichannel.pagemessenger import PageMessengerBridge, PageMessengerClient
from omnichannel.runtime.stores import INBOX, MemoryStore
from omnichannel.testing import button_event, file_event, new_chat_event, text_event
from omnichannel.testing.webex import (
    delivery_status_event,
    incoming_message_event,
    postback_event,
)
from omnichannel.webex import WebexConnectBot

__all__ = ["TABLES", "Report", "main", "run_campaign"]

TOKEN = "fuzzT0K3N"
SECRET = "fuzzS3CR3T"
WEBEX_TOKEN = "fuzz-verification-token"
WEBEX_PATH = "/webex"
ACCESS_TOKEN = "fuzz-access-token"
TIMESTAMP = "2024-03-05 10:11:12.34"

CONNECTOR = "connector"
RULES = "omnidesk-rules"
CUSTOM = "omnidesk-custom"
WEBEX = "webex"
WEBEX_SECURED = "webex+secret+token"
PAGEMESSENGER = "pagemessenger"
ENDPOINTS = (CONNECTOR, RULES, CUSTOM, WEBEX, WEBEX_SECURED, PAGEMESSENGER)
"""The inbound endpoints; ``webex+secret+token`` is the Webex adapter with ``secret=`` (a secret
last path segment) and ``access_token=`` (checked on every event)."""


# =============================================================================================
# the documented status tables, as data

# Input classes:
#   valid       a valid payload of the endpoint (accepted, or acknowledged and ignored)
#   body        a changed body that is still a JSON object (or a form): any row of the table
#               that a body can get (accepted / ignored / a field missing / mistyped)
#   missing     a required field deleted
#   not-object  JSON that is not an object (null, [], 1, "x", true)
#   not-json    not JSON at all (truncated, random bytes, invalid UTF-8, a form to a JSON-only
#               endpoint)
#   empty       an empty (or whitespace-only) body
#   wrong-path  a URL that is not the webhook
#   wrong-secret  the right URL with a wrong token / secret
#   method      a method other than POST (and, for Webex, GET and HEAD)
#   verify      Webex: GET or HEAD (a verification request)
#   too-large   a body over ``max_body``
#   missing-token / wrong-token  Webex with access_token=: an event without / with a wrong token
TABLES: dict[str, dict[str, frozenset[int]]] = {
    # docs/connector.md: 200 ok / ignored; 400 unknown token or a required parameter missing;
    # 404 not the webhook URL; 405; 413; 500 (malformed_status) not JSON / a mistyped field
    CONNECTOR: {
        "valid": frozenset({200}),
        "body": frozenset({200, 400, 500}),
        "missing": frozenset({400}),
        "not-object": frozenset({500}),
        "not-json": frozenset({500}),
        "empty": frozenset({500}),
        "wrong-path": frozenset({404}),
        "wrong-secret": frozenset({400}),
        "method": frozenset({405}),
        "too-large": frozenset({413}),
    },
    # docs/omnidesk-rules.md: 403 wrong secret; 400 naming the field; 200; 405; 413
    RULES: {
        "valid": frozenset({200}),
        "body": frozenset({200, 400}),
        "missing": frozenset({400}),
        "not-object": frozenset({400}),
        "not-json": frozenset({400}),
        "empty": frozenset({400}),
        "wrong-path": frozenset({403}),
        "wrong-secret": frozenset({403}),
        "method": frozenset({405}),
        "too-large": frozenset({413}),
    },
    # docs/omnidesk-custom-channel.md: 403; 400 "Malformed staff reply: …"; 200; 405; 413
    CUSTOM: {
        "valid": frozenset({200}),
        "body": frozenset({200, 400}),
        "missing": frozenset({400}),
        "not-object": frozenset({400}),
        "not-json": frozenset({400}),
        "empty": frozenset({400}),
        "wrong-path": frozenset({403}),
        "wrong-secret": frozenset({403}),
        "method": frozenset({405}),
        "too-large": frozenset({413}),
    },
    # docs/webex-connect.md: 200 the token (events, verification: empty body, GET, HEAD); 400
    # malformed (incl. a body over max_body); 404 another path; 405; never more than
    # max_consecutive_refusals non-2xx in a row (checked apart, see _Judge)
    WEBEX: {
        "valid": frozenset({200}),
        "body": frozenset({200, 400}),
        "missing": frozenset({400}),
        "not-object": frozenset({400}),
        "not-json": frozenset({400}),
        "empty": frozenset({200}),
        "wrong-path": frozenset({404}),
        "wrong-secret": frozenset({404}),
        "method": frozenset({405}),
        "verify": frozenset({200}),
        "too-large": frozenset({400}),
    },
    # docs/webex-connect.md with secret= (403 for another last segment) and access_token= (401
    # without it, 403 with a wrong one)
    WEBEX_SECURED: {
        "valid": frozenset({200}),
        "body": frozenset({200, 400}),
        "missing": frozenset({400}),
        "not-object": frozenset({400}),
        "not-json": frozenset({400}),
        "empty": frozenset({200}),
        "wrong-path": frozenset({404}),
        "wrong-secret": frozenset({403}),
        "method": frozenset({405}),
        "verify": frozenset({200}),
        "too-large": frozenset({400}),
        "missing-token": frozenset({401}),
        "wrong-token": frozenset({403}),
    },
    # docs/pagemessenger.md: 405; 403 the last segment is not the secret; 413; 400 "Malformed
    # webhook: …"; 200 accepted / unknown chat / repeat
    PAGEMESSENGER: {
        "valid": frozenset({200}),
        "body": frozenset({200, 400}),
        "missing": frozenset({400}),
        "not-object": frozenset({400}),
        "not-json": frozenset({400}),
        "empty": frozenset({400}),
        "wrong-path": frozenset({403}),
        "wrong-secret": frozenset({403}),
        "method": frozenset({405}),
        "too-large": frozenset({413}),
    },
}

FORM_ENDPOINTS = frozenset({RULES, CUSTOM, PAGEMESSENGER})
"""Endpoints that read ``application/x-www-form-urlencoded`` bodies too."""


# =============================================================================================
# JSON with what json.dumps cannot write


class Raw:
    """JSON text emitted as is: NaN, numbers past Python's int-to-text limit, deep nesting."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Dup:
    """An object with repeated keys, emitted in the order of ``pairs``."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def emit(value: Any, ascii_only: bool = True) -> str:
    """JSON text for ``value`` (with :class:`Raw` and :class:`Dup`; lone surrogates as escapes
    when ``ascii_only``, else raw, which makes the bytes invalid UTF-8)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(emit(v, ascii_only) for v in value) + "]"
    if isinstance(value, Dup):
        items: Any = value.pairs
    elif isinstance(value, dict):
        items = value.items()
    else:
        return json.dumps(value, ensure_ascii=ascii_only)
    return (
        "{"
        + ",".join(
            json.dumps(str(k), ensure_ascii=ascii_only) + ":" + emit(v, ascii_only)
            for k, v in items
        )
        + "}"
    )


def encode(value: Any, ascii_only: bool = True) -> bytes:
    return emit(value, ascii_only).encode("utf-8", "surrogatepass")


def clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


Path = tuple[Any, ...]


def tree_paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every path of a JSON value (the root is ``()``)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(tree_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(tree_paths(item, (*prefix, index)))
    return out


def get_at(root: Any, path: Path) -> Any:
    for part in path:
        root = root[part]
    return root


def set_at(root: Any, path: Path, value: Any) -> Any:
    """``root`` with the value at ``path`` replaced (the root itself when ``path`` is empty)."""
    if not path:
        return value
    get_at(root, path[:-1])[path[-1]] = value
    return root


def show_path(path: Path) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def deep(depth: int, inner: str = "1", kind: str = "[") -> Raw:
    if kind == "[":
        return Raw("[" * depth + inner + "]" * depth)
    return Raw('{"a":' * depth + inner + "}" * depth)


WEIRD: list[tuple[str, Any]] = [
    ("null", None),
    ("[]", []),
    ("{}", {}),
    ("0", 0),
    ("1", 1),
    ("-1", -1),
    ("1.5", 1.5),
    ("true", True),
    ("false", False),
    ('""', ""),
    ('"x"', "x"),
    ("2**64", 2**64),
    ("-2**63-1", -(2**63) - 1),
    ("401-digit int", Raw("1" + "0" * 400)),
    ("5000-digit int", Raw("9" * 5000)),
    ("NaN", Raw("NaN")),
    ("Infinity", Raw("Infinity")),
    ("-Infinity", Raw("-Infinity")),
    ("1e999", Raw("1e999")),
    ("-0", Raw("-0")),
    ("1E+2", Raw("1E+2")),
    ("5e-324", 5e-324),
    ('"\\ud83d"', "\ud83d"),
    ('"\\udc00"', "\udc00"),
    ('"a\\ud83db"', "a\ud83db"),
    ('"\\u0000"', "\x00"),
    ('"0"', "0"),
    ('"1"', "1"),
    ('"-1"', "-1"),
    ('"1.5"', "1.5"),
    ('"true"', "true"),
    ('"null"', "null"),
    ('" 12 "', " 12 "),
    ('"12_000"', "12_000"),
    ('"\\uff11\\uff12" (fullwidth digits)', "\uff11\uff12"),
    ('"\\u00b2" (superscript two)', "\u00b2"),
    ('"0x10"', "0x10"),
    ("5000-digit string", "9" * 5000),
    ('"-"', "-"),
    ('"1e3"', "1e3"),
    ('"[user_id]"', "[user_id]"),
    ("100k-char string", "x" * 100_000),
    ("[null]", [None]),
    ("[[[1]]]", [[[1]]]),
    ('{"a":{}}', {"a": {}}),
    ('{"":null}', {"": None}),
    ("nested 50", deep(50)),
    ("nested 990", deep(990)),
    ("nested 5000", deep(5000)),
    ("objects nested 900", deep(900, "1", "{")),
]

TEXTS: list[str] = [
    "\ud83d",
    "a\ud83d",
    "\ud83da",
    "\udc00",
    "\udc00\ud83d",
    "x\udfffy",
    "\U0001f600",
    "\x00",
    "\u2028\u2029",
    "e\u0301",
    "\u041f\u0440\u0438\u0432\u0435\u0442",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "\u202eevil",
    "A" * 5000,
    "<b>x</b>",
    "1",
    "[last_message]",
    "%s %d {0} {x}",
    "\r\n\t",
    " ",
]
"""Strings put into text fields and ids (lone surrogates first)."""

SURROGATES = [t for t in TEXTS if any(0xD800 <= ord(c) <= 0xDFFF for c in t)]

EXTRA_KEYS = ["extra", "", "__proto__", "\ud83d", "Event", "EVENT", "chat_id", "a" * 1000, "id"]

CONTENT_TYPES: list[str | None] = [
    None,
    "",
    "text/plain",
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    "application/vnd.api+json",
    "application/xml",
    ";;;",
    "application/x-www-form-urlencoded; charset=latin-1",
    "json",
    "*/*",
]

METHODS = ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]


# =============================================================================================
# valid payloads


@dataclass(frozen=True)
class Seed:
    """A valid payload of an endpoint.

    ``required``: paths whose removal is a missing required field; ``ids``: paths given a
    fresh value per case (so that most cases are new deliveries, not repeats); ``form``: sent
    form-encoded; ``text``: the path of the visitor's text (the worker sample fills it).
    """

    name: str
    body: Any
    required: tuple[Path, ...] = ()
    ids: tuple[Path, ...] = ()
    form: bool = False
    text: Path | None = None
    int_ids: bool = False


_FIELDS = {
    "name": "Ann",
    "login": "ann",
    "phone": "+79001234567",
    "email": "ann@example.com",
    "site": "shop.example",
}


def _connector_seeds() -> list[Seed]:
    base = ("event",), ("chat_id",), ("message",), ("message", "kind")
    text = text_event("Hello", chat_id=1, message_id="m-1", fields=dict(_FIELDS))
    file_ready = file_event("https://files.example/a.pdf", chat_id=2, message_id="m-2")
    webim_file = file_event("https://files.example/b.png", state=None, chat_id=3, message_id="m-3")
    data = webim_file["message"]["data"]
    data["media_type"] = data.pop("content_type")
    uploading = file_event("https://files.example/c.pdf", state="upload", message_id="m-4")
    button = button_event("Yes", button_id="b1", chat_id=4, message_id="m-5")
    webim_button = button_event("No", button_id="b2", chat_id="chat-5", message_id="m-6")
    webim_button["message"]["data"]["request"] = {"messageId": "m-0"}
    chat = new_chat_event("Hi", "There", chat_id=6)
    for index, message in enumerate(chat["messages"]):
        message["id"] = f"nc-{index}"
    chat["messages"].append({"id": "op-1", "kind": "operator", "text": "Hello from us"})
    extra_fields = text_event("Extra", chat_id=7, message_id="m-7")
    extra_fields["visitor"]["fields"].update(
        {"display_name": "A", "avatar_url": "https://a.example/x.png", "info": {"k": [1, 2]}}
    )
    unknown_event = {"event": "chat_closed", "chat_id": 8}
    unknown_kind = text_event("x", chat_id=9, message_id="m-9")
    unknown_kind["message"]["kind"] = "operator"
    return [
        Seed(
            "text",
            text,
            (*base, ("message", "text")),
            (("message", "id"),),
            text=("message", "text"),
        ),
        Seed(
            "file",
            file_ready,
            (*base, ("message", "data"), ("message", "data", "url")),
            (("message", "id"),),
        ),
        Seed(
            "webim-file",
            webim_file,
            (*base, ("message", "data"), ("message", "data", "url")),
            (("message", "id"),),
        ),
        Seed("file-not-ready", uploading, base, (("message", "id"),)),
        Seed(
            "button",
            button,
            (
                *base,
                ("message", "data"),
                ("message", "data", "button"),
                ("message", "data", "button", "id"),
                ("message", "data", "button", "text"),
            ),
            (("message", "id"),),
        ),
        Seed("webim-button", webim_button, base, (("message", "id"),)),
        Seed(
            "new_chat",
            chat,
            (("event",), ("chat",), ("chat", "id"), ("messages", 0, "text")),
            (("messages", 0, "id"), ("messages", 1, "id")),
        ),
        Seed("visitor-extra", extra_fields, base, (("message", "id"),)),
        Seed("unknown-event", unknown_event),
        Seed("unknown-kind", unknown_kind, (), (("message", "id"),)),
    ]


def _rules_body(text: str = "Hello", case_id: Any = 555) -> dict[str, Any]:
    # seed 001's rule body with the placeholders filled (one left unfilled, as Omnidesk does)
    return {
        "event": "new_message",
        "message": {"kind": "visitor", "text": text},
        "visitor": {
            "id": "1234",
            "fields": {
                "email": "ann@example.com",
                "id": "1234",
                "name": "Ann",
                "phone": "[user_phone]",
            },
        },
        "chat_id": case_id,
    }


def _rules_seeds() -> list[Seed]:
    required = (("event",), ("chat_id",), ("message",), ("message", "kind"), ("message", "text"))
    with_id = _rules_body("With id", 556)
    with_id["message"]["id"] = "om-1"
    unknown = _rules_body("x", 557)
    unknown["event"] = "case_closed"
    return [
        Seed("rule", _rules_body(), required, (("message", "text"),), text=("message", "text")),
        Seed("rule-string-case-id", _rules_body("Hi", "558"), required, (("message", "text"),)),
        Seed("rule-with-id", with_id, required, (("message", "id"),)),
        Seed("rule-form", _rules_body("Form", 559), required, (("message", "text"),), form=True),
        Seed("unknown-event", unknown),
    ]


def _custom_body(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "message_id": 42535907,
        "case_id": 21755012,
        "staff_id": 7234,
        "user_id": 20023294,
        "custom_user_id": "my_u_id123456",
        "content": "Ok!",
        "note": 0,
        "sent_via_rule": 0,
        "created_at": "Thu, 26 Apr 2018 20:17:10 +0300",
    }
    obj.update(changes)
    return {"type": "message_new", "object": obj}


def _custom_seeds() -> list[Seed]:
    required = (("object",), ("object", "message_id"), ("object", "case_id"))
    ids = (("object", "message_id"),)
    attachments = _custom_body(
        attachments=[
            {
                "url": "https://files.example/a.pdf",
                "file_name": "a.pdf",
                "file_size": 1024,
                "mime_type": "application/pdf",
            }
        ]
    )
    other = _custom_body()
    other["type"] = "message_update"
    return [
        Seed("reply", _custom_body(), required, ids, text=("object", "content"), int_ids=True),
        Seed("reply-form", _custom_body(), required, ids, form=True, int_ids=True),
        Seed("attachments", attachments, required, ids, int_ids=True),
        Seed("attachments-form", attachments, required, ids, form=True, int_ids=True),
        Seed("note", _custom_body(note=1), required, ids, int_ids=True),
        Seed("rule-message", _custom_body(sent_via_rule="1"), required, ids, int_ids=True),
        Seed("other-type", other, (), ids, int_ids=True),
    ]


def _webex_seeds() -> list[Seed]:
    base = (("Event",), ("Conversationid",))
    message = incoming_message_event("conv-1", "Hello", message_id="wx-1", timestamp=TIMESTAMP)
    media = incoming_message_event(
        "conv-2",
        "",
        message_id="wx-2",
        media={"url": "https://files.example/p.jpg"},
        timestamp=TIMESTAMP,
    )
    copied = incoming_message_event(
        "conv-3", "copied", message_id="wx-3", conversation_type="CCSP", timestamp=TIMESTAMP
    )
    postback = postback_event("conv-4", "plans", timestamp=TIMESTAMP)
    delivered = delivery_status_event("conv-5", "wx-1", timestamp=TIMESTAMP)
    failed = delivery_status_event(
        "conv-6", "wx-2", "Failed", description="undeliverable", timestamp=TIMESTAMP
    )
    unknown = {"Event": "Conversation closed", "Conversationid": "conv-7"}
    verification = {"verify": True}
    return [
        Seed("message", message, base, (("Messageid",),), text=("Message",)),
        Seed("media", media, base, (("Messageid",),)),
        Seed("copied", copied, base, (("Messageid",),)),
        Seed("postback", postback, (*base, ("PostbackPayload",)), (("Timestamp",),)),
        Seed("delivered", delivered, (*base, ("DeliveryStatus",)), (("Messageid",),)),
        Seed("failed", failed, (*base, ("DeliveryStatus",)), (("Messageid",),)),
        Seed("unknown-event", unknown),
        Seed("verification", verification),
    ]


ROUTED_CHAT = "omnichannel-v:1"
"""The AI's chat id of a visitor the Page-messenger bridge knows (seeded at start)."""


def _pm_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel_id": "1721129985149x100000000000000000",
        "close": False,
        "company_id": "1721129985149x200000000000000000",
        "contacts": "",
        "external_chat_id": ROUTED_CHAT,
        "get_contact": False,
        "interest": False,
        "is_bot": False,
        "manager_id": "1721129985149x300000000000000000",
        "message_id": "1721129985149x400000000000000000",
        "message_text": "Hello from the AI",
        "message_type": "bot",
        "operator": False,
        "panel_url": "https://selarti.example/panel/dialog/1",
        "share_url": "https://selarti.example/share/1",
        "success": False,
        "task_id": "task-1",
        "thread_id": "1721129985149x500000000000000000",
        "title": "Ann Visitor",
        "wh_type": "all_messages",
    }
    body.update(changes)
    return body


def _pm_seeds() -> list[Seed]:
    required = (("external_chat_id",),)
    ids = (("message_id",),)
    return [
        Seed("answer", _pm_body(), required, ids, text=("message_text",)),
        Seed("answer-form", _pm_body(), required, ids, form=True),
        Seed("operator", _pm_body(operator=True, close="yes"), required, ids),
        Seed("strings", _pm_body(is_bot="no", success=1, contacts={"phone": "+7"}), required, ids),
        Seed("user-message", _pm_body(message_type="user"), required, ids),
        Seed("unknown-chat", _pm_body(external_chat_id="nobody:9"), required, ids),
    ]


SEEDS: dict[str, list[Seed]] = {
    CONNECTOR: _connector_seeds(),
    RULES: _rules_seeds(),
    CUSTOM: _custom_seeds(),
    WEBEX: _webex_seeds(),
    WEBEX_SECURED: _webex_seeds(),
    PAGEMESSENGER: _pm_seeds(),
}


# =============================================================================================
# paths

# (label, path, query, class): class "ok"; "wrong-path" / "wrong-secret" (the table's row);
# "lenient:<row>": either that row or the answer the right path gets (a URL a server or a
# framework may normalize: a trailing slash, "//", a percent-encoded character)

PathVariant = tuple[str, str, str, str]

_RIGHT = {
    CONNECTOR: f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook",
    RULES: f"/omnidesk/rules/{SECRET}",
    CUSTOM: f"/omnidesk/custom-channel/{SECRET}",
    WEBEX: WEBEX_PATH,
    WEBEX_SECURED: f"{WEBEX_PATH}/{SECRET}",
    PAGEMESSENGER: f"/pagemessenger/{SECRET}",
}


def _encoded(text: str, char: str) -> str:
    return text.replace(char, f"%{ord(char):02X}", 1)


def _path_variants(endpoint: str) -> list[PathVariant]:
    right = _RIGHT[endpoint]
    if endpoint == CONNECTOR:
        tail = f"omnichannel_message/{TOKEN}/bot_api_webhook"
        return [
            ("right", right, "", "ok"),
            ("prefix /api", "/api" + right, "", "wrong-path"),
            ("other segment", f"/connector/other/{tail}", "", "wrong-path"),
            ("no /connector/omnichannel", f"/{tail}", "", "wrong-path"),
            ("suffix segment", right + "/extra", "", "wrong-path"),
            ("suffix .json", right + ".json", "", "wrong-path"),
            ("upper case", right.replace("/connector/", "/CONNECTOR/"), "", "wrong-path"),
            ("root", "/", "", "wrong-path"),
            ("empty", "", "", "wrong-path"),
            ("long", "/" + "a" * 10_000, "", "wrong-path"),
            ("non-ascii suffix", right + "\u00e9", "", "wrong-path"),
            ("trailing slash", right + "/", "", "lenient:wrong-path"),
            (
                "double slash",
                right.replace("/omnichannel/", "//omnichannel/"),
                "",
                "lenient:wrong-path",
            ),
            ("leading double slash", "/" + right, "", "lenient:wrong-path"),
            (
                "dot segment",
                right.replace("/omnichannel/", "/omnichannel/x/../"),
                "",
                "lenient:wrong-path",
            ),
            (
                "encoded slash",
                right.replace("/omnichannel/", "%2Fomnichannel/", 1),
                "",
                "lenient:wrong-path",
            ),
            ("encoded token char", _encoded(right, TOKEN[0]), "", "lenient:wrong-secret"),
            ("wrong token", right.replace(TOKEN, "WRONG"), "", "wrong-secret"),
            ("token + x", right.replace(TOKEN, TOKEN + "x"), "", "wrong-secret"),
            ("token prefix", right.replace(TOKEN, TOKEN[:-1]), "", "wrong-secret"),
            ("token case", right.replace(TOKEN, TOKEN.upper()), "", "wrong-secret"),
            ("empty token", right.replace(TOKEN, ""), "", "lenient:wrong-path|wrong-secret"),
            ("query", right, "token=x&a[b]=c", "ok"),
        ]
    if endpoint == WEBEX:
        return [
            ("right", right, "", "ok"),
            ("prefix /api", "/api" + right, "", "wrong-path"),
            ("suffix segment", right + "/extra", "", "wrong-path"),
            ("suffix .json", right + ".json", "", "wrong-path"),
            ("other", "/webe", "", "wrong-path"),
            ("upper case", right.upper(), "", "wrong-path"),
            ("root", "/", "", "wrong-path"),
            ("empty", "", "", "wrong-path"),
            ("long", "/" + "a" * 10_000, "", "wrong-path"),
            ("trailing slash", right + "/", "", "lenient:wrong-path"),
            ("leading double slash", "/" + right, "", "lenient:wrong-path"),
            ("encoded char", _encoded(right, "w"), "", "lenient:wrong-path"),
            ("query", right, "a=1&b", "ok"),
        ]
    if endpoint == WEBEX_SECURED:  # path + "/" + secret
        return [
            ("right", right, "", "ok"),
            ("prefix /api", "/api" + right, "", "wrong-path"),
            ("no secret", WEBEX_PATH, "", "wrong-path"),
            ("suffix segment", right + "/extra", "", "wrong-path"),
            ("upper case", right.replace(WEBEX_PATH, WEBEX_PATH.upper()), "", "wrong-path"),
            ("root", "/", "", "wrong-path"),
            ("long", "/" + "a" * 10_000, "", "wrong-path"),
            ("wrong secret", f"{WEBEX_PATH}/WRONG", "", "wrong-secret"),
            ("secret + x", right + "x", "", "wrong-secret"),
            ("secret case", f"{WEBEX_PATH}/{SECRET.upper()}", "", "wrong-secret"),
            ("secret in query", WEBEX_PATH + "/x", f"secret={SECRET}", "wrong-secret"),
            ("trailing slash", right + "/", "", "lenient:wrong-path"),
            ("double slash", f"{WEBEX_PATH}//{SECRET}", "", "lenient:wrong-path"),
            ("encoded secret char", _encoded(right, SECRET[0]), "", "lenient:wrong-secret"),
        ]
    # the secret is the last path segment (Omnidesk also takes ?secret=): mountable anywhere
    prefix = right.rsplit("/", 1)[0]
    variants = [
        ("right", right, "", "ok"),
        ("prefix /api", "/api" + right, "", "ok"),
        ("only the secret", f"/{SECRET}", "", "ok"),
        ("double slash", right.replace("/", "//"), "", "ok"),
        ("trailing slash", right + "/", "", "lenient:wrong-secret"),
        ("encoded secret char", _encoded(right, SECRET[0]), "", "lenient:wrong-secret"),
        ("suffix segment", right + "/extra", "", "wrong-secret"),
        ("suffix ;param", right + ";x=1", "", "wrong-secret"),
        ("wrong secret", f"{prefix}/WRONG", "", "wrong-secret"),
        ("secret + x", right + "x", "", "wrong-secret"),
        ("secret prefix", right[:-1], "", "wrong-secret"),
        ("secret case", f"{prefix}/{SECRET.upper()}", "", "wrong-secret"),
        ("no secret", prefix, "", "wrong-secret"),
        ("root", "/", "", "wrong-secret"),
        ("empty", "", "", "wrong-secret"),
        ("long", "/" + "a" * 10_000, "", "wrong-secret"),
        ("non-ascii secret", right + "\u00e9", "", "wrong-secret"),
    ]
    if endpoint in (RULES, CUSTOM):
        variants += [
            ("secret in query", prefix, f"secret={SECRET}", "ok"),
            ("wrong path, secret in query", f"{prefix}/WRONG", f"secret={SECRET}", "ok"),
            ("wrong secret in query", prefix, "secret=WRONG", "wrong-secret"),
            ("right path, wrong query", right, "secret=WRONG", "ok"),
        ]
    else:
        variants += [("secret in query only", prefix, f"secret={SECRET}", "wrong-secret")]
    return variants


PATHS = {endpoint: _path_variants(endpoint) for endpoint in ENDPOINTS}


# =============================================================================================
# forms (PHP-style keys)


def form_pairs(value: Any, prefix: str = "", *, php: bool = True) -> list[tuple[str, str]]:
    """``{"a": {"b": [1]}}`` → ``[("a[b][0]", "1")]`` (``php=False``: flat, nested values as
    JSON text, as the Page-messenger fake sends them)."""
    if not php:
        items = value.pairs if isinstance(value, Dup) else value.items()
        return [(str(k), _form_value(v, json_nested=True)) for k, v in items]
    out: list[tuple[str, str]] = []
    if isinstance(value, (dict, Dup)):
        for key, item in value.pairs if isinstance(value, Dup) else value.items():
            out.extend(form_pairs(item, f"{prefix}[{key}]" if prefix else str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(form_pairs(item, f"{prefix}[{index}]"))
    else:
        out.append((prefix, _form_value(value)))
    return out


def php_key(path: Path, php: bool = True) -> str:
    """The form key of a JSON path (``message[text]``)."""
    if not php:
        return str(path[0])
    return str(path[0]) + "".join(f"[{p}]" for p in path[1:])


def _form_value(value: Any, json_nested: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Raw):
        return value.text
    if json_nested and isinstance(value, (dict, list, Dup)):
        return emit(value)
    return str(value)


def form_encode(pairs: Sequence[tuple[str, str]]) -> bytes:
    return urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in pairs]
    ).encode("ascii")


# =============================================================================================
# cases


@dataclass
class Case:
    """One request of the campaign and what it was made of."""

    index: int
    endpoint: str
    group: str  # the mutation (findings are grouped by it)
    detail: str  # the specifics (shown in examples)
    method: str = "POST"
    path: str = ""
    query: str = ""
    content_type: str | None = "application/json"
    body: bytes = b""
    body_class: str = "valid"
    path_class: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    auth_class: str = "ok"  # Webex with access_token=: ok / missing-token / wrong-token
    store: str = "memory"
    transport: str = "in-process"
    worker: bool = False
    expect_turn: bool = True
    expect_reply: bool = False

    def describe(self, limit: int = 160) -> str:
        target = self.path + (f"?{self.query}" if self.query else "")
        if len(target) > 90:
            target = target[:60] + f"…({len(target)} chars)"
        body = self.body[:limit]
        more = f"…({len(self.body)} B)" if len(self.body) > limit else ""
        extra = f" headers={self.headers!r}" if self.headers else ""
        return (
            f"#{self.index} [{self.store}, {self.transport}] {self.group} ({self.detail}): "
            f"{self.method} {target!r} ct={self.content_type!r}{extra} body={body!r}{more}"
        )


def _fresh_id(rng: random.Random, as_int: bool) -> Any:
    return rng.randrange(10**6, 10**12) if as_int else f"fz-{rng.getrandbits(48):x}"


def _prepared(seed: Seed, rng: random.Random) -> Any:
    """The seed with fresh ids (most cases are new deliveries, not repeats)."""
    body = clone(seed.body)
    for path in seed.ids:
        if path[-1] == "Timestamp":  # a postback has no id: a new timestamp is a new delivery
            fresh: Any = f"2024-03-05 10:{rng.randrange(60):02d}:{rng.randrange(60):02d}.34"
        elif path[-1] == "text":  # rule bodies have no id: a new text is a new delivery
            fresh = f"{get_at(body, path)} {rng.getrandbits(32):x}"
        else:
            fresh = _fresh_id(rng, seed.int_ids)
        set_at(body, path, fresh)
    return body


def _serialize(seed: Seed, body: Any, endpoint: str) -> tuple[bytes, str]:
    if seed.form:
        return form_encode(form_pairs(body, php=endpoint != PAGEMESSENGER)), (
            "application/x-www-form-urlencoded"
        )
    return encode(body), "application/json"


def classify_raw(body: bytes) -> str:
    """The input class of a body judged by what it is (for raw mutations)."""
    if not body.strip():  # (Python's ASCII whitespace: a "blank" body)
        return "empty"
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return "not-json"
    return "body" if isinstance(value, dict) else "not-object"


_OPS: list[tuple[str, float]] = [
    ("valid", 5),
    ("type", 20),
    ("delete", 8),
    ("extra", 4),
    ("duplicate", 4),
    ("surrogate", 12),
    ("string", 6),
    ("nest", 3),
    ("top", 3),
    ("raw", 10),
    ("garbage", 3),
    ("empty", 1),
    ("form", 8),
    ("content-type", 5),
    ("method", 4),
    ("path", 8),
    ("too-large", 0.3),
    ("at-limit", 0.2),
]
_OP_NAMES = [name for name, _ in _OPS]
_OP_WEIGHTS = [weight for _, weight in _OPS]
_SECURED_OPS = [*_OP_NAMES, "auth"]
_SECURED_WEIGHTS = [*_OP_WEIGHTS, 10.0]

_BEARER = {"Authorization": f"Bearer {ACCESS_TOKEN}"}

# (label, headers, query, class) of the access token of an event
_AUTH: list[tuple[str, dict[str, str], str, str]] = [
    ("no token", {}, "", "missing-token"),
    ("empty Authorization", {"Authorization": ""}, "", "missing-token"),
    ("wrong bearer", {"Authorization": "Bearer WRONG"}, "", "wrong-token"),
    ("Bearer alone", {"Authorization": "Bearer"}, "", "wrong-token"),
    ("Basic", {"Authorization": "Basic YTpi"}, "", "wrong-token"),
    ("token case", {"Authorization": f"Bearer {ACCESS_TOKEN.upper()}"}, "", "wrong-token"),
    ("token + x", {"Authorization": f"Bearer {ACCESS_TOKEN}x"}, "", "wrong-token"),
    ("non-ASCII token", {"Authorization": "Bearer \u00e9t\u00e9"}, "", "wrong-token"),
    ("wrong query", {}, "access_token=WRONG", "wrong-token"),
    (
        "wrong bearer, right X-Access-Token",
        {"Authorization": "Bearer WRONG", "X-Access-Token": ACCESS_TOKEN},
        "",
        "wrong-token",
    ),
    ("bare token", {"Authorization": ACCESS_TOKEN}, "", "ok"),
    ("Token scheme", {"Authorization": f"Token {ACCESS_TOKEN}"}, "", "ok"),
    ("lower-case bearer", {"Authorization": f"bearer {ACCESS_TOKEN}"}, "", "ok"),
    ("padded", {"Authorization": f"  Bearer {ACCESS_TOKEN}  "}, "", "ok"),
    ("X-Access-Token", {"X-Access-Token": ACCESS_TOKEN}, "", "ok"),
    ("query", {}, f"access_token={ACCESS_TOKEN}", "ok"),
]


class Generator:
    """Builds case ``i`` of an endpoint from the campaign's seed alone (deterministic)."""

    def __init__(self, seed: int, max_body: Mapping[str, int]) -> None:
        self.seed = seed
        self.max_body = max_body

    def case(self, index: int, endpoint: str) -> Case:
        rng = random.Random(f"{self.seed}:{index}")
        seed = rng.choice(SEEDS[endpoint])
        body = _prepared(seed, rng)
        payload, ctype = _serialize(seed, body, endpoint)
        case = Case(
            index=index,
            endpoint=endpoint,
            group="valid",
            detail=f"seed {seed.name}",
            path=_RIGHT[endpoint],
            content_type=ctype,
            body=payload,
        )
        if endpoint == WEBEX_SECURED:
            case.headers = dict(_BEARER)
            op = rng.choices(_SECURED_OPS, _SECURED_WEIGHTS)[0]
        else:
            op = rng.choices(_OP_NAMES, _OP_WEIGHTS)[0]
        getattr(self, "_op_" + op.replace("-", "_"))(case, seed, body, rng)
        # combinations: a content type or a path / method change on top of a body change
        if op not in ("content-type", "method", "path", "valid") and rng.random() < 0.08:
            self._op_content_type(case, seed, body, rng, stack=True)
        if op not in ("method", "path") and rng.random() < 0.04:
            (self._op_path if rng.random() < 0.6 else self._op_method)(
                case, seed, body, rng, stack=True
            )
        return case

    # -- body operators (on the decoded seed) -------------------------------------------------
    def _set_body(
        self,
        case: Case,
        seed: Seed,
        body: Any,
        group: str,
        detail: str,
        cls: str,
        rng: random.Random,
    ) -> None:
        ascii_only = rng.random() < 0.85
        if seed.form and isinstance(body, (dict, Dup)):
            case.body = form_encode(form_pairs(body, php=case.endpoint != PAGEMESSENGER))
        else:
            case.body = encode(body, ascii_only)
            case.content_type = "application/json"
            if not ascii_only:
                detail += ", raw UTF-8"
                if any(0xD800 <= ord(c) <= 0xDFFF for c in emit(body, False)):
                    cls = "not-json"  # a lone surrogate as UTF-8 bytes: invalid UTF-8
        case.group, case.detail, case.body_class = group, f"seed {seed.name}: {detail}", cls

    def _op_valid(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        return

    def _op_auth(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        label, headers, query, cls = rng.choice(_AUTH)
        case.headers, case.query, case.auth_class = dict(headers), query, cls
        case.group, case.detail = f"access token:{label}", f"seed {seed.name}"

    def _op_type(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        path = rng.choice(tree_paths(body)[1:] or [()])
        name, value = rng.choice(WEIRD)
        body = set_at(body, path, clone(value))
        self._set_body(case, seed, body, "body:type", f"{show_path(path)} = {name}", "body", rng)

    def _op_delete(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        paths = [p for p in tree_paths(body)[1:] if isinstance(get_at(body, p[:-1]), dict)]
        path = rng.choice(seed.required) if seed.required and rng.random() < 0.5 else None
        if path is None or path not in paths:
            path = rng.choice(paths)
        del get_at(body, path[:-1])[path[-1]]
        cls = "missing" if path in seed.required else "body"
        self._set_body(case, seed, body, "body:delete", f"without {show_path(path)}", cls, rng)

    def _objects(self, body: Any) -> list[Path]:
        return [p for p in tree_paths(body) if isinstance(get_at(body, p), dict)]

    def _op_extra(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        path = rng.choice(self._objects(body))
        key = rng.choice(EXTRA_KEYS)
        name, value = rng.choice(WEIRD)
        target = get_at(body, path)
        if key in target:  # an extra key must not replace a field: that is "type"
            key = key + "_x"
        target[key] = clone(value)
        detail = f"{show_path(path)} + {key[:20]!r}: {name}"
        self._set_body(case, seed, body, "body:extra-key", detail, "body", rng)

    def _op_duplicate(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        path = rng.choice([p for p in self._objects(body) if get_at(body, p)] or [()])
        target = get_at(body, path)
        key = rng.choice(list(target))
        name, value = rng.choice([*WEIRD[:12], ("same", target[key])])
        pairs = list(target.items())
        extra = (key, clone(value))
        pairs.insert(rng.randrange(len(pairs) + 1), extra)
        body = set_at(body, path, Dup(pairs))
        detail = f"{show_path(path)}.{key} twice (+ {name})"
        self._set_body(case, seed, body, "body:duplicate-key", detail, "body", rng)

    def _strings(self, body: Any) -> list[Path]:
        return [p for p in tree_paths(body)[1:] if isinstance(get_at(body, p), (str, int, float))]

    def _op_surrogate(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        # a lone surrogate escape in a string, an id (numbers too) or a key
        paths = self._strings(body)
        surrogate = rng.choice(["\ud83d", "\udc00", "\udbff", "\udfff"])
        if paths and rng.random() < 0.85:
            text_path = seed.text if seed.text is not None and rng.random() < 0.3 else None
            path = text_path or rng.choice(paths)
            old = str(get_at(body, path))
            at = rng.randrange(len(old) + 1)
            new = old[:at] + surrogate + old[at:] if rng.random() < 0.7 else surrogate
            body = set_at(body, path, new)
            detail = f"{show_path(path)} = {new[:30]!r}"
        else:
            path = rng.choice(self._objects(body))
            target = get_at(body, path)
            target[surrogate + "k"] = "v"
            detail = f"key {surrogate!r} in {show_path(path)}"
        self._set_body(case, seed, body, "body:lone-surrogate", detail, "body", rng)

    def _op_string(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        paths = self._strings(body)
        if not paths:
            return self._op_type(case, seed, body, rng)
        path = seed.text if seed.text is not None and rng.random() < 0.3 else rng.choice(paths)
        text = rng.choice(TEXTS)
        body = set_at(body, path, text)
        self._set_body(
            case, seed, body, "body:string", f"{show_path(path)} = {text[:30]!r}", "body", rng
        )
        return None

    def _op_nest(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        path = rng.choice(tree_paths(body))
        depth = rng.choice([2, 10, 100, 500, 900, 990, 1100, 3000, 20_000, 100_000])
        kind = rng.choice("[{")
        inner = emit(get_at(body, path))
        value = deep(depth, inner, kind)
        body = set_at(body, path, value)
        cls = "body" if path else classify_raw(value.text.encode())
        detail = f"{show_path(path)} wrapped in {depth} {kind}"
        self._set_body(case, seed, body, "body:deep-nesting", detail, cls, rng)

    def _op_top(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        name, value = rng.choice(
            [
                ("null", None),
                ("[]", []),
                ("1", 1),
                ('"x"', "x"),
                ("true", True),
                ("1.5", 1.5),
                ('""', ""),
                ("[seed]", [body]),
                ("[seed, seed]", [body, body]),
                ("-0", Raw("-0")),
                ("NaN", Raw("NaN")),
            ]
        )
        data = encode(value)
        case.body, case.content_type = data, rng.choice(["application/json", None, "text/plain"])
        case.group, case.detail = f"top-level {name}", f"seed {seed.name}"
        case.body_class = classify_raw(data)

    # -- byte operators (on the serialized body) ----------------------------------------------
    def _op_raw(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        data = case.body
        how = rng.choice(
            [
                "truncate",
                "flip byte",
                "insert invalid UTF-8",
                "utf-8 surrogate bytes",
                "overlong UTF-8",
                "BOM",
                "utf-16",
                "utf-32",
                "trailing garbage",
                "two documents",
                "whitespace padding",
                "control characters",
                "single quotes",
                "comment",
            ]
        )
        at = rng.randrange(1, max(2, len(data)))
        if how == "truncate":
            data = data[:at]
        elif how == "flip byte":
            data = data[: at - 1] + bytes([data[at - 1] ^ (1 << rng.randrange(8))]) + data[at:]
        elif how == "insert invalid UTF-8":
            data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xfe\xff"]) + data[at:]
        elif how == "utf-8 surrogate bytes":
            quote_at = data.find(b'"', at)
            spot = quote_at if quote_at > 0 else at
            data = data[:spot] + b"\xed\xa0\xbd" + data[spot:]
        elif how == "overlong UTF-8":
            data = data[:at] + b"\xc0\xaf" + data[at:]
        elif how == "BOM":
            data = b"\xef\xbb\xbf" + data
        elif how in ("utf-16", "utf-32"):
            data = data.decode("utf-8", "surrogatepass").encode(how, "surrogatepass")
        elif how == "trailing garbage":
            data = data + b"xyz"
        elif how == "two documents":
            data = data + data
        elif how == "whitespace padding":
            data = b" \n\t" * rng.choice([1, 100, 10_000]) + data + b"\r\n" * 3
        elif how == "control characters":
            data = data.replace(b'":"', b'":"\x01\x1f', 1)
        elif how == "single quotes":
            data = data.replace(b'"', b"'")
        elif how == "comment":
            data = b"/* c */" + data
        case.body = data
        case.group, case.detail = f"raw:{how}", f"seed {seed.name}"
        case.body_class = "body" if seed.form else classify_raw(data)
        if seed.form and how in ("insert invalid UTF-8", "utf-8 surrogate bytes", "overlong UTF-8"):
            case.body_class = "not-json"  # a form that is not UTF-8

    def _op_garbage(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        size = rng.choice([1, 2, 8, 64, 1024, 65_536])
        data = bytes(rng.getrandbits(8) for _ in range(min(size, 4096)))
        if size > 4096:
            data = (data * (size // len(data) + 1))[:size]
        case.body, case.content_type = data, rng.choice(CONTENT_TYPES)
        case.group, case.detail = "raw:random bytes", f"{size} bytes"
        case.body_class = classify_raw(data)

    def _op_empty(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        case.body = rng.choice([b"", b" ", b"\r\n", b"\t \n"])
        case.content_type = rng.choice(CONTENT_TYPES)
        case.group, case.detail, case.body_class = "empty body", repr(case.body), "empty"

    def _op_form(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        php = case.endpoint != PAGEMESSENGER
        pairs = form_pairs(body, php=php) if isinstance(body, dict) else [("a", "b")]
        how = rng.choice(
            [
                "as form",
                "weird value",
                "surrogate value",
                "bracket key",
                "deep key",
                "list/object clash",
                "non-ASCII digit index",
                "huge index",
                "duplicate key",
                "drop pair",
                "bad percent escape",
                "encoded surrogate",
                "separators",
                "many pairs",
            ]
        )
        raw: bytes | None = None
        cls = "body"
        index = rng.randrange(len(pairs)) if pairs else 0
        key = pairs[index][0] if pairs else "a"
        if how == "weird value" and pairs:
            pairs[index] = (key, str(rng.choice(WEIRD)[1])[:2000])
        elif how == "surrogate value" and pairs:
            pairs[index] = (key, pairs[index][1] + rng.choice(SURROGATES))
        elif how == "bracket key" and pairs:
            pairs[index] = (
                key + rng.choice(["[", "]", "[]", "[][]", "[a", "]]", "[[x]]", "[]x"]),
                "v",
            )
        elif how == "deep key":
            depth = rng.choice([10, 100, 500, 999, 1100, 5000])
            pairs.append(("message" + "[a]" * depth, "deep"))
        elif how == "list/object clash":
            root = key.split("[", 1)[0]
            pairs += [(f"{root}[0]", "x"), (f"{root}[a]", "y"), (f"{root}[0][b]", "z")]
        elif how == "non-ASCII digit index":
            root = key.split("[", 1)[0]
            pairs += [(f"{root}[{rng.choice(['²', '٣', '١٢', '①', '߁'])}]", "x")]
        elif how == "huge index":
            root = key.split("[", 1)[0]
            pairs += [(f"{root}[{'9' * rng.choice([20, 5000])}]", "x")]
        elif how == "duplicate key" and pairs:
            pairs.insert(rng.randrange(len(pairs) + 1), (key, rng.choice(["", "x", "1", "[]"])))
        elif how == "drop pair" and pairs:
            dropped = pairs.pop(index)[0]
            if any(php_key(p, php) == dropped for p in seed.required):
                cls = "missing"
        elif how == "bad percent escape":
            raw = form_encode(pairs) + rng.choice([b"&a=%zz", b"&%=1", b"&a=%", b"&%E0%A4=1"])
        elif how == "encoded surrogate":
            raw = form_encode(pairs) + b"&" + key.encode() + b"=%ED%A0%BD"
        elif how == "separators":
            raw = form_encode(pairs).replace(b"&", rng.choice([b";", b"&&", b"&=&", b"\n"]))
        elif how == "many pairs":
            pairs += [(f"k{i}", "v") for i in range(rng.choice([1000, 20_000]))]
        case.body = raw if raw is not None else form_encode(pairs)
        case.content_type = rng.choice(
            ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded", None]
        )
        case.group, case.detail = f"form:{how}", f"seed {seed.name}"
        if case.endpoint not in FORM_ENDPOINTS:
            case.body_class = classify_raw(case.body)
        else:
            case.body_class = cls

    def _op_content_type(
        self, case: Case, seed: Seed, body: Any, rng: random.Random, stack: bool = False
    ) -> None:
        ctype = rng.choice(CONTENT_TYPES)
        case.content_type = ctype
        if stack:
            case.detail += f", ct={ctype!r}"
        else:
            case.group, case.detail = "content-type", f"seed {seed.name}, ct={ctype!r}"
        if case.endpoint in FORM_ENDPOINTS and case.body_class == "valid":
            case.body_class = "body"  # the type picks JSON or form decoding

    def _op_method(
        self, case: Case, seed: Seed, body: Any, rng: random.Random, stack: bool = False
    ) -> None:
        method = rng.choice([*METHODS, "post"])
        case.method = method.upper()  # (Request upper-cases; "post" is POST)
        if stack and case.method == "POST":
            case.detail += f", method {method!r}"
        elif stack:  # the method is answered before the body is read
            case.detail = f"{case.group}, {case.detail}"
            case.group = f"method {method}"
        else:
            case.group, case.detail = f"method {method}", f"seed {seed.name}"

    def _op_path(
        self, case: Case, seed: Seed, body: Any, rng: random.Random, stack: bool = False
    ) -> None:
        label, path, query, cls = rng.choice(PATHS[case.endpoint][1:])
        case.path, case.query, case.path_class = path, query, cls
        if stack and cls == "ok":
            case.detail += f", path {label}"
        elif stack:  # the path is answered before the body is read
            case.detail = f"{case.group}, {case.detail}"
            case.group = f"path:{label}"
        else:
            case.group, case.detail = f"path:{label}", f"seed {seed.name}"

    def _op_too_large(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        limit = self.max_body[case.endpoint]
        self._pad(case, limit + 1 + rng.randrange(4096))
        case.group, case.detail = "body over max_body", f"seed {seed.name}, {len(case.body)} B"

    def _op_at_limit(self, case: Case, seed: Seed, body: Any, rng: random.Random) -> None:
        limit = self.max_body[case.endpoint]
        self._pad(case, limit)
        case.group, case.detail = (
            "body of exactly max_body",
            f"seed {seed.name}, {len(case.body)} B",
        )

    @staticmethod
    def _pad(case: Case, size: int) -> None:
        missing = size - len(case.body)
        if case.content_type == "application/x-www-form-urlencoded":
            case.body += b"&pad=" + b"x" * max(0, missing - 5)
        else:
            case.body += b" " * max(0, missing)


# =============================================================================================
# the channels under test


class _Counting:
    """Store mixin counting admitted turns and committed replies (the worker sample)."""

    admitted = 0
    completed = 0
    replies = 0

    def inbox_admit(self, item: Any, dedupe_key: Any, ttl: float) -> bool:
        new: bool = super().inbox_admit(item, dedupe_key, ttl)  # type: ignore[misc]
        if new:
            self.admitted += 1
        return new

    def inbox_complete(self, item: Any, replies: Any, *rest: Any) -> bool:
        done: bool = super().inbox_complete(item, replies, *rest)  # type: ignore[misc]
        if done:
            self.completed += 1
            self.replies += len(replies)
        return done


def _store(kind: str, directory: str, name: str, counting: bool = False) -> Any:
    if kind == "memory":
        cls: Any = MemoryStore
        args: tuple[Any, ...] = ()
    else:
        from omnichannel.runtime.stores import SQLiteStore

        cls = SQLiteStore
        args = (os.path.join(directory, f"{name}.db"),)
    if counting:
        cls = type(f"Counting{cls.__name__}", (_Counting, cls), {})
    return cls(*args)


@dataclass
class Rig:
    """The five endpoints on one runtime (and store)."""

    store_kind: str
    runtime: Runtime
    handlers: dict[str, Any]
    channels: dict[str, Any]
    custom_calls: list[Any] = field(default_factory=list)
    delivered: Counter[str] = field(default_factory=Counter)
    failures: list[BaseException] = field(default_factory=list)
    unsendable: list[str] = field(default_factory=list)
    sent: deque[Mapping[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    processed: int = 0

    def close(self) -> None:
        self.runtime.close(timeout=1.0)


def build_rig(store_kind: str, directory: str, *, worker: bool = False) -> Rig:
    """The endpoints with default settings on one runtime: admission only (``worker=False``),
    or running each turn before answering with no-op transports (``worker=True``)."""
    name = f"{store_kind}-{'worker' if worker else 'admit'}"
    runtime = Runtime(
        store=_store(store_kind, directory, name, counting=worker),
        inline=worker,
        background=False,
        max_pending=10**9,
        pace_above=None,
        max_turn_attempts=1,
    )
    omnidesk = OmnideskClient("https://fuzz.omnidesk.example", "bot@example.com", "api-key")
    unused = "http://127.0.0.1:9/unused"
    connector = Connector(None, token=TOKEN, channel_url=unused, runtime=runtime)
    visitors = Connector(
        None, token=TOKEN + "v", channel_url=unused, runtime=runtime, name="omnichannel-v"
    )
    rules = OmnideskChannel(None, client=omnidesk, secret=SECRET, runtime=runtime)
    custom = CustomChannel(omnidesk, "cch1", secret=SECRET, runtime=runtime)
    webex = WebexConnectBot(
        None, "http://127.0.0.1:9/events/x", WEBEX_TOKEN, path=WEBEX_PATH, runtime=runtime
    )
    secured = WebexConnectBot(
        None,
        "http://127.0.0.1:9/events/y",
        WEBEX_TOKEN,
        path=WEBEX_PATH,
        secret=SECRET,
        access_token=ACCESS_TOKEN,
        runtime=runtime,
        name="webex-secured",
    )
    bridge = PageMessengerBridge(
        PageMessengerClient(token="pm-token", base_url=unused),
        "task-1",
        secret=SECRET,
        channels=[visitors],
        runtime=runtime,
    )
    rig = Rig(
        store_kind,
        runtime,
        {
            CONNECTOR: connector,
            RULES: rules,
            CUSTOM: custom,
            WEBEX: webex,
            WEBEX_SECURED: secured,
            PAGEMESSENGER: bridge,
        },
        {
            CONNECTOR: connector,
            RULES: rules,
            CUSTOM: custom,
            WEBEX: webex,
            WEBEX_SECURED: secured,
            PAGEMESSENGER: bridge.webhook,
        },
    )
    custom.on_reply(rig.custom_calls.append)
    if worker:
        for channel in (connector, visitors, rules, custom, webex, secured):
            destination = channel.destination
            runtime.outbox.register(destination, _noop(rig, destination))
        runtime.outbox.register(bridge.destination, _noop(rig, bridge.destination))
    # the visitor the AI answers: one text through a connector whose bot is the bridge's
    visitors.bot = bridge.bot
    seed = text_event("route me", chat_id=1, message_id="route-1")
    headers = {"Content-Type": "application/json"}
    answer = visitors.handle(
        Request("POST", visitors.webhook_path, headers, json.dumps(seed).encode())
    )
    assert answer.status == 200, answer
    if not worker:
        runtime.turns.process_due()
    assert bridge.route(ROUTED_CHAT) is not None, "the Page-messenger route was not stored"
    if worker:
        for channel in rig.channels.values():
            channel.process = _watched(rig, channel.process)
        rig.delivered.clear()
    return rig


def _noop(rig: Rig, destination: str) -> Callable[[Mapping[str, Any]], None]:
    def transport(payload: Mapping[str, Any]) -> None:
        # sends nothing; but what a platform gets is UTF-8 JSON: a reply that cannot be
        # written so (a lone surrogate kept from the visitor's text) would fail on the wire
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            rig.unsendable.append(f"{type(exc).__name__}: {str(exc)[:100]}")
        rig.delivered[destination] += 1
        rig.sent.append(payload)

    return transport


def _watched(rig: Rig, process: Callable[[Mapping[str, Any]], None]) -> Callable[..., None]:
    def run(payload: Mapping[str, Any]) -> None:
        rig.processed += 1
        try:
            process(payload)
        except BaseException as exc:
            rig.failures.append(exc)
            raise

    return run


# =============================================================================================
# logging capture


class _Capture(logging.Handler):
    """Keeps records with ``exc_info`` (any level) and every ERROR record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.getMessage()
        except Exception:
            record.exc_info = sys.exc_info()
            record.msg = f"unformattable log record: {record.msg!r}"
            record.args = None
            self.records.append(record)
            return
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.records = self.records, []
        return out


@contextmanager
def captured_logs() -> Iterator[_Capture]:
    capture = _Capture()
    sdk = logging.getLogger("omnichannel")
    root = logging.getLogger()
    saved = sdk.level, sdk.propagate
    sdk.setLevel(logging.DEBUG)
    sdk.propagate = False  # keep 100k cases of INFO lines off the console
    sdk.addHandler(capture)
    root.addHandler(capture)
    try:
        yield capture
    finally:
        sdk.removeHandler(capture)
        root.removeHandler(capture)
        sdk.setLevel(saved[0])
        sdk.propagate = saved[1]


def _where(tb: Any) -> str:
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if "omnichannel" in f.filename.replace("\\", "/")] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    path = frame.filename.replace("\\", "/")
    path = path[path.rfind("omnichannel/") :] if "omnichannel/" in path else os.path.basename(path)
    return f"{path}:{frame.lineno} in {frame.name}"


def record_signature(record: logging.LogRecord) -> tuple[str, str]:
    """(finding key, one-line summary) of a captured record."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        where = _where(record.exc_info[2])
        key = f"{type(exc).__name__} at {where} (logged by {record.name})"
        return key, f"{type(exc).__name__}: {str(exc)[:160]}"
    msg = str(record.msg)
    return f"{record.levelname} {record.name}: {msg[:120]}", record.getMessage()[:200]


def exception_signature(exc: BaseException) -> tuple[str, str]:
    where = _where(exc.__traceback__)
    return f"{type(exc).__name__} at {where}", f"{type(exc).__name__}: {str(exc)[:160]}"


# =============================================================================================
# HTTP


class _Errors(io.StringIO):
    """wsgi.errors of the wsgiref server: what it writes (a traceback) is recorded."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__()
        self.sink = sink

    def write(self, text: str) -> int:
        self.sink.append(text)
        return len(text)


class HttpServers:
    """Each handler over real HTTP: LocalServer, and the WSGI shim under wsgiref."""

    def __init__(self, handlers: Mapping[str, Any]) -> None:
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        from omnichannel.integrations.server import LocalServer
        from omnichannel.integrations.wsgi import WSGIApp

        self.wsgi_errors: list[str] = []
        sink = self.wsgi_errors

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def get_stderr(self) -> Any:
                return _Errors(sink)

        class Server(WSGIServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                sink.append(traceback.format_exc())

        self.local: dict[str, Any] = {}
        self.wsgi: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        for endpoint, handler in handlers.items():
            self.local[endpoint] = LocalServer(handler).start()
            server = make_server(
                "127.0.0.1", 0, WSGIApp(handler), server_class=Server, handler_class=Quiet
            )
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self.wsgi[endpoint] = server
            self._threads.append(thread)

    def port(self, transport: str, endpoint: str) -> int:
        if transport == "LocalServer":
            return int(self.local[endpoint].port)
        return int(self.wsgi[endpoint].server_address[1])

    def close(self) -> None:
        for server in self.local.values():
            server.stop()
        for server in self.wsgi.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)


def _http_target(case: Case) -> str:
    path = case.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    safe = "/%;=&[]:@!$'()*+,~-._"
    target = quote(path.encode("utf-8", "surrogatepass"), safe=safe)
    if case.query:
        target += "?" + quote(case.query.encode("utf-8", "surrogatepass"), safe=safe + "?")
    return target


def http_request(port: int, case: Case, timeout: float = 20.0) -> Response:
    """One request on a fresh connection; the answer is read even when the server stopped
    reading the body (an oversized body is refused before it is read)."""
    head = [f"{case.method} {_http_target(case)} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += ["Connection: close", f"Content-Length: {len(case.body)}"]
    if case.content_type is not None:
        head.append(f"Content-Type: {case.content_type}")
    head += [f"{k}: {v}" for k, v in case.headers.items()]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        body = memoryview(case.body)
        try:
            while body:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:  # answered early: stop sending
                    break
                sent = sock.send(body[:65536])
                body = body[sent:]
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    if not raw:
        raise ConnectionError("no answer")
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
    return Response(status, payload, [(k.strip(), v.strip()) for k, v in headers])


# =============================================================================================
# judging


@dataclass
class Finding:
    endpoint: str
    kind: str  # escaped / traceback / undocumented / lost
    key: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)  # store / transport


@dataclass
class EndpointStats:
    cases: int = 0
    escaped: int = 0
    tracebacks: int = 0
    undocumented: int = 0
    worker: int = 0
    lost: int = 0
    slowest_ms: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)


def expected(case: Case, cap_reached: bool = False) -> frozenset[int]:
    """The statuses the endpoint's documented table gives this case (by the pipeline's order:
    route, method, verify, size, parse)."""
    table = TABLES[case.endpoint]
    out: set[int] = set()
    if case.path_class.startswith("lenient:"):
        rows = case.path_class.split(":", 1)[1].split("|")
        for row in [*rows, "ok"]:
            out |= _expected(case, row, table, cap_reached)
    else:
        out |= _expected(case, case.path_class, table, cap_reached)
    if case.transport != "in-process" and len(case.body) > _MAX_BODY[case.endpoint]:
        # over HTTP a body over max_body is refused before it is read, whatever the URL
        out |= table["too-large"]
    return frozenset(out)


def _expected(
    case: Case, path_class: str, table: Mapping[str, frozenset[int]], cap: bool = False
) -> frozenset[int]:
    # the pipeline's order: route (404), method (405), verify (403 / 400 token; Webex: GET and
    # HEAD answered with the token; the access token 401 / 403), size (413), parse
    webex = case.endpoint in (WEBEX, WEBEX_SECURED)
    if path_class == "wrong-path":
        return table["wrong-path"]
    if case.method != "POST":
        if webex and case.method in ("GET", "HEAD"):
            return table["wrong-secret"] if path_class == "wrong-secret" else table["verify"]
        return table["method"]
    if path_class == "wrong-secret":
        return table["wrong-secret"]
    if case.auth_class != "ok" and case.body.strip():
        return table[case.auth_class]
    if cap:  # Webex: max_consecutive_refusals reached, whatever the event is
        return frozenset({200})
    too_large = len(case.body) > _MAX_BODY[case.endpoint]
    if too_large:
        return table["too-large"]
    return table[case.body_class]


_MAX_BODY: dict[str, int] = {}


def _error_body_ok(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), str) and bool(data["error"])


def _ack_ok(case: Case, response: Response) -> bool:
    if case.method == "HEAD":
        return True
    if case.endpoint in (WEBEX, WEBEX_SECURED):
        return response.body == WEBEX_TOKEN.encode()
    try:
        data = json.loads(response.body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("result") == "ok"


class Judge:
    """Checks each answer against the tables and keeps the findings."""

    def __init__(self, examples: int) -> None:
        self.examples = examples
        self.stats: dict[str, EndpointStats] = {e: EndpointStats() for e in ENDPOINTS}
        self.findings: dict[tuple[str, str, str], Finding] = {}
        self.streaks: Counter[int] = Counter()

    def add(self, case: Case, kind: str, key: str, example: str) -> None:
        endpoint = case.endpoint
        finding = self.findings.get((endpoint, kind, key))
        if finding is None:
            finding = self.findings[endpoint, kind, key] = Finding(endpoint, kind, key)
        finding.count += 1
        finding.seen[f"{case.store}, {case.transport}"] += 1
        if len(finding.examples) < self.examples:
            finding.examples.append(example)

    def answer_problems(self, case: Case, response: Response, handler: Any) -> list[str]:
        """Why ``response`` is not the documented answer to ``case`` (empty: it is)."""
        problems: list[str] = []
        cap_reached = False
        if case.endpoint in (WEBEX, WEBEX_SECURED):  # refusals (400, 503) in a row
            cap = int(getattr(handler, "max_consecutive_refusals", 2))
            cap_reached = self.streaks[id(handler)] >= cap
        allowed = expected(case, cap_reached)
        status = response.status
        if status not in allowed:
            if cap_reached and allowed != expected(case, False):
                problems.append(
                    f"{status} after {self.streaks[id(handler)]} non-2xx in a row "
                    f"(max_consecutive_refusals): must be acknowledged 200"
                )
            elif status >= 500:
                problems.append(f"{status} for a client-side fault (documented {sorted(allowed)})")
            else:
                problems.append(f"{status} where the table gives {sorted(allowed)}")
        elif status == 500 and _error_text(response.body) == "Internal server error.":
            problems.append("500 'Internal server error.' where the malformed answer is documented")
        if status >= 400 and not _error_body_ok(response.body) and case.method != "HEAD":
            problems.append(f'{status} body is not {{"error": …}}')
        if status == 405 and "Allow" not in response.headers:
            problems.append("405 without Allow")
        if status == 503 and "Retry-After" not in response.headers:
            problems.append("503 without Retry-After")
        if status == 200 and not _ack_ok(case, response):
            problems.append("200 whose body is not the acknowledgement")
        if case.endpoint in (WEBEX, WEBEX_SECURED):  # an acknowledgement starts the count again
            if 200 <= status < 300:
                self.streaks[id(handler)] = 0
            elif status in (getattr(handler, "malformed_status", 400), 503):
                self.streaks[id(handler)] += 1
        return problems


def _error_text(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("error") if isinstance(data, dict) else None


# =============================================================================================
# the campaign


@dataclass
class Report:
    seed: int
    requested: int
    elapsed: float
    stats: dict[str, EndpointStats]
    findings: dict[tuple[str, str, str], Finding]
    transports: Counter[str]
    stopped_by_time: bool = False

    def totals(self) -> dict[str, int]:
        keys = ("cases", "escaped", "tracebacks", "undocumented", "worker", "lost")
        return {k: sum(getattr(s, k) for s in self.stats.values()) for k in keys}

    @property
    def ok(self) -> bool:
        t = self.totals()
        return t["escaped"] == t["tracebacks"] == t["undocumented"] == t["lost"] == 0

    def render(self, examples: int = 5) -> str:
        t = self.totals()
        lines = [
            f"fuzz campaign: seed {self.seed}, {t['cases']} cases"
            + (
                f" (stopped by the time budget; {self.requested} asked)"
                if self.stopped_by_time
                else ""
            )
            + f" in {self.elapsed:.1f} s",
            "  transports: " + ", ".join(f"{k} {v}" for k, v in sorted(self.transports.items())),
            "",
        ]
        header = (
            "endpoint",
            "cases",
            "escaped",
            "tracebacks",
            "undocumented",
            "worker",
            "lost",
            "slowest ms",
        )
        rows = [header]
        for endpoint, s in self.stats.items():
            rows.append(
                (
                    endpoint,
                    str(s.cases),
                    str(s.escaped),
                    str(s.tracebacks),
                    str(s.undocumented),
                    str(s.worker),
                    str(s.lost),
                    f"{s.slowest_ms:.1f}",
                )
            )
        rows.append(
            (
                "total",
                str(t["cases"]),
                str(t["escaped"]),
                str(t["tracebacks"]),
                str(t["undocumented"]),
                str(t["worker"]),
                str(t["lost"]),
                "",
            )
        )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            cells = zip(r, widths, strict=True)
            lines.append(
                "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))
            )
        lines.append("")
        lines.append(
            "  (worker: cases of the worker sample, which run the bot before answering; lost: "
            "acknowledged messages whose turn failed or whose reply was not committed/delivered)"
        )
        lines.append("")
        lines.append(
            "  statuses: "
            + "; ".join(
                f"{e} " + ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items()))
                for e, s in self.stats.items()
            )
        )
        if not self.findings:
            lines.append("\nno findings")
            return "\n".join(lines)
        order = {"escaped": 0, "traceback": 1, "undocumented": 2, "lost": 3}
        found = sorted(
            self.findings.values(),
            key=lambda f: (ENDPOINTS.index(f.endpoint), order[f.kind], -f.count),
        )
        lines.append(f"\n{len(found)} finding class(es):")
        for number, f in enumerate(found, 1):
            seen = ", ".join(f"{k}: {v}" for k, v in sorted(f.seen.items()))
            lines.append(f"\n[{number}] {f.endpoint} — {f.kind}: {f.key}")
            lines.append(f"    {f.count} case(s) ({seen})")
            for example in f.examples[:examples]:
                lines.append(f"    e.g. {example}")
        return "\n".join(lines)


def _summary(response: Response) -> str:
    body = response.body[:120]
    return f"→ {response.status} {body!r}"


class Campaign:
    def __init__(
        self,
        *,
        cases: int,
        seed: int,
        http: bool,
        http_share: float,
        sqlite_share: float,
        worker_share: float,
        time_budget: float | None,
        examples: int,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.total = cases
        self.seed = seed
        self.http = http
        self.http_share = http_share
        self.sqlite_share = sqlite_share
        self.worker_share = worker_share
        self.time_budget = time_budget
        self.judge = Judge(examples)
        self.progress = progress
        self.transports: Counter[str] = Counter()

    def run(self) -> Report:
        started = time.monotonic()
        directory = tempfile.mkdtemp(prefix="omnichannel-fuzz-")
        rigs: dict[str, Rig] = {}
        workers: dict[str, Rig] = {}
        servers: HttpServers | None = None
        stopped = False
        try:
            with captured_logs() as capture, self._closing(rigs, workers):
                stores = ["memory"] + (["sqlite"] if self.sqlite_share > 0 else [])
                for kind in stores:
                    rigs[kind] = build_rig(kind, directory)
                    if self.worker_share > 0:
                        workers[kind] = build_rig(kind, directory, worker=True)
                capture.take()  # set-up
                _MAX_BODY.update({e: int(h.max_body) for e, h in rigs["memory"].handlers.items()})
                if self.http:
                    servers = HttpServers(rigs["memory"].handlers)
                generator = Generator(self.seed, _MAX_BODY)
                for index in range(self.total):
                    if (
                        self.time_budget is not None
                        and time.monotonic() - started > self.time_budget
                    ):
                        stopped = True
                        break
                    endpoint = ENDPOINTS[index % len(ENDPOINTS)]
                    pick = random.Random(f"{self.seed}:route:{index}").random()
                    if pick < self.worker_share:
                        case = worker_case(self.seed, index, endpoint)
                        case.store = "sqlite" if "sqlite" in workers and index % 2 else "memory"
                        self.run_case(case, workers[case.store], None, capture)
                        continue
                    case = generator.case(index, endpoint)
                    pick -= self.worker_share
                    if servers is not None and pick < self.http_share:
                        case.transport = "LocalServer" if index % 2 else "WSGI (wsgiref)"
                    elif pick < self.http_share + self.sqlite_share and "sqlite" in rigs:
                        case.store = "sqlite"
                    self.run_case(case, rigs[case.store], servers, capture)
                    if self.progress and (index + 1) % 10_000 == 0:
                        self.progress(f"  {index + 1} cases, {time.monotonic() - started:.0f} s")
                if servers is not None:
                    servers.close()
                    servers = None
        finally:
            if servers is not None:
                servers.close()
            shutil.rmtree(directory, ignore_errors=True)
        return Report(
            seed=self.seed,
            requested=self.total,
            elapsed=time.monotonic() - started,
            stats=self.judge.stats,
            findings=self.judge.findings,
            transports=self.transports,
            stopped_by_time=stopped,
        )

    @staticmethod
    @contextmanager
    def _closing(rigs: Mapping[str, Rig], workers: Mapping[str, Rig]) -> Iterator[None]:
        # closed while the logs are still captured: a memory store closing with turns in its
        # inbox warns that they are lost (they are: nothing runs them in this campaign)
        try:
            yield
        finally:
            for rig in [*rigs.values(), *workers.values()]:
                with suppress(Exception):  # a store that cannot close is no finding here
                    rig.close()

    def run_case(
        self, case: Case, rig: Rig, servers: HttpServers | None, capture: _Capture
    ) -> None:
        judge = self.judge
        stats = judge.stats[case.endpoint]
        stats.cases += 1
        self.transports[f"{case.transport} / {case.store}"] += 1
        handler = rig.handlers[case.endpoint]
        before = _worker_counts(rig) if case.worker else None
        began = time.perf_counter()
        response: Response | None = None
        wsgi_errors: list[str] = []
        try:
            if case.transport == "in-process":
                headers = dict(case.headers)
                if case.content_type is not None:
                    headers["Content-Type"] = case.content_type
                response = handler.handle(
                    Request(case.method, case.path, headers, case.body, case.query)
                )
            else:
                assert servers is not None
                mark = len(servers.wsgi_errors)
                response = http_request(servers.port(case.transport, case.endpoint), case)
                wsgi_errors = servers.wsgi_errors[mark:]
        except Exception as exc:
            key, text = exception_signature(exc)
            stats.escaped += 1
            judge.add(case, "escaped", key, f"{case.describe()} raised {text}")
        elapsed = (time.perf_counter() - began) * 1000
        stats.slowest_ms = max(stats.slowest_ms, elapsed)
        records = capture.take()
        outcome = _summary(response) if response is not None else "→ (raised)"
        if records or wsgi_errors:
            stats.tracebacks += 1
            for record in records:
                key, text = record_signature(record)
                judge.add(case, "traceback", key, f"{case.describe()} {outcome}; {text}")
            if wsgi_errors:
                lines = "".join(wsgi_errors).strip().splitlines()
                where = [line.strip() for line in lines if line.strip().startswith("File ")]
                last = lines[-1] if lines else ""
                key = f"wsgiref server error: {last[:80]}" + (
                    f" ({where[-1][:120]})" if where else ""
                )
                judge.add(case, "traceback", key, f"{case.describe()} {outcome}")
        if response is None:
            return
        stats.statuses[response.status] += 1
        problems = judge.answer_problems(case, response, handler)
        if problems:
            stats.undocumented += 1
            key = f"{case.group}: {'; '.join(problems)}"
            judge.add(case, "undocumented", key, f"{case.describe()} {outcome}")
        if case.worker:
            stats.worker += 1
            lost = _lost(case, response, rig, before)
            if lost is not None:
                stats.lost += 1
                judge.add(case, "lost", lost, f"{case.describe()} {outcome}")


# -- the worker sample ------------------------------------------------------------------------


def _worker_counts(rig: Rig) -> dict[str, int]:
    store: Any = rig.runtime.store  # a store with the _Counting mixin
    return {
        "admitted": store.admitted,
        "completed": store.completed,
        "replies": store.replies,
        "delivered": sum(rig.delivered.values()),
        "failures": len(rig.failures),
        "processed": rig.processed,
        "custom": len(rig.custom_calls),
        "unsendable": len(rig.unsendable),
    }


def _lost(case: Case, response: Response, rig: Rig, before: Mapping[str, int] | None) -> str | None:
    """Why an acknowledged message of the worker sample did not get its reply (``None``: it did,
    or it was refused with a documented answer)."""
    assert before is not None
    after = _worker_counts(rig)
    delta = {k: after[k] - before[k] for k in after}
    if response.status != 200:
        return None  # refused: judged against the table like every other case
    if delta["failures"]:
        exc = rig.failures[-1]
        return f"acknowledged, then the turn failed: {exception_signature(exc)[0]}"
    if delta["admitted"] == 0:
        return "acknowledged 200 but not stored as a turn" if case.expect_turn else None
    if rig.runtime.store.pending(INBOX):
        return "acknowledged, but the turn is still in the inbox"
    if case.endpoint == CUSTOM:
        return None if delta["custom"] else "acknowledged, but the reply handler was not called"
    if case.expect_reply and delta["replies"] == 0:
        return "acknowledged, the turn ran, but no reply was committed"
    if delta["delivered"] < delta["replies"]:
        return "acknowledged, reply committed but not delivered"
    if delta["unsendable"]:
        return f"acknowledged, but the reply is not UTF-8 JSON ({rig.unsendable[-1][:60]})"
    return None


def worker_case(seed: int, index: int, endpoint: str) -> Case:
    """A visitor message whose text (or id) is an unusual string, for the worker sample."""
    rng = random.Random(f"{seed}:worker:{index}")
    weird = rng.choice(SURROGATES * 3 + TEXTS)
    raw_utf8 = rng.random() < 0.2  # a lone surrogate as UTF-8 bytes: not UTF-8, not JSON
    where = "text"
    chat = 10_000 + index
    body: Any
    if endpoint == CONNECTOR:
        where = rng.choice(["text", "text", "message.id", "visitor.fields.name"])
        text = weird if where == "text" else "hello"
        message_id = f"w-{index}{weird}" if where == "message.id" else f"w-{index}"
        fields = {"name": weird} if where == "visitor.fields.name" else None
        body = text_event(text, chat_id=chat, message_id=message_id, fields=fields)
    elif endpoint == RULES:
        where = rng.choice(["text", "text", "message.id"])
        body = _rules_body(weird if where == "text" else "hello", chat)
        if where == "message.id":
            body["message"]["id"] = f"w-{index}{weird}"
    elif endpoint == CUSTOM:
        body = _custom_body(message_id=10**7 + index, case_id=chat, content=weird)
    elif endpoint in (WEBEX, WEBEX_SECURED):
        where = rng.choice(["text", "text", "Messageid", "PostbackPayload", "Conversationid"])
        if where == "PostbackPayload":
            body = postback_event(f"conv-{index}", weird, timestamp=TIMESTAMP)
        else:
            body = incoming_message_event(
                f"conv-{index}{weird}" if where == "Conversationid" else f"conv-{index}",
                weird if where == "text" else "hello",
                message_id=f"w-{index}{weird}" if where == "Messageid" else f"w-{index}",
                timestamp=TIMESTAMP,
            )
    else:
        where = rng.choice(["message_text", "message_text", "message_id"])
        body = _pm_body(
            external_chat_id="omnichannel-v:1",
            message_id=f"w-{index}{weird}" if where == "message_id" else f"w-{index}",
            message_text=weird if where == "message_text" else "hello",
        )
    bad_bytes = raw_utf8 and weird in SURROGATES
    return Case(
        index=index,
        endpoint=endpoint,
        group=f"worker:{where}" + (" (raw UTF-8)" if bad_bytes else ""),
        detail=f"{where} = {weird[:30]!r}",
        path=_RIGHT[endpoint],
        body=encode(body, ascii_only=not raw_utf8),
        body_class="not-json" if bad_bytes else "valid",
        headers=dict(_BEARER) if endpoint == WEBEX_SECURED else {},
        worker=True,
        # a rule's placeholder that Omnidesk left unfilled is skipped (docs/omnidesk-rules.md)
        expect_turn=not (endpoint == RULES and where == "text" and weird == "[last_message]"),
        # whitespace is no message: nothing to echo, nothing to forward
        expect_reply=endpoint != CUSTOM and (weird.strip() != "" or where not in _TEXT_FIELDS),
    )


_TEXT_FIELDS = ("text", "message_text", "PostbackPayload")


# =============================================================================================
# entry points


def run_campaign(
    cases: int = 100_000,
    seed: int = 0,
    *,
    http: bool = False,
    http_share: float = 0.05,
    sqlite_share: float = 0.1,
    worker_share: float = 0.01,
    time_budget: float | None = None,
    examples: int = 5,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run the campaign (see the module's documentation) and return its report."""
    return Campaign(
        cases=cases,
        seed=seed,
        http=http,
        http_share=http_share if http else 0.0,
        sqlite_share=sqlite_share,
        worker_share=worker_share,
        time_budget=time_budget,
        examples=examples,
        progress=progress,
    ).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fuzz",
        description="Fuzz every inbound endpoint; exit 1 when anything is found.",
    )
    parser.add_argument("--cases", type=int, default=100_000, help="cases to send (100000)")
    parser.add_argument("--seed", type=int, default=0, help="the campaign's seed (0)")
    parser.add_argument("--time", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--http", action="store_true", help="send a share over real HTTP")
    parser.add_argument("--http-share", type=float, default=0.05, help="with --http (0.05)")
    parser.add_argument("--sqlite-share", type=float, default=0.1, help="on a SQLite store (0.1)")
    parser.add_argument("--worker-share", type=float, default=0.01, help="worker sample (0.01)")
    parser.add_argument("--examples", type=int, default=5, help="examples per finding (5)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(list(argv) if argv is not None else None)
    report = run_campaign(
        args.cases,
        args.seed,
        http=args.http,
        http_share=args.http_share,
        sqlite_share=args.sqlite_share,
        worker_share=args.worker_share,
        time_budget=args.time,
        examples=args.examples,
        progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(report.render(args.examples))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
