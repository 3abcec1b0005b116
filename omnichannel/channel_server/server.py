"""The channel side's inbound half: :class:`ChannelServer` is the endpoint the agent platform calls
with the agent's answers — ``POST {your channel webhook URL}/send_message`` (seed 000) and
Webim's ``/close_chat`` and ``/redirect_chat`` — on the SDK's one webhook pipeline: checked,
stored durably, acknowledged ``{"result": "ok"}``, then handed to your handlers in a worker, in
order per chat.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Union

import attrs

from omnichannel.codec import decode_json, parse_send_message
from omnichannel.errors import ConfigurationError, DeliveryError, PayloadError
from omnichannel.models import ChatId, SendMessage
from omnichannel.runtime import aio
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel

__all__ = [
    "METHODS",
    "ChannelServer",
    "CloseChat",
    "RedirectChat",
    "parse_close_chat",
    "parse_redirect_chat",
]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

METHODS = ("send_message", "close_chat", "redirect_chat")
"""The methods the platform calls on the channel server (the last segment of the URL)."""

IDEMPOTENCY_HEADERS = ("Idempotency-Key", "X-Idempotency-Key", "X-Request-Id")
"""Headers that, when the platform sends one, are the exact dedupe key of a call."""


@attrs.frozen(kw_only=True)
class CloseChat:
    """``POST …/close_chat`` (Webim): the agent closed the chat ``chat_id``."""

    chat_id: ChatId
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class RedirectChat:
    """``POST …/redirect_chat`` (Webim): the agent hands chat ``chat_id`` to an operator
    (``operator_id``) or a department (``dep_key``); one of them is set."""

    chat_id: ChatId
    operator_id: int | str | None = None
    dep_key: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


AgentCall = Union[SendMessage, CloseChat, RedirectChat]


def _object(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    value = body if isinstance(body, Mapping) else decode_json(body)
    if not isinstance(value, Mapping):
        raise PayloadError("", "expected a JSON object")
    return value


def _chat_id(obj: Mapping[str, Any]) -> ChatId:
    value = obj.get("chat_id")
    if value is None:
        raise PayloadError("chat_id", "required field is missing", missing=True)
    if (type(value) is int) or (type(value) is str and value):
        return value
    raise PayloadError("chat_id", "expected an integer or a non-empty string")


def parse_close_chat(body: bytes | str | Mapping[str, Any]) -> CloseChat:
    """Parse a ``/close_chat`` body (``{"chat_id"}``).

    Raises:
        PayloadError: not a JSON object, or ``chat_id`` missing or mistyped (``.path`` names it).
    """
    obj = _object(body)
    return CloseChat(chat_id=_chat_id(obj), raw=dict(obj))


def parse_redirect_chat(body: bytes | str | Mapping[str, Any]) -> RedirectChat:
    """Parse a ``/redirect_chat`` body (``{"chat_id", "operator_id" | "dep_key"}``).

    Raises:
        PayloadError: not a JSON object, ``chat_id`` missing, neither ``operator_id`` nor
            ``dep_key`` given, or one mistyped (``.path`` names it).
    """
    obj = _object(body)
    chat_id = _chat_id(obj)
    operator_id = obj.get("operator_id")
    dep_key = obj.get("dep_key")
    if operator_id is not None and (
        isinstance(operator_id, bool) or not isinstance(operator_id, (int, str))
    ):
        raise PayloadError("operator_id", "expected an integer or a string")
    if dep_key is not None and not isinstance(dep_key, str):
        raise PayloadError("dep_key", "expected a string")
    if operator_id is None and dep_key is None:
        raise PayloadError(
            "operator_id", "required field is missing (or give dep_key)", missing=True
        )
    return RedirectChat(chat_id=chat_id, operator_id=operator_id, dep_key=dep_key, raw=dict(obj))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], AgentCall]] = {
    "send_message": parse_send_message,
    "close_chat": parse_close_chat,
    "redirect_chat": parse_redirect_chat,
}


def _unauthorized() -> Response:
    return Response(
        401,
        b'{"error":"unauthorized"}',
        {"Content-Type": "application/json", "WWW-Authenticate": "Token"},
    )


def _forbidden() -> Response:
    return Response(403, b'{"error":"forbidden"}', {"Content-Type": "application/json"})


class ChannelServer(WebhookChannel):
    """The endpoint an agent platform calls with the agent's answers for your visitors.

    Configure the agent channel's "Channel webhook: URL" as where this is served (say
    ``https://chat.example.com/channel``); the platform appends the method:

    - ``POST …/send_message`` ``{"chat_id", "message": {"kind": "operator" | "keyboard" |
      "file_operator", …}}`` → your :meth:`on_reply` handlers get a
      :class:`~omnichannel.SendMessage` whose ``message`` is a :class:`~omnichannel.TextReply`,
      :class:`~omnichannel.Keyboard` or :class:`~omnichannel.FileLink`;
    - ``POST …/close_chat`` → :meth:`on_close` handlers get a :class:`CloseChat`;
    - ``POST …/redirect_chat`` → :meth:`on_redirect` handlers get a :class:`RedirectChat`.

    Authentication (seed 000), one or both:

    - ``token``: the "Channel webhook: Token" of the agent channel; the platform sends
      ``Authorization: Token {token}`` (compared in constant time);
    - ``secret``: a "unique URL": the secret is the path segment just before the method
      (``https://chat.example.com/channel/{secret}`` → ``…/{secret}/send_message``).

    Answers: 401 without an ``Authorization`` header and 403 for a wrong token or secret (no
    detail in the body); 404 for another path; 405 for a method other than POST; 400
    ``{"error": "…", "field": "message.kind"}`` naming the field of a malformed body; 413 over
    ``max_body``; 503 + ``Retry-After`` when nothing can be stored; else ``{"result": "ok"}`` once
    the call is stored in the runtime's durable inbox (or was a duplicate).

    Handlers run in a worker after the answer (before it with ``inline=True``), one call at a
    time per chat, in arrival order; they may be ``async def``. A handler that raises makes the
    call run again later (every handler of it, so make them idempotent or register one), up to
    the runtime's ``max_turn_attempts``, then the call is dead-lettered
    (``omnichannel outbox list``).

    Dedupe. The platform's calls carry no id. When it sends an ``Idempotency-Key`` (or
    ``X-Request-Id``) header, that is the key, remembered for the runtime's ``dedupe_ttl``.
    Otherwise the key is a hash of the method and the JSON body, remembered for
    ``dedupe_window`` seconds: a platform retrying a call whose answer it lost (it does so
    within a second or two) shows the reply once; the price is that the agent sending the very
    same message to the same chat twice within the window shows it once. ``dedupe_window=None``
    turns body dedupe off (every copy is shown).

    Args:
        token: the token of ``Authorization: Token …``.
        secret: the secret in the URL.
        path: the base path of the methods (``"/channel"``: ``/channel/send_message``, or
            ``/channel/{secret}/send_message`` with ``secret``; ``""``: ``/send_message``) when
            the server hands every request to this handler (the local server, ASGI, WSGI: paths
            are relative to the mount). When a framework's URL rule chose the request (Flask,
            Django), only the method (the last segment) and the secret (the one before it) are
            read.
        on_reply, on_close, on_redirect: handlers (more with the decorators).
        dedupe_window: seconds a body hash is remembered (``None``: no body dedupe).
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`; share
            the runtime of a :class:`~omnichannel.channel_server.PlatformClient`.
        max_body: bodies over this many bytes get 413.
        name: tells several channel servers sharing one store apart.
    """

    kind = "omnichannel-channel"

    def __init__(
        self,
        *,
        token: str | None = None,
        secret: str | None = None,
        path: str = "",
        on_reply: Callable[[SendMessage], Any] | None = None,
        on_close: Callable[[CloseChat], Any] | None = None,
        on_redirect: Callable[[RedirectChat], Any] | None = None,
        dedupe_window: float | None = 5.0,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        max_body: int = 1 << 20,
        name: str = "channel",
        **runtime_options: Any,
    ) -> None:
        if not token and not secret:
            raise ConfigurationError(
                "give token (Authorization: Token …) or secret (in the URL), or both"
            )
        if secret is not None and ("/" in secret or not secret.strip()):
            raise ConfigurationError("secret must be one non-empty URL path segment")
        self._token = f"Token {token}".encode() if token else None
        self._secret = secret.encode() if secret else None
        self._base = [s for s in path.split("/") if s]
        self.path = "/" + "/".join(self._base) if self._base else ""
        self.dedupe_window = dedupe_window
        self.max_body = max_body
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {m: [] for m in METHODS}
        for method, handler in (
            ("send_message", on_reply),
            ("close_chat", on_close),
            ("redirect_chat", on_redirect),
        ):
            if handler is not None:
                self._add(method, handler)
        self._attach(runtime, name, store=store, inline=inline, **runtime_options)

    def __repr__(self) -> str:
        auth = "+".join(a for a, v in (("token", self._token), ("secret", self._secret)) if v)
        return f"ChannelServer(name={self.name!r}, auth={auth!r}, path={self.path!r})"

    @property
    def webhook_path(self) -> str:
        """The ``/send_message`` path the platform calls (with the secret, when one is set;
        ``close_chat`` and ``redirect_chat`` sit beside it). It may contain the secret."""
        secret = f"/{self._secret.decode()}" if self._secret else ""
        return f"{self.path}{secret}/send_message"

    # handlers -------------------------------------------------------------------------------
    def _add(self, method: str, handler: Callable[[Any], Any]) -> None:
        aio.check_callable(handler, f"an {method} handler")
        self._handlers[method].append(handler)

    def on_reply(self, handler: F) -> F:
        """Register ``handler(reply: SendMessage)`` for the agent's messages (a decorator; the
        function may be ``async def``). Show ``reply.message`` to the visitor of
        ``reply.chat_id``: a :class:`~omnichannel.TextReply` (plain text), a
        :class:`~omnichannel.Keyboard` (rows of buttons; a press goes back with
        :meth:`PlatformClient.queue_button`) or a :class:`~omnichannel.FileLink`."""
        self._add("send_message", handler)
        return handler

    def on_close(self, handler: F) -> F:
        """Register ``handler(close: CloseChat)`` for ``/close_chat`` (a decorator)."""
        self._add("close_chat", handler)
        return handler

    def on_redirect(self, handler: F) -> F:
        """Register ``handler(redirect: RedirectChat)`` for ``/redirect_chat`` (a decorator)."""
        self._add("redirect_chat", handler)
        return handler

    # inbound --------------------------------------------------------------------------------
    def _split(self, request: Request) -> tuple[str, str | None] | None:
        """``(method, the secret segment or None)``, or ``None`` for another URL."""
        segments = [s for s in request.path.split("/") if s]
        if not segments or segments[-1] not in METHODS:
            return None
        method, before = segments[-1], segments[:-1]
        if request.routed:  # a framework's URL rule chose it: read only what is ours
            return method, (before[-1] if before and self._secret else None)
        base = self._base
        if before[: len(base)] != base:
            return None
        extra = before[len(base) :]
        if len(extra) > (1 if self._secret else 0):
            return None
        return method, (extra[0] if extra else None)

    def route(self, request: Request) -> Response | None:
        """404 unless the URL is ``{path}/[{secret}/]{method}`` with a known method (only the
        method and the secret segment are read when a framework's URL rule routed it)."""
        if self._split(request) is None:
            return Response.error(404, "Not found.")
        return None

    def verify(self, request: Request) -> Response | None:
        """401 without ``Authorization`` (token auth), 403 for a wrong token or secret."""
        split = self._split(request)
        if self._secret is not None:
            given = split[1] if split is not None else None
            if not hmac.compare_digest((given or "").encode(), self._secret):
                return _forbidden()
        if self._token is not None:
            header = request.headers.get("Authorization")
            if header is None:
                return _unauthorized()
            scheme, _, value = header.strip().partition(" ")
            given_token = f"Token {value.strip()}".encode() if scheme.lower() == "token" else b""
            if not hmac.compare_digest(given_token, self._token):
                return _forbidden()
        return None

    def parse(self, request: Request) -> Sequence[Delivery] | Response:
        """One delivery per call, in its chat's order; 400 naming the field when malformed."""
        split = self._split(request)
        assert split is not None  # route() checked it
        method = split[0]
        try:
            body = _object(request.body)
            call = _PARSERS[method](body)
        except PayloadError as exc:
            log.info("channel: rejected %s (400): %s", method, exc)
            field = {"field": exc.path} if exc.path else {}
            return Response.json(400, {"error": f"Malformed {method} body: {exc}", **field})
        return [
            Delivery(
                chat=str(call.chat_id),
                key=self._dedupe_key(request, method, body),
                payload={"method": method, "body": dict(body)},
                ttl=None if self._idempotency_key(request) else self.dedupe_window,
            )
        ]

    @staticmethod
    def _idempotency_key(request: Request) -> str | None:
        for header in IDEMPOTENCY_HEADERS:
            value = request.headers.get(header)
            if value:
                return value.strip()[:200]
        return None

    def _dedupe_key(self, request: Request, method: str, body: Mapping[str, Any]) -> str | None:
        given = self._idempotency_key(request)
        if given is not None:
            return f"{self.destination}:key:{given}"
        if not self.dedupe_window:
            return None
        canonical = json.dumps(
            [method, body], sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        return f"{self.destination}:body:{digest}"

    def process(self, payload: Mapping[str, Any]) -> None:
        """Hand one stored call to its handlers (in a worker). A handler that raises makes the
        whole call run again later (then dead-lettered after ``max_turn_attempts``)."""
        method = str(payload["method"])
        call = _PARSERS[method](payload["body"])
        handlers = self._handlers.get(method) or []
        if not handlers:
            log.warning("channel: %s for chat %s has no handler", method, call.chat_id)
            return
        for handler in handlers:
            result = aio.run_coroutine(handler(call)) if aio.is_async(handler) else handler(call)
            if inspect.isawaitable(result):  # a plain function that returned an awaitable
                aio.run_coroutine(result)

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Never called: the channel server sends nothing (use a ``PlatformClient``)."""
        raise DeliveryError("ChannelServer sends nothing", retryable=False)
