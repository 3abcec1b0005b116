"""A fake Webex Connect for tests: it posts bot events to your endpoint the way Webex Connect does
(5 s timeout, 4 retries over an hour, the webhook switched off after 5 consecutive failures, all
shortened by a time factor) and records what the bot posts to its ``/events/{ID}`` webhook.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import attrs
import requests
from typing_extensions import Self

from omnichannel.channels.webex import (
    EVENT_HANDOVER,
    EVENT_MESSAGE,
    FB_POSTBACK,
    INCOMING_MESSAGE,
    MAX_BODY_BYTES,
    MESSAGE_DELIVERY,
    format_webex_timestamp,
)
from omnichannel.errors import ConfigurationError
from omnichannel.runtime.http import Request, Response
from omnichannel.testing.fake import FakePlatform

__all__ = [
    "NOT_RETRIED",
    "RETRY_DELAYS",
    "BotEvent",
    "DeliveryAttempt",
    "FakeWebexConnect",
    "WebexDelivery",
    "delivery_status_event",
    "incoming_message_event",
    "postback_event",
]

RETRY_DELAYS: tuple[float, ...] = (60.0, 300.0, 900.0, 2340.0)
"""Seconds before each of the 4 retries: "four retry attempts over the next hour" (seed 002;
the exact spacing is not published, so this one is an assumption)."""

NOT_RETRIED = frozenset(
    {*range(300, 309), 400, 402, 404, 405, 406, 407, 408, 409, 410, 411, 414, 415, 416, 418, 505}
)
"""Statuses Webex Connect documents as not retried (for its outbound webhooks). The fake treats
them as a refusal of that one event: not retried and, unless ``count_rejections``, not a failure
toward deactivation."""

_REPLY_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}")
_ids = itertools.count(1)

Outcome = Literal["ok", "timeout", "error", "no-token", "rejected", "failure"]
State = Literal["pending", "delivered", "rejected", "failed", "inactive"]


# ---------------------------------------------------------------------------------------------
# event builders


def _now() -> str:
    # Webex Connect's inbound format: two fractional digits
    return format_webex_timestamp()[:-1]


def incoming_message_event(
    conversation_id: str,
    text: str = "",
    *,
    message_id: str | None = None,
    message_type: str = "text",
    media: Any = "",
    channel: str = "WhatsApp",
    conversation_type: str = "BOT",
    timestamp: str | None = None,
) -> dict[str, Any]:
    """An ``Incoming message`` event as Webex Connect sends it (mixed-case field names)."""
    return {
        "Conversationid": conversation_id,
        "ConversationType": conversation_type,
        "Message": text,
        "MessageType": message_type,
        "Messageid": message_id or f"wx-{next(_ids)}",
        "Media": media,
        "Channel": channel,
        "Event": INCOMING_MESSAGE,
        "Timestamp": timestamp or _now(),
    }


def postback_event(
    conversation_id: str,
    payload: str,
    *,
    channel: str = "FB",
    conversation_type: str = "BOT",
    timestamp: str | None = None,
) -> dict[str, Any]:
    """An ``FB POSTBACK`` event: the customer pressed a button carrying ``payload``."""
    return {
        "Conversationid": conversation_id,
        "ConversationType": conversation_type,
        "PostbackPayload": payload,
        "Channel": channel,
        "Event": FB_POSTBACK,
        "Timestamp": timestamp or _now(),
    }


def delivery_status_event(
    conversation_id: str,
    message_id: str,
    status: str = "Delivered",
    *,
    description: str | None = None,
    channel: str = "WhatsApp",
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A ``Message Delivery`` event (``Delivered``, ``Read`` or ``Failed`` with a description)."""
    event: dict[str, Any] = {
        "Conversationid": conversation_id,
        "ConversationType": "BOT",
        "Messageid": message_id,
        "Channel": channel,
        "Event": MESSAGE_DELIVERY,
        "DeliveryStatus": status,
        "Timestamp": timestamp or _now(),
    }
    if description is not None:
        event["Description"] = description
    return event


# ---------------------------------------------------------------------------------------------
# records


@attrs.frozen(kw_only=True)
class BotEvent:
    """One event the bot posted to the fake's webhook (and the fake accepted)."""

    eventid: str
    conversation_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float

    @property
    def message(self) -> str | None:
        """The ``message`` of a 1001 event."""
        value = self.body.get("message")
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str | None:
        """The ``Messagetype``."""
        value = self.body.get("Messagetype")
        return value if isinstance(value, str) else None

    @property
    def params(self) -> dict[str, Any]:
        """The custom params: every field but ``eventid``, ``conversation_id``, ``Timestamp``,
        ``message`` and ``Messagetype``."""
        fixed = ("eventid", "conversation_id", "Timestamp", "message", "Messagetype")
        return {k: v for k, v in self.body.items() if k not in fixed}


@attrs.frozen(kw_only=True)
class DeliveryAttempt:
    """One POST of an event to the bot: when, how long, and how the fake judged the answer."""

    number: int
    started_at: float
    elapsed: float
    status: int | None
    outcome: Outcome
    response_text: str = ""


class WebexDelivery:
    """One event on its way to the bot: its attempts and final state.

    ``state`` is ``pending``, ``delivered`` (acknowledged with the token), ``rejected`` (a
    status Webex Connect does not retry), ``failed`` (retries exhausted) or ``inactive``
    (the webhook was switched off before it could be delivered).
    """

    def __init__(self, body: bytes, fake: FakeWebexConnect) -> None:
        self.id = next(_ids)
        self.body = body
        self.attempts: list[DeliveryAttempt] = []
        self.state: State = "pending"
        self._fake = fake

    @property
    def event(self) -> Any:
        """The body decoded (``None`` when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def done(self) -> bool:
        """True once the state is final."""
        return self.state != "pending"

    @property
    def last(self) -> DeliveryAttempt | None:
        """The latest attempt."""
        return self.attempts[-1] if self.attempts else None

    def wait(self, timeout: float = 10.0) -> Self:
        """Wait for the final state (raises ``TimeoutError``)."""
        self._fake.wait_for(lambda: self.done, timeout, what=f"the end of delivery {self.id}")
        return self

    def __repr__(self) -> str:
        return f"WebexDelivery({self.id}, {self.state}, attempts={len(self.attempts)})"


# ---------------------------------------------------------------------------------------------
# servers


class FakeWebexConnect(FakePlatform[BotEvent]):
    """A local stand-in for Webex Connect's generic-bot integration.

    Outbound (Webex → bot): :meth:`send` posts an event to ``bot_url``; an answer is a success
    when it is 2xx and carries ``verification_token`` (the whole body, or a string value of a
    JSON object). A timeout, a connection error, a missing token or another status is a failure:
    retried after ``retry_delays`` (4 retries over an hour) and counted; ``deactivate_after``
    consecutive failures switch the webhook off until :meth:`verify`. Statuses in
    :data:`NOT_RETRIED` refuse that one event without a retry and, unless
    ``count_rejections``, without counting toward deactivation.

    Inbound (bot → Webex): ``webhook_url`` (``{url}/events/{webhook_id}``) records the events
    the bot posts (:attr:`events`, the fake's :attr:`calls`), checks the ``key`` header when
    ``service_key`` is set (401), refuses bodies over ``max_body_bytes`` with 430 and malformed
    events with 400; ``fail_next`` and ``always`` refuse valid ones.

    Args:
        verification_token: the integration's verification token.
        bot_url: the bot's endpoint (may be set later).
        service_key: require it as the ``key`` header of the bot's posts.
        time_factor: multiplies every delay (retries and, unless ``timeout`` is given, the
            5 s timeout, which never goes below 1 s).
        timeout: seconds the bot has to answer (default: 5 s times ``time_factor``, at least 1 s).
        retry_delays, deactivate_after: the retry schedule and the deactivation threshold.
        senders: events in flight at once.
    """

    def __init__(
        self,
        verification_token: str,
        *,
        bot_url: str | None = None,
        service_key: str | None = None,
        time_factor: float = 1.0,
        timeout: float | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        deactivate_after: int = 5,
        count_rejections: bool = False,
        webhook_id: str = "FAKE0WEBEX",
        max_body_bytes: int = MAX_BODY_BYTES,
        senders: int = 32,
        port: int = 0,
    ) -> None:
        if not verification_token:
            raise ConfigurationError("verification_token must be a non-empty string")
        super().__init__(port=port)
        self.verification_token = verification_token
        self.bot_url = bot_url
        self.service_key = service_key
        self.time_factor = time_factor
        self.timeout = timeout if timeout is not None else max(1.0, 5.0 * time_factor)
        self.retry_delays = tuple(d * time_factor for d in retry_delays)
        self.deactivate_after = deactivate_after
        self.count_rejections = count_rejections
        self.webhook_id = webhook_id
        self.max_body_bytes = max_body_bytes
        self.active = True
        self.consecutive_failures = 0
        self.peak_consecutive_failures = 0
        self.deliveries: list[WebexDelivery] = []
        self._due: list[tuple[float, int, WebexDelivery]] = []
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max(1, senders), thread_name_prefix="fake-webex-send")
        self._scheduler: threading.Thread | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> Self:
        """Serve the webhook and start sending."""
        super().start()
        if self._scheduler is None:
            self._scheduler = threading.Thread(
                target=self._schedule_loop, name="fake-webex-scheduler", daemon=True
            )
            self._scheduler.start()
        return self

    def stop(self) -> None:
        """Stop sending (pending retries are abandoned) and stop serving."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._scheduler is not None:
            self._scheduler.join(5)
            self._scheduler = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        for session in self._sessions:
            session.close()
        super().stop()

    @property
    def webhook_url(self) -> str:
        """The URL the bot posts its events to (what Webex Connect generates)."""
        return f"{self.url}/events/{self.webhook_id}"

    @property
    def events(self) -> list[BotEvent]:
        """The events the bot posted and the fake accepted (:attr:`calls`), in order."""
        return self.calls

    # Webex → bot ----------------------------------------------------------------------------
    def send(self, event: Mapping[str, Any] | bytes | str) -> WebexDelivery:
        """Post an event (a mapping, or raw bytes for malformed bodies) to ``bot_url``."""
        if self.bot_url is None:
            raise ConfigurationError("set bot_url (the bot's endpoint) before sending")
        if isinstance(event, Mapping):
            body = json.dumps(event, ensure_ascii=False).encode()
        else:
            body = event.encode() if isinstance(event, str) else bytes(event)
        delivery = WebexDelivery(body, self)
        with self._cond:
            self.deliveries.append(delivery)
            if not self.active:
                self._finish(delivery, "inactive")
                return delivery
        self._pool.submit(self._attempt, delivery)
        return delivery

    def send_message(self, conversation_id: str, text: str, **fields: Any) -> WebexDelivery:
        """Send an ``Incoming message`` (see :func:`incoming_message_event`)."""
        return self.send(incoming_message_event(conversation_id, text, **fields))

    def send_postback(self, conversation_id: str, payload: str, **fields: Any) -> WebexDelivery:
        """Send an ``FB POSTBACK`` (see :func:`postback_event`)."""
        return self.send(postback_event(conversation_id, payload, **fields))

    def send_delivery_status(
        self, conversation_id: str, message_id: str, status: str = "Delivered", **fields: Any
    ) -> WebexDelivery:
        """Send a ``Message Delivery`` event (see :func:`delivery_status_event`)."""
        return self.send(delivery_status_event(conversation_id, message_id, status, **fields))

    def verify(self) -> bool:
        """What clicking "Verify" does: POST ``{}``, expect the token, reactivate on success.

        What Webex Connect posts when you click Verify is not published; an empty JSON
        object is this fake's assumption.
        """
        if self.bot_url is None:
            raise ConfigurationError("set bot_url (the bot's endpoint) before verifying")
        try:
            response = self._session().post(
                self.bot_url,
                data=b"{}",
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException:
            return False
        ok = 200 <= response.status_code < 300 and self._carries_token(response)
        if ok:
            with self._cond:
                self.active = True
                self.consecutive_failures = 0
        return ok

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._cond:
                self._sessions.append(session)
        return session

    def _carries_token(self, response: requests.Response) -> bool:
        expected = self.verification_token.encode()
        if hmac.compare_digest(response.content.strip(), expected):
            return True
        try:
            answer = response.json()
        except ValueError:
            return False
        if not isinstance(answer, dict):
            return False
        return any(
            isinstance(v, str) and hmac.compare_digest(v.encode(), expected)
            for v in answer.values()
        )

    def _attempt(self, delivery: WebexDelivery) -> None:
        if self._stopping.is_set():
            return
        with self._cond:
            if not self.active:
                self._finish(delivery, "inactive")
                return
        assert self.bot_url is not None
        started = time.time()
        status: int | None = None
        text = ""
        outcome: Outcome
        try:
            response = self._session().post(
                self.bot_url,
                data=delivery.body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.Timeout:
            outcome = "timeout"
        except requests.RequestException:
            outcome = "error"
        else:
            status = response.status_code
            text = response.text[:500]
            if 200 <= status < 300:
                outcome = "ok" if self._carries_token(response) else "no-token"
            elif status in NOT_RETRIED:
                outcome = "rejected"
            else:
                outcome = "failure"
        attempt = DeliveryAttempt(
            number=len(delivery.attempts) + 1,
            started_at=started,
            elapsed=time.time() - started,
            status=status,
            outcome=outcome,
            response_text=text,
        )
        with self._cond:
            delivery.attempts.append(attempt)
            if outcome == "ok":
                self.consecutive_failures = 0
                self._finish(delivery, "delivered")
            elif outcome == "rejected":
                if self.count_rejections:
                    self._count_failure()
                self._finish(delivery, "rejected")
            else:
                self._count_failure()
                retry = len(delivery.attempts) - 1
                if self.active and retry < len(self.retry_delays):
                    due = time.monotonic() + self.retry_delays[retry]
                    heapq.heappush(self._due, (due, delivery.id, delivery))
                else:
                    self._finish(delivery, "failed" if self.active else "inactive")
            self._cond.notify_all()

    def _finish(self, delivery: WebexDelivery, state: State) -> None:
        with self._cond:
            delivery.state = state
            self._cond.notify_all()

    def _count_failure(self) -> None:
        self.consecutive_failures += 1
        self.peak_consecutive_failures = max(
            self.peak_consecutive_failures, self.consecutive_failures
        )
        if self.consecutive_failures >= self.deactivate_after:
            self.active = False

    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                now = time.monotonic()
                if not self._due or self._due[0][0] > now:
                    wait = self._due[0][0] - now if self._due else 0.5
                    self._cond.wait(min(wait, 0.5))
                    continue
                _, _, delivery = heapq.heappop(self._due)
            try:
                self._pool.submit(self._attempt, delivery)
            except RuntimeError:  # the pool is shutting down
                return

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every delivery sent so far reached its final state."""
        self.wait_for(lambda: all(d.done for d in self.deliveries), timeout, what="the deliveries")

    # bot → Webex ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """The integration's webhook: record the bot's events."""
        if request.path.rstrip("/") != f"/events/{self.webhook_id}":
            return Response.error(404, "Not found.")
        if request.method != "POST":
            return Response.error(405, "Method not allowed.")
        if self.service_key is not None:
            got = request.headers.get("key", "").encode()
            if not hmac.compare_digest(got, self.service_key.encode()):
                return self.refuse(401, "missing or wrong service key in the 'key' header")
        if len(request.body) > self.max_body_bytes:
            return self.refuse(430, f"payload larger than {self.max_body_bytes} bytes")
        try:
            body = json.loads(request.body)
        except ValueError:
            return self.refuse(400, "body is not JSON")
        problem = _reply_problem(body)
        if problem is not None:
            return self.refuse(400, problem)
        failure = self.scripted_failure("told to fail")
        if failure is not None:
            return failure
        self.record(
            BotEvent(
                eventid=str(body["eventid"]),
                conversation_id=str(body["conversation_id"]),
                body=body,
                headers=dict(request.headers),
                at=time.time(),
            )
        )
        return Response.json(200, {"status": "accepted"})

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[BotEvent]:
        """Wait until the bot posted ``count`` events; return them (raises ``TimeoutError``)."""
        return self.wait_for(count, timeout, what=f"{count} bot events")

    def events_for(self, conversation_id: str, eventid: str | None = None) -> list[BotEvent]:
        """The bot's events of one conversation (of one ``eventid`` when given), in order."""
        with self._cond:
            return [
                e
                for e in self.events
                if e.conversation_id == conversation_id
                and (eventid is None or e.eventid == eventid)
            ]

    def texts(self, conversation_id: str) -> list[str]:
        """The messages (``eventid`` 1001) the bot sent to a conversation."""
        return [e.message or "" for e in self.events_for(conversation_id, EVENT_MESSAGE)]

    def handovers(self, conversation_id: str) -> list[BotEvent]:
        """The handover events (``eventid`` 1002) of a conversation."""
        return self.events_for(conversation_id, EVENT_HANDOVER)


def _reply_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for field in ("eventid", "conversation_id"):
        value = body.get(field)
        if not isinstance(value, (str, int)) or value == "":
            return f"{field}: required field is missing"
    stamp = body.get("Timestamp")
    if stamp is not None and not (isinstance(stamp, str) and _REPLY_TIMESTAMP.fullmatch(stamp)):
        return "Timestamp: expected 'YYYY-MM-DD hh:mm:ss.SSS' in GMT"
    return None
