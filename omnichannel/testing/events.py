"""Builders of inbound omnichannel payloads for tests and notebooks."""

from __future__ import annotations

import itertools
import json
from typing import Any

__all__ = ["button_event", "dumps", "file_event", "new_chat_event", "text_event"]

_ids = itertools.count(1)


def _next_id() -> str:
    return f"m-{next(_ids)}"


def _visitor(visitor_id: str, fields: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": visitor_id, "fields": fields if fields is not None else {"name": "Ann"}}


def _event(
    chat_id: int | str, message: dict[str, Any], visitor_id: str, fields: Any
) -> dict[str, Any]:
    return {
        "event": "new_message",
        "chat_id": chat_id,
        "visitor": _visitor(visitor_id, fields),
        "message": message,
    }


def text_event(
    text: str,
    *,
    chat_id: int | str = 1,
    message_id: str | None = None,
    visitor_id: str = "v-1",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``new_message`` with a visitor text (a fresh message id unless given)."""
    message = {"id": message_id or _next_id(), "kind": "visitor", "text": text}
    return _event(chat_id, message, visitor_id, fields)


def file_event(
    url: str,
    *,
    content_type: str = "application/pdf",
    name: str = "file.pdf",
    state: str | None = "ready",
    size: int = 1024,
    file_id: str = "f-1",
    chat_id: int | str = 1,
    message_id: str | None = None,
    visitor_id: str = "v-1",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``new_message`` with a ``file_visitor`` message (``state=None`` omits the state)."""
    data: dict[str, Any] = {
        "id": file_id,
        "name": name,
        "content_type": content_type,
        "size": size,
        "url": url,
    }
    if state is not None:
        data["state"] = state
    message = {"id": message_id or _next_id(), "kind": "file_visitor", "data": data}
    return _event(chat_id, message, visitor_id, fields)


def button_event(
    text: str,
    *,
    button_id: str = "b1",
    chat_id: int | str = 1,
    message_id: str | None = None,
    visitor_id: str = "v-1",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``new_message`` with a ``keyboard_response`` (the button's id and label)."""
    message = {
        "id": message_id or _next_id(),
        "kind": "keyboard_response",
        "data": {"button": {"id": button_id, "text": text}},
    }
    return _event(chat_id, message, visitor_id, fields)


def new_chat_event(
    *texts: str, chat_id: int | str = 1, visitor_id: str = "v-1", fields: Any = None
) -> dict[str, Any]:
    """A Webim 2.0 ``new_chat`` carrying visitor texts."""
    return {
        "event": "new_chat",
        "chat": {"id": chat_id},
        "visitor": _visitor(visitor_id, fields),
        "messages": [{"id": _next_id(), "kind": "visitor", "text": t} for t in texts],
    }


def dumps(payload: dict[str, Any]) -> bytes:
    """The payload as the UTF-8 JSON bytes a channel server posts."""
    return json.dumps(payload, ensure_ascii=False).encode()
