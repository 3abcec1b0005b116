"""Store benchmarks: dedupe check-and-set per second on memory, SQLite and Redis side by side, and
the memory the in-memory store needs for 100,000 chats, before and after its TTL evicts them.

Redis: ``OMNICHANNEL_BENCH_REDIS_URL`` when set (keys go under a throwaway prefix and are deleted
afterwards), else a private ``redis-server`` from ``PATH`` on a free port; otherwise the Redis
column prints ``redis: skipped (no server)``. The serve-throughput comparison (SQLite vs memory
under load) lives with the CLI benchmarks.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks.run import table
from omnichannel.runtime.stores import MemoryStore, Store

CHATS = 100_000
MAX_BYTES_PER_CHAT = 1024  # dedupe key + chat state of one chat in MemoryStore


def _rate(store: Store, seconds: float = 1.0) -> float:
    """``mark_seen`` calls per second, each a new delivery id (the insert path)."""
    prefix = uuid.uuid4().hex[:8]
    counter = 0
    batch = 200
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            store.mark_seen(f"omnichannel:main:{counter % 5000}:{prefix}-{counter}", 3600)
            counter += 1
        now = time.perf_counter()
        if now >= end:
            return counter / (now - start)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _redis_url() -> Iterator[str | None]:
    """A Redis to measure against, or ``None`` when there is none."""
    try:
        import redis
    except ImportError:
        yield None
        return
    configured = os.environ.get("OMNICHANNEL_BENCH_REDIS_URL")
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="omnichannel-bench-redis-") as workdir:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            end = time.monotonic() + 10
            while True:
                client = redis.Redis.from_url(url)
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > end:
                        yield None
                        return
                    time.sleep(0.05)
                finally:
                    client.close()
            yield url
        finally:
            server.terminate()
            server.wait(10)


def bench_dedupe() -> bool:
    """Dedupe check-and-set per second: memory vs SQLite (WAL, a temp file) vs Redis."""
    from omnichannel.runtime.stores.sqlite import SQLiteStore

    rows = [("store", "check-and-set/s", "µs/call", "vs memory")]
    memory = _rate(MemoryStore())
    rows.append(("memory", f"{memory:,.0f}", f"{1e6 / memory:.2f}", "1.00"))
    with tempfile.TemporaryDirectory(prefix="omnichannel-bench-") as workdir:
        sqlite = SQLiteStore(os.path.join(workdir, "bench.db"))
        try:
            rate = _rate(sqlite)
        finally:
            sqlite.close()
    rows.append(("sqlite", f"{rate:,.0f}", f"{1e6 / rate:.2f}", f"{rate / memory:.3f}"))
    skipped = None
    with _redis_url() as url:
        if url is None:
            skipped = "redis: skipped (no server)"
        else:
            from omnichannel.runtime.stores.redis import RedisStore

            prefix = f"omnichannel-bench:{uuid.uuid4().hex[:8]}:"
            store = RedisStore(url, prefix=prefix)
            try:
                rate = _rate(store)
                for key in store.client.scan_iter(match=prefix + "*", count=1000):
                    store.client.delete(key)
            finally:
                store.close()
            rows.append(("redis", f"{rate:,.0f}", f"{1e6 / rate:.2f}", f"{rate / memory:.3f}"))
    print("Dedupe check-and-set (mark_seen of a new delivery id, one thread, 1 s each)")
    print(table(rows))
    if skipped:
        print(skipped)
    return True  # the issue asks for the figures side by side, with no target


def _traced(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated by ``build()`` (its result kept alive) and the result."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def bench_memory() -> bool:
    """Bytes per chat of :class:`MemoryStore` (a delivery id and a chat state per chat), and
    what is left once the dedupe TTL has evicted the ids."""

    def dedupe_only() -> MemoryStore:
        store = MemoryStore()
        for chat in range(CHATS):
            store.mark_seen(f"omnichannel:main:{chat}:m-{chat}", 3600)
        return store

    def state_only() -> MemoryStore:
        store = MemoryStore()
        for chat in range(CHATS):
            store.set_state(f"omnichannel:main:{chat}", {"handover": False, "ticket": chat})
        return store

    dedupe_bytes, _ = _traced(dedupe_only)
    state_bytes, _ = _traced(state_only)
    per_chat = (dedupe_bytes + state_bytes) / CHATS
    ok = per_chat <= MAX_BYTES_PER_CHAT
    print(f"MemoryStore for {CHATS:,} chats (tracemalloc; keys like omnichannel:main:{{chat}}…)")
    print(
        table(
            [
                ("what", "total MiB", "bytes/entry"),
                ("dedupe ids", f"{dedupe_bytes / 2**20:.1f}", f"{dedupe_bytes / CHATS:.0f}"),
                ("chat states", f"{state_bytes / 2**20:.1f}", f"{state_bytes / CHATS:.0f}"),
                (
                    f"per chat (target ≤ {MAX_BYTES_PER_CHAT})",
                    f"{(dedupe_bytes + state_bytes) / 2**20:.1f}",
                    f"{per_chat:.0f} {'ok' if ok else 'MISS'}",
                ),
            ]
        )
    )

    # bounded growth: ids live for their TTL only; the next mark_seen evicts the expired ones
    ttl = 3.0  # longer than filling the store under tracemalloc takes
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = MemoryStore()
        for chat in range(CHATS):
            store.mark_seen(f"omnichannel:main:{chat}:m-{chat}", ttl)
        filled_at = time.monotonic()
        entries_before = len(store._seen)
        bytes_before = tracemalloc.get_traced_memory()[0] - base
        time.sleep(max(0.0, ttl + 0.1 - (time.monotonic() - filled_at)))
        store.mark_seen("omnichannel:main:0:m-next", ttl)
        gc.collect()
        entries_after = len(store._seen)
        bytes_after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    bounded = entries_before == CHATS and entries_after == 1 and bytes_after < bytes_before / 20
    print(f"TTL eviction ({CHATS:,} ids with a {ttl}s TTL, then one more id after they expired)")
    print(
        table(
            [
                ("", "entries", "MiB"),
                ("before expiry", f"{entries_before:,}", f"{bytes_before / 2**20:.1f}"),
                (
                    "after expiry",
                    f"{entries_after:,}",
                    f"{bytes_after / 2**20:.2f} {'ok' if bounded else 'MISS'}",
                ),
            ]
        )
    )
    return ok and bounded


def bench_stores() -> bool:
    """Both store suites."""
    dedupe = bench_dedupe()
    print()
    return bench_memory() and dedupe


SUITES: dict[str, Callable[[], bool]] = {"stores": bench_stores}
