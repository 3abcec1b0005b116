"""The one webhook pipeline every channel runs on, and the runtime that keeps its promise.

::

    request ─► path / method ─► verify ─► body size ─► parse ─► admit (dedupe mark + turn
    stored in the inbox, one atomic write) ─► acknowledge ─► a worker claims the turn ─► the
    bot runs ─► its replies are committed to the outbox with the turn's completion ─► delivery

:class:`WebhookChannel` is the base of every inbound channel: it owns the order of the stages,
the status answers shared by every platform (405, 413, 503 + ``Retry-After``) and the lifecycle.
A platform supplies only its parts: ``route``/``verify`` (its 404/400/401), ``parse`` (its
deliveries: chat, dedupe key, a JSON payload), ``acknowledge`` (its 200 body), ``process`` (runs
the bot on a stored payload, in a worker) and ``deliver`` (sends one outbox item).

:class:`Runtime` holds the store, the inbox workers and the outbox of one or more channels.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from omnichannel.runtime.conversation import TurnRecords, activate, deactivate
from omnichannel.runtime.http import Headers, Request, Response
from omnichannel.runtime.metrics import ChannelMetrics, Metrics
from omnichannel.runtime.outbox import Outbox
from omnichannel.runtime.stores import (
    INBOX,
    OUTBOX,
    MemoryStore,
    QueueItem,
    StateConflict,
    Store,
    new_owner_id,
    open_store,
    owner_is_dead,
)
from omnichannel.runtime.workers import (
    QueueConsumer,
    RateLimitedLog,
    item_log_fields,
    retry_store_call,
)

__all__ = ["Delivery", "Runtime", "WebhookChannel"]

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Delivery:
    """One unit of work a webhook request carries (a visitor message, a status, a staff reply).

    Attributes:
        chat: the conversation it belongs to (turns of one chat run one at a time, in order).
        key: the delivery's dedupe key (``None``: every copy is processed).
        payload: what the worker needs to run it (JSON-serializable; stored in the inbox).
        ttl: how long ``key`` is remembered (``None``: the runtime's ``dedupe_ttl``).
        message_id: the platform's id of the message, when it has one (only logged: the
            ``message_id`` field of the JSON log lines).
    """

    chat: str
    key: str | None
    payload: Mapping[str, Any]
    ttl: float | None = None
    message_id: str | None = None


_STATE_RERUNS = 3
"""Times a turn runs again at once when another turn changed a key of state it changed too;
then its values are written over the other's (a warning names the key)."""

TurnWrapper = Callable[[Callable[[], None]], None]
"""``wrapper(run)`` must call ``run()`` once (and may do work around it)."""

_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # threads do not survive fork(): a child (gunicorn --preload) starts its own on first use
    for runtime in list(_RUNTIMES):
        runtime._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Runtime:
    """The store, the inbox workers and the outbox of one or more channels.

    Args:
        store: a :class:`~omnichannel.runtime.stores.Store` or a store URL (``memory://``,
            ``sqlite:///path.db``, ``redis://host:6379/0``); memory by default.
        inline: run each admitted turn and deliver its replies before ``handle`` returns
            (tests, notebooks, serverless); otherwise background workers do it.
        workers: turns run at once (each of a different chat).
        background: run turns and deliver replies in this process (``False``: only admit
            turns, for webhook front-ends whose turns ``omnichannel worker`` processes run).
        dedupe_ttl: seconds a delivery id is remembered (platforms retry within an hour).
        max_pending: turns and replies waiting above which webhooks answer the platform's
            retryable status (503 + ``Retry-After``) instead of admitting more.
        pace_above: flow control: while more than this many turns and replies wait, an
            acknowledgement is held back (up to ``max_ack_delay`` seconds) until the pipeline
            catches up, so a platform sends no faster than the bot answers (``None``: off).
        max_ack_delay: the longest an acknowledgement is held back by ``pace_above`` (``0``:
            never; keep it well under the platform's timeout).
        admission_concurrency: webhook requests writing to the store at once (the others wait
            their turn without taking the store's lock from the workers).
        retry_after: seconds put in ``Retry-After`` when refusing.
        turn_lease: seconds a claimed turn stays reserved (renewed while it runs; a turn whose
            worker died is run again once its lease runs out).
        max_turn_attempts: a turn whose processing raises this many times is dead-lettered.
        outbox_workers, outbox_deadline, outbox_backoff, outbox_cap: see
            :class:`~omnichannel.runtime.outbox.Outbox`.

    Attributes:
        metrics: what the runtime counted, per channel, and the store's gauges
            (:class:`~omnichannel.runtime.metrics.Metrics`: ``snapshot()``, ``render()``).
    """

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        inline: bool = False,
        workers: int = 8,
        background: bool = True,
        dedupe_ttl: float = 24 * 3600,
        max_pending: int = 10_000,
        retry_after: int = 5,
        turn_lease: float = 60.0,
        max_turn_attempts: int = 5,
        admission_concurrency: int = 2,
        pace_above: int | None = 256,
        max_ack_delay: float = 0.0,
        outbox_workers: int = 8,
        outbox_deadline: float = 3600.0,
        outbox_backoff: float = 1.0,
        outbox_cap: float = 60.0,
    ) -> None:
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = open_store(store)
        self.store: Store = store
        self.inline = inline
        self.background = background
        self.dedupe_ttl = dedupe_ttl
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.max_turn_attempts = max_turn_attempts
        self._workers = workers
        self._admission_concurrency = max(1, admission_concurrency)
        self.pace_above = pace_above
        self.max_ack_delay = max_ack_delay
        self._turn_lease = turn_lease
        self._outbox_options: dict[str, Any] = {
            "workers": outbox_workers,
            "deadline": outbox_deadline,
            "backoff": outbox_backoff,
            "cap": outbox_cap,
        }
        self._channels: dict[str, WebhookChannel] = {}
        self._turn_wrappers: list[TurnWrapper] = []
        self._warn = RateLimitedLog(log)
        self.metrics = Metrics(self.store)
        self._build()
        _RUNTIMES.add(self)

    def _build(self) -> None:
        self.owner = new_owner_id()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._pending_seen = 0
        self._admission_slots = [threading.Lock() for _ in range(self._admission_concurrency)]
        self._admission_waits = 0
        self._pending_at = 0.0
        self._admitted_since = 0
        self.outbox = Outbox(
            self.store,
            inline=self.inline,
            owner=self.owner,
            metrics=self.metrics,
            **self._outbox_options,
        )
        self.turns = QueueConsumer(
            self.store,
            INBOX,
            self._run_turn,
            owner=self.owner,
            workers=self._workers,
            lease=self._turn_lease,
            name="omnichannel-bot",
        )

    def _reset_after_fork(self) -> None:
        channels = self._channels
        self.metrics.reset_after_fork()
        self._build()
        for channel in channels.values():
            self.outbox.register(channel.destination, channel.deliver)

    # channels -------------------------------------------------------------------------------
    def register(self, channel: WebhookChannel) -> None:
        """Route turns and outbox items of ``channel.destination`` to ``channel``."""
        self._channels[channel.destination] = channel
        self.metrics.channel(channel.destination)  # its series exist (at 0) from the start
        self.outbox.register(channel.destination, channel.deliver)

    def wrap_turns(self, wrapper: TurnWrapper) -> None:
        """Run every turn as ``wrapper(run)`` (e.g. Django's connection handling around it)."""
        if wrapper not in self._turn_wrappers:
            self._turn_wrappers.append(wrapper)

    @property
    def channels(self) -> Mapping[str, WebhookChannel]:
        """The registered channels by destination."""
        return dict(self._channels)

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers and the outbox, resuming what earlier runs left (idempotent).

        Leases held by dead processes of this machine (a crashed predecessor) are released at
        once, so their turns and replies resume without waiting for the leases to run out.
        """
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        try:
            for owner in self.store.lease_owners():
                if owner != self.owner and owner_is_dead(owner):
                    released = self.store.release_owner(owner)
                    log.info("released %d lease(s) of dead process %s", released, owner)
        except Exception as exc:
            log.warning("could not look for leases of dead processes: %s", type(exc).__name__)
        if self.inline:
            return
        if self.background:
            self.outbox.start()
            self.turns.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until every admitted turn ran and every reply was delivered (starts the runtime)."""
        self.start()
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.inline:
                self.turns.process_due()
            if self.turns.inflight + self.store.pending(INBOX) == 0:
                break
            if end is not None and time.monotonic() >= end:
                return False
            self.turns.wake()
            time.sleep(0.02)
        left = None if end is None else max(0.0, end - time.monotonic())
        return self.outbox.drain(left)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop: finish running turns (up to ``timeout``), deliver what is due, release the store.

        Turns not yet started stay in the inbox for the next start (one log line says how
        many). ``True`` when nothing was left behind.
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        end = None if timeout is None else time.monotonic() + timeout
        finished = self.turns.stop(timeout)
        if self.background or self.inline:
            left = None if end is None else max(0.5, end - time.monotonic())
            delivered = self.outbox.stop(left)
        else:  # a front-end delivers nothing: its workers do
            delivered = self.outbox.stop(0)
        try:
            turns_left, replies_left = self.store.pending(INBOX), self.store.pending(OUTBOX)
        except Exception:
            turns_left = replies_left = -1
        if turns_left or replies_left or not finished:
            level = logging.WARNING if isinstance(self.store, MemoryStore) else logging.INFO
            log.log(
                level,
                "stopped with %s turn(s) in the inbox and %s reply(ies) in the outbox%s",
                turns_left,
                replies_left,
                " (lost: the memory store does not survive a restart)"
                if level == logging.WARNING
                else "; the next start resumes them",
            )
        self.store.close()
        return finished and delivered and not turns_left and not replies_left

    # admission ------------------------------------------------------------------------------
    def backlog(self) -> int:
        """Turns waiting plus replies pending, sampled from the store at most every 20 ms."""
        now = time.monotonic()
        with self._lock:
            if now - self._pending_at < 0.02:
                return self._pending_seen + self._admitted_since
        pending = self.store.pending(INBOX) + self.store.pending(OUTBOX)
        with self._lock:
            self._pending_seen, self._pending_at, self._admitted_since = pending, now, 0
        return pending

    def overloaded(self) -> bool:
        """``True`` when the inbox and outbox hold ``max_pending`` items or more."""
        return self.backlog() >= self.max_pending

    def overloaded_now(self) -> bool:
        """:meth:`overloaded` from the last sample alone, without a store call (for an event
        loop): ``False`` when the sample is older than 50 ms, so a request then takes the full
        path, which samples again."""
        if time.monotonic() - self._pending_at > 0.05:
            return False
        return self._pending_seen + self._admitted_since >= self.max_pending

    def shed(
        self, channel: WebhookChannel, request: Request, *, busy: bool = False
    ) -> Response | None:
        """The channel's retryable refusal, at once, when the runtime is over ``max_pending``
        (from the last sample: no store call, no parsing) or the server says it is saturated
        (``busy``); ``None``: handle the request."""
        over = self.overloaded_now()
        if not (over or busy):
            return None
        refusal = channel.unavailable(self.retry_after)
        if refusal is not None:
            self.metrics.channel(channel.destination).refused += 1
            if over:
                self._warn(
                    logging.WARNING,
                    "%s: inbox holds %d+ turns (max_pending): answering %d",
                    channel.destination,
                    self.max_pending,
                    refusal.status,
                )
            else:
                self._warn(
                    logging.WARNING,
                    "%s: more webhooks arrive than can be stored at once: answering %d",
                    channel.destination,
                    refusal.status,
                )
        return refusal

    def _pace(self) -> None:
        # flow control: while the pipeline is behind, hold the acknowledgement a little (up to
        # max_ack_delay), so a platform that waits for each answer sends no faster than the bot
        # answers, and an acknowledged message is answered within seconds, not minutes
        if self.pace_above is None or self.inline or self.max_ack_delay <= 0:
            return
        end = time.monotonic() + self.max_ack_delay
        while self.backlog() > self.pace_above and time.monotonic() < end:
            time.sleep(0.01)

    def admit(
        self, channel: WebhookChannel, request: Request, deliveries: Sequence[Delivery]
    ) -> Response:
        """Store each delivery as a turn (with its dedupe mark), then acknowledge.

        Nothing is acknowledged that was not stored: when the store fails, or the inbox is
        over ``max_pending``, the channel's retryable answer goes back instead (and a delivery
        stored before the failure is deduped when the platform retries).
        """
        if not self._started:
            self.start()
        destination = channel.destination
        stats = self.metrics.channel(destination)
        if deliveries:
            try:
                over = self.overloaded()
            except Exception:
                over = False  # the admission below reports the store's trouble
            if over:
                refusal = channel.unavailable(self.retry_after)
                if refusal is not None:
                    stats.refused += len(deliveries)
                    self._warn(
                        logging.WARNING,
                        "%s: inbox holds %d+ turns (max_pending): answering %d",
                        destination,
                        self.max_pending,
                        refusal.status,
                    )
                    return refusal
        admitted = 0
        pace = self.pace_above is not None and not self.inline and self.max_ack_delay > 0
        inbox_admit = self.store.inbox_admit
        for index, delivery in enumerate(deliveries):
            item = QueueItem(
                destination=destination,
                chat_key=channel.chat_key(delivery.chat),
                payload=delivery.payload,
            )
            ttl = self.dedupe_ttl if delivery.ttl is None else delivery.ttl
            try:
                if pace:
                    self._pace()
                gate = self._enter_admission()
                try:
                    new = inbox_admit(item, delivery.key, ttl)
                finally:
                    gate.release()
            except Exception as exc:
                refusal = channel.unavailable(self.retry_after)
                self._warn(
                    logging.WARNING,
                    "%s: cannot store a turn (%s: %s): answering %s",
                    destination,
                    type(exc).__name__,
                    exc,
                    refusal.status if refusal is not None else "200 (delivery lost)",
                )
                if refusal is not None:
                    stats.refused += len(deliveries) - index
                    return refusal
                stats.lost += 1
                log.error(
                    "%s: a delivery was acknowledged without being stored",
                    channel.name,
                    extra=_fields(channel, delivery),
                )
                continue
            if new:
                admitted += 1
                stats.accepted += 1
                if log.isEnabledFor(logging.INFO):  # (its fields are not built for nothing)
                    log.info(
                        "%s: chat %s: accepted as turn %s",
                        channel.name,
                        delivery.chat,
                        item.id,
                        extra=_fields(channel, delivery, item.id),
                    )
            else:
                stats.duplicate += 1
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "%s: chat %s: repeated delivery ignored",
                        channel.name,
                        delivery.chat,
                        extra=_fields(channel, delivery),
                    )
        if admitted:
            with self._lock:
                self._admitted_since += admitted
            if self.inline:
                self.turns.process_due()
            elif self.background:
                self.turns.wake()
        return channel.acknowledge(request, deliveries)

    def _enter_admission(self) -> threading.Lock:
        """Take one of the ``admission_concurrency`` slots (a lock, held; release it): a free
        one at once, else wait for one in turn (plain locks: a semaphore costs a webhook about
        a microsecond in Python code)."""
        slots = self._admission_slots
        for slot in slots:
            if slot.acquire(False):
                return slot
        self._admission_waits += 1  # (a lost count only changes which slot is waited for)
        slot = slots[self._admission_waits % len(slots)]
        slot.acquire()
        return slot

    # running turns --------------------------------------------------------------------------
    def _run_turn(self, item: QueueItem) -> None:
        channel = self._channels.get(item.destination)
        if channel is None:
            # a worker of another deployment (or a later start) knows this channel
            item.next_attempt_at = time.time() + 5.0
            retry_store_call(lambda: self.store.reschedule(item), what="inbox: reschedule")
            return
        stats = self.metrics.channel(item.destination)
        stats.turn_started()
        try:
            for attempt in range(_STATE_RERUNS + 1):
                # the last attempt writes its values over a key another turn changed meanwhile
                outcome = self._run_once(channel, item, stats, last=attempt == _STATE_RERUNS)
                if outcome != "rerun":
                    return
                log.info(
                    "%s: turn %s: a key of its state changed under it; running it again",
                    item.destination,
                    item.id,
                )
        finally:
            stats.turn_ended()

    def _run_once(
        self, channel: WebhookChannel, item: QueueItem, stats: ChannelMetrics, *, last: bool
    ) -> str:
        """Run the turn and commit it; ``"rerun"`` when its state conflicted on a key."""
        records = TurnRecords(self.store)
        token = activate(records)
        batch, batch_token = self.outbox.begin_turn(item.id)
        started = time.perf_counter()
        try:
            if self._turn_wrappers:
                run: Callable[[], None] = lambda: channel.process(item.payload)  # noqa: E731
                for wrapper in self._turn_wrappers:
                    run = functools.partial(wrapper, run)
                run()
            else:
                channel.process(item.payload)
        except Exception as exc:
            stats.handler.observe(time.perf_counter() - started)
            self._turn_failed(item, exc, stats)
            return "failed"
        finally:
            self.outbox.end_turn(batch_token)
            deactivate(token)
        stats.handler.observe(time.perf_counter() - started)
        replies = batch.items
        try:
            done = self._complete(item, replies, records, last)
        except Exception as exc:  # the store is unavailable: try again, backing off
            outcome: list[bool | None] = []
            if not retry_store_call(
                lambda: outcome.append(self._complete(item, replies, records, last)),
                what="inbox: completing a turn",
                warn=self._warn,
                failed=exc,
            ):
                log.warning(
                    "%s: turn %s ran but could not be stored as done; it will run again",
                    item.destination,
                    item.id,
                )
                return "failed"
            done = outcome[-1]
        if done is None:
            return "rerun"
        if not done:
            log.info("%s: turn %s was completed by another worker", item.destination, item.id)
            retry_store_call(lambda: self.store.ack(item), what="inbox: releasing a chat")
            return "done"
        stats.completed += 1
        if replies:
            self.outbox.notify()
        return "done"

    def _complete(
        self, item: QueueItem, replies: list[QueueItem], records: TurnRecords, last: bool
    ) -> bool | None:
        """Replies, state and history in one atomic write; ``False`` when another worker
        completed the turn, ``None`` when it must run again. When another writer changed a
        record meanwhile, the turn's changes are applied again to what it wrote, or the turn
        runs again when both changed the same key."""
        while True:
            try:
                writes = records.writes()
                if writes:
                    return self.store.inbox_complete(item, replies, writes)
                # (the signature stores written before state existed know)
                return self.store.inbox_complete(item, replies)
            except StateConflict as conflict:
                log.debug("%s: turn %s: %s", item.destination, item.id, conflict)
                if not records.reload(force=last):
                    return None

    def _turn_failed(self, item: QueueItem, exc: Exception, stats: ChannelMetrics) -> None:
        item.attempts += 1
        item.last_error = f"{type(exc).__name__}: {exc}"
        stats.failed += 1
        if item.attempts >= self.max_turn_attempts:
            stats.dead += 1
            log.error(
                "%s: turn %s dead-lettered after %d attempts",
                item.destination,
                item.id,
                item.attempts,
                exc_info=exc,
                extra=item_log_fields(item),
            )
            retry_store_call(lambda: self.store.bury(item), what="inbox: dead-lettering")
            return
        wait = min(60.0, 2.0**item.attempts) * (0.5 + random.random() / 2)  # noqa: S311
        log.warning(
            "%s: turn %s failed (%s); attempt %d of %d in %.1fs",
            item.destination,
            item.id,
            item.last_error,
            item.attempts + 1,
            self.max_turn_attempts,
            wait,
            extra=item_log_fields(item),
        )
        item.next_attempt_at = time.time() + wait
        retry_store_call(lambda: self.store.reschedule(item), what="inbox: rescheduling")


def _fields(channel: WebhookChannel, delivery: Delivery, turn: str | None = None) -> dict[str, Any]:
    # the JSON log line's fields of an admission (None: not known)
    return {
        "channel": channel.destination,
        "chat": delivery.chat,
        "message_id": delivery.message_id,
        "turn": turn,
    }


_METHOD_NOT_ALLOWED = b'{"error":"Method not allowed; use POST."}'
_OK = b'{"result":"ok"}'
_UNAVAILABLE = json.dumps({"error": "The bot cannot take events right now; retry later."}).encode()
_JSON_HEADERS = Headers({"Content-Type": "application/json"})  # copied for each answer


class WebhookChannel:
    """The base of every inbound channel: the pipeline's stages in order, platform parts as hooks.

    Subclasses set :attr:`kind` and implement :meth:`parse`, :meth:`process` and
    :meth:`deliver`; they override :meth:`route`, :meth:`verify`, :meth:`acknowledge`,
    :meth:`too_large` and :meth:`unavailable` where their status contract differs.
    """

    kind: str = "channel"
    allowed_methods: tuple[str, ...] = ("POST",)
    max_body: int = 1 << 20
    name: str
    runtime: Runtime

    def _attach(
        self,
        runtime: Runtime | None,
        name: str,
        *,
        store: Any = None,
        inline: bool = False,
        **runtime_options: Any,
    ) -> None:
        """Join ``runtime`` (or make one from ``store``, ``inline`` and ``runtime_options``)."""
        self.name = name
        self.runtime = runtime or Runtime(store=store, inline=inline, **runtime_options)
        self.runtime.register(self)

    @property
    def destination(self) -> str:
        """The channel's id in the store (``{kind}:{name}``)."""
        return f"{self.kind}:{self.name}"

    def chat_key(self, chat: object) -> str:
        """The ordering key of a chat of this channel."""
        return f"{self.destination}:{chat}"

    # the pipeline ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one HTTP request to the channel's webhook (the platform's status contract)."""
        try:
            answer = self.route(request)
            if answer is not None:
                return answer
            if request.method not in self.allowed_methods:
                return self.method_not_allowed()
            answer = self.verify(request)
            if answer is not None:
                return answer
            if len(request.body) > self.max_body:
                return self.too_large()
            parsed = self.parse(request)
            if isinstance(parsed, Response):
                return parsed
            return self.runtime.admit(self, request, parsed)
        except Exception:
            log.exception(
                "%s: internal error while accepting a request",
                self.destination,
                extra={"channel": self.destination},
            )
            with contextlib.suppress(Exception):  # counting must not turn a 500 into a crash
                self.runtime.metrics.channel(self.destination).webhook_errors += 1
            return self.internal_error()

    def shed(self, request: Request, *, busy: bool = False) -> Response | None:
        """The answer to give at once, on the server's event loop, when the runtime is over
        ``max_pending`` or the server is saturated (``busy``: more requests wait for a thread
        than it queues): the channel's retryable refusal (503 + ``Retry-After``) for a request
        that passes the cheap checks (path, method, size, credentials), before its body is
        parsed. ``None``: serve the request normally (:meth:`handle`)."""
        try:
            if (
                not (busy or self.runtime.overloaded_now())
                or request.method not in self.allowed_methods
                or self.route(request) is not None
                or len(request.body) > self.max_body
                or self.verify(request) is not None
            ):
                return None
            return self.runtime.shed(self, request, busy=busy)
        except Exception:
            return None  # handle() answers, and logs what is wrong

    # hooks ----------------------------------------------------------------------------------
    def route(self, request: Request) -> Response | None:
        """Refuse a request for another path (``None``: it is for this channel)."""
        return None

    def verify(self, request: Request) -> Response | None:
        """Refuse a request that fails the platform's authentication (``None``: verified)."""
        return None

    def parse(self, request: Request) -> Sequence[Delivery] | Response:
        """The deliveries in the request, or the answer to give at once (malformed, ignored)."""
        raise NotImplementedError

    def acknowledge(self, request: Request, deliveries: Sequence[Delivery]) -> Response:
        """The answer once the deliveries are stored (or were repeats)."""
        return Response(200, _OK, _JSON_HEADERS.copy())

    def method_not_allowed(self) -> Response:
        """405 with ``Allow``."""
        return Response(
            405,
            _METHOD_NOT_ALLOWED,
            {"Allow": ", ".join(self.allowed_methods), "Content-Type": "application/json"},
        )

    def too_large(self) -> Response:
        """The answer to a body over :attr:`max_body` (413)."""
        return Response.error(413, f"Request body is larger than {self.max_body} bytes.")

    def unavailable(self, retry_after: int) -> Response | None:
        """The platform's retryable answer (503 + ``Retry-After``) when nothing can be stored now.

        ``None`` means: acknowledge anyway (admitting over ``max_pending`` when the store
        works), for a platform that punishes repeated errors.
        """
        return Response(
            503, _UNAVAILABLE, {"Content-Type": "application/json", "Retry-After": str(retry_after)}
        )

    def internal_error(self) -> Response:
        """The answer to an unexpected error (500)."""
        return Response.error(500, "Internal server error.")

    def process(self, payload: Mapping[str, Any]) -> None:
        """Run the bot on one stored delivery (in a worker; may run again after a crash)."""
        raise NotImplementedError

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Send one outbox item; raise :class:`~omnichannel.errors.DeliveryError` on failure."""
        raise NotImplementedError

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runtime's workers and outbox (resuming what an earlier run left)."""
        self.runtime.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until every admitted turn ran and every reply went out."""
        return self.runtime.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish running turns and due replies (up to ``timeout``), then stop."""
        return self.runtime.close(timeout)
