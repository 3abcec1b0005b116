"""Stores: one interface (:class:`Store`), three engines (memory, SQLite, Redis).

The engines import only :mod:`omnichannel.runtime.stores.base`; :func:`open_store` imports the
engine a URL names when it is first used (``redis`` is an optional extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.stores.base import (
    INBOX,
    OUTBOX,
    QueueItem,
    QueueName,
    StateConflict,
    StateSnapshot,
    StateWrite,
    Store,
    new_item_id,
    new_owner_id,
    owner_is_dead,
    update_state,
)
from omnichannel.runtime.stores.memory import MemoryStore

if TYPE_CHECKING:
    from omnichannel.runtime.stores.redis import RedisStore
    from omnichannel.runtime.stores.sqlite import SQLiteStore

__all__ = [
    "INBOX",
    "OUTBOX",
    "MemoryStore",
    "QueueItem",
    "QueueName",
    "RedisStore",
    "SQLiteStore",
    "StateConflict",
    "StateSnapshot",
    "StateWrite",
    "Store",
    "new_item_id",
    "new_owner_id",
    "open_store",
    "owner_is_dead",
    "update_state",
]


def open_store(url: str) -> Store:
    """Open a store from a URL: ``memory://``, ``sqlite:///path.db`` or ``redis://host:port/0``.

    Raises:
        ConfigurationError: an unknown scheme (the message names the accepted ones).
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from omnichannel.runtime.stores.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        from omnichannel.runtime.stores.redis import RedisStore

        return RedisStore.from_url(url)
    raise ConfigurationError(
        "store: expected memory://, sqlite:///path.db or redis://host:port/db, "
        f"got a URL with scheme {scheme or '(none)'!r}"
    )


def __getattr__(name: str) -> object:
    # the engines with heavier imports load on first use
    if name == "SQLiteStore":
        from omnichannel.runtime.stores.sqlite import SQLiteStore

        return SQLiteStore
    if name == "RedisStore":
        from omnichannel.runtime.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(name)
