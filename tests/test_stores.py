"""The store contract, run against memory, SQLite and a real Redis; plus several processes sharing
one SQLite file or one Redis, and the outbox delivering through each store."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omnichannel.errors import ConfigurationError, DeliveryError
from omnichannel.runtime.outbox import Outbox
from omnichannel.runtime.stores import MemoryStore, QueueItem, Store, open_store
from omnichannel.runtime.stores.redis import RedisStore
from omnichannel.runtime.stores.sqlite import SQLiteStore
from tests import redis_support
from tests.redis_support import unique_prefix

redis_url = redis_support.redis_url  # the fixture, for the tests below

REDIS = pytest.param("redis", marks=pytest.mark.redis)
ALL_KINDS = ["memory", "sqlite", REDIS]
SHARED_KINDS = ["sqlite", REDIS]

# the spec a child process needs to open the same store: (kind, url, prefix)
StoreSpec = tuple[str, str, str]


def open_spec(spec: StoreSpec) -> Store:
    """Open the store a spec describes (in this process)."""
    kind, url, prefix = spec
    if kind == "redis":
        return RedisStore(url, prefix=prefix)
    return open_store(url)


class Stores:
    """Opens handles on one backing store (the same file / key prefix each time)."""

    def __init__(self, kind: str, spec: StoreSpec | None) -> None:
        self.kind = kind
        self.spec = spec
        self._memory = MemoryStore() if spec is None else None
        self._opened: list[Store] = []

    def open(self) -> Store:
        """A new handle (a new connection); memory has only one."""
        if self._memory is not None:
            return self._memory
        assert self.spec is not None
        store = open_spec(self.spec)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()


def _spec(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec | None:
    if kind == "memory":
        return None
    if kind == "sqlite":
        return ("sqlite", f"sqlite:///{tmp_path / 'omnichannel.db'}", "")
    url = request.getfixturevalue("redis_url")
    return ("redis", url, unique_prefix(request.node.name[:40]))


@pytest.fixture(params=ALL_KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    kind: str = request.param
    opened = Stores(kind, _spec(kind, request, tmp_path))
    yield opened
    opened.close()


@pytest.fixture(params=SHARED_KINDS)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    kind: str = request.param
    opened = Stores(kind, _spec(kind, request, tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def store(stores: Stores) -> Store:
    return stores.open()


def item(chat: str, n: int, **fields: Any) -> QueueItem:
    return QueueItem(destination="test", chat_key=chat, payload={"n": n}, **fields)


def numbers(items: list[QueueItem]) -> list[tuple[str, int]]:
    return [(i.chat_key, i.payload["n"]) for i in items]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``condition``; return the seconds it took (fail after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - start


# dedupe -------------------------------------------------------------------------------------
def test_mark_seen_is_true_once_then_false(store: Store) -> None:
    assert store.mark_seen("delivery-1", 60) is True
    assert store.mark_seen("delivery-1", 60) is False
    assert store.mark_seen("delivery-2", 60) is True


def test_mark_seen_expires_after_its_ttl(store: Store) -> None:
    assert store.mark_seen("short", 0.3)
    assert not store.mark_seen("short", 0.3)
    waited = wait_until(lambda: store.mark_seen("short", 0.3))
    assert waited >= 0.15  # not before (most of) its time to live
    assert not store.mark_seen("short", 0.3)


def test_forget_lets_a_key_be_marked_again(store: Store) -> None:
    assert store.mark_seen("refused", 60)
    store.forget("refused")
    assert store.mark_seen("refused", 60)
    store.forget("never-seen")  # no error


def test_mark_seen_has_one_winner_among_threads(stores: Stores) -> None:
    handles = [stores.open(), stores.open()]
    keys = [f"delivery-{i}" for i in range(60)]
    barrier = threading.Barrier(6)
    wins: Counter[str] = Counter()
    lock = threading.Lock()

    def contend(handle: Store) -> None:
        barrier.wait()
        mine = [k for k in keys if handle.mark_seen(k, 60)]
        with lock:
            wins.update(mine)

    threads = [threading.Thread(target=contend, args=(handles[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert wins == Counter(keys)  # every key won exactly once


# chat state ---------------------------------------------------------------------------------
def test_state_get_set_delete(store: Store) -> None:
    assert store.get_state("chat:1") is None
    store.set_state("chat:1", {"handover": True, "ticket": 42, "name": "Анна"})
    state = store.get_state("chat:1")
    assert state == {"handover": True, "ticket": 42, "name": "Анна"}
    assert state is not None
    state["handover"] = False  # a copy: changing it changes nothing stored
    assert store.get_state("chat:1") == {"handover": True, "ticket": 42, "name": "Анна"}
    store.set_state("chat:1", {"handover": False})
    assert store.get_state("chat:1") == {"handover": False}
    store.set_state("chat:1", None)
    assert store.get_state("chat:1") is None
    store.set_state("chat:1", None)  # deleting what is gone is fine


# outbox -------------------------------------------------------------------------------------
def test_claim_leases_only_the_head_of_each_chat_in_order(store: Store) -> None:
    for n in range(3):
        store.add(item("a", n))
    for n in range(2):
        store.add(item("b", n))
    now = time.time()
    first = store.claim("outbox", "w1", now, 10, 30)
    assert sorted(numbers(first)) == [("a", 0), ("b", 0)]
    assert store.claim("outbox", "w1", now, 10, 30) == []  # both chats are leased
    for claimed in first:
        store.ack(claimed)
    delivered = []
    while store.pending("outbox"):
        batch = store.claim("outbox", "w1", time.time(), 10, 30)
        assert batch, "a released chat must be claimable"
        for claimed in batch:
            delivered.append((claimed.chat_key, claimed.payload["n"]))
            store.ack(claimed)
    assert [n for chat, n in delivered if chat == "a"] == [1, 2]
    assert [n for chat, n in delivered if chat == "b"] == [1]


def test_claim_respects_limit(store: Store) -> None:
    for chat in "abcde":
        store.add(item(chat, 0))
    assert len(store.claim("outbox", "w1", time.time(), 2, 30)) == 2
    assert len(store.claim("outbox", "w1", time.time(), 10, 30)) == 3
    assert store.claim("outbox", "w1", time.time(), 10, 30) == []


def test_one_lease_per_chat_across_handles(stores: Stores) -> None:
    one, two = stores.open(), stores.open()
    one.add(item("a", 0))
    two.add(item("a", 1))
    got = one.claim("outbox", "w1", time.time(), 10, 30)
    assert numbers(got) == [("a", 0)]
    assert two.claim("outbox", "w2", time.time(), 10, 30) == []
    two.ack(got[0])
    assert numbers(two.claim("outbox", "w2", time.time(), 10, 30)) == [("a", 1)]
    assert one.claim("outbox", "w1", time.time(), 10, 30) == []


def test_expired_lease_of_a_dead_worker_is_reclaimed(stores: Stores) -> None:
    dead, alive = stores.open(), stores.open()
    dead.add(item("a", 0))
    dead.add(item("a", 1))
    lease = 0.4
    leased_at = time.monotonic()
    assert numbers(dead.claim("outbox", "dead-worker", time.time(), 10, lease)) == [("a", 0)]
    # the dead worker never acknowledges; another worker gets the same head once the lease ends
    got: list[QueueItem] = []

    def reclaim() -> bool:
        got.extend(alive.claim("outbox", "alive-worker", time.time(), 10, 30))
        return bool(got)

    wait_until(reclaim)
    assert time.monotonic() - leased_at >= lease * 0.9
    assert numbers(got) == [("a", 0)]
    alive.ack(got[0])
    assert numbers(alive.claim("outbox", "alive-worker", time.time(), 10, 30)) == [("a", 1)]


def test_reschedule_waits_for_next_attempt_and_keeps_the_chat_in_order(store: Store) -> None:
    store.add(item("a", 0))
    store.add(item("a", 1))
    store.add(item("b", 0))
    now = time.time()
    head = next(i for i in store.claim("outbox", "w1", now, 10, 1000) if i.chat_key == "a")
    head.attempts = 1
    head.next_attempt_at = now + 100
    head.deadline = now + 3600
    head.last_error = "HTTP 503: busy"
    store.reschedule(head)
    # not due: neither the head nor the item behind it is handed out
    assert store.claim("outbox", "w1", now + 50, 10, 30) == []  # chat b is still leased
    again = store.claim("outbox", "w1", now + 101, 10, 30)
    assert numbers(again) == [("a", 0)]
    assert again[0].attempts == 1
    assert again[0].last_error == "HTTP 503: busy"
    assert again[0].deadline == pytest.approx(now + 3600)
    assert again[0].next_attempt_at == pytest.approx(now + 100)


def test_bury_then_retry_or_drop_dead_letters(store: Store) -> None:
    for n in range(3):
        store.add(item("a", n))
    head = store.claim("outbox", "w1", time.time(), 10, 30)[0]
    head.attempts = 3
    head.last_error = "HTTP 400: chat not found"
    store.bury(head)
    dead = store.dead_letters()
    assert [(d.id, d.last_error, d.attempts) for d in dead] == [
        (head.id, "HTTP 400: chat not found", 3)
    ]
    assert store.pending("outbox") == 2
    # burying released the chat: the next item goes
    nxt = store.claim("outbox", "w1", time.time(), 10, 30)
    assert numbers(nxt) == [("a", 1)]
    assert store.dead_letter_retry(head.id) is True
    assert store.dead_letters() == []
    assert store.pending("outbox") == 3
    store.ack(nxt[0])
    order = []
    while store.pending("outbox"):
        for claimed in store.claim("outbox", "w1", time.time(), 10, 30):
            order.append(claimed.payload["n"])
            store.ack(claimed)
    assert order == [2, 0]  # the retried letter went to the tail of its chat
    assert store.dead_letter_retry(head.id) is False
    # bury again, then drop for good
    store.add(item("c", 9))
    again = store.claim("outbox", "w1", time.time(), 10, 30)[0]
    again.last_error = "gave up"
    store.bury(again)
    assert store.dead_letter_drop(again.id) is True
    assert store.dead_letter_drop(again.id) is False
    assert store.dead_letters() == []
    assert store.pending("outbox") == 0


def test_dead_letters_are_listed_oldest_first(store: Store) -> None:
    for n, created in enumerate([300.0, 100.0, 200.0]):
        store.add(item(f"chat-{n}", n, created_at=created))
    for claimed in store.claim("outbox", "w1", time.time(), 10, 30):
        claimed.last_error = f"error {claimed.payload['n']}"
        store.bury(claimed)
    assert [d.created_at for d in store.dead_letters()] == [100.0, 200.0, 300.0]


def test_pending_counts(store: Store) -> None:
    assert store.pending("outbox") == 0
    for n in range(4):
        store.add(item("a" if n % 2 else "b", n))
    assert store.pending("outbox") == 4
    claimed = store.claim("outbox", "w1", time.time(), 10, 30)
    assert store.pending("outbox") == 4  # claimed items are still pending until acknowledged
    store.ack(claimed[0])
    store.bury(claimed[1])
    assert store.pending("outbox") == 2


def test_every_field_round_trips_with_unicode(store: Store) -> None:
    original = QueueItem(
        destination="omnichannel:main",
        chat_key="omnichannel:main:чат/1 #x",
        payload={
            "method": "send_message",
            "body": {"text": 'Привет 👋 — «ok» \u0000 \\ "q"', "n": [1, 2.5, None, True]},
        },
        created_at=1700000000.123456,
        deadline=1700003600.5,
        attempts=2,
        next_attempt_at=1700000001.25,
        last_error="HTTP 503: сервер занят",
    )
    store.add(original)
    (got,) = store.claim("outbox", "w1", 1700000002.0, 10, 30)
    assert got == original
    store.bury(got)
    assert store.dead_letters() == [original]


def test_two_owners_never_share_a_chat_under_contention(stores: Stores) -> None:
    handles = [stores.open(), stores.open()]
    for n in range(30):
        handles[0].add(item(f"chat-{n % 3}", n))
    in_flight: set[str] = set()
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()
    clashes: list[str] = []

    def work(owner: str, handle: Store) -> None:
        end = time.monotonic() + 20
        while handle.pending("outbox") and time.monotonic() < end:
            for claimed in handle.claim("outbox", owner, time.time(), 2, 30):
                with lock:
                    if claimed.chat_key in in_flight:
                        clashes.append(claimed.chat_key)
                    in_flight.add(claimed.chat_key)
                    seen.append((claimed.chat_key, claimed.payload["n"]))
                time.sleep(0.001)
                with lock:
                    in_flight.discard(claimed.chat_key)
                handle.ack(claimed)

    threads = [threading.Thread(target=work, args=(f"w{i}", handles[i % 2])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert clashes == []
    assert sorted(n for _, n in seen) == list(range(30))
    for chat in ("chat-0", "chat-1", "chat-2"):
        got = [n for c, n in seen if c == chat]
        assert got == sorted(got)


# what survives a restart ------------------------------------------------------------------------
def test_everything_survives_reopening(shared: Stores) -> None:
    first = shared.open()
    assert first.mark_seen("delivery-1", 3600)
    first.set_state("chat:1", {"handover": True})
    first.add(item("a", 0))
    first.add(item("a", 1))
    claimed = first.claim("outbox", "w1", time.time(), 10, 0.2)  # then the process "dies"
    assert numbers(claimed) == [("a", 0)]
    first.add(item("b", 0))
    buried = first.claim("outbox", "w1", time.time(), 10, 30)
    assert numbers(buried) == [("b", 0)]
    buried[0].last_error = "HTTP 400"
    first.bury(buried[0])
    first.close()

    second = shared.open()
    assert second.mark_seen("delivery-1", 3600) is False
    assert second.get_state("chat:1") == {"handover": True}
    assert second.pending("outbox") == 2
    assert [d.last_error for d in second.dead_letters()] == ["HTTP 400"]
    got: list[QueueItem] = []
    wait_until(lambda: bool(got.extend(second.claim("outbox", "w2", time.time(), 10, 30)) or got))
    assert numbers(got) == [("a", 0)]


# the outbox over each store ---------------------------------------------------------------------
def make_outbox(store: Store) -> Outbox:
    return Outbox(store, backoff=0.01, cap=0.02, poll_interval=0.01, deadline=30, lease=30)


def test_outbox_retries_a_failing_delivery_then_delivers_once_in_order(store: Store) -> None:
    calls: list[int] = []

    def deliver(payload: Any) -> None:
        calls.append(payload["n"])
        if len(calls) <= 2:
            raise DeliveryError("HTTP 503: busy", status=503, retryable=True)

    outbox = make_outbox(store)
    outbox.register("test", deliver)
    outbox.start()
    try:
        outbox.put("test", "chat-1", {"n": 1})
        outbox.put("test", "chat-1", {"n": 2})
        assert outbox.drain(10)
    finally:
        outbox.stop(1)
    assert calls == [1, 1, 1, 2]
    assert store.pending("outbox") == 0
    assert store.dead_letters() == []


def test_outbox_dead_letters_a_refused_delivery_and_retry_resends_it(store: Store) -> None:
    calls: list[int] = []
    refuse = threading.Event()
    refuse.set()

    def deliver(payload: Any) -> None:
        calls.append(payload["n"])
        if refuse.is_set():
            raise DeliveryError("HTTP 400: unknown chat_id", status=400, retryable=False)

    outbox = make_outbox(store)
    outbox.register("test", deliver)
    outbox.start()
    try:
        outbox.put("test", "chat-1", {"n": 7})
        assert outbox.drain(10)
        (dead,) = store.dead_letters()
        assert dead.last_error == "HTTP 400: unknown chat_id"
        assert dead.attempts == 1
        assert dead.payload == {"n": 7}
        assert calls == [7]
        refuse.clear()
        assert store.dead_letter_retry(dead.id)
        assert outbox.drain(10)
    finally:
        outbox.stop(1)
    assert calls == [7, 7]
    assert store.dead_letters() == []
    assert store.pending("outbox") == 0


# several processes --------------------------------------------------------------------------------
def _mp() -> Any:
    # fork is quick and is what gunicorn does; every child opens its own store from the spec
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _dedupe_worker(spec: StoreSpec, keys: list[str], barrier: Any, results: Any) -> None:
    store = open_spec(spec)
    try:
        barrier.wait(30)
        results.put((os.getpid(), [k for k in keys if store.mark_seen(k, 3600)]))
    finally:
        store.close()


def test_processes_sharing_a_store_dedupe_with_one_winner(shared: Stores) -> None:
    assert shared.spec is not None
    ctx = _mp()
    keys = [f"delivery-{i}" for i in range(150)]
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_dedupe_worker, args=(shared.spec, keys, barrier, results))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    won = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    wins = Counter(k for _, mine in won for k in mine)
    assert wins == Counter(keys)


def _outbox_worker(
    spec: StoreSpec,
    role: str,
    log_path: str,
    barrier: Any,
    produced: Any,
) -> None:
    store = open_spec(spec)
    try:
        if role == "producer":
            # the middle part of every chat comes from another process than the parent
            for n in range(5, 10):
                for chat in ("a", "b", "c", "d"):
                    store.add(item(chat, n))
            produced.set()
        barrier.wait(30)
        owner = f"worker-{os.getpid()}"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        end = time.monotonic() + 60
        try:
            while time.monotonic() < end:
                batch = store.claim("outbox", owner, time.time(), 2, 30)
                if not batch:
                    if store.pending("outbox") == 0:
                        return
                    time.sleep(0.002)
                    continue
                for claimed in batch:
                    # "deliver": one append, atomic, in the global order of deliveries
                    line = json.dumps([claimed.chat_key, claimed.payload["n"], os.getpid()])
                    os.write(log_fd, (line + "\n").encode())
                    time.sleep(0.002)
                    store.ack(claimed)
        finally:
            os.close(log_fd)
    finally:
        store.close()


def test_processes_deliver_each_item_once_in_chat_order(shared: Stores, tmp_path: Path) -> None:
    assert shared.spec is not None
    ctx = _mp()
    parent = shared.open()
    chats = ("a", "b", "c", "d")
    for n in range(5):
        for chat in chats:
            parent.add(item(chat, n))
    log_path = tmp_path / "deliveries.log"
    log_path.touch()
    barrier = ctx.Barrier(4)
    produced = ctx.Event()
    procs = [
        ctx.Process(
            target=_outbox_worker,
            args=(
                shared.spec,
                "producer" if i == 0 else "consumer",
                str(log_path),
                barrier,
                produced,
            ),
        )
        for i in range(3)
    ]
    for p in procs:
        p.start()
    assert produced.wait(30)
    for n in range(10, 15):
        for chat in chats:
            parent.add(item(chat, n))
    barrier.wait(30)
    for p in procs:
        p.join(90)
        assert p.exitcode == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert Counter((c, n) for c, n, _ in lines) == Counter((c, n) for c in chats for n in range(15))
    per_chat: dict[str, list[int]] = defaultdict(list)
    for chat, n, _ in lines:
        per_chat[chat].append(n)
    assert all(per_chat[c] == list(range(15)) for c in chats), per_chat
    assert len({pid for _, _, pid in lines}) >= 2  # the work really was shared
    assert parent.pending("outbox") == 0


# SQLite specifics -------------------------------------------------------------------------------
def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteStore.from_url("sqlite:///relative.db")
    absolute = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'abs.db'}?synchronous=full")
    try:
        assert relative.path == "relative.db"
        assert (tmp_path / "relative.db").exists()
        assert absolute.path == str(tmp_path / "abs.db")
        assert str(tmp_path).startswith("/")  # so the URL above had four slashes
        assert absolute.synchronous == "FULL"
    finally:
        relative.close()
        absolute.close()
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x.db'}"), SQLiteStore)
    for bad in ("sqlite://host/x.db", "sqlite:///", "sqlite:///x.db?color=red"):
        with pytest.raises(ConfigurationError, match="sqlite|store"):
            SQLiteStore.from_url(bad)


def test_sqlite_uses_wal_and_refuses_what_is_not_a_database(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "wal.db")
    store.close()
    with sqlite3.connect(tmp_path / "wal.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigurationError, match="junk.db"):
        SQLiteStore(tmp_path / "junk.db")
    with pytest.raises(ConfigurationError, match="missing-dir"):
        SQLiteStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(RuntimeError, match="closed"):
        store.mark_seen("x", 1)


def test_sqlite_purges_expired_dedupe_keys(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "purge.db", purge_interval=0.2)
    try:
        for i in range(500):
            assert store.mark_seen(f"old-{i}", 0.05)
        store.mark_seen("long-lived", 3600)

        def rows() -> int:
            with sqlite3.connect(tmp_path / "purge.db") as conn:
                count: int = conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
                return count

        assert rows() == 501
        # the periodic purge runs from mark_seen once purge_interval has passed
        wait_until(lambda: store.mark_seen(f"new-{time.monotonic()}", 0.05) and rows() < 10)
        assert store.mark_seen("long-lived", 3600) is False
        assert store.purge_expired(time.time() + 7200) >= 1  # everything is expired by then
    finally:
        store.close()


# Redis specifics ----------------------------------------------------------------------------------
@pytest.mark.redis
def test_redis_outbox_runs_on_plain_lists_with_leases_taken_over(redis_url: str) -> None:
    import redis

    prefix = unique_prefix("lists")
    store = RedisStore(redis_url, prefix=prefix)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store.add(item("a", 0))
        assert client.lrange(prefix + "outbox:ready", 0, -1) == ["a"]
        store.claim("outbox", "dead-worker", time.time(), 10, 0.3)
        assert client.lindex(prefix + "outbox:chat:a", 0).endswith("\ndead-worker")
        got: list[QueueItem] = []
        wait_until(
            lambda: bool(got.extend(store.claim("outbox", "heir", time.time(), 10, 30)) or got)
        )
        assert client.lindex(prefix + "outbox:chat:a", 0).endswith(
            "\nheir"
        )  # the sweep took it over
        store.ack(got[0])
        assert not client.exists(prefix + "outbox:chat:a", prefix + "outbox:ready")
        assert store.lease_owners() == set()
        assert client.ttl(prefix + "seen:x") == -2
        store.mark_seen("x", 60)
        assert 0 < client.ttl(prefix + "seen:x") <= 60
    finally:
        client.close()
        store.close()


@pytest.mark.redis
def test_redis_store_opens_from_a_url(redis_url: str) -> None:
    store = open_store(redis_url)
    prefix = unique_prefix("url")
    prefixed = open_store(f"{redis_url}?prefix={prefix}")
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix == "omnichannel:"
        assert isinstance(prefixed, RedisStore)
        assert prefixed.prefix == prefix
        assert prefixed.mark_seen("k", 60)
        same = RedisStore(redis_url, prefix=prefix)
        assert same.mark_seen("k", 60) is False
        same.close()
    finally:
        store.close()
        prefixed.close()


def test_redis_store_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="cannot reach Redis") as caught:
        RedisStore("redis://:s3cret-pass@127.0.0.1:1/0")
    assert "s3cret" not in str(caught.value)
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with pytest.raises(ConfigurationError, match=r"pip install \"omnichannel\[redis\]\""):
        open_store("redis://127.0.0.1:6379/0")


def test_open_store_schemes() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    with pytest.raises(ConfigurationError, match="postgres"):
        open_store("postgres://db/x")
