"""Workers that claim items of one queue (the inbox's turns or the outbox's calls) from the store
and handle them on a thread pool.

A :class:`QueueConsumer` leases chat heads under its owner id, so a chat's items are handled one
at a time and in order while chats run in parallel. It renews the leases of the items it is
working on, so a long turn is never taken over by another worker while it runs, and a lease
whose worker died runs out and is claimed again. One consumer serves every channel of a runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from omnichannel.runtime.stores.base import QueueItem, QueueName, Store

__all__ = ["QueueConsumer", "RateLimitedLog", "item_log_fields"]

log = logging.getLogger(__name__)


def item_log_fields(item: QueueItem) -> dict[str, str | None]:
    """The JSON log line's fields of a queue item: ``channel``, ``chat`` and ``turn`` (an outbox
    item's turn is the part of its id before the dot, and its own id is ``reply``)."""
    destination, chat = item.destination, item.chat_key
    if chat.startswith(destination) and chat[len(destination) : len(destination) + 1] == ":":
        chat = chat[len(destination) + 1 :]
    if item.queue == "inbox":
        return {"channel": destination, "chat": chat, "turn": item.id}
    turn, dot, _ = item.id.rpartition(".")
    return {"channel": destination, "chat": chat, "turn": turn if dot else None, "reply": item.id}


class RateLimitedLog:
    """Logs one line per ``interval`` seconds for a recurring condition, with a count."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next = now + self.interval
        if suppressed:
            message += " (%d more like it since the last report)"
            args = (*args, suppressed)
        self.logger.log(level, message, *args)


class QueueConsumer:
    """Claims due chat heads of ``queue`` and calls ``handle(item)`` for each on a thread pool.

    ``handle`` must end the item itself (``ack``, ``reschedule``, ``bury`` or ``inbox_complete``);
    if it raises, the item stays leased until its lease runs out and is then claimed again.

    Args:
        store: the store holding the queue.
        queue: ``"inbox"`` or ``"outbox"``.
        handle: called once per claimed item, in a pool thread.
        owner: the lease owner id (names this process; see ``new_owner_id``).
        workers: items handled at once.
        lease: seconds a claimed chat stays reserved (renewed while its item is handled).
        poll_interval: how often to look for due items nobody woke the consumer for.
        name: thread-name prefix.
    """

    def __init__(
        self,
        store: Store,
        queue: QueueName,
        handle: Callable[[QueueItem], None],
        *,
        owner: str,
        workers: int,
        lease: float,
        poll_interval: float = 0.25,
        name: str = "omnichannel",
    ) -> None:
        self.store = store
        self.queue = queue
        self.handle = handle
        self.owner = owner
        self.workers = max(1, workers)
        self.lease = lease
        self.poll_interval = poll_interval
        self.name = name
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight: dict[str, str] = {}  # item id -> chat key
        self._warn = RateLimitedLog(log)

    @property
    def running(self) -> bool:
        """``True`` while the claim thread runs."""
        return self._thread is not None

    @property
    def inflight(self) -> int:
        """Items being handled now."""
        with self._lock:
            return len(self._inflight)

    def start(self) -> None:
        """Start claiming in the background (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self.name}")
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-claim", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due items now (a new item was stored)."""
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop claiming; wait up to ``timeout`` for the items in hand; ``True`` when none is left.

        Items not finished in time keep their lease until it runs out (or until a restart on
        this machine releases it); nothing is lost.
        """
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)
        finished = self.wait_idle(timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=finished, cancel_futures=True)
        return finished

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no item is in hand; ``True`` when none is."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    def process_due(self, limit: int = 64) -> int:
        """Claim and handle every due item in the calling thread (inline mode); return how many."""
        done = 0
        store, queue = self.store, self.queue
        while True:
            items = store.claim(queue, self.owner, time.time(), limit, self.lease)
            if not items:
                return done
            for item in items:
                self._run(item)
                done += 1
            if len(items) < limit and not store.pending(queue):
                return done  # (cheaper than a claim that finds nothing)

    # machinery ------------------------------------------------------------------------------
    def _loop(self) -> None:
        pool = self._pool
        assert pool is not None
        next_renewal = time.monotonic() + self.lease / 3
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_renewal:
                next_renewal = now + self.lease / 3
                self._renew()
            with self._lock:
                free = self.workers - len(self._inflight)
            items: list[QueueItem] = []
            if free > 0:
                try:
                    items = self.store.claim(self.queue, self.owner, time.time(), free, self.lease)
                except Exception as exc:
                    self._warn(
                        logging.WARNING,
                        "%s: claiming from the store failed: %s: %s",
                        self.queue,
                        type(exc).__name__,
                        exc,
                    )
                    self._stopping.wait(0.5)
                    continue
            for item in items:
                with self._lock:
                    self._inflight[item.id] = item.chat_key
                pool.submit(self._run_in_pool, item)
            if not items or free <= len(items):
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def _renew(self) -> None:
        with self._lock:
            chats = list(set(self._inflight.values()))
        if not chats:
            return
        try:
            self.store.renew_leases(self.queue, self.owner, chats, self.lease)
        except Exception as exc:
            self._warn(
                logging.WARNING, "%s: renewing leases failed: %s", self.queue, type(exc).__name__
            )

    def _run_in_pool(self, item: QueueItem) -> None:
        try:
            self._run(item)
        finally:
            with self._lock:
                self._inflight.pop(item.id, None)
                if not self._inflight:
                    self._idle.notify_all()
            self._wake.set()

    def _run(self, item: QueueItem) -> None:
        try:
            self.handle(item)
        except Exception:
            log.exception("%s: handling item %s raised", self.queue, item.id)


def retry_store_call(
    call: Callable[[], object],
    *,
    what: str,
    stopping: threading.Event | None = None,
    budget: float = 30.0,
    warn: RateLimitedLog | None = None,
    failed: Exception | None = None,
) -> bool:
    """Call ``call`` until it succeeds, backing off, for up to ``budget`` seconds.

    Used to end an item (ack, complete, reschedule) while the store is briefly unavailable: the
    worker that holds a chat keeps trying, so the chat is free again as soon as the store is.
    ``failed``: the error of a first attempt the caller already made (it is reported, and the
    next attempt waits as after a failed one). Returns ``False`` when the budget ran out (the
    lease then runs out and the item is redone).
    """
    end = time.monotonic() + budget
    wait = 0.05
    while True:
        if failed is None:
            try:
                call()
                return True
            except Exception as exc:
                failed = exc
        (warn or RateLimitedLog(log))(
            logging.WARNING, "%s failed, retrying: %s: %s", what, type(failed).__name__, failed
        )
        failed = None
        if time.monotonic() + wait > end or (stopping is not None and stopping.is_set()):
            return False
        time.sleep(wait)
        wait = min(wait * 2, 1.0)
