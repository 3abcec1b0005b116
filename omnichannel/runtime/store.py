"""State behind one small interface: delivery dedupe, per-chat state, and the outbox.

:class:`MemoryStore` lives here; SQLite and Redis implementations follow the same
:class:`Store` protocol. Every method is safe to call from several threads.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["MemoryStore", "OutboxItem", "Store", "open_store"]


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_item_id() -> str:
    """A unique item id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def _new_id_prefix_after_fork() -> None:
    # a forked worker (gunicorn, multiprocessing) must not repeat its parent's ids: they share
    # one SQLite file or Redis, where equal ids collide
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_new_id_prefix_after_fork)


@attrs.define(kw_only=True)
class OutboxItem:
    """One outbound call waiting to be delivered.

    ``destination`` names the sender registered with the outbox (``"omnichannel"``), ``chat_key``
    the ordering key (items of one key are delivered one at a time, in order), ``payload`` a
    JSON-serializable description of the call. Times are Unix seconds.
    """

    destination: str
    chat_key: str
    payload: Mapping[str, Any]
    id: str = attrs.field(factory=lambda: new_item_id())
    created_at: float = attrs.field(factory=time.time)
    deadline: float = 0.0
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None


@runtime_checkable
class Store(Protocol):
    """What the runtime needs from a state engine.

    Dedupe: :meth:`mark_seen` is an atomic check-and-set with a time to live.
    Chat state: small JSON objects by key (handover flags, ids mapped between systems).
    Outbox: items are claimed per chat (only the head of a chat, only when no other worker holds
    that chat's lease), then acknowledged, rescheduled or moved to the dead letters.
    """

    def mark_seen(self, key: str, ttl: float) -> bool:
        """Record ``key``; ``True`` when it was new, ``False`` when seen within its TTL."""
        ...

    def forget(self, key: str) -> None:
        """Remove a dedupe key (a delivery that could not be accepted after all)."""
        ...

    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        ...

    def set_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Store ``value`` under ``key`` (``None`` deletes it)."""
        ...

    def outbox_add(self, item: OutboxItem) -> None:
        """Persist ``item`` at the tail of its chat's queue."""
        ...

    def outbox_claim(self, owner: str, now: float, limit: int, lease: float) -> list[OutboxItem]:
        """Lease up to ``limit`` due chat heads to ``owner`` for ``lease`` seconds."""
        ...

    def outbox_ack(self, item: OutboxItem) -> None:
        """The item was delivered: remove it and release its chat."""
        ...

    def outbox_reschedule(self, item: OutboxItem) -> None:
        """Save ``attempts``, ``next_attempt_at`` and ``last_error``; release its chat."""
        ...

    def outbox_bury(self, item: OutboxItem) -> None:
        """Move the item to the dead letters (keeping ``last_error``); release its chat."""
        ...

    def outbox_pending(self) -> int:
        """How many items wait for delivery (dead letters excluded)."""
        ...

    def dead_letters(self) -> list[OutboxItem]:
        """The items that gave up, oldest first."""
        ...

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue, due now."""
        ...

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class MemoryStore:
    """Everything in this process's memory: for notebooks, tests and single-process demos.

    Dedupe keys expire after their TTL (evicted lazily, so memory stays bounded by the keys
    seen within one TTL). Nothing survives a restart: use SQLite or Redis for that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._state: dict[str, dict[str, Any]] = {}
        self._queues: dict[str, deque[OutboxItem]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._dead: dict[str, OutboxItem] = {}

    # dedupe ---------------------------------------------------------------------------------
    def mark_seen(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            expiry = self._expiry
            evicted = 0
            while expiry and expiry[0][0] <= now:
                when, old = heapq.heappop(expiry)
                if self._seen.get(old) == when:
                    del self._seen[old]
                    evicted += 1
            if evicted > 1024 and evicted > len(self._seen):
                # a dict never shrinks its table by itself: copy it after a large eviction
                self._seen = dict(self._seen)
            until = self._seen.get(key)
            if until is not None and until > now:
                return False
            until = now + ttl
            self._seen[key] = until
            heapq.heappush(expiry, (until, key))
            return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)

    # chat state -----------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._state.get(key)
            return dict(value) if value is not None else None

    def set_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        with self._lock:
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = dict(value)

    # outbox ---------------------------------------------------------------------------------
    def outbox_add(self, item: OutboxItem) -> None:
        with self._lock:
            self._queues.setdefault(item.chat_key, deque()).append(item)

    def outbox_claim(self, owner: str, now: float, limit: int, lease: float) -> list[OutboxItem]:
        claimed: list[OutboxItem] = []
        with self._lock:
            for chat_key, queue in self._queues.items():
                if len(claimed) >= limit:
                    break
                held = self._leases.get(chat_key)
                if held is not None and held[1] > now:
                    continue
                head = queue[0]
                if head.next_attempt_at <= now:
                    self._leases[chat_key] = (owner, now + lease)
                    # the stored item itself: its holder owns it until ack/reschedule/bury
                    claimed.append(head)
        return claimed

    def _release(self, chat_key: str) -> None:
        self._leases.pop(chat_key, None)

    def _remove(self, item: OutboxItem) -> OutboxItem | None:
        queue = self._queues.get(item.chat_key)
        if not queue:
            return None
        for i, queued in enumerate(queue):
            if queued.id == item.id:
                del queue[i]
                if not queue:
                    del self._queues[item.chat_key]
                return queued
        return None

    def outbox_ack(self, item: OutboxItem) -> None:
        with self._lock:
            self._remove(item)
            self._release(item.chat_key)

    def outbox_reschedule(self, item: OutboxItem) -> None:
        with self._lock:
            queue = self._queues.get(item.chat_key, ())
            for i, queued in enumerate(queue):
                if queued.id == item.id:
                    queue[i] = attrs.evolve(item)  # type: ignore[index]
                    break
            self._release(item.chat_key)

    def outbox_bury(self, item: OutboxItem) -> None:
        with self._lock:
            self._remove(item)
            self._dead[item.id] = attrs.evolve(item)
            self._release(item.chat_key)

    def outbox_pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def dead_letters(self) -> list[OutboxItem]:
        with self._lock:
            return sorted(
                (attrs.evolve(i) for i in self._dead.values()), key=lambda i: i.created_at
            )

    def dead_letter_retry(self, item_id: str) -> bool:
        with self._lock:
            item = self._dead.pop(item_id, None)
            if item is None:
                return False
            item.next_attempt_at = 0.0
            item.deadline = 0.0
            self._queues.setdefault(item.chat_key, deque()).append(item)
            return True

    def dead_letter_drop(self, item_id: str) -> bool:
        with self._lock:
            return self._dead.pop(item_id, None) is not None

    def close(self) -> None:
        """Nothing to release."""


def open_store(url: str) -> Store:
    """Open a store from a URL: ``memory://``, ``sqlite:///path.db`` or ``redis://host:port/0``.

    Raises:
        ConfigurationError: an unknown scheme (the message names the accepted ones).
    """
    from omnichannel.errors import ConfigurationError

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from omnichannel.runtime.sqlite_store import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        from omnichannel.runtime.redis_store import RedisStore

        return RedisStore.from_url(url)
    raise ConfigurationError(
        "store: expected memory://, sqlite:///path.db or redis://host:port/db, "
        f"got a URL with scheme {scheme or '(none)'!r}"
    )
