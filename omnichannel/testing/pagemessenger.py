"""A fake Page-messenger (Selarti) platform on 127.0.0.1 for tests and demos: it answers
``/api/1.1/wf/auth`` and ``/api/1.1/wf/send_message_external`` in Bubble's envelope, checks the
bearer token, records what the AI receives, and posts the AI's answer to the bridge's webhook.
"""

from __future__ import annotations

import hmac
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union
from urllib.parse import urlencode

import attrs
import requests

from omnichannel.runtime.http import Request, Response
from omnichannel.testing.fake import FakePlatform

__all__ = ["FakePageMessenger", "ReceivedMessage", "WebhookCall"]

API_ROOT = "/api/1.1"
"""Where the fake's API lives: ``PageMessengerClient(base_url=fake.base_url)``."""


@attrs.frozen(kw_only=True)
class ReceivedMessage:
    """One ``send_message_external`` call the fake accepted: what the AI received."""

    task_id: str
    chat_id: str
    message: str
    at: float


@attrs.frozen(kw_only=True)
class WebhookCall:
    """One webhook the fake posted to the bridge, and how the bridge answered.

    ``status`` is ``None`` when the bridge could not be reached (``body`` then names the error).
    """

    payload: dict[str, Any]
    encoding: str
    status: int | None
    body: str


Answer = Union[
    Literal["echo", "operator", "close", "silent"],
    Callable[[ReceivedMessage], Union[Mapping[str, Any], None]],
]
"""How the fake AI answers a message: a named mode, or ``fn(received) -> fields | None``."""


def bubble_id() -> str:
    """An id shaped like Bubble's: milliseconds, ``x``, 18 digits (too big for JS numbers)."""
    return f"{int(time.time() * 1000)}x{random.randrange(10**17, 10**18)}"  # noqa: S311


def _bubble_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    code = code or ("UNAVAILABLE" if status >= 500 else "ERROR")
    return {"statusCode": status, "body": {"status": code, "message": message}}


def _bubble_error(status: int, code: str, message: str) -> Response:
    return Response.json(status, _bubble_body(status, message, code))


class FakePageMessenger(FakePlatform[ReceivedMessage]):
    """A local stand-in for the Page-messenger API and its AI.

    ``POST /api/1.1/wf/auth {"key"}`` issues a token (a wrong key gets 401, and — like some real
    APIs — the error text repeats the key, so tests can check the client scrubs it).
    ``POST /api/1.1/wf/send_message_external`` needs ``Authorization: Bearer {token}`` and the
    body ``{"task_id", "chat_id", "message"}``; it records a :class:`ReceivedMessage`, answers
    ``{"status": "success", "response": {}}``, then (in another thread, like the real platform)
    posts the AI's answer to ``webhook_url``.

    Args:
        api_key: the key ``/wf/auth`` accepts.
        webhook_url: where the AI's answers go (the bridge's URL); settable later.
        answer: ``"echo"`` (a bot message ``echo_prefix + message``), ``"operator"`` (a bot
            message ``handover_message`` with ``operator`` true), ``"close"`` (``close`` true),
            ``"silent"`` (no webhook), or ``fn(received) -> fields`` (merged into a full payload;
            ``None`` sends nothing). Settable later.
        encoding: ``"json"`` or ``"form"`` (``application/x-www-form-urlencoded``).
        booleans: the wire values of true and false (``(True, False)``, ``("yes", "no")``,
            ``(1, 0)`` …); a form sends their text (``true``/``false`` for Python booleans).
        token_lifetime: when set, ``/wf/auth`` also answers ``expires`` (seconds).

    Attributes:
        messages: what the AI received (:class:`ReceivedMessage`; the fake's :attr:`calls`).
        webhooks: the answers posted to the bridge (:class:`WebhookCall`), in order.
        auth_calls: how many ``/wf/auth`` calls arrived (accepted or not).
        unauthorized: how many ``send_message_external`` calls were refused with 401.
        issued_tokens: every token handed out (to check none leaks into logs).
    """

    def __init__(
        self,
        api_key: str = "fake-page-messenger-key",
        *,
        webhook_url: str | None = None,
        answer: Answer = "echo",
        encoding: Literal["json", "form"] = "json",
        echo_prefix: str = "AI: ",
        handover_message: str = "I am passing you to a manager.",
        close_message: str = "Thank you! Goodbye.",
        booleans: tuple[Any, Any] = (True, False),
        token_lifetime: float | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.answer: Answer = answer
        self.encoding = encoding
        self.echo_prefix = echo_prefix
        self.handover_message = handover_message
        self.close_message = close_message
        self.booleans = booleans
        self.token_lifetime = token_lifetime
        self.company_id = bubble_id()
        self.channel_id = bubble_id()
        self.manager_id = bubble_id()
        self.webhooks: list[WebhookCall] = []
        self.auth_calls = 0
        self.unauthorized = 0
        self.issued_tokens: list[str] = []
        self._tokens: set[str] = set()
        self._refuse_tokens = False
        self._threads: dict[str, str] = {}
        self._answering: list[threading.Thread] = []
        self._session = requests.Session()

    @property
    def base_url(self) -> str:
        """The API root to give ``PageMessengerClient(base_url=…)``."""
        return self.url + API_ROOT

    @property
    def messages(self) -> list[ReceivedMessage]:
        """What the AI received (:attr:`calls`), in order."""
        return self.calls

    # controls -------------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Make every token issued so far invalid (the next call gets 401)."""
        with self._cond:
            self._tokens.clear()

    def refuse_tokens(self, refuse: bool = True) -> None:
        """Answer 401 to every ``send_message_external``, even with a fresh token."""
        with self._cond:
            self._refuse_tokens = refuse

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        body: Any = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` ``send_message_external`` calls with ``status`` (and a
        Bubble error body carrying ``message`` when given)."""
        if body is None and message is not None:
            body = _bubble_body(status, message)
        super().fail_next(count, status, retry_after=retry_after, body=body)

    def error_body(self, status: int) -> Any:
        """The body of a scripted failure: Bubble's error envelope."""
        return _bubble_body(status, f"told to answer {status}")

    # the API --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer ``/wf/auth`` and ``/wf/send_message_external``."""
        prefix = API_ROOT + "/wf/"
        if not request.path.startswith(prefix):
            return _bubble_error(404, "NOT_FOUND", "Not found")
        workflow = request.path[len(prefix) :].rstrip("/")
        if request.method != "POST":
            return _bubble_error(405, "METHOD_NOT_ALLOWED", "Use POST")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _bubble_error(400, "INVALID_DATA", "The body is not JSON")
        if not isinstance(body, dict):
            return _bubble_error(400, "INVALID_DATA", "The body is not a JSON object")
        if workflow == "auth":
            return self._auth(body)
        if workflow == "send_message_external":
            return self._send_message_external(request, body)
        return _bubble_error(404, "NOT_FOUND", f"Workflow not found {workflow}")

    def _auth(self, body: Mapping[str, Any]) -> Response:
        key = body.get("key")
        with self._cond:
            self.auth_calls += 1
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return _bubble_error(401, "UNAUTHORIZED", f"API key {key!r} is not valid")
        token = secrets.token_urlsafe(24)
        with self._cond:
            self._tokens.add(token)
            self.issued_tokens.append(token)
        answer: dict[str, Any] = {"token": token}
        if self.token_lifetime is not None:
            answer["expires"] = self.token_lifetime
        return Response.json(200, {"status": "success", "response": answer})

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :]
        with self._cond:
            valid = any(hmac.compare_digest(token.encode(), t.encode()) for t in self._tokens)
            return valid and not self._refuse_tokens

    def _send_message_external(self, request: Request, body: Mapping[str, Any]) -> Response:
        if not self._authorized(request):
            with self._cond:
                self.unauthorized += 1
            return _bubble_error(401, "UNAUTHORIZED", "Invalid or expired token")
        failure = self.scripted_failure(body)
        if failure is not None:
            return failure
        for field in ("task_id", "chat_id", "message"):
            value = body.get(field)
            if not isinstance(value, str) or not value:
                return _bubble_error(
                    400,
                    "MISSING_DATA",
                    f"Missing parameter for workflow send_message_external: parameter {field}",
                )
        received = self.record(
            ReceivedMessage(
                task_id=body["task_id"],
                chat_id=body["chat_id"],
                message=body["message"],
                at=time.time(),
            )
        )
        thread = threading.Thread(target=self._answer, args=(received,), daemon=True)
        with self._cond:
            self._answering = [t for t in self._answering if t.is_alive()] + [thread]
        thread.start()
        return Response.json(200, {"status": "success", "response": {}})

    # the AI ---------------------------------------------------------------------------------
    def ai_payload(self, received: ReceivedMessage | None = None, **fields: Any) -> dict[str, Any]:
        """A complete webhook payload (every field of the seed) about ``received``'s chat, with
        ``fields`` overriding; booleans use :attr:`booleans`. Without ``received``, give at least
        ``external_chat_id``."""
        true, false = self.booleans
        chat_id = received.chat_id if received is not None else fields.get("external_chat_id")
        with self._cond:
            thread_id = self._threads.setdefault(str(chat_id), bubble_id())
        payload: dict[str, Any] = {
            "channel_id": self.channel_id,
            "close": false,
            "company_id": self.company_id,
            "contacts": "",
            "external_chat_id": chat_id,
            "get_contact": false,
            "interest": false,
            "is_bot": false,
            "manager_id": self.manager_id,
            "message_id": bubble_id(),
            "message_text": "",
            "message_type": "bot",
            "operator": false,
            "panel_url": f"{self.url}/panel/dialog/{thread_id}",
            "share_url": f"{self.url}/share/{thread_id}",
            "success": false,
            "task_id": received.task_id if received is not None else None,
            "thread_id": thread_id,
            "title": "Ann Visitor",
            "wh_type": "all_messages",
        }
        for key, value in fields.items():
            payload[key] = true if value is True else false if value is False else value
        return payload

    def _answer_fields(self, received: ReceivedMessage) -> Mapping[str, Any] | None:
        answer = self.answer
        if callable(answer):
            return answer(received)
        if answer == "echo":
            return {"message_text": f"{self.echo_prefix}{received.message}"}
        if answer == "operator":
            return {"message_text": self.handover_message, "operator": True}
        if answer == "close":
            return {"message_text": self.close_message, "close": True}
        return None

    def _answer(self, received: ReceivedMessage) -> None:
        fields = self._answer_fields(received)
        if fields is None or self.webhook_url is None:
            return
        self.post_webhook(self.ai_payload(received, **fields))

    def post_webhook(
        self,
        payload: Mapping[str, Any],
        *,
        encoding: Literal["json", "form"] | None = None,
        url: str | None = None,
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> WebhookCall:
        """Post a webhook to ``url`` (``webhook_url`` by default), record and return the call.

        ``raw`` (with ``content_type``) posts those bytes instead of encoding ``payload``.
        """
        encoding = encoding or self.encoding
        target = url or self.webhook_url
        if target is None:
            raise ValueError("no webhook_url: give url= or set fake.webhook_url")
        if raw is not None:
            data, ctype = raw, content_type or "application/octet-stream"
        elif encoding == "form":
            data = urlencode({k: _form_value(v) for k, v in payload.items()}).encode()
            ctype = "application/x-www-form-urlencoded"
        else:
            data, ctype = json.dumps(payload, ensure_ascii=False).encode(), "application/json"
        try:
            response = self._session.post(
                target, data=data, headers={"Content-Type": ctype}, timeout=10
            )
            call = WebhookCall(
                payload=dict(payload),
                encoding=encoding,
                status=response.status_code,
                body=response.text,
            )
        except requests.RequestException as exc:
            call = WebhookCall(
                payload=dict(payload), encoding=encoding, status=None, body=type(exc).__name__
            )
        with self._cond:
            self.webhooks.append(call)
            self._cond.notify_all()
        return call

    # waiting --------------------------------------------------------------------------------
    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until the AI received ``count`` messages; return them (``TimeoutError`` else)."""
        return self.wait_for(count, timeout, what=f"{count} messages")

    def wait_for_webhooks(self, count: int, timeout: float = 10.0) -> list[WebhookCall]:
        """Wait until ``count`` webhooks were posted and answered; return them."""
        self.wait_for(lambda: len(self.webhooks) >= count, timeout, what=f"{count} webhooks")
        return list(self.webhooks)

    def stop(self) -> None:
        """Let answers in flight finish, then stop serving."""
        with self._cond:
            answering = list(self._answering)
        for thread in answering:
            thread.join(5)
        super().stop()
        self._session.close()


def _form_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
