"""The outbox: every outbound call is stored before its first attempt and removed only once the
far side accepted it. Items of one chat go out one at a time, in order; a chat whose channel keeps
failing backs off on its own without holding up other chats; an item past its deadline (or
refused for good) moves to the dead letters, where an operator can retry or drop it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from omnichannel.errors import DeliveryError
from omnichannel.runtime.stores import QueueItem, Store

__all__ = ["Deliver", "Outbox"]

log = logging.getLogger(__name__)

Deliver = Callable[[Mapping[str, Any]], None]
"""Performs one delivery attempt of a payload; raises :class:`DeliveryError` on failure."""


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
    ) -> None:
        self.store = store
        self.workers = max(1, workers)
        self.deadline = deadline
        self.backoff = backoff
        self.cap = cap
        self.lease = lease
        self.inline = inline
        self.poll_interval = poll_interval
        self.owner = uuid.uuid4().hex
        self._destinations: dict[str, Deliver] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(self.workers)
        self._inflight = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    # set-up ---------------------------------------------------------------------------------
    def register(self, destination: str, deliver: Deliver) -> None:
        """Route items whose ``destination`` is ``destination`` to ``deliver``."""
        self._destinations[destination] = deliver
        self._wake.set()

    def start(self) -> None:
        """Start the background delivery thread (resuming items stored by earlier runs)."""
        if self.inline or self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="omnichannel-outbox")
        self._thread = threading.Thread(
            target=self._loop, name="omnichannel-outbox-claim", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Finish what is due (up to ``timeout`` seconds), then stop; ``True`` when drained."""
        drained = self.drain(timeout) if timeout else False
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return drained

    # use ------------------------------------------------------------------------------------
    def put(self, destination: str, chat_key: str, payload: Mapping[str, Any]) -> QueueItem:
        """Store a call for delivery; it is durable once this returns."""
        item = QueueItem(destination=destination, chat_key=chat_key, payload=dict(payload))
        self.store.add(item)
        if self.inline:
            self.flush()
        else:
            self._wake.set()
        return item

    def flush(self) -> int:
        """Deliver every due item now, in the calling thread; return how many were delivered."""
        delivered = 0
        while True:
            items = self.store.claim("outbox", self.owner, time.time(), 64, self.lease)
            if not items:
                return delivered
            for item in items:
                delivered += self._deliver(item)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no item is pending or in flight, or ``timeout``; ``True`` when drained."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.inline:
                self.flush()
            if self._pending_due() == 0:
                return True
            if end is not None and time.monotonic() >= end:
                return False
            self._wake.set()
            time.sleep(0.02)

    def _pending_due(self) -> int:
        with self._lock:
            inflight = self._inflight
        return inflight + self.store.pending("outbox")

    # machinery ------------------------------------------------------------------------------
    def _loop(self) -> None:
        pool = self._pool
        assert pool is not None
        while not self._stopping.is_set():
            free = 0
            while self._slots.acquire(blocking=False):
                free += 1
            items: list[QueueItem] = []
            if free:
                try:
                    items = self.store.claim("outbox", self.owner, time.time(), free, self.lease)
                except Exception:
                    log.exception("outbox: claiming from the store failed")
            for _ in range(free - len(items)):
                self._slots.release()
            for item in items:
                with self._lock:
                    self._inflight += 1
                pool.submit(self._deliver_in_pool, item)
            if not items:
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def _deliver_in_pool(self, item: QueueItem) -> None:
        try:
            self._deliver(item)
        finally:
            with self._lock:
                self._inflight -= 1
            self._slots.release()
            self._wake.set()

    def _deliver(self, item: QueueItem) -> int:
        deliver = self._destinations.get(item.destination)
        now = time.time()
        if deliver is None:
            # another process (or a later start) may know this destination: leave it stored
            item.next_attempt_at = now + max(self.poll_interval, 1.0)
            self.store.reschedule(item)
            return 0
        item.attempts += 1
        try:
            deliver(item.payload)
        except DeliveryError as exc:
            return self._failed(item, exc, now)
        except Exception as exc:
            log.exception("outbox: delivery to %s raised", item.destination)
            return self._failed(item, DeliveryError(f"{type(exc).__name__}: {exc}"), now)
        try:
            self.store.ack(item)
        except Exception:  # the item stays stored and is re-sent: at-least-once, never lost
            log.exception("outbox: acknowledging a delivered item failed")
        return 1

    def _failed(self, item: QueueItem, exc: DeliveryError, now: float) -> int:
        item.last_error = str(exc)
        if not item.deadline:
            item.deadline = now + self.deadline
        wait = min(self.cap, self.backoff * 2 ** (item.attempts - 1))
        wait *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
        if exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        if not exc.retryable or now + wait > item.deadline:
            log.warning(
                "outbox: %s item %s dead-lettered after %d attempt(s): %s",
                item.destination,
                item.id,
                item.attempts,
                item.last_error,
            )
            self.store.bury(item)
        else:
            log.info(
                "outbox: %s item %s attempt %d failed (%s); next in %.1fs",
                item.destination,
                item.id,
                item.attempts,
                item.last_error,
                wait,
            )
            item.next_attempt_at = now + wait
            self.store.reschedule(item)
        return 0
