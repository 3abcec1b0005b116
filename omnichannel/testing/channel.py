"""A recording channel server: what the connector's ``/send_message`` calls reach."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

import attrs

from omnichannel.codec import parse_send_message
from omnichannel.errors import PayloadError
from omnichannel.models import ChatId, OutboundMessage, TextReply
from omnichannel.runtime.http import Request, Response
from omnichannel.testing.fake import FakePlatform

__all__ = ["Call", "RecordingChannelServer"]


@attrs.frozen(kw_only=True)
class Call:
    """One call the channel server received (and accepted)."""

    method: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float

    @property
    def chat_id(self) -> ChatId | None:
        """The call's ``chat_id``."""
        value = self.body.get("chat_id")
        return value if isinstance(value, (int, str)) else None

    @property
    def message(self) -> OutboundMessage | None:
        """The parsed message of a ``send_message`` call."""
        if self.method != "send_message":
            return None
        return parse_send_message(self.body).message

    @property
    def text(self) -> str | None:
        """The text of an ``operator`` message."""
        message = self.message
        return message.text if isinstance(message, TextReply) else None


class RecordingChannelServer(FakePlatform[Call]):
    """A channel server on 127.0.0.1 that records ``/send_message``, ``/close_chat`` and
    ``/redirect_chat`` calls (:class:`Call`), checks the ``Authorization: Token`` header when
    ``token`` is set and can be told to fail (``fail_next``) or to refuse everything (``always``);
    :attr:`refused` holds ``(status, body)`` of each call refused so.

    ``channel_url`` is what to configure as the connector's channel webhook URL.
    """

    METHODS = ("send_message", "close_chat", "redirect_chat")

    def __init__(self, token: str | None = None, *, path: str = "/channel", port: int = 0) -> None:
        super().__init__(port=port)
        self.token = token
        self.path = path.rstrip("/")

    @property
    def channel_url(self) -> str:
        """The URL to give the connector as ``channel_url``."""
        return self.url + self.path

    def error_body(self, status: int) -> Any:
        """The body of a scripted failure."""
        return {"error": "unavailable", "desc": f"told to answer {status}"}

    def handle(self, request: Request) -> Response:
        """Record a valid call or refuse it."""
        prefix = self.path + "/"
        if request.method != "POST" or not request.path.startswith(prefix):
            return Response.error(404, "Not found.")
        method = request.path[len(prefix) :]
        if method not in self.METHODS:
            return Response.error(404, f"unknown method {method}")
        if self.token is not None:
            expected = f"Token {self.token}".encode()
            got = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(got, expected):
                return Response.json(401, {"error": "unauthorized", "desc": "bad token"})
        try:
            body = json.loads(request.body)
            if method == "send_message":
                parse_send_message(body)
        except (ValueError, PayloadError) as exc:
            return Response.json(400, {"error": "bad_request", "desc": str(exc)})
        failure = self.scripted_failure(body)
        if failure is not None:
            return failure
        self.record(Call(method=method, body=body, headers=dict(request.headers), at=time.time()))
        return Response.json(200, {"result": "ok"})

    def texts(self, chat_id: ChatId | None = None) -> list[str]:
        """Texts sent so far (to ``chat_id`` when given), in arrival order."""
        with self._cond:
            calls = list(self.calls)
        return [
            c.text
            for c in calls
            if c.text is not None and (chat_id is None or c.chat_id == chat_id)
        ]
