"""The in-process store: for notebooks, tests and single-process demos. Nothing survives a
restart (use SQLite or Redis for that).

Dedupe keys are kept compact, about 75 bytes each (a platform's delivery keys run to 50-100
characters; a dict of the strings with a float and a heap entry each took 200 to 270): a key is
kept as a 60-bit digest (:func:`_digest`, an ``int`` of 32 bytes) in one set of the live keys.
Expiries are rounded up to a step of at most ``ttl / 1024`` (a 24 h mark may outlive its TTL by
a minute), so the keys of one step share one *bucket*: a deque of their digests, in the order
they were marked. The buckets, in a heap by expiry, remove a whole step at once when it is due
(before any lookup: what the set holds is live) or its oldest keys one by one past ``max_keys``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from omnichannel.runtime.stores.base import (
    INBOX,
    OUTBOX,
    QueueItem,
    QueueName,
    StateConflict,
    StateSnapshot,
    StateWrite,
    json_copy,
    plain_copy,
)

__all__ = ["MemoryStore"]

_new_item = QueueItem.__new__


def _copy(
    item: QueueItem, *, owner: str | None = None, queue: QueueName | None = None
) -> QueueItem:
    """A copy of ``item`` held by ``owner`` (``attrs.evolve`` without its per-call field
    introspection, and without ``__init__``'s keyword parsing: this runs several times per
    turn; QueueItem has no validators or converters to skip)."""
    copied = _new_item(QueueItem)
    copied.destination = item.destination
    copied.chat_key = item.chat_key
    copied.payload = item.payload
    copied.id = item.id
    copied.created_at = item.created_at
    copied.deadline = item.deadline
    copied.attempts = item.attempts
    copied.next_attempt_at = item.next_attempt_at
    copied.last_error = item.last_error
    copied.queue = item.queue if queue is None else queue
    copied.owner = owner
    return copied


class _Copied:
    """A value already copied by :func:`json_copy` (stored as it is)."""

    __slots__ = ("copied",)

    def __init__(self, copied: Any) -> None:
        self.copied = copied


DEFAULT_MAX_KEYS = 1_000_000
"""Dedupe keys a :class:`MemoryStore` keeps by default (about 75 MB)."""

_MASK = (1 << 60) - 1  # two 30-bit digits: an int of 32 bytes (64 bits would take 36, padded 40)


if sys.hash_info.width >= 64 and sys.hash_info.algorithm.startswith("siphash"):
    # str's own hash: keyed SipHash (a random key per process), computed once per string
    def _digest(key: str) -> int:
        return hash(key) & _MASK

else:  # pragma: no cover - a 32-bit build, or one built with a weak string hash
    import hashlib
    import os

    _SECRET = os.urandom(16)

    def _digest(key: str) -> int:
        raw = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=_SECRET)
        return int.from_bytes(raw.digest(), "little") & _MASK


def _step(ttl: float) -> float:
    """The rounding of expiries for ``ttl``: the largest power of two ≤ ``ttl / 1024``
    (0: none, for a TTL that is not a positive finite number)."""
    if not 0 < ttl < math.inf:
        return 0.0
    return float(2.0 ** math.floor(math.log2(ttl / 1024)))


class _Queue:
    """Per-chat FIFO queues with leases, the shape both the inbox and the outbox share."""

    def __init__(self) -> None:
        # chat key -> its items; insertion order of chats approximates age (oldest first)
        self.chats: OrderedDict[str, deque[QueueItem]] = OrderedDict()
        self.leases: dict[str, tuple[str, float]] = {}
        self.ids: set[str] = set()

    def add(self, item: QueueItem) -> None:
        self.chats.setdefault(item.chat_key, deque()).append(item)
        self.ids.add(item.id)

    def claim(self, owner: str, now: float, limit: int, lease: float) -> list[QueueItem]:
        claimed: list[QueueItem] = []
        for chat_key, queue in self.chats.items():
            if len(claimed) >= limit:
                break
            held = self.leases.get(chat_key)
            if held is not None and held[1] > now:
                continue
            head = queue[0]
            if head.next_attempt_at <= now:
                self.leases[chat_key] = (owner, now + lease)
                claimed.append(_copy(head, owner=owner))
        return claimed

    def release(self, item: QueueItem) -> None:
        held = self.leases.get(item.chat_key)
        if held is not None and item.owner is not None and held[0] == item.owner:
            del self.leases[item.chat_key]

    def remove(self, item: QueueItem) -> QueueItem | None:
        queue = self.chats.get(item.chat_key)
        if not queue or item.id not in self.ids:
            return None
        for i, queued in enumerate(queue):
            if queued.id == item.id:
                del queue[i]
                self.ids.discard(item.id)
                if not queue:
                    del self.chats[item.chat_key]
                return queued
        return None

    def update(self, item: QueueItem) -> None:
        for i, queued in enumerate(self.chats.get(item.chat_key, ())):
            if queued.id == item.id:
                self.chats[item.chat_key][i] = _copy(item)
                return

    def pending(self) -> int:
        return len(self.ids)


class MemoryStore:
    """Everything in this process's memory.

    Dedupe keys expire after their TTL (up to ``ttl / 1024`` later: expiries are rounded to
    share memory) and are evicted lazily, so memory stays bounded by the keys seen within one
    TTL, and by ``max_keys`` (about 75 bytes a key): past it the keys closest to their expiry,
    the oldest with one TTL, are evicted first. An evicted key is forgotten: a platform repeating
    a delivery that old gets it processed again. A key is kept as a 60-bit digest, so two
    different keys are taken for one with a chance of about ``max_keys / 2**60`` (10**-12 at a
    million keys) per new key. A key forgotten and marked again with a shorter TTL may be kept
    until its first TTL ends.

    Args:
        max_keys: the most dedupe keys kept (``None``: no limit but the TTL).
    """

    def __init__(self, *, max_keys: int | None = DEFAULT_MAX_KEYS) -> None:
        if max_keys is not None and max_keys < 1:
            raise ValueError("max_keys must be at least 1 (or None)")
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # the digests of the live keys; bucket expiry -> its digests in the order they were
        # marked; the bucket expiries, a heap; digest -> stale bucket entries (forgotten keys)
        self._seen: set[int] = set()
        self._buckets: dict[float, deque[int]] = {}
        self._due: list[float] = []
        self._stale: dict[int, int] = {}
        self._steps: dict[float, float] = {}
        self._peak = 0  # the most keys since the set was last compacted
        # key -> (value, version, expires at (monotonic) or None); versions from one counter,
        # so a key deleted and made again never gets an old version back
        self._state: dict[str, tuple[Any, int, float | None]] = {}
        self._versions = itertools.count(1)
        self._next_state_sweep = 0.0
        self._queues: dict[QueueName, _Queue] = {INBOX: _Queue(), OUTBOX: _Queue()}
        self._dead: dict[str, QueueItem] = {}

    # dedupe ---------------------------------------------------------------------------------
    def _mark(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        if self._due and self._due[0] <= now:
            self._expire(now)  # what is left is live; may replace self._seen (compaction)
        seen = self._seen
        digest = _digest(key)
        if digest in seen:
            return False
        step = self._steps.get(ttl)
        if step is None:
            if len(self._steps) >= 64:  # TTLs that vary from call to call
                self._steps.clear()
            step = self._steps[ttl] = _step(ttl)
        until = -(-(now + ttl) // step) * step if step else now + ttl  # rounded up
        bucket = self._buckets.get(until)
        if bucket is None:
            bucket = self._buckets[until] = deque()
            heapq.heappush(self._due, until)
        seen.add(digest)
        bucket.append(digest)
        size = len(seen)
        if size > self._peak:
            self._peak = size
            if self.max_keys is not None and size > self.max_keys:
                self._evict_oldest(size - self.max_keys)
        return True

    def _drop(self, digest: int) -> bool:
        """Remove a bucket's entry's key; ``False`` when the entry was stale (the key had been
        forgotten since; if it was marked again, a later entry removes it)."""
        stale = self._stale.get(digest)
        if stale:
            if stale == 1:
                del self._stale[digest]
            else:
                self._stale[digest] = stale - 1
            return False
        if digest in self._seen:
            self._seen.remove(digest)
            return True
        return False

    def _expire(self, now: float) -> None:
        due, buckets = self._due, self._buckets
        while due and due[0] <= now:
            digests = buckets.pop(heapq.heappop(due))
            if self._stale:
                for digest in digests:
                    self._drop(digest)
            else:
                self._seen.difference_update(digests)
        self._compact()

    def _evict_oldest(self, count: int) -> None:
        due, buckets = self._due, self._buckets
        while count > 0 and due:
            digests = buckets[due[0]]
            while count > 0 and digests:
                if self._drop(digests.popleft()):
                    count -= 1
            if not digests:
                del buckets[heapq.heappop(due)]
        self._peak = len(self._seen)

    def _compact(self) -> None:
        size = len(self._seen)
        if self._peak > 4096 and size < self._peak // 4:
            # a set never shrinks its table by itself: copy it once it holds a quarter of what
            # it held (churn at a steady size reuses the table: no copy)
            self._seen = set(self._seen)
            self._peak = size

    def mark_seen(self, key: str, ttl: float) -> bool:
        """Record ``key``; ``True`` when it was new, ``False`` when seen within its TTL."""
        with self._lock:
            return self._mark(key, ttl)

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        digest = _digest(key)
        with self._lock:
            if digest in self._seen:
                self._seen.remove(digest)
                # its bucket entry is stale now: the key may be marked again, in a later bucket
                self._stale[digest] = self._stale.get(digest, 0) + 1

    def dedupe_keys(self) -> int:
        """How many dedupe keys are kept."""
        with self._lock:
            return len(self._seen)

    # chat state -----------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        return self.load_state(key).value

    def set_state(
        self, key: str, value: Mapping[str, Any] | None, ttl: float | None = None
    ) -> None:
        """Store ``value`` under ``key`` unconditionally (``None`` deletes it)."""
        with self._lock:
            self._put_state(key, value, ttl)

    def _put_state(
        self, key: str, value: Mapping[str, Any] | _Copied | None, ttl: float | None
    ) -> None:
        if value is None:
            self._state.pop(key, None)
            return
        now = time.monotonic()
        if ttl is not None and now >= self._next_state_sweep:
            self._sweep_state(now)
        # kept as a copy the caller cannot change afterwards, as JSON gives it back (a value
        # that could not be stored elsewhere is refused here too)
        until = None if ttl is None else now + ttl
        copy = value.copied if isinstance(value, _Copied) else json_copy(value)
        self._state[key] = (copy, next(self._versions), until)

    def _sweep_state(self, now: float) -> None:
        # expired state goes at most once a minute (reads treat it as absent meanwhile)
        self._next_state_sweep = now + 60.0
        expired = [k for k, v in self._state.items() if v[2] is not None and v[2] <= now]
        for key in expired:
            del self._state[key]

    def _current(self, key: str) -> tuple[Any, int, float | None] | None:
        found = self._state.get(key)
        if found is not None and found[2] is not None and found[2] <= time.monotonic():
            del self._state[key]
            return None
        return found

    def load_state(self, key: str) -> StateSnapshot:
        """The state under ``key`` with its version (0 when absent or expired)."""
        with self._lock:
            found = self._current(key)
        if found is None:
            return StateSnapshot(None, 0)
        return StateSnapshot(plain_copy(found[0]), found[1])  # stored plain: copied as such

    def peek_state(self, key: str) -> StateSnapshot:
        """:meth:`load_state` without the copy: the stored value itself, which the caller must
        not change (a turn reads its records so, and copies only the state it hands out)."""
        with self._lock:
            found = self._current(key)
        if found is None:
            return StateSnapshot(None, 0)
        return StateSnapshot(found[0], found[1])

    def save_state(
        self, key: str, value: Mapping[str, Any] | None, version: int, ttl: float | None = None
    ) -> bool:
        """Compare-and-set ``value`` if the version is still ``version``."""
        with self._lock:
            found = self._current(key)
            if (found[1] if found is not None else 0) != version:
                return False
            self._put_state(key, value, ttl)
            return True

    # inbox ----------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        """Atomically record ``dedupe_key`` and append ``item`` to the inbox."""
        with self._lock:
            if dedupe_key is not None and not self._mark(dedupe_key, ttl):
                return False
            self._queues[INBOX].add(_copy(item, queue=INBOX))
            return True

    def inbox_complete(
        self, item: QueueItem, replies: Sequence[QueueItem], writes: Sequence[StateWrite] = ()
    ) -> bool:
        """Atomically add ``replies`` to the outbox, apply ``writes`` and remove the turn."""
        with self._lock:
            inbox, outbox = self._queues[INBOX], self._queues[OUTBOX]
            if item.id not in inbox.ids:
                return False
            for write in writes:
                found = self._current(write.key)
                if (found[1] if found is not None else 0) != write.version:
                    raise StateConflict(write.key)
            # encoded before anything changes: a value that cannot be stored changes nothing
            values = [
                None if w.value is None else _Copied(w.value if w.fresh else json_copy(w.value))
                for w in writes
            ]
            inbox.remove(item)
            for write, value in zip(writes, values, strict=True):
                self._put_state(write.key, value, write.ttl)
            for reply in replies:
                if reply.id not in outbox.ids and reply.id not in self._dead:
                    outbox.add(_copy(reply, queue=OUTBOX))
            inbox.release(item)
            return True

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        """Extend ``owner``'s leases on ``chat_keys``."""
        until = time.time() + lease
        with self._lock:
            leases = self._queues[queue].leases
            for chat_key in chat_keys:
                held = leases.get(chat_key)
                if held is not None and held[0] == owner:
                    leases[chat_key] = (owner, until)

    def lease_owners(self) -> set[str]:
        """The owners holding a lease on either queue."""
        with self._lock:
            return {o for q in self._queues.values() for o, _ in q.leases.values()}

    def release_owner(self, owner: str) -> int:
        """End every lease ``owner`` holds."""
        released = 0
        with self._lock:
            for q in self._queues.values():
                for chat_key in [k for k, (o, _) in q.leases.items() if o == owner]:
                    del q.leases[chat_key]
                    released += 1
        return released

    # both queues ----------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue."""
        with self._lock:
            self._queues[item.queue].add(_copy(item))

    def claim(
        self, queue: QueueName, owner: str, now: float, limit: int, lease: float
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads of ``queue`` to ``owner``."""
        with self._lock:
            return self._queues[queue].claim(owner, now, limit, lease)

    def ack(self, item: QueueItem) -> None:
        """Remove the item; release its chat if ``item.owner`` holds the lease."""
        with self._lock:
            q = self._queues[item.queue]
            q.remove(item)
            q.release(item)

    def reschedule(self, item: QueueItem) -> None:
        """Save the item's retry fields; release its chat."""
        with self._lock:
            q = self._queues[item.queue]
            q.update(item)
            q.release(item)

    def bury(self, item: QueueItem) -> None:
        """Move the item to the dead letters; release its chat."""
        with self._lock:
            q = self._queues[item.queue]
            if q.remove(item) is not None:
                self._dead[item.id] = _copy(item)
            q.release(item)

    def pending(self, queue: QueueName) -> int:
        """How many items wait in ``queue``."""
        with self._lock:
            return self._queues[queue].pending()

    def dead_letters(self) -> list[QueueItem]:
        """The dead letters of both queues, oldest first."""
        with self._lock:
            return sorted(
                (attrs.evolve(i) for i in self._dead.values()), key=lambda i: i.created_at
            )

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue, due now."""
        with self._lock:
            item = self._dead.pop(item_id, None)
            if item is None:
                return False
            self._queues[item.queue].add(
                attrs.evolve(item, next_attempt_at=0.0, deadline=0.0, owner=None)
            )
            return True

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        with self._lock:
            return self._dead.pop(item_id, None) is not None

    def close(self) -> None:
        """Nothing to release."""
