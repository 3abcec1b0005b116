"""A recording channel server: what the connector's ``/send_message`` calls reach."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from omnichannel.codec import parse_send_message
from omnichannel.errors import PayloadError
from omnichannel.models import ChatId, OutboundMessage, TextReply
from omnichannel.runtime.http import Request, Response
from omnichannel.testing.server import LocalServer

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


class RecordingChannelServer(LocalServer):
    """A channel server on 127.0.0.1 that records ``/send_message``, ``/close_chat`` and
    ``/redirect_chat`` calls, checks the ``Authorization: Token`` header when ``token`` is set
    and can be told to fail (``fail_next``) or to refuse everything (``always``).

    ``channel_url`` is what to configure as the connector's channel webhook URL.
    """

    METHODS = ("send_message", "close_chat", "redirect_chat")

    def __init__(self, token: str | None = None, *, path: str = "/channel", port: int = 0) -> None:
        super().__init__(port=port)
        self.token = token
        self.path = path.rstrip("/")
        self.calls: list[Call] = []
        self.refused: list[tuple[int, dict[str, Any]]] = []
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._always: int | None = None
        self._cond = threading.Condition()
        self.on_call: Callable[[Call], None] | None = None

    @property
    def channel_url(self) -> str:
        """The URL to give the connector as ``channel_url``."""
        return self.url + self.path

    def fail_next(self, count: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``count`` calls with ``status`` (and ``Retry-After`` when given)."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        with self._cond:
            self._failures.extend((status, headers) for _ in range(count))

    def always(self, status: int | None) -> None:
        """Answer every call with ``status`` (``None`` = back to normal)."""
        with self._cond:
            self._always = status

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
        with self._cond:
            status = self._always
            headers: dict[str, str] = {}
            if status is None and self._failures:
                status, headers = self._failures.pop(0)
            if status is not None:
                self.refused.append((status, body))
                return Response(
                    status,
                    json.dumps({"error": "unavailable", "desc": f"told to answer {status}"}),
                    {"Content-Type": "application/json", **headers},
                )
            call = Call(method=method, body=body, headers=dict(request.headers), at=time.time())
            self.calls.append(call)
            self._cond.notify_all()
        if self.on_call is not None:
            self.on_call(call)
        return Response.json(200, {"result": "ok"})

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Call]:
        """Wait until ``count`` calls were recorded; return them (raises ``TimeoutError``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= count, timeout):
                raise TimeoutError(f"expected {count} calls, got {len(self.calls)}")
            return list(self.calls)

    def texts(self, chat_id: ChatId | None = None) -> list[str]:
        """Texts sent so far (to ``chat_id`` when given), in arrival order."""
        with self._cond:
            calls = list(self.calls)
        return [
            c.text
            for c in calls
            if c.text is not None and (chat_id is None or c.chat_id == chat_id)
        ]
