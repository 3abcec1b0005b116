"""The outbound side of Webex Connect bots: the client that posts bot events (``eventid`` 1001,
1002, …) to the integration's generated webhook URL, and the reply model with Webex specifics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from omnichannel.channels.webex.events import format_webex_timestamp
from omnichannel.errors import ConfigurationError, DeliveryError
from omnichannel.models import TextReply
from omnichannel.runtime.sending import (
    LazySession,
    RetryPolicy,
    default_session,
    redact_url,
    request_with_retries,
)

if TYPE_CHECKING:
    from omnichannel.runtime.sending import HTTPResponse, Session

__all__ = [
    "EVENT_HANDOVER",
    "EVENT_MESSAGE",
    "MAX_BODY_BYTES",
    "RESERVED_FIELDS",
    "BodyTooLarge",
    "WebexConnectClient",
    "WebexMessage",
    "event_body",
]

log = logging.getLogger(__name__)

EVENT_MESSAGE = "1001"
"""``eventid`` of a message from the bot to the customer (seed 002)."""

EVENT_HANDOVER = "1002"
"""``eventid`` of the bot's handover to the contact center (seed 002; meaning **[U]**)."""

MAX_BODY_BYTES = 256 * 1024
"""Webex Connect's default per-tenant limit for inbound webhook bodies (larger ones get 430)."""


@attrs.frozen(kw_only=True)
class WebexMessage(TextReply):
    """A reply with Webex Connect specifics: its ``Messagetype`` and custom params.

    Use it for a channel's rich payload (a WhatsApp list, a Messenger template) that a flow on
    the Webex side turns into the real message. It is a :class:`~omnichannel.TextReply`, so
    other channels send its ``text``. Webex gets it as is: no markdown stripping, no splitting.
    """

    message_type: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)


class BodyTooLarge(DeliveryError, ValueError):
    """A reply body is larger than Webex Connect accepts; it was refused before sending.

    ``size`` and ``limit`` are in bytes of the JSON body.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message, retryable=False)


RESERVED_FIELDS = ("eventid", "conversation_id", "Timestamp")
"""Fields of a bot event the adapter sets itself: a custom param may not use these names."""


class WebexConnectClient:
    """Posts bot events (``eventid`` 1001, 1002, …) to the integration's generated webhook URL.

    Args:
        webhook_url: the URL Webex Connect generated for the bot integration,
            ``https://hooks.{us|eu|uk|au}.webexconnect.io/events/{ID}``. Its ``{ID}`` is a
            secret: it never appears in logs or errors.
        service_key: sent as the ``key`` header when the webhook requires authentication.
        session: by default the SDK's pooled keep-alive transport
            (:class:`~omnichannel.runtime.pool.PooledSession`), made on first use; it ignores
            proxy variables. Give a ``requests.Session`` for proxies, custom TLS or auth
            (``new_session(trust_env=True)`` of :mod:`omnichannel.runtime.sending` reads
            ``HTTP(S)_PROXY`` from the environment).
        retry: timeouts and retries of :meth:`post_event` (the outbox makes single attempts).
        max_body_bytes: bodies larger than this are refused before sending
            (Webex Connect's default tenant limit is 256 KB).
    """

    session: LazySession[Session] = LazySession(default_session)

    def __init__(
        self,
        webhook_url: str,
        service_key: str | None = None,
        session: Session | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not webhook_url or not webhook_url.startswith(("http://", "https://")):
            raise ConfigurationError("webhook_url must be an http(s) URL")
        self.webhook_url = webhook_url
        self._service_key = service_key or None
        self.session = session or None  # made on first use
        self.retry = retry or RetryPolicy()
        self.max_body_bytes = max_body_bytes
        parts = urlsplit(webhook_url)
        self._webhook_id = parts.path.rstrip("/").rsplit("/", 1)[-1]
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        self.safe_url = f"{parts.scheme}://{host}/…/***"
        """The webhook URL as logs show it (its secret ID elided)."""

    def __repr__(self) -> str:
        return f"WebexConnectClient({self.safe_url!r})"

    def encode(self, body: Mapping[str, Any]) -> bytes:
        """The exact bytes :meth:`post_event` sends for ``body``.

        Raises:
            BodyTooLarge: the JSON is longer than ``max_body_bytes``.
            ValueError: ``body`` is not JSON-serializable.
        """
        try:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the event body is not JSON-serializable: {exc}") from None
        if len(data) > self.max_body_bytes:
            what = f"eventid {body.get('eventid')} for conversation {body.get('conversation_id')}"
            raise BodyTooLarge(
                f"Webex Connect refuses bodies over {self.max_body_bytes} bytes; this {what} "
                f"is {len(data)} bytes and was not sent (shorten the message or send a link)",
                size=len(data),
                limit=self.max_body_bytes,
            )
        return data

    def post_event(self, body: Mapping[str, Any], *, attempts: int | None = None) -> HTTPResponse:
        """POST one event body; retry per ``retry`` (``attempts=1``: a single attempt).

        Raises:
            BodyTooLarge: refused before sending.
            DeliveryError: the last failure (``retryable`` tells whether a later try may work).
        """
        data = self.encode(body)
        headers = {"Content-Type": "application/json"}
        if self._service_key:
            headers["key"] = self._service_key
        total = attempts if attempts is not None else self.retry.attempts
        secrets = tuple(s for s in (self._service_key, self._webhook_id) if s)
        attempt = 0
        while True:
            attempt += 1
            try:
                # one attempt at a time: the shared helper would log the URL with its secret ID
                return request_with_retries(
                    self.session,
                    "POST",
                    self.webhook_url,
                    data=data,
                    headers=headers,
                    policy=self.retry,
                    attempts=1,
                    secrets=secrets,
                )
            except DeliveryError as exc:
                error = self._scrubbed(exc, attempt)
            if not error.retryable or attempt >= total:
                raise error
            wait = self.retry.delay(attempt, error.retry_after)
            log.info("webex: %s; retry %d/%d in %.2fs", error, attempt, total - 1, wait)
            time.sleep(wait)

    def _scrubbed(self, exc: DeliveryError, attempt: int) -> DeliveryError:
        message = str(exc).replace(redact_url(self.webhook_url), self.safe_url)
        if self._webhook_id:
            message = message.replace(self._webhook_id, "***")
        return DeliveryError(
            message,
            status=exc.status,
            response_text=exc.response_text,
            attempts=attempt,
            retryable=exc.retryable,
            retry_after=exc.retry_after,
        )

    def send_message(
        self,
        conversation_id: str,
        message: str,
        *,
        message_type: str = "text",
        eventid: str = EVENT_MESSAGE,
        **params: Any,
    ) -> HTTPResponse:
        """Send one message to the customer now (outside the outbox), with custom params."""
        body = event_body(
            eventid, conversation_id, params, message=message, Messagetype=message_type
        )
        return self.post_event(body)

    def handover(
        self, conversation_id: str, *, eventid: str = EVENT_HANDOVER, **params: Any
    ) -> HTTPResponse:
        """Send the handover event now (outside the outbox), with custom params."""
        return self.post_event(event_body(eventid, conversation_id, params))


def event_body(
    eventid: str, conversation_id: str, *param_sets: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    """A bot event body: ``eventid``, ``conversation_id``, ``fields``, ``Timestamp`` (now, GMT)
    and the custom params of ``param_sets`` (later sets win).

    Raises:
        ValueError: a custom param uses a name of :data:`RESERVED_FIELDS`.
    """
    body: dict[str, Any] = {"eventid": eventid, "conversation_id": conversation_id}
    body.update(fields)
    body["Timestamp"] = format_webex_timestamp()
    for params in param_sets:
        for key, value in params.items():
            if key in RESERVED_FIELDS:
                raise ValueError(f"custom param {key!r} collides with a field the adapter sets")
            body[key] = value
    return body
