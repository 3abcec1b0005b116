"""The channel side's outbound half: :class:`PlatformClient` posts your visitors' messages to the
agent platform's ``…/omnichannel_message/{token}/bot_api_webhook`` and maps the seed's answers
to outcomes.

=====================================================  =========================================
the platform answers                                   outcome
=====================================================  =========================================
200                                                    delivered
400 ``There is no active channel for received event.``  :class:`ChannelInactive`: not retried;
                                                       dead-lettered with that reason;
                                                       :attr:`PlatformClient.health` inactive
400 (a required parameter is missing)                  :class:`EventRejected` naming the field
404                                                    :class:`PlatformNotFound` (the URL is wrong)
500, 502, 503, 504, 408, 429, no connection            retried with backoff (``Retry-After``
                                                       honoured)
=====================================================  =========================================
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import attrs

from omnichannel.channel_server.wire import (
    VisitorLike,
    button_message,
    event_payload,
    file_message,
    text_message,
    validate_event,
)
from omnichannel.channels.omnichannel import NO_ACTIVE_CHANNEL, WEBHOOK_PATH
from omnichannel.errors import ConfigurationError, DeliveryError, PayloadError
from omnichannel.models import ChatId, Event, InboundMessage
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
from omnichannel.runtime.sending import LazySession, RetryPolicy, parse_retry_after
from omnichannel.runtime.stores import QueueItem

if TYPE_CHECKING:
    import requests

__all__ = [
    "ChannelInactive",
    "EventRejected",
    "PlatformClient",
    "PlatformHealth",
    "PlatformNotFound",
    "platform_webhook_url",
]

log = logging.getLogger(__name__)

_SEED_PATH = re.compile(r"/omnichannel_message/([^/]+)/bot_api_webhook/?$")
_PATH_WORDS = frozenset(("connector", "omnichannel", "omnichannel_message", "bot_api_webhook"))
_FIELD = re.compile(r"^\s*([A-Za-z_][\w]*(?:\.[\w]+)*)\s*:")
_PARAMETER = re.compile(r"parameter[s]?\s*[:'\"`]?\s*([A-Za-z_][\w]*(?:\.[\w]+)*)", re.IGNORECASE)


class _RedactSecrets(logging.Filter):
    """Elides the clients' URL secrets from urllib3's DEBUG lines (it logs each request's path,
    and the token is in the path)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if not secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # pragma: no cover - a malformed record is not ours to fix
            return True
        if any(secret in text for secret in secrets):
            for secret in sorted(secrets, key=len, reverse=True):
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


_REDACT = _RedactSecrets()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACT)


def platform_webhook_url(server: str, token: str) -> str:
    """The platform's webhook URL for an agent channel: ``{server}/connector/omnichannel/
    omnichannel_message/{token}/bot_api_webhook`` (seed 000; the platform shows it as the
    channel's "app.chatbots webhook: URL")."""
    if not token:
        raise ConfigurationError("token must be a non-empty string")
    return server.rstrip("/") + WEBHOOK_PATH.format(token=quote(token, safe=""))


# errors --------------------------------------------------------------------------------------
class ChannelInactive(DeliveryError):
    """The platform has no active agent channel for this webhook URL: the channel is switched
    off, or the token in the URL is wrong (seed 000: 400 ``There is no active channel for
    received event.``). Not retried: the platform would answer the same until someone acts."""


class EventRejected(DeliveryError, PayloadError):
    """The platform answered 400 for a reason other than an inactive channel: a required
    parameter is missing. ``path`` names it as far as the answer tells (``""`` when it does
    not); not retried."""

    def __init__(
        self, message: str, *, path: str, problem: str, status: int, response_text: str = ""
    ) -> None:
        # both bases' attributes; one message (their __init__s call each other's super())
        Exception.__init__(self, message)
        self.status: int | None = status
        self.retry_after: float | None = None
        self.response_text = response_text
        self.attempts = 1
        self.retryable = False
        self.path = path
        self.problem = problem
        self.missing = True


class PlatformNotFound(DeliveryError, ConfigurationError):
    """The platform answered 404: the webhook URL is wrong (seed 000: "Incorrect URL
    specified"). The message names the URL with its token elided; not retried."""


@attrs.frozen(kw_only=True)
class PlatformHealth:
    """What the client last learned about the agent channel (shared through the store, so every
    process of a deployment reads the same).

    Attributes:
        active: ``False`` once the platform answered "There is no active channel…"; ``True``
            again after the next message it accepts.
        reason: the platform's words when it is inactive.
        since: when it last changed (Unix seconds; ``None`` when it never did).
    """

    active: bool = True
    reason: str | None = None
    since: float | None = None


def _json_error(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(body, dict):
        error = body.get("error") or body.get("detail") or body.get("message")
        desc = body.get("desc")
        if isinstance(error, str):
            return f"{error} ({desc})" if isinstance(desc, str) and desc else error
    return text.strip()


def _field_named(error: str) -> str:
    for pattern in (_FIELD, _PARAMETER):
        match = pattern.search(error)
        if match is not None:
            return match.group(1)
    return ""


class PlatformClient(WebhookChannel):
    """Sends your visitors' messages to an agent platform that speaks the Omnichannel protocol
    (chatme.ai's universal connector, a Webim External Bot API 2.0 bot, the SDK's own
    :class:`~omnichannel.Connector`).

    Two ways to send each kind of message:

    - ``queue_text`` / ``queue_file`` / ``queue_button`` / ``queue_new_chat`` / ``queue_event``
      (production): the event is checked, stored in the runtime's durable outbox and delivered
      in the background — in order per chat, retried with backoff while the platform is down
      or answers 5xx (a restart resumes them), dead-lettered when the platform refuses it for
      good (``omnichannel outbox list`` shows why; ``retry`` sends it again).
    - ``send_text`` / ``send_file`` / ``send_button`` / ``send_new_chat`` / ``send_event``: one
      immediate call in the calling thread (retried per ``retry`` on 5xx and connection errors)
      that raises the typed errors: :class:`ChannelInactive`, :class:`EventRejected`,
      :class:`PlatformNotFound`, :class:`~omnichannel.DeliveryError`.

    Every event is checked before it is sent (:func:`~omnichannel.channel_server.validate_event`):
    the platform answers 200 to an unknown ``event`` or ``kind`` and silently ignores it, so such
    an event raises :class:`~omnichannel.PayloadError` here instead. Each message gets a fresh
    id unless given one; a queued message keeps its id through retries, so a platform that
    dedupes by it processes it once.

    The token in the URL never appears in logs, errors or reprs.

    Args:
        webhook_url: the platform's webhook URL for your agent channel
            (:func:`platform_webhook_url` builds it from the platform's address and the token).
        session: a ``requests.Session`` (the test seam); a pooled one by default.
        retry: timeouts, and the retries of the immediate ``send_*`` calls (queued messages are
            retried by the outbox: ``outbox_backoff``, ``outbox_cap``, ``outbox_deadline``).
        runtime: share a runtime (store, outbox, workers) with a
            :class:`~omnichannel.channel_server.ChannelServer` or other channels; else one is made
            from ``store``, ``inline`` and ``runtime_options`` (see :class:`~omnichannel.Runtime`).
            ``inline=True`` delivers queued messages in the calling thread (tests, notebooks).
        name: tells several clients sharing one store apart.
    """

    kind = "omnichannel-platform"
    session = LazySession()

    def __init__(
        self,
        webhook_url: str,
        *,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        name: str = "platform",
        **runtime_options: Any,
    ) -> None:
        if not isinstance(webhook_url, str) or not webhook_url.startswith(("http://", "https://")):
            raise ConfigurationError("webhook_url must be an http(s) URL")
        parts = urlsplit(webhook_url)
        match = _SEED_PATH.search(parts.path)
        self._url = webhook_url
        self._secrets = _secrets_of(parts.path, parts.query, match)
        _REDACT.secrets.update(self._secrets)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        tail = "/…/bot_api_webhook" if match is not None else "/…"
        self.redacted_url = f"{parts.scheme}://{host}{tail}"
        """The webhook URL as logs and errors show it (the token and the path elided)."""
        if match is None:
            log.warning(
                "platform: %s does not end in /omnichannel_message/{token}/bot_api_webhook "
                "(seed 000); using it as given",
                self.redacted_url,
            )
        self.session = session or None  # made on first use
        self.retry = retry or RetryPolicy()
        self._known_active: bool | None = None
        self._attach(runtime, name, store=store, inline=inline, **runtime_options)

    def __repr__(self) -> str:
        return f"PlatformClient({self.redacted_url!r}, name={self.name!r})"

    # immediate ------------------------------------------------------------------------------
    def send_text(
        self,
        chat_id: ChatId,
        text: str,
        *,
        visitor: VisitorLike = None,
        message_id: str | None = None,
    ) -> str:
        """Send a visitor's text now; return its message id.

        Raises:
            ChannelInactive, EventRejected, PlatformNotFound: refused (see the module's table).
            DeliveryError: 5xx or no connection after ``retry``'s attempts.
        """
        message = text_message(text, message_id=message_id)
        self.send_event(event_payload(chat_id=chat_id, message=message, visitor=visitor))
        return str(message.id)

    def send_file(
        self,
        chat_id: ChatId,
        url: str | None = None,
        *,
        name: str | None = None,
        content_type: str | None = None,
        size: int | None = None,
        state: str | None = "ready",
        file_id: str | None = None,
        visitor: VisitorLike = None,
        message_id: str | None = None,
    ) -> str:
        """Send a visitor's file now (see :func:`~omnichannel.channel_server.file_message` for
        ``state`` and ``file_id``); return the message id. Raises as :meth:`send_text`."""
        message = file_message(
            url,
            name=name,
            content_type=content_type,
            size=size,
            state=state,
            file_id=file_id,
            message_id=message_id,
        )
        self.send_event(event_payload(chat_id=chat_id, message=message, visitor=visitor))
        return str(message.id)

    def send_button(
        self,
        chat_id: ChatId,
        button_id: str,
        text: str,
        *,
        visitor: VisitorLike = None,
        message_id: str | None = None,
        request_message_id: str | None = None,
    ) -> str:
        """Send a press of the keyboard button ``button_id`` labelled ``text`` now; return the
        message id. Raises as :meth:`send_text`."""
        message = button_message(
            button_id, text, message_id=message_id, request_message_id=request_message_id
        )
        self.send_event(event_payload(chat_id=chat_id, message=message, visitor=visitor))
        return str(message.id)

    def send_new_chat(
        self,
        chat_id: ChatId,
        messages: Iterable[InboundMessage | str],
        *,
        visitor: VisitorLike = None,
    ) -> list[str]:
        """Send a Webim-style ``new_chat`` (the chat handed to the bot with the visitor's
        messages so far; a ``str`` is a text) now; return the message ids. Raises as
        :meth:`send_text`."""
        built = _messages(messages)
        self.send_event(event_payload(chat_id=chat_id, messages=built, visitor=visitor))
        return [str(m.id) for m in built]

    def send_event(self, event: Event | Mapping[str, Any]) -> Event:
        """Check and send one event (typed, or its wire JSON) now; return the typed event.

        Raises:
            PayloadError: the event is not one the platform would process (names the field).
            ChannelInactive, EventRejected, PlatformNotFound, DeliveryError: as :meth:`send_text`.
        """
        payload = _payload_of(event)
        typed = validate_event(payload)
        self._post(payload, attempts=self.retry.attempts)
        return typed

    # durable --------------------------------------------------------------------------------
    def queue_text(
        self,
        chat_id: ChatId,
        text: str,
        *,
        visitor: VisitorLike = None,
        message_id: str | None = None,
    ) -> str:
        """Store a visitor's text for delivery (durable once this returns); return its id."""
        message = text_message(text, message_id=message_id)
        self.queue_event(event_payload(chat_id=chat_id, message=message, visitor=visitor))
        return str(message.id)

    def queue_file(
        self,
        chat_id: ChatId,
        url: str | None = None,
        *,
        name: str | None = None,
        content_type: str | None = None,
        size: int | None = None,
        state: str | None = "ready",
        file_id: str | None = None,
        visitor: VisitorLike = None,
        message_id: str | None = None,
    ) -> str:
        """Store a visitor's file for delivery (see :meth:`send_file`); return its message id."""
        message = file_message(
            url,
            name=name,
            content_type=content_type,
            size=size,
            state=state,
            file_id=file_id,
            message_id=message_id,
        )
        self.queue_event(event_payload(chat_id=chat_id, message=message, visitor=visitor))
        return str(message.id)

    def queue_button(
        self,
        chat_id: ChatId,
        button_id: str,
        text: str,
        *,
        visitor: VisitorLike = None,
        message_id: str | None = None,
        request_message_id: str | None = None,
    ) -> str:
        """Store a button press for delivery (see :meth:`send_button`); return its message id."""
        message = button_message(
            button_id, text, message_id=message_id, request_message_id=request_message_id
        )
        self.queue_event(event_payload(chat_id=chat_id, message=message, visitor=visitor))
        return str(message.id)

    def queue_new_chat(
        self,
        chat_id: ChatId,
        messages: Iterable[InboundMessage | str],
        *,
        visitor: VisitorLike = None,
    ) -> list[str]:
        """Store a ``new_chat`` for delivery (see :meth:`send_new_chat`); return the ids."""
        built = _messages(messages)
        self.queue_event(event_payload(chat_id=chat_id, messages=built, visitor=visitor))
        return [str(m.id) for m in built]

    def queue_event(self, event: Event | Mapping[str, Any]) -> Event:
        """Check one event and store it for delivery; return the typed event.

        Events of one chat are delivered one at a time, in the order they were queued. Inside
        a turn of the same runtime (a :class:`~omnichannel.channel_server.ChannelServer`
        handler) the event is stored with the turn's completion.

        Raises:
            PayloadError: the event is not one the platform would process (names the field).
        """
        payload = _payload_of(event)
        typed = validate_event(payload)
        self.runtime.start()
        self.runtime.outbox.put(self.destination, self.chat_key(typed.chat_id), {"body": payload})
        return typed

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Send one queued event (one attempt; the outbox retries or dead-letters)."""
        self._post(payload["body"], attempts=1)

    # health ---------------------------------------------------------------------------------
    @property
    def _health_key(self) -> str:
        return f"{self.destination}:health"

    @property
    def health(self) -> PlatformHealth:
        """What the client last learned about the agent channel (:class:`PlatformHealth`)."""
        state = self.runtime.store.get_state(self._health_key)
        if not state:
            return PlatformHealth()
        return PlatformHealth(
            active=bool(state.get("active", True)),
            reason=state.get("reason"),
            since=state.get("since"),
        )

    @property
    def active(self) -> bool:
        """``False`` once the platform said it has no active channel (until it accepts again)."""
        return self.health.active

    def dead_letters(self) -> list[QueueItem]:
        """The queued events of this client that were given up (``last_error`` says why)."""
        return [i for i in self.runtime.store.dead_letters() if i.destination == self.destination]

    def _set_health(self, active: bool, reason: str | None) -> None:
        try:
            if active and self._known_active is True:
                return  # the common case: no store access per delivery
            if active and self._known_active is None:
                stored = self.runtime.store.get_state(self._health_key)
                if not stored or stored.get("active", True):
                    self._known_active = True
                    return
            self.runtime.store.set_state(
                self._health_key, {"active": active, "reason": reason, "since": time.time()}
            )
            self._known_active = active
        except Exception as exc:  # the health flag is advice: never fail a delivery over it
            log.warning("platform: could not store the channel's health: %s", type(exc).__name__)

    # the wire -------------------------------------------------------------------------------
    def _post(self, payload: Mapping[str, Any], *, attempts: int) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        error: DeliveryError | None = None
        for attempt in range(1, max(1, attempts) + 1):
            import requests  # loaded by the session

            try:
                response = self.session.post(
                    self._url, data=body, headers=headers, timeout=self.retry.timeout
                )
            except requests.RequestException as exc:
                error = DeliveryError(
                    f"POST {self.redacted_url} failed: {type(exc).__name__}",
                    attempts=attempt,
                    retryable=True,
                )
            else:
                if 200 <= response.status_code < 300:
                    self._set_health(True, None)
                    return
                error = self._refusal(response, attempt)
            if not error.retryable or attempt >= attempts:
                break
            wait = self.retry.delay(attempt, error.retry_after)
            log.info("%s; retry %d/%d in %.2fs", error, attempt, attempts - 1, wait)
            time.sleep(wait)
        assert error is not None
        raise error

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _refusal(self, response: requests.Response, attempt: int) -> DeliveryError:
        status = response.status_code
        try:
            text = self._scrub(response.text[:500])
        except Exception:  # pragma: no cover - undecodable body
            text = ""
        said = _json_error(text)[:200]
        where = f"POST {self.redacted_url}"
        if status == 400 and NO_ACTIVE_CHANNEL.rstrip(".").lower() in text.lower():
            self._set_health(False, said or NO_ACTIVE_CHANNEL)
            return ChannelInactive(
                f"{where} answered 400: {said or NO_ACTIVE_CHANNEL} (the agent channel is "
                f"switched off or the token in the webhook URL is wrong)",
                status=status,
                response_text=text,
                attempts=attempt,
            )
        if status == 400:
            path = _field_named(said)
            return EventRejected(
                f"{where} answered 400: {said or 'a required parameter is missing'}",
                path=path,
                problem=said or "a required parameter is missing",
                status=status,
                response_text=text,
            )
        if status == 404:
            return PlatformNotFound(
                f"{where} answered 404: no such URL on the platform; check webhook_url (the "
                f"agent channel's 'app.chatbots webhook: URL')",
                status=status,
                response_text=text,
                attempts=attempt,
            )
        return DeliveryError(
            f"{where} answered {status}: {said}",
            status=status,
            response_text=text,
            attempts=attempt,
            retryable=status in self.retry.retry_statuses,
            retry_after=parse_retry_after(response.headers),
        )

    # no webhook -----------------------------------------------------------------------------
    def route(self, request: Request) -> Response | None:
        """404: the client sends; it serves no webhook (the replies come to a
        :class:`~omnichannel.channel_server.ChannelServer`)."""
        return Response.error(404, "Not found.")

    def parse(self, request: Request) -> list[Delivery] | Response:
        """Never reached (:meth:`route` refuses every request)."""
        return Response.error(404, "Not found.")

    def process(self, payload: Mapping[str, Any]) -> None:
        """Never called: the client admits no turns."""
        raise NotImplementedError("PlatformClient receives nothing")

    def close(self, timeout: float | None = 10.0) -> bool:
        """Deliver what is due (up to ``timeout``), stop the runtime and close the session."""
        try:
            return super().close(timeout)
        finally:
            if PlatformClient.session.made(self):
                self.session.close()


def _secrets_of(path: str, query: str, match: re.Match[str] | None) -> tuple[str, ...]:
    found: list[str] = []
    if match is not None:
        found.append(match.group(1))
    else:  # a path of unknown shape: any segment may be the secret
        found.extend(s for s in path.split("/") if len(s) >= 6 and s not in _PATH_WORDS)
    if query:
        found.append(query)
    # longest first, so a secret that contains another is scrubbed whole
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _messages(messages: Iterable[InboundMessage | str]) -> list[InboundMessage]:
    return [text_message(m) if isinstance(m, str) else m for m in messages]


def _payload_of(event: Event | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(event, Mapping):
        return dict(event)
    return event_payload(event)
