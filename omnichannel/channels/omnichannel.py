"""The Omnichannel universal connector (seed 000; Webim External Bot API 2.0 compatible):
the inbound ``new_message`` webhook with its status contract, and the outbound client.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from omnichannel.codec import unstructure, unstructure_message
from omnichannel.errors import ConfigurationError, DeliveryError, PayloadError, UnsupportedEvent
from omnichannel.models import ChatId, Event, FileMessage, OutboundMessage, SendMessage
from omnichannel.protocol import parse_event
from omnichannel.rendering import OMNICHANNEL, Capabilities, render
from omnichannel.runtime.bot import Bot, Reply, Turn, to_outbound
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
from omnichannel.runtime.sending import (
    LazySession,
    RetryPolicy,
    default_session,
    redact_url,
    request_with_retries,
)

if TYPE_CHECKING:
    from omnichannel.runtime.sending import Session

__all__ = [
    "NO_ACTIVE_CHANNEL",
    "WEBHOOK_PATH",
    "Connector",
    "OmnichannelClient",
]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/connector/omnichannel/omnichannel_message/{token}/bot_api_webhook"
"""Where the channel server posts events (seed 000)."""

NO_ACTIVE_CHANNEL = "There is no active channel for received event."
"""The exact error text of the seed for an unknown token or an inactive channel."""

_PATH = re.compile(r"/omnichannel_message/([^/]+)/bot_api_webhook/?$")
_EXACT_PATH = re.compile(r"/connector/omnichannel/omnichannel_message/([^/]+)/bot_api_webhook/?")


class OmnichannelClient:
    """Calls the channel server: ``/send_message`` and Webim's ``/close_chat``, ``/redirect_chat``.

    Args:
        channel_url: the channel's webhook URL (``https://your_company.com``); the method name is
            appended (``…/send_message``). With "unique URL" auth the secret lives in it.
        token: with header auth, sent as ``Authorization: Token {token}``.
        session: by default the SDK's pooled keep-alive transport
            (:class:`~omnichannel.runtime.pool.PooledSession`), made on the first call; it
            ignores proxy variables. Give a ``requests.Session`` for proxies, custom TLS or auth
            (``new_session(trust_env=True)`` of :mod:`omnichannel.runtime.sending` reads
            ``HTTP(S)_PROXY`` from the environment).
        retry: timeouts and retries of every call.
        max_message_length: texts longer than this are split on word boundaries into several
            messages (``None``: never split; the seed leaves > 1000 characters to the channel).
        strip_markdown: send markdown as plain text (the protocol has no markup).
    """

    session: LazySession[Session] = LazySession(default_session)

    def __init__(
        self,
        channel_url: str,
        token: str | None = None,
        session: Session | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_message_length: int | None = 1000,
        strip_markdown: bool = True,
    ) -> None:
        if not channel_url or not channel_url.startswith(("http://", "https://")):
            raise ConfigurationError("channel_url must be an http(s) URL")
        self.channel_url = channel_url.rstrip("/")
        self._token = token or None
        self.session = session or None
        self.retry = retry or RetryPolicy()
        self.max_message_length = max_message_length
        self.strip_markdown = strip_markdown
        self._urls: dict[tuple[str, str], str] = {}
        self._capabilities: tuple[tuple[int | None, bool], Capabilities] | None = None

    def __repr__(self) -> str:
        return f"OmnichannelClient({redact_url(self.channel_url)!r})"

    @property
    def capabilities(self) -> Capabilities:
        """What the channel shows: :data:`~omnichannel.rendering.OMNICHANNEL` with this client's
        ``max_message_length`` and ``strip_markdown``."""
        settings = (self.max_message_length, self.strip_markdown)
        made = self._capabilities
        if made is None or made[0] != settings:  # made once per setting, not per reply
            made = self._capabilities = (
                settings,
                attrs.evolve(
                    OMNICHANNEL,
                    markdown=not self.strip_markdown,
                    max_length=self.max_message_length or None,
                ),
            )
        return made[1]

    def render(self, message: Reply) -> list[OutboundMessage]:
        """The wire messages for one reply (:func:`omnichannel.rendering.render`): markdown
        stripped, long text split, a keyboard's ``text`` sent as a text message before it."""
        return render(to_outbound(message), self.capabilities)

    def call(
        self, method: str, body: Mapping[str, Any], *, attempts: int | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``{channel_url}/{method}``; return the decoded answer.

        Raises:
            DeliveryError: a non-2xx status after retries, or a 2xx answer carrying ``error``.
        """
        url = self._urls.get((self.channel_url, method))
        if url is None:
            # the method goes after the URL's path, before a query the URL may carry
            parts = urlsplit(self.channel_url)
            url = urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{method}"))
            self._urls[(self.channel_url, method)] = url
        token = self._token
        response = request_with_retries(
            self.session,
            "POST",
            url,
            json=body,
            headers={"Authorization": f"Token {token}"} if token else None,
            policy=self.retry,
            attempts=attempts,
            secrets=(token,) if token else (),
        )
        try:
            answer = response.json()
        except ValueError:
            return {}
        if isinstance(answer, dict) and answer.get("error"):
            desc = answer.get("desc")
            raise DeliveryError(
                f"POST {redact_url(url)} refused: {answer['error']}"
                + (f" ({desc})" if desc else ""),
                status=response.status_code,
                response_text=response.text[:500],
            )
        return answer if isinstance(answer, dict) else {}

    def send_message(self, chat_id: ChatId, message: Reply) -> list[dict[str, Any]]:
        """Send one reply (a text longer than ``max_message_length`` becomes several calls)."""
        return [
            self.call("send_message", unstructure(SendMessage(chat_id=chat_id, message=m)))
            for m in self.render(message)
        ]

    def close_chat(self, chat_id: ChatId) -> dict[str, Any]:
        """Webim extension: close the chat."""
        return self.call("close_chat", {"chat_id": chat_id})

    def redirect_chat(
        self, chat_id: ChatId, *, operator_id: int | str | None = None, dep_key: str | None = None
    ) -> dict[str, Any]:
        """Webim extension: hand the chat to an operator or a department."""
        if (operator_id is None) == (dep_key is None):
            raise ValueError("give exactly one of operator_id and dep_key")
        body: dict[str, Any] = {"chat_id": chat_id}
        if operator_id is not None:
            body["operator_id"] = operator_id
        else:
            body["dep_key"] = dep_key
        return self.call("redirect_chat", body)


Handover = Callable[[Turn, Mapping[str, Any]], None]


def _body_text(body: bytes) -> str:
    # parse_event accepted it, so it is JSON in UTF-8, -16 or -32 (RFC 8259 detection); an
    # object opened by an ASCII "{" and no NUL is UTF-8 without a BOM (the usual case)
    if body[:1] == b"{" and body[1:2] != b"\x00":
        return body.decode()
    return body.decode(json.detect_encoding(body))


class Connector(WebhookChannel):
    """The inbound endpoint of the Omnichannel protocol, with the seed's exact status contract.

    ``handle(request)`` checks the URL and token, parses the event, stores each message as a
    turn in the durable inbox (with its dedupe mark) and only then answers 200; a worker runs
    the bot and its replies go out through the durable, ordered, retrying outbox.

    Args:
        bot: the :class:`~omnichannel.Bot` (an echo bot by default).
        token: the ``{token}`` of the webhook URL (compared in constant time).
        channel_url: the channel server's webhook URL (or give ``client``).
        channel_token: sent as ``Authorization: Token …`` to the channel server.
        client: a ready :class:`OmnichannelClient` (else one is made from ``channel_url``,
            ``channel_token``, ``session`` and ``retry``).
        runtime: share store/inbox/outbox/workers with other channels; else one is made from
            ``store``, ``inline`` and ``runtime_options`` (see :class:`~omnichannel.Runtime`).
        max_body: bodies over this many bytes get 413.
        malformed_status: status for a body that is not JSON or has a mistyped field (the seed
            says 500; some servers prefer 400).
        handover: ``handover(turn, params)`` for ``turn.handover()``. By default a handover sends
            ``handover_text`` (when set) and calls Webim's ``redirect_chat`` when ``operator_id``
            or ``dep_key`` is given, else raises ``NotSupported``.
        files_require_state: process a file only when its ``state`` is ``"ready"``, as seed 000
            says (by default a file without a ``state``, as Webim 2.0 sends them, is ready too).
        name: distinguishes several connectors sharing one store.
    """

    kind = "omnichannel"

    def __init__(
        self,
        bot: Bot | None = None,
        *,
        token: str,
        channel_url: str | None = None,
        channel_token: str | None = None,
        client: OmnichannelClient | None = None,
        session: Session | None = None,
        retry: RetryPolicy | None = None,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        max_body: int = 1 << 20,
        malformed_status: int = 500,
        handover: Handover | None = None,
        handover_text: str | None = None,
        files_require_state: bool = False,
        name: str = "omnichannel",
        **runtime_options: Any,
    ) -> None:
        if not token:
            raise ConfigurationError("token must be a non-empty string")
        if client is None:
            if channel_url is None:
                raise ConfigurationError("give channel_url (or a ready client)")
            client = OmnichannelClient(channel_url, channel_token, session=session, retry=retry)
        self.bot = bot if bot is not None else Bot()
        self.client = client
        self.max_body = max_body
        self.malformed_status = malformed_status
        self._token = token.encode()
        self._handover = handover
        self.handover_text = handover_text
        self.files_require_state = files_require_state
        # body text -> its event, parsed at admission, taken by the turn that runs it (soon,
        # inline or on an idle worker) instead of parsing the same body again; bounded
        self._parsed: dict[str, Event] = {}
        self._attach(runtime, name, store=store, inline=inline, **runtime_options)

    def __repr__(self) -> str:
        return f"Connector(name={self.name!r}, client={self.client!r})"

    @property
    def webhook_path(self) -> str:
        """The path the channel server must post to (it contains the secret token)."""
        return WEBHOOK_PATH.format(token=self._token.decode())

    # inbound --------------------------------------------------------------------------------
    def route(self, request: Request) -> Response | None:
        """404 for a URL that is not the webhook (seed 000): anything but its exact path, unless
        a framework's URL rule chose the request (then only the token segment is read)."""
        if self._match(request) is None:
            return Response.error(404, "Not found.")
        return None

    @staticmethod
    def _match(request: Request) -> re.Match[str] | None:
        if request.routed:
            return _PATH.search(request.path)
        return _EXACT_PATH.fullmatch(request.path)

    def verify(self, request: Request) -> Response | None:
        """The seed's 400 for an unknown token (compared in constant time)."""
        match = self._match(request)
        token = match.group(1).encode() if match is not None else b""
        if not hmac.compare_digest(token, self._token):
            return Response.error(400, NO_ACTIVE_CHANNEL)
        return None

    def parse(self, request: Request) -> list[Delivery] | Response:
        """One delivery per message (files that are not ready are accepted, not processed)."""
        try:
            event = parse_event(request.body)
        except PayloadError as exc:
            status = 400 if exc.missing else self.malformed_status
            log.info("omnichannel: rejected event (%d): %s", status, exc)
            return Response.error(status, str(exc))
        except UnsupportedEvent as exc:
            log.info("omnichannel: ignored event: %s", exc)
            return []
        chat = str(event.chat_id)
        deliveries: list[Delivery] = []
        body: str | None = None
        destination = self.destination
        for index, message in enumerate(event.messages):
            if isinstance(message, FileMessage) and not (
                message.ready and (message.file.state == "ready" or not self.files_require_state)
            ):
                log.info(
                    "omnichannel: chat %s: file in state %r not processed",
                    chat,
                    message.file.state,
                )
                continue
            if body is None:
                body = _body_text(request.body)
            key = None if message.id is None else f"{destination}:{chat}:{message.id}"
            deliveries.append(
                Delivery(
                    chat=chat,
                    key=key,
                    payload={"body": body, "i": index},
                    message_id=None if message.id is None else str(message.id),
                )
            )
        if body is not None and len(event.messages) == 1:
            self._remember_parsed(body, event)
        return deliveries

    def _remember_parsed(self, body: str, event: Event) -> None:
        parsed = self._parsed
        if len(parsed) >= 64:  # turns wait: forget the oldest (they parse their body again)
            with contextlib.suppress(LookupError, RuntimeError):  # another thread is at it
                del parsed[next(iter(parsed))]
        parsed[body] = event

    def process(self, payload: Mapping[str, Any]) -> None:
        """Run the bot on one stored message."""
        body = payload["body"]
        event = self._parsed.pop(body, None) if type(body) is str else None
        if event is None:
            event = parse_event(body)
        message = event.messages[int(payload["i"])]
        log.info("omnichannel: chat %s: %s %s", event.chat_id, message.kind, message.id)
        self.bot(Turn(event, message, self))

    # outbound -------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        """What the channel shows (the client's :attr:`OmnichannelClient.capabilities`)."""
        return self.client.capabilities

    def send(self, chat_id: ChatId, messages: Sequence[OutboundMessage]) -> None:
        """Queue messages for chat ``chat_id``: stored first, then delivered in order.

        Each is rendered by the client (:meth:`OmnichannelClient.render`): a keyboard's ``text``
        goes out as an operator message just before the keyboard message.
        """
        destination = self.destination
        chat_key = f"{destination}:{chat_id}"
        put = self.runtime.outbox.put
        for message in messages:
            for part in self.client.render(message):
                body = {"chat_id": chat_id, "message": unstructure_message(part)}
                put(destination, chat_key, {"method": "send_message", "body": body})

    def reply(self, chat_id: ChatId, *messages: Reply) -> None:
        """Write to a chat outside a turn (the agent writing first)."""
        self.send(chat_id, to_outbound(messages))

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Send one stored call to the channel server (one attempt; the outbox retries)."""
        self.client.call(str(payload["method"]), payload["body"], attempts=1)

    def handover(self, turn: Turn, **params: Any) -> None:
        """Hand the chat to a human (see the ``handover`` argument)."""
        if self._handover is not None:
            self._handover(turn, params)
            return
        from omnichannel.errors import NotSupported

        redirect = {k: params[k] for k in ("operator_id", "dep_key") if params.get(k) is not None}
        if not redirect and not self.handover_text:
            raise NotSupported(
                "the omnichannel protocol has no handover; give Connector(handover=...) or "
                "handover_text, or pass operator_id / dep_key for Webim's redirect_chat"
            )
        if self.handover_text:
            turn.reply(self.handover_text)
        if redirect:
            body = {"chat_id": turn.chat_id, **redirect}
            self.runtime.outbox.put(
                self.destination,
                f"{self.destination}:{turn.chat_id}",
                {"method": "redirect_chat", "body": body},
            )
