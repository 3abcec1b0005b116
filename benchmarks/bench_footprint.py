"""Memory footprint: bytes per dedupe key of :class:`MemoryStore` at 1,000,000 keys (against the
store's previous layout: a dict of the key strings, a float and a heap tuple per key), and bytes
per chat of a conversation record (``turn.state`` and a history of 20 short lines, written
through ``store.save_state``) at 100,000 chats in memory (tracemalloc) and in SQLite (the file's
size, once checkpointed).

``python -m benchmarks footprint``. Byte counts barely depend on the machine.
"""

from __future__ import annotations

import gc
import heapq
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from benchmarks.run import table

KEYS = 1_000_000
CHATS = 100_000
MAX_BYTES_PER_KEY = 100
TTL = 86_400.0  # the runtime's dedupe TTL: 24 h


def dedupe_key(i: int) -> str:
    """A dedupe key as the connector writes it: ``{destination}:{chat}:{message id}``."""
    return f"omnichannel:main:{i % 50_000}:m-{i:07d}-7f3a9c2e"


class _Before:
    """The memory store's dedupe layout before issue 16: key string -> expiry, plus a heap of
    ``(expiry, key)`` for eviction by time."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.expiry: list[tuple[float, str]] = []

    def mark_seen(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        until = self.seen.get(key)
        if until is not None and until > now:
            return False
        until = now + ttl
        self.seen[key] = until
        heapq.heappush(self.expiry, (until, key))
        return True


def _traced(build: Callable[[], Any]) -> int:
    """Bytes still allocated once ``build()`` returned (its result kept alive meanwhile)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def bytes_per_key(make: Callable[[], Any], keys: int = KEYS) -> float:
    """Bytes per dedupe key held by ``make()`` after ``keys`` new keys (the key strings are made
    inside the measurement: a store that keeps them pays for them)."""

    def fill() -> Any:
        store = make()
        mark = store.mark_seen
        for i in range(keys):
            mark(dedupe_key(i), TTL)
        return store

    return _traced(fill) / keys


def _record(chat: int) -> dict[str, Any]:
    """One conversation record as the runtime writes it (see ``runtime/conversation.py``)."""
    at = 1_760_000_000.0 + chat
    history = [
        ["user" if n % 2 == 0 else "bot", f"short line {n} of chat {chat}", at + n * 7.25]
        for n in range(20)
    ]
    return {
        "state": {"step": "order", "items": 2, "name": "Ann"},
        "history": history,
        "keep": 20,
    }


def _conversation_key(chat: int) -> str:
    return f"omnichannel:conversation:omnichannel:{chat}"


def memory_bytes_per_chat(chats: int = CHATS) -> float:
    """tracemalloc bytes per chat of :class:`MemoryStore` holding ``chats`` records."""
    from omnichannel.runtime.stores import MemoryStore

    def fill() -> Any:
        store = MemoryStore()
        for chat in range(chats):
            assert store.save_state(_conversation_key(chat), _record(chat), 0)
        return store

    return _traced(fill) / chats


def sqlite_bytes_per_chat(chats: int = CHATS) -> float:
    """File bytes per chat of a SQLite store holding ``chats`` records (WAL checkpointed)."""
    from omnichannel.runtime.stores.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="omnichannel-bench-") as workdir:
        path = os.path.join(workdir, "chats.db")
        store = SQLiteStore(path)
        empty = os.path.getsize(path)
        try:
            for chat in range(chats):
                assert store.save_state(_conversation_key(chat), _record(chat), 0)
        finally:
            store.close()  # the last connection closing checkpoints the WAL into the file
        size = os.path.getsize(path)
        wal = path + "-wal"
        size += os.path.getsize(wal) if os.path.exists(wal) else 0
    return (size - empty) / chats


def record_bytes() -> int:
    """The record's JSON size: what any store must keep at least."""
    import json

    return len(json.dumps(_record(12345), separators=(",", ":")))


def bench_footprint() -> bool:
    """Bytes per dedupe key (1M keys) and bytes per chat (100k chats), memory and SQLite."""
    from omnichannel.runtime.stores import MemoryStore

    ours = bytes_per_key(MemoryStore)
    before = bytes_per_key(_Before)
    memory_chat = memory_bytes_per_chat()
    sqlite_chat = sqlite_bytes_per_chat()
    ok = ours <= MAX_BYTES_PER_KEY
    print(f"Memory footprint (tracemalloc; SQLite: file size); JSON record {record_bytes()} B")
    print(
        table(
            [
                ("measure", "bytes", "target", "verdict"),
                (f"MemoryStore, per dedupe key at {KEYS:,}", f"{ours:.0f}",
                 f"≤ {MAX_BYTES_PER_KEY}", "ok" if ok else "MISS"),
                ("  the layout before (dict + heap of the key strings)", f"{before:.0f}", "", ""),
                (f"MemoryStore, per chat at {CHATS:,} (state + 20 lines)", f"{memory_chat:.0f}",
                 "", "info"),
                (f"SQLiteStore, per chat at {CHATS:,} (file size)", f"{sqlite_chat:.0f}", "",
                 "info"),
            ]
        )
    )  # fmt: skip
    return ok


SUITES: dict[str, Callable[[], bool]] = {"footprint": bench_footprint}
