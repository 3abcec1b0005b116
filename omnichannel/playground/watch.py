"""A store that tells the playground what happens to the inbox and the outbox.

:class:`WatchedStore` wraps the store the playground's runtime uses: every call goes to the
real store unchanged, and after each write that moves a turn or a reply along (admitted,
claimed, completed, acknowledged, rescheduled, dead-lettered, retried, dropped) and each
state write, the observer is told. The store interface has no way to list pending items, so
this is how the page can show them, with their attempts and errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from omnichannel.runtime.stores.base import (
    QueueItem,
    QueueName,
    StateSnapshot,
    StateWrite,
    Store,
)

__all__ = ["StoreObserver", "WatchedStore"]


class StoreObserver(Protocol):
    """What :class:`WatchedStore` reports (each call after the real store answered)."""

    def admitted(self, item: QueueItem, new: bool) -> None:
        """A webhook stored a turn (``new``) or found its dedupe key already seen."""

    def claimed(self, queue: QueueName, items: Sequence[QueueItem]) -> None:
        """Workers leased these items (a turn starts running, a reply is being sent)."""

    def completed(self, item: QueueItem, replies: Sequence[QueueItem], done: bool) -> None:
        """A turn ended; its replies entered the outbox (``done`` False: another worker had)."""

    def added(self, item: QueueItem) -> None:
        """An item was put in a queue outside a turn."""

    def acked(self, item: QueueItem) -> None:
        """An item is done (a reply delivered)."""

    def rescheduled(self, item: QueueItem) -> None:
        """An item failed and waits for another attempt."""

    def buried(self, item: QueueItem) -> None:
        """An item moved to the dead letters."""

    def revived(self, item_id: str, retried: bool) -> None:
        """A dead letter was queued again (``retried``) or dropped."""

    def state_written(self, keys: Sequence[str]) -> None:
        """State records were written."""


class WatchedStore:
    """``inner`` with every queue movement and state write reported to ``observer``."""

    def __init__(self, inner: Store, observer: StoreObserver) -> None:
        self.inner = inner
        self.observer = observer

    def __getattr__(self, name: str) -> Any:
        # engine-specific extras (has_persistence, …) are the inner store's
        return getattr(self.inner, name)

    # dedupe -----------------------------------------------------------------------------------
    def mark_seen(self, key: str, ttl: float) -> bool:
        return self.inner.mark_seen(key, ttl)

    def forget(self, key: str) -> None:
        self.inner.forget(key)

    # chat state -------------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        return self.inner.get_state(key)

    def set_state(
        self, key: str, value: Mapping[str, Any] | None, ttl: float | None = None
    ) -> None:
        self.inner.set_state(key, value, ttl)
        self.observer.state_written([key])

    def load_state(self, key: str) -> StateSnapshot:
        return self.inner.load_state(key)

    def save_state(
        self, key: str, value: Mapping[str, Any] | None, version: int, ttl: float | None = None
    ) -> bool:
        saved = self.inner.save_state(key, value, version, ttl)
        if saved:
            self.observer.state_written([key])
        return saved

    # inbox ------------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        new = self.inner.inbox_admit(item, dedupe_key, ttl)
        self.observer.admitted(item, new)
        return new

    def inbox_complete(
        self, item: QueueItem, replies: Sequence[QueueItem], writes: Sequence[StateWrite] = ()
    ) -> bool:
        if writes:
            done = self.inner.inbox_complete(item, replies, writes)
        else:
            done = self.inner.inbox_complete(item, replies)
        self.observer.completed(item, replies, done)
        if done and writes:
            self.observer.state_written([w.key for w in writes])
        return done

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        self.inner.renew_leases(queue, owner, chat_keys, lease)

    def lease_owners(self) -> set[str]:
        return self.inner.lease_owners()

    def release_owner(self, owner: str) -> int:
        return self.inner.release_owner(owner)

    # both queues ------------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        self.inner.add(item)
        self.observer.added(item)

    def claim(
        self, queue: QueueName, owner: str, now: float, limit: int, lease: float
    ) -> list[QueueItem]:
        items = self.inner.claim(queue, owner, now, limit, lease)
        if items:
            self.observer.claimed(queue, items)
        return items

    def ack(self, item: QueueItem) -> None:
        self.inner.ack(item)
        self.observer.acked(item)

    def reschedule(self, item: QueueItem) -> None:
        self.inner.reschedule(item)
        self.observer.rescheduled(item)

    def bury(self, item: QueueItem) -> None:
        self.inner.bury(item)
        self.observer.buried(item)

    def pending(self, queue: QueueName) -> int:
        return self.inner.pending(queue)

    def dead_letters(self) -> list[QueueItem]:
        return self.inner.dead_letters()

    def dead_letter_retry(self, item_id: str) -> bool:
        done = self.inner.dead_letter_retry(item_id)
        if done:
            self.observer.revived(item_id, True)
        return done

    def dead_letter_drop(self, item_id: str) -> bool:
        done = self.inner.dead_letter_drop(item_id)
        if done:
            self.observer.revived(item_id, False)
        return done

    def close(self) -> None:
        self.inner.close()
