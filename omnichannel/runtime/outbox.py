"""The outbox: every outbound call is stored before its first attempt and removed only once the
far side accepted it. Items of one chat go out one at a time, in order; a chat whose channel keeps
failing backs off on its own without holding up other chats; an item past its deadline (or
refused for good) moves to the dead letters, where an operator can retry or drop it.

During a turn, :meth:`Outbox.put` does not write at once: the replies are collected
(:meth:`Outbox.collect`) and committed together with the turn's completion, under ids derived
from the turn (``{turn id}.{index}``), so a turn that is run again never sends a reply twice.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from omnichannel.errors import DeliveryError
from omnichannel.runtime.metrics import ChannelMetrics, Metrics
from omnichannel.runtime.stores.base import OUTBOX, QueueItem, Store, new_owner_id
from omnichannel.runtime.workers import (
    QueueConsumer,
    RateLimitedLog,
    item_log_fields,
    retry_store_call,
)

__all__ = ["Deliver", "Outbox", "ReplyBatch", "current_turn_id"]

log = logging.getLogger(__name__)

Deliver = Callable[[Mapping[str, Any]], None]
"""Performs one delivery attempt of a payload; raises :class:`DeliveryError` on failure."""


@attrs.define
class ReplyBatch:
    """The outbox items one turn produced, committed with the turn's completion."""

    outbox: Outbox
    turn_id: str
    items: list[QueueItem] = attrs.field(factory=list)

    def add(self, destination: str, chat_key: str, payload: Mapping[str, Any]) -> QueueItem:
        """Collect one item under the next deterministic id of the turn."""
        item = QueueItem(
            id=f"{self.turn_id}.{len(self.items)}",
            destination=destination,
            chat_key=chat_key,
            payload=dict(payload),
        )
        self.items.append(item)
        return item


_BATCH: contextvars.ContextVar[ReplyBatch | None] = contextvars.ContextVar(
    "omnichannel_reply_batch", default=None
)


def current_turn_id() -> str | None:
    """The id of the turn running in this context (``None`` outside a turn)."""
    batch = _BATCH.get()
    return batch.turn_id if batch is not None else None


class Outbox:
    """Durable, ordered, retrying delivery of outbound calls through a :class:`Store`.

    Args:
        store: where items live (memory, SQLite, Redis).
        workers: deliveries in flight at once (each to a different chat).
        deadline: seconds after the first failure before an item is dead-lettered.
        backoff: the first retry waits about this many seconds, doubling each time (with
            jitter); a server's ``Retry-After`` is honoured.
        cap: the longest wait between two attempts.
        lease: seconds a claimed chat stays reserved for this outbox.
        inline: deliver in the calling thread of :meth:`put` (tests, notebooks, serverless);
            items that fail stay stored and are retried by :meth:`flush` or a later start.
        poll_interval: how often a background outbox looks for due items it was not woken for
            (retries, items added by other processes).
        owner: the lease owner id (one per process by default).
        metrics: where deliveries are counted (the runtime's; by default one of its own,
            :attr:`metrics`).
    """

    def __init__(
        self,
        store: Store,
        *,
        workers: int = 4,
        deadline: float = 3600.0,
        backoff: float = 1.0,
        cap: float = 60.0,
        lease: float = 60.0,
        inline: bool = False,
        poll_interval: float = 0.25,
        owner: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics if metrics is not None else Metrics(store)
        self.deadline = deadline
        self.backoff = backoff
        self.cap = cap
        self.inline = inline
        self.owner = owner or new_owner_id()
        self._destinations: dict[str, Deliver] = {}
        self._stopping = threading.Event()
        self._warn = RateLimitedLog(log)
        self.consumer = QueueConsumer(
            store,
            OUTBOX,
            self._deliver,
            owner=self.owner,
            workers=workers,
            lease=lease,
            poll_interval=poll_interval,
            name="omnichannel-outbox",
        )

    # set-up ---------------------------------------------------------------------------------
    def register(self, destination: str, deliver: Deliver) -> None:
        """Route items whose ``destination`` is ``destination`` to ``deliver``."""
        self._destinations[destination] = deliver
        self.consumer.wake()

    def start(self) -> None:
        """Start background delivery (resuming items stored by earlier runs)."""
        if not self.inline:
            self._stopping.clear()
            self.consumer.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Deliver what is due (up to ``timeout`` seconds), then stop; ``True`` when drained."""
        drained = self.drain(timeout) if timeout else False
        self._stopping.set()
        self.consumer.stop(5.0)
        return drained

    # use ------------------------------------------------------------------------------------
    @contextmanager
    def collect(self, turn_id: str) -> Iterator[ReplyBatch]:
        """Collect what :meth:`put` receives in this context (a turn) instead of storing it."""
        batch, token = self.begin_turn(turn_id)
        try:
            yield batch
        finally:
            self.end_turn(token)

    def begin_turn(self, turn_id: str) -> tuple[ReplyBatch, contextvars.Token[ReplyBatch | None]]:
        """:meth:`collect` without a context manager (the runtime's hot path): collect from
        now on in this context; pass the token to :meth:`end_turn` when the turn ends."""
        batch = ReplyBatch(self, turn_id)
        return batch, _BATCH.set(batch)

    @staticmethod
    def end_turn(token: contextvars.Token[ReplyBatch | None]) -> None:
        """Stop collecting (undo :meth:`begin_turn`)."""
        _BATCH.reset(token)

    def put(self, destination: str, chat_key: str, payload: Mapping[str, Any]) -> QueueItem:
        """Store a call for delivery; it is durable once this returns.

        Inside a turn the call is collected and stored with the turn's completion instead.
        """
        batch = _BATCH.get()
        if batch is not None and batch.outbox is self:
            return batch.add(destination, chat_key, payload)
        item = QueueItem(destination=destination, chat_key=chat_key, payload=dict(payload))
        self.store.add(item)
        self.notify()
        return item

    def notify(self) -> None:
        """New items were stored: deliver them (now when inline, else wake the workers)."""
        if self.inline:
            self.flush()
        else:
            self.consumer.wake()

    def flush(self) -> int:
        """Deliver every due item now, in the calling thread; return how many were handled."""
        return self.consumer.process_due()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no item is pending or in flight, or ``timeout``; ``True`` when drained."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.inline:
                self.flush()
            if self.consumer.inflight + self.store.pending(OUTBOX) == 0:
                return True
            if end is not None and time.monotonic() >= end:
                return False
            self.consumer.wake()
            time.sleep(0.02)

    # machinery ------------------------------------------------------------------------------
    def _end(self, call: Callable[[], object], what: str) -> None:
        retry_store_call(call, what=what, stopping=self._stopping, warn=self._warn)

    def _deliver(self, item: QueueItem) -> None:
        deliver = self._destinations.get(item.destination)
        now = time.time()
        if deliver is None:
            # another process (or a later start) may know this destination: leave it stored
            item.next_attempt_at = now + 1.0
            self._end(lambda: self.store.reschedule(item), "outbox: rescheduling an item")
            return
        item.attempts += 1
        stats = self.metrics.channel(item.destination)
        started = time.perf_counter()
        try:
            deliver(item.payload)
        except DeliveryError as exc:
            stats.delivery.observe(time.perf_counter() - started)
            self._failed(item, exc, now, stats)
            return
        except Exception as exc:
            stats.delivery.observe(time.perf_counter() - started)
            log.exception(
                "outbox: delivery to %s raised", item.destination, extra=item_log_fields(item)
            )
            self._failed(item, DeliveryError(f"{type(exc).__name__}: {exc}"), now, stats)
            return
        stats.delivery.observe(time.perf_counter() - started)
        stats.delivered += 1
        # delivered: the ack is retried while the store is down, so the chat moves on as soon
        # as it is back (if it never comes back in time the item is sent again: at least once)
        try:
            self.store.ack(item)
        except Exception as exc:
            retry_store_call(
                lambda: self.store.ack(item),
                what="outbox: acknowledging a delivered item",
                stopping=self._stopping,
                warn=self._warn,
                failed=exc,
            )

    def _failed(
        self, item: QueueItem, exc: DeliveryError, now: float, stats: ChannelMetrics
    ) -> None:
        item.last_error = str(exc)
        stats.delivery_failed += 1
        if not item.deadline:
            item.deadline = now + self.deadline
        wait = min(self.cap, self.backoff * 2 ** (item.attempts - 1))
        wait *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
        if exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        if not exc.retryable or now + wait > item.deadline:
            stats.delivery_dead += 1
            log.error(
                "outbox: %s item %s dead-lettered after %d attempt(s): %s",
                item.destination,
                item.id,
                item.attempts,
                item.last_error,
                extra=item_log_fields(item),
            )
            self._end(lambda: self.store.bury(item), "outbox: dead-lettering an item")
        else:
            # the first failure of an item is a warning; its later retries are routine
            log.log(
                logging.WARNING if item.attempts == 1 else logging.INFO,
                "outbox: %s item %s attempt %d failed (%s); next in %.1fs",
                item.destination,
                item.id,
                item.attempts,
                item.last_error,
                wait,
                extra=item_log_fields(item),
            )
            item.next_attempt_at = now + wait
            self._end(lambda: self.store.reschedule(item), "outbox: rescheduling an item")
