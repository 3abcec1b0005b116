"""A fake OpenAI-compatible chat-completions endpoint on 127.0.0.1, to test an AI bot without a
real model: it answers ``POST {base_url}/chat/completions`` the way the OpenAI API does, with an
answer computed from the messages, and records every request (the history your bot passed)::

    with FakeChatModel(api_key="sk-test") as model:
        os.environ["OPENAI_BASE_URL"] = model.base_url
        ...  # run the bot
        model.wait_for(1)
        assert model.requests[0].roles == ["system", "user"]

Like every fake (:class:`~omnichannel.testing.FakePlatform`) it can fail on demand
(``model.fail_next(1, status=429, retry_after=1)``) and be waited on (``model.wait_for``).
"""

from __future__ import annotations

import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from omnichannel.runtime.http import Request, Response
from omnichannel.testing.fake import FakePlatform

__all__ = ["ChatRequest", "FakeChatModel", "Reply", "echo_reply", "message_text"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
"""The message roles the fake accepts (what the chat-completions API knows)."""

Reply = Callable[[list[dict[str, Any]]], str]
"""How the fake model answers: ``reply(messages) -> content``."""

_ids = itertools.count(1)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message: its ``content`` string, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """The default answer, proving the history reached the model:
    ``"(3 messages) echo: <the last user message>"``."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    said = message_text(last) if last is not None else ""
    return f"({len(messages)} messages) echo: {said}"


@attrs.frozen(kw_only=True)
class ChatRequest:
    """One chat-completions request the fake accepted.

    Attributes:
        model: the ``model`` asked for.
        messages: the ``messages`` as sent (``[{"role": …, "content": …}, …]``).
        body: the whole JSON body (``temperature``, ``max_tokens``, …).
        headers: the request's headers.
        at: when it arrived (Unix seconds).
    """

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    headers: dict[str, str]
    at: float

    @property
    def roles(self) -> list[str]:
        """The role of each message, in order."""
        return [str(m["role"]) for m in self.messages]

    @property
    def contents(self) -> list[str]:
        """The text of each message, in order (see :func:`message_text`)."""
        return [message_text(m) for m in self.messages]

    @property
    def last_user(self) -> str | None:
        """The text of the last ``user`` message (``None`` when there is none)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message_text(message)
        return None


def _error(status: int, message: str, kind: str, code: str | None = None) -> Response:
    """An error in the OpenAI API's shape."""
    return Response.json(
        status, {"error": {"message": message, "type": kind, "param": None, "code": code}}
    )


def _words(text: str) -> int:
    return len(text.split())


class FakeChatModel(FakePlatform[ChatRequest]):
    """A local stand-in for an OpenAI-compatible chat-completions API.

    ``POST {base_url}/chat/completions`` with ``{"model": …, "messages": […]}`` answers
    ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0,
    "message": {"role": "assistant", "content": …}, "finish_reason": "stop"}], "usage": {…}}``,
    the content being ``reply(messages)``. Every accepted request is recorded
    (:attr:`requests`, the fake's :attr:`calls`) before the answer is computed.

    Refusals, with the API's error body (``{"error": {"message", "type", "param", "code"}}``):
    401 when ``api_key`` is set and the request lacks ``Authorization: Bearer {api_key}``; 400
    for a body that is not a JSON object with a non-empty ``model`` string and a non-empty
    ``messages`` list of ``{"role", "content"}`` objects, or that asks for ``stream``; 404 for
    another path, 405 for another method. ``fail_next`` and ``always`` refuse valid requests
    (429 and 5xx are what a real API sends under load).

    Args:
        reply: ``reply(messages) -> str``, the answer (:func:`echo_reply` by default:
            ``"(n messages) echo: <last user message>"``). Settable later as :attr:`reply`.
        api_key: the key to require as a bearer token (``None``: any request is accepted).
        delay: seconds to wait before answering, to fake a slow model (settable later).
        port: the port (``0``: one the OS picks).
    """

    def __init__(
        self,
        reply: Reply | None = None,
        *,
        api_key: str | None = None,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.reply: Reply = reply if reply is not None else echo_reply
        self.api_key = api_key
        self.delay = delay
        self._stopping = threading.Event()

    @property
    def base_url(self) -> str:
        """The API's base URL (``{url}/v1``): what to configure as ``OPENAI_BASE_URL`` or
        ``AsyncOpenAI(base_url=…)``."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[ChatRequest]:
        """The requests accepted so far (:attr:`calls`), in order."""
        with self._cond:
            return list(self.calls)

    def stop(self) -> None:
        """Stop serving; requests waiting out :attr:`delay` are answered at once."""
        self._stopping.set()
        super().stop()

    def error_body(self, status: int) -> Any:
        """The body of a scripted failure, in the API's shape."""
        kind = "rate_limit_error" if status == 429 else "server_error"
        return {
            "error": {
                "message": f"told to answer {status}",
                "type": kind,
                "param": None,
                "code": None,
            }
        }

    def handle(self, request: Request) -> Response:
        """Answer a chat-completions request (or refuse it)."""
        if request.path.rstrip("/") != "/v1/chat/completions":
            return self.refuse(
                404,
                request.path,
                _error(404, f"Unknown path {request.path}", "invalid_request_error"),
            )
        if request.method != "POST":
            return self.refuse(
                405, request.method, _error(405, "Method not allowed", "invalid_request_error")
            )
        if self.api_key is not None:
            got = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(got, f"Bearer {self.api_key}".encode()):
                message = "Incorrect API key provided (expected 'Authorization: Bearer <key>')"
                return self.refuse(
                    401,
                    "bad api key",
                    _error(401, message, "invalid_request_error", "invalid_api_key"),
                )
        try:
            body = json.loads(request.body)
        except ValueError:
            return self.refuse(
                400, "body is not JSON", _error(400, "body is not JSON", "invalid_request_error")
            )
        problem = _body_problem(body)
        if problem is not None:
            return self.refuse(400, problem, _error(400, problem, "invalid_request_error"))
        failure = self.scripted_failure(body)
        if failure is not None:
            return failure
        call = self.record(
            ChatRequest(
                model=body["model"],
                messages=body["messages"],
                body=body,
                headers=dict(request.headers),
                at=time.time(),
            )
        )
        if self.delay > 0:
            self._stopping.wait(self.delay)
        content = self.reply([dict(m) for m in call.messages])
        prompt = sum(_words(message_text(m)) for m in call.messages)
        return Response.json(
            200,
            {
                "id": f"chatcmpl-fake-{next(_ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": call.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": _words(content),
                    "total_tokens": prompt + _words(content),
                },
            },
        )

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[ChatRequest]:
        """Wait until ``count`` requests were accepted; return them (raises ``TimeoutError``)."""
        return self.wait_for(count, timeout, what=f"{count} chat requests")


def _body_problem(body: Any) -> str | None:
    """What is wrong with a chat-completions body (``None``: nothing)."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: required field is missing"
    if body.get("stream"):
        return "stream: this fake does not stream"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: a non-empty list is required"
    for i, message in enumerate(messages):
        problem = _message_problem(message)
        if problem is not None:
            return f"messages[{i}]: {problem}"
    return None


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "must be an object"
    role = message.get("role")
    if role not in ROLES:
        return f"role must be one of {', '.join(sorted(ROLES))}; got {role!r}"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if isinstance(content, Sequence) and not isinstance(content, (bytes, str)):
        if all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
            return None
        return "content: each part must be an object with a 'type'"
    if content is None and role == "assistant":
        return None  # an assistant message carrying tool calls only
    return "content: a string or a list of parts is required"
