"""The seed's three inbound payloads (text, file, button press), as raw bytes."""

from __future__ import annotations

import json

VISITOR = {
    "id": "v-1",
    "fields": {
        "name": "Ann",
        "login": "ann",
        "phone": "+79001234567",
        "email": "ann@example.com",
        "site": "shop.example",
    },
}


def _body(message: dict[str, object]) -> bytes:
    payload = {"event": "new_message", "chat_id": 123, "visitor": VISITOR, "message": message}
    return json.dumps(payload).encode()


TEXT = _body({"id": "m-1", "kind": "visitor", "text": "Hello, I would like to order a pizza"})
FILE = _body(
    {
        "id": "m-2",
        "kind": "file_visitor",
        "data": {
            "id": "f-1",
            "state": "ready",
            "name": "invoice.pdf",
            "content_type": "application/pdf",
            "size": 48213,
            "url": "https://files.example/invoice.pdf",
        },
    }
)
BUTTON = _body(
    {"id": "m-3", "kind": "keyboard_response", "data": {"button": {"id": "b1", "text": "Yes"}}}
)

PAYLOADS = {"text": TEXT, "file": FILE, "button": BUTTON}
