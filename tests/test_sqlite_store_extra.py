"""SQLite-specific store behaviour beyond the shared contract: text that is not valid UTF-8, a
full disk in the middle of an admission, leases that outlive their item, the upgrade of a
version-1 file, and the claim staying an index range scan."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.stores import INBOX, OUTBOX, QueueItem
from omnichannel.runtime.stores.base import StateSnapshot
from omnichannel.runtime.stores.sqlite import SQLiteStore

LONE = "half an emoji: \ud83d, and its other half: \ude00"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "extra.db")
    yield opened
    opened.close()


def turn(chat: str, n: int, **fields: Any) -> QueueItem:
    fields.setdefault("payload", {"n": n})
    return QueueItem(destination="test", chat_key=chat, queue=INBOX, **fields)


def test_a_lone_surrogate_round_trips(store: SQLiteStore) -> None:
    original = QueueItem(destination="test", chat_key="a", payload={"text": LONE, "n": [LONE]})
    store.add(original)
    (got,) = store.claim(OUTBOX, "w", time.time(), 10, 30)
    assert got == original and got.payload["text"] == LONE
    store.bury(got)
    assert store.dead_letters()[0].payload == original.payload
    assert store.inbox_admit(turn("b", 0, payload={"text": LONE}), "k", 60)
    (admitted,) = store.claim(INBOX, "w", time.time(), 10, 30)
    assert admitted.payload == {"text": LONE}
    store.set_state("s", {"name": LONE})
    assert store.get_state("s") == {"name": LONE}


def test_a_full_disk_during_admission_stores_nothing(store: SQLiteStore) -> None:
    assert store.inbox_admit(turn("a", 0), "k0", 60)
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # "the disk" is full
    big = turn("a", 1, payload={"text": "x" * 200_000})
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.inbox_admit(big, "k1", 60)
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    assert store.pending(INBOX) == 1  # neither the turn ...
    assert store.inbox_admit(big, "k1", 60)  # ... nor its dedupe mark was stored
    assert store.pending(INBOX) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="fork and RLIMIT_FSIZE")
def test_a_file_size_limit_during_admission_stores_nothing(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "fsize.db"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hit the limit, report, never return into pytest
        report: dict[str, object] = {}
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            child = SQLiteStore(path)
            child.inbox_admit(turn("a", 0), "k0", 60)
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            largest = max(path.stat().st_size, Path(f"{path}-wal").stat().st_size)
            resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 1024, hard))
            big = turn("a", 1, payload={"text": "x" * 200_000})
            try:
                child.inbox_admit(big, "k1", 60)
                report["raised"] = None
            except sqlite3.DatabaseError as exc:
                report["raised"] = type(exc).__name__
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            report["after"] = child.pending(INBOX)
            report["again"] = child.inbox_admit(big, "k1", 60)
            child.close()
        except BaseException as exc:  # reported to the parent
            report["error"] = repr(exc)
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    assert report == {"raised": "OperationalError", "after": 1, "again": True}


def test_a_late_ack_does_not_end_the_lease_its_own_process_took_since(
    store: SQLiteStore,
) -> None:
    # one owner id per process: the lease ran out, the same process claimed the item again
    store.add(QueueItem(destination="test", chat_key="a", payload={"n": 0}))
    store.add(QueueItem(destination="test", chat_key="a", payload={"n": 1}))
    (first,) = store.claim(OUTBOX, "proc", time.time(), 10, 0.05)
    time.sleep(0.1)
    (again,) = store.claim(OUTBOX, "proc", time.time(), 10, 0.05)
    assert again.id == first.id
    store.ack(first)  # done: the chat moves on
    (second,) = store.claim(OUTBOX, "proc", time.time(), 10, 30)
    assert second.payload == {"n": 1}
    store.ack(again)  # no longer queued: changes nothing, the lease on item 1 stays
    assert store.claim(OUTBOX, "other", time.time(), 10, 30) == []
    store.ack(second)
    assert store.pending(OUTBOX) == 0


def test_another_owners_lease_outlives_the_chats_last_turn(store: SQLiteStore) -> None:
    store.inbox_admit(turn("a", 0), None, 60)
    (slow,) = store.claim(INBOX, "slow", time.time(), 10, 0.05)
    time.sleep(0.1)
    (fast,) = store.claim(INBOX, "fast", time.time(), 10, 30)
    assert store.inbox_complete(slow, [])  # the late worker finishes the turn first
    store.inbox_admit(turn("a", 1), None, 60)
    assert store.claim(INBOX, "third", time.time(), 10, 30) == []  # "fast" still holds "a"
    assert store.lease_owners() == {"fast"}
    assert not store.inbox_complete(fast, [])
    assert store.release_owner("fast") == 1
    assert [t.payload for t in store.claim(INBOX, "third", time.time(), 10, 30)] == [{"n": 1}]


def test_the_chat_ready_longest_goes_first(store: SQLiteStore) -> None:
    now = time.time()
    store.add(QueueItem(destination="test", chat_key="a", payload={"n": 0}, created_at=now - 60))
    store.add(QueueItem(destination="test", chat_key="b", payload={"n": 0}, created_at=now - 30))
    (a,) = store.claim(OUTBOX, "w", now, 1, 30)
    a.next_attempt_at, a.attempts = now - 10, 1  # its retry came due 10 s ago
    store.reschedule(a)
    store.add(QueueItem(destination="test", chat_key="c", payload={"n": 0}, created_at=now - 5))
    order = [i.chat_key for i in store.claim(OUTBOX, "w", now, 10, 30)]
    assert order == ["b", "a", "c"]


def test_two_chats_sharing_a_seq_range_keep_apart(store: SQLiteStore) -> None:
    from omnichannel.runtime.stores.sqlite import _bucket

    a, b = "chat-2968529", "chat-3206002"  # the same 28-bit CRC-32 prefix
    assert _bucket(a) == _bucket(b)
    for n in range(3):
        for chat in (a, b):
            store.add(QueueItem(destination="test", chat_key=chat, payload={"n": n}))
    seen: list[tuple[str, int]] = []
    while store.pending(OUTBOX):
        batch = store.claim(OUTBOX, "w", time.time(), 10, 30)
        assert len({i.chat_key for i in batch}) == len(batch)  # one head per chat
        assert store.claim(OUTBOX, "other", time.time(), 10, 30) == []  # both leased
        for claimed in batch:
            store.renew_leases(OUTBOX, "w", [claimed.chat_key], 30)
            seen.append((claimed.chat_key, claimed.payload["n"]))
            store.ack(claimed)
    assert [n for chat, n in seen if chat == a] == [0, 1, 2]
    assert [n for chat, n in seen if chat == b] == [0, 1, 2]


def test_claim_is_an_index_range_scan(store: SQLiteStore) -> None:
    from omnichannel.runtime.stores._sqlite_sql import SQL as _SQL

    for queue in (INBOX, OUTBOX):
        plan = " | ".join(
            row[3]
            for row in store._conn.execute(
                "EXPLAIN QUERY PLAN " + _SQL[queue]["due_heads"], (time.time(), 64)
            )
        )
        assert f"USING INDEX {queue}_ready" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_a_version_1_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        for n, chat in enumerate(["a", "b", "a"]):
            conn.execute(
                "INSERT INTO outbox (id, destination, chat_key, payload, created_at, deadline, "
                "attempts, next_attempt_at, last_error) VALUES (?, 'test', ?, ?, ?, 0, 0, 0, NULL)",
                (f"id{n}", chat, json.dumps({"n": n}), 100.0 + n),
            )
        conn.execute("INSERT INTO chat_lease VALUES ('a', 'old-worker', 9e9)")
        conn.execute(
            "INSERT INTO dead_letter VALUES ('dead', 'test', 'c', '{}', 50, 0, 3, 0, 'HTTP 400', 60)"
        )
        conn.execute("INSERT INTO chat_state VALUES ('s', '{\"x\": 1}')")
        conn.execute("INSERT INTO seen VALUES ('k', 9e9)")
        conn.execute("PRAGMA user_version = 1")
    store = SQLiteStore(path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert store.pending(OUTBOX) == 3 and store.pending(INBOX) == 0
        got = store.claim(OUTBOX, "w", time.time(), 10, 30)  # the old lease ended
        assert [(i.chat_key, i.payload) for i in got] == [("a", {"n": 0}), ("b", {"n": 1})]
        store.ack(got[0])
        assert [i.payload for i in store.claim(OUTBOX, "w", time.time(), 10, 30)] == [{"n": 2}]
        (dead,) = store.dead_letters()
        assert dead.queue == OUTBOX and dead.last_error == "HTTP 400"
        assert store.load_state("s").value == {"x": 1} and store.load_state("s").version == 1
        assert not store.mark_seen("k", 60)
        assert store.inbox_admit(turn("a", 0), "k2", 60)
    finally:
        store.close()
    SQLiteStore(path).close()  # and opening it again changes nothing


def test_a_version_3_file_keeps_its_state_and_gains_state_expiry(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE chat_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
            "version INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID"
        )
        conn.execute("INSERT INTO chat_state VALUES ('s', '{\"x\": 1}', 7)")
        conn.execute("PRAGMA user_version = 3")
    store = SQLiteStore(path)
    try:
        assert store.load_state("s") == StateSnapshot({"x": 1}, 7)
        assert store.save_state("s", {"x": 2}, 7, ttl=0.05)
        snap = store.load_state("s")
        assert snap.value == {"x": 2} and snap.version == 8
        time.sleep(0.06)  # the expiry is what is tested: no condition to wait on
        assert store.load_state("s") == StateSnapshot(None, 8)  # expired: absent, version kept
        assert store.purge_expired() == 0  # (dedupe keys purged: none)
        assert store.load_state("s") == StateSnapshot(None, 0)  # and now gone
    finally:
        store.close()


def test_a_newer_schema_and_unknown_queues_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 5")
    with pytest.raises(ConfigurationError, match="schema version 5"):
        SQLiteStore(path)
    store = SQLiteStore(tmp_path / "ok.db")
    try:
        with pytest.raises(ValueError, match="unknown queue"):
            store.pending("elsewhere")  # type: ignore[arg-type]
    finally:
        store.close()


def test_url_errors_never_show_credentials() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SQLiteStore.from_url("postgres://admin:s3cret@db.example/x")
    assert "s3cret" not in str(caught.value) and "db.example" in str(caught.value)


# the schema of omnichannel's first SQLite store, as files on disk have it
V1_SCHEMA = """
CREATE TABLE seen (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX seen_expiry ON seen (expires_at);
CREATE TABLE chat_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, destination TEXT NOT NULL,
    chat_key TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,
    deadline REAL NOT NULL, attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX outbox_chat ON outbox (chat_key, seq);
CREATE TABLE chat_lease (
    chat_key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE dead_letter (
    id TEXT PRIMARY KEY, destination TEXT NOT NULL, chat_key TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, deadline REAL NOT NULL,
    attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL, last_error TEXT,
    buried_at REAL NOT NULL
) WITHOUT ROWID;
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_forking_while_threads_use_the_store_never_hangs_the_child(store: SQLiteStore) -> None:
    # a fork while another thread is inside SQLite would leave SQLite's own mutexes locked in
    # the child (gunicorn --preload with the runtime started): its first connection would hang
    stop = threading.Event()

    def busy(n: int) -> None:
        i = 0
        while not stop.is_set():
            store.mark_seen(f"{n}-{i}", 60)
            i += 1

    threads = [threading.Thread(target=busy, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    hung = 0
    try:
        for k in range(20):
            pid = os.fork()
            if pid == 0:
                try:
                    store.mark_seen(f"child-{k}", 60)
                finally:
                    os._exit(0)
            end = time.monotonic() + 10
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > end:
                    hung += 1
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert hung == 0


def _open_and_mark(path: str, barrier: Any, results: Any) -> None:
    barrier.wait(30)
    try:
        opened = SQLiteStore(path)
        opened.mark_seen("k", 60)
        opened.close()
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # switching a new file to WAL needs it alone, and SQLite answers "locked" at once
    ctx = multiprocessing.get_context("fork")
    for attempt in range(8):
        path = str(tmp_path / f"new-{attempt}.db")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=_open_and_mark, args=(path, barrier, results)) for _ in range(4)
        ]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert outcomes == ["ok"] * 4


# group commit ---------------------------------------------------------------------------------
def _item(i: int) -> QueueItem:
    return QueueItem(destination="d", chat_key=f"d:{i % 3}", payload={"n": i})


def test_writes_of_many_threads_commit_together_and_each_gets_its_own_outcome(
    store: SQLiteStore,
) -> None:
    results: dict[int, bool] = {}
    start = threading.Barrier(24)

    def admit(i: int) -> None:
        start.wait()
        # every key twice: exactly one of each pair is new
        results[i] = store.inbox_admit(_item(i), f"key-{i // 2}", 60)

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 24
    assert sum(results.values()) == 12
    assert all(results[2 * k] != results[2 * k + 1] for k in range(12))
    assert store.pending(INBOX) == 12


def test_a_write_waits_for_another_process_lock_and_fails_only_past_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    store = SQLiteStore(path, busy_timeout=1.0)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        done = threading.Event()
        outcome: list[object] = []

        def admit() -> None:
            try:
                outcome.append(store.inbox_admit(_item(1), "waits", 60))
            except Exception as exc:
                outcome.append(exc)
            done.set()

        threading.Thread(target=admit).start()
        assert not done.wait(0.2)  # waiting for the lock, not failed
        other.execute("COMMIT")
        assert done.wait(5)
        assert outcome == [True]
        # held past the busy timeout: the write fails and nothing is stored
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.inbox_admit(_item(2), "fails", 60)
        other.execute("COMMIT")
        assert store.pending(INBOX) == 1
        # the connection's own busy timeout is intact afterwards
        assert store.inbox_admit(_item(3), "after", 60)
    finally:
        other.close()
        store.close()
