"""A fake agent platform on 127.0.0.1 for testing the channel side (a
:class:`~omnichannel.channel_server.PlatformClient` and its
:class:`~omnichannel.channel_server.ChannelServer`). It follows seed 000 exactly: the webhook
URL with its token, the status table, the agent's answers posted to the channel's
``/send_message`` with ``Authorization: Token``; an echo agent by default, scriptable answers.
"""

from __future__ import annotations

import hmac
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

import attrs

from omnichannel.channels.omnichannel import NO_ACTIVE_CHANNEL, WEBHOOK_PATH, OmnichannelClient
from omnichannel.codec import unstructure_message
from omnichannel.errors import DeliveryError, PayloadError, UnsupportedEvent
from omnichannel.models import (
    ChatId,
    Event,
    FileMessage,
    InboundMessage,
    OutboundMessage,
    Visitor,
)
from omnichannel.protocol import agent_text, channel_variables, parse_event
from omnichannel.runtime.bot import HandlerResult, to_outbound
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.sending import RetryPolicy
from omnichannel.testing.fake import FakePlatform

__all__ = ["AgentAnswer", "AgentMessage", "FakeAgentPlatform"]

log = logging.getLogger(__name__)

_PATH = re.compile(r"/connector/omnichannel/omnichannel_message/([^/]+)/bot_api_webhook/?")


@attrs.frozen(kw_only=True)
class AgentMessage:
    """One visitor message the fake platform accepted (one per message of a ``new_chat``).

    Attributes:
        chat_id: the event's chat id.
        message: the typed message.
        event: the whole typed event (``event.raw`` is the body as received).
        text: what the agent sees (``file:{type}|{id}|{url}`` for a file, the label for a
            button); ``None`` for a file that is not ready.
        processed: ``False`` for a file that is not ready (accepted, not given to the agent).
        at: when it arrived (Unix seconds).
    """

    chat_id: ChatId
    message: InboundMessage
    event: Event
    text: str | None
    processed: bool
    at: float

    @property
    def id(self) -> str | None:
        """The message's id."""
        return self.message.id

    @property
    def kind(self) -> str:
        """The message's kind (``visitor``, ``file_visitor``, ``keyboard_response``)."""
        return self.message.kind

    @property
    def visitor(self) -> Visitor:
        """The event's visitor."""
        return self.event.visitor

    @property
    def variables(self) -> dict[str, str | None]:
        """The channel variables the platform fills from this event (seed 000's table)."""
        return channel_variables(self.event)


@attrs.frozen(kw_only=True)
class AgentAnswer:
    """One call the fake agent made to the channel server, and how it was answered.

    ``method`` is ``send_message``, ``close_chat`` or ``redirect_chat``; ``status`` is ``None``
    when the channel server could not be reached; ``error`` names the failure.
    """

    chat_id: ChatId
    method: str
    body: dict[str, Any]
    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """The channel server accepted the call (2xx)."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def message(self) -> dict[str, Any] | None:
        """The ``message`` of a ``send_message`` body."""
        message = self.body.get("message")
        return message if isinstance(message, dict) else None


Answer = Union[Literal["echo", "silent"], Callable[[AgentMessage], HandlerResult]]
"""How the fake agent answers a processed message: ``"echo"`` (its text, after
``echo_prefix``), ``"silent"``, or ``fn(message) -> reply`` returning what a bot handler returns
(``None``, a ``str``, a :class:`~omnichannel.TextReply` / :class:`~omnichannel.Keyboard` /
:class:`~omnichannel.FileLink`, or a list of them)."""

_Job = tuple[ChatId, str, Mapping[str, Any]]


class FakeAgentPlatform(FakePlatform[AgentMessage]):
    """A local agent platform that speaks the Omnichannel protocol (seed 000).

    ``POST {url}/connector/omnichannel/omnichannel_message/{token}/bot_api_webhook``
    (:attr:`webhook_url`) answers as the seed's table says:

    ===============================================  =======================================
    request                                          answer
    ===============================================  =======================================
    accepted (recorded in :attr:`messages`)          200 ``{"result": "ok"}``
    wrong token, or :meth:`deactivate` called        400 ``There is no active channel…``
    a required parameter missing                     400 naming it
    another path                                     404
    valid JSON, unknown ``event`` / ``kind``         200, ignored (kept in :attr:`ignored`)
    not JSON, a mistyped field                       500 naming it
    :meth:`fail_next` (``status=500``), :meth:`always`  that status
    ===============================================  =======================================

    For each processed message (a file only when its ``state`` is ``"ready"``) the agent
    answers — an echo of what it saw by default — by calling ``{channel_url}/send_message`` with
    ``Authorization: Token {channel_token}`` (when set), one call per message (a keyboard's text
    goes just before it), in order, from one background thread; a call the channel server
    refuses is retried a few times, then recorded as failed. Every accepted copy of a message is
    recorded and answered: the fake does not dedupe, so a test sees any duplicate.

    Args:
        token: the ``{token}`` of the webhook URL.
        channel_url: the channel server's webhook URL (settable later; no answers are sent
            without it).
        channel_token: sent as ``Authorization: Token …`` (``None``: no header).
        answer: see :data:`Answer` (settable later); :meth:`reply_next` overrides it once.
        echo_prefix: put before echoed texts.
        files_require_state: process a file only when its ``state`` is ``"ready"``, as seed 000
            says (``False``: a file without a ``state`` is ready too, as on Webim).
        port: the port (``0``: any free one).

    Attributes:
        messages: what the agent received (:class:`AgentMessage`; the fake's :attr:`calls`).
        answers: the calls the agent made to the channel server (:class:`AgentAnswer`).
        ignored: bodies accepted and ignored (unknown ``event`` or ``kind``).
    """

    def __init__(
        self,
        token: str = "fake-agent-token",  # noqa: S107 - a test fixture's default
        *,
        channel_url: str | None = None,
        channel_token: str | None = None,
        answer: Answer = "echo",
        echo_prefix: str = "",
        files_require_state: bool = True,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.files_require_state = files_require_state
        self.token = token
        self.channel_url = channel_url
        self.channel_token = channel_token
        self.answer: Answer = answer
        self.echo_prefix = echo_prefix
        self.answers: list[AgentAnswer] = []
        self.ignored: list[dict[str, Any]] = []
        self._active = True
        self._next: deque[list[OutboundMessage]] = deque()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._sender: threading.Thread | None = None
        self._clients: dict[tuple[str, str | None], OmnichannelClient] = {}

    # set-up ---------------------------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        """The webhook URL of the agent channel (give it to ``PlatformClient``)."""
        return self.url + WEBHOOK_PATH.format(token=self.token)

    @property
    def messages(self) -> list[AgentMessage]:
        """What the agent received (:attr:`calls`), in order."""
        return self.calls

    @property
    def active(self) -> bool:
        """Whether the agent channel is switched on."""
        return self._active

    def deactivate(self) -> None:
        """Switch the agent channel off: every event gets 400 "There is no active channel…"."""
        with self._cond:
            self._active = False

    def activate(self) -> None:
        """Switch the agent channel on again."""
        with self._cond:
            self._active = True

    def error_body(self, status: int) -> Any:
        """The body of a scripted failure."""
        return {"error": "Internal server error." if status >= 500 else f"told to answer {status}"}

    # the agent ------------------------------------------------------------------------------
    def reply_next(self, *replies: Any) -> None:
        """Answer the next processed message with ``replies`` (str, ``TextReply``,
        ``Keyboard``, ``FileLink``) instead of :attr:`answer`; each call scripts one message."""
        with self._cond:
            self._next.append(to_outbound(replies))

    def say(self, chat_id: ChatId, *replies: Any) -> None:
        """The agent writes to chat ``chat_id`` on its own (queued after earlier answers)."""
        for message in to_outbound(replies):
            self._enqueue(chat_id, "send_message", {"chat_id": chat_id, "message": message})

    def close_chat(self, chat_id: ChatId) -> None:
        """The agent closes the chat (Webim's ``/close_chat``; queued after earlier answers)."""
        self._enqueue(chat_id, "close_chat", {"chat_id": chat_id})

    def redirect_chat(
        self, chat_id: ChatId, *, operator_id: int | str | None = None, dep_key: str | None = None
    ) -> None:
        """The agent hands the chat over (Webim's ``/redirect_chat``; queued)."""
        body: dict[str, Any] = {"chat_id": chat_id}
        if operator_id is not None:
            body["operator_id"] = operator_id
        if dep_key is not None:
            body["dep_key"] = dep_key
        self._enqueue(chat_id, "redirect_chat", body)

    def texts(self, chat_id: ChatId | None = None) -> list[str]:
        """What the agent saw of the processed messages (of ``chat_id`` when given), in order."""
        with self._cond:
            calls = list(self.calls)
        return [
            c.text
            for c in calls
            if c.processed and c.text is not None and (chat_id is None or c.chat_id == chat_id)
        ]

    def wait_for_answers(
        self, count: int, timeout: float = 10.0, *, delivered: bool = True
    ) -> list[AgentAnswer]:
        """Wait until ``count`` answers were made (and accepted, with ``delivered``)."""

        def enough() -> bool:
            done = [a for a in self.answers if a.delivered or not delivered]
            return len(done) >= count

        self.wait_for(enough, timeout, what=f"{count} answers")
        return list(self.answers)

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until every answer queued so far was made; ``True`` when none is left."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    # the webhook ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one request to the platform as seed 000 says."""
        match = _PATH.fullmatch(request.path)
        if match is None:
            return self.refuse(404, "Not found.")
        if request.method != "POST":
            return self.refuse(405, "Method not allowed.")
        token_ok = hmac.compare_digest(match.group(1).encode(), self.token.encode())
        if not token_ok or not self._active:
            return self.refuse(400, NO_ACTIVE_CHANNEL)
        try:
            event = parse_event(request.body)
        except PayloadError as exc:
            return self.refuse(400 if exc.missing else 500, str(exc))
        except UnsupportedEvent as exc:
            with self._cond:
                self.ignored.append(dict(exc.payload))
                self._cond.notify_all()
            return Response.json(200, {"result": "ok"})
        failure = self.scripted_failure(dict(event.raw))
        if failure is not None:
            return failure
        for message in event.messages:
            text = agent_text(message)
            if (
                self.files_require_state
                and isinstance(message, FileMessage)
                and message.file.state != "ready"
            ):
                text = None
            received = self.record(
                AgentMessage(
                    chat_id=event.chat_id,
                    message=message,
                    event=event,
                    text=text,
                    processed=text is not None,
                    at=time.time(),
                )
            )
            if received.processed:
                self._answer(received)
        return Response.json(200, {"result": "ok"})

    def _answer(self, received: AgentMessage) -> None:
        with self._cond:
            scripted = self._next.popleft() if self._next else None
        answer = self.answer
        if scripted is not None:
            replies = scripted
        elif callable(answer):
            replies = to_outbound(answer(received))
        elif answer == "echo":
            replies = to_outbound(f"{self.echo_prefix}{received.text}")
        else:
            replies = []
        for message in replies:
            body = {"chat_id": received.chat_id, "message": message}
            self._enqueue(received.chat_id, "send_message", body)

    # sending --------------------------------------------------------------------------------
    def _enqueue(self, chat_id: ChatId, method: str, body: Mapping[str, Any]) -> None:
        with self._cond:
            self._pending += 1
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(
                    target=self._send_loop, name=f"fake-agent:{self.port}", daemon=True
                )
                self._sender.start()
        self._jobs.put((chat_id, method, body))

    def _client(self) -> OmnichannelClient | None:
        url = self.channel_url
        if url is None:
            return None
        key = (url, self.channel_token)
        client = self._clients.get(key)
        if client is None:
            retry = RetryPolicy(attempts=4, backoff=0.05, cap=0.5, timeout=(2.0, 5.0))
            client = OmnichannelClient(url, self.channel_token, retry=retry, strip_markdown=False)
            self._clients[key] = client
        return client

    def _send_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._send(*job)
            except Exception:  # pragma: no cover - a bug in the fake must not stop it
                log.exception("fake agent platform: sending failed")
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _send(self, chat_id: ChatId, method: str, body: Mapping[str, Any]) -> None:
        client = self._client()
        if client is None:
            return
        calls: list[dict[str, Any]] = []
        if method == "send_message":
            for part in client.render(body["message"]):
                calls.append({"chat_id": chat_id, "message": unstructure_message(part)})
        else:
            calls.append(dict(body))
        for call in calls:
            try:
                client.call(method, call)
                answer = AgentAnswer(chat_id=chat_id, method=method, body=call, status=200)
            except DeliveryError as exc:
                answer = AgentAnswer(
                    chat_id=chat_id, method=method, body=call, status=exc.status, error=str(exc)
                )
            with self._cond:
                self.answers.append(answer)
                self._cond.notify_all()

    def stop(self) -> None:
        """Finish the answers in flight (up to 10 s), then stop serving."""
        self.idle(10.0)
        if self._sender is not None:
            self._jobs.put(None)
            self._sender.join(5)
        super().stop()
        for client in self._clients.values():
            client.session.close()
