"""The embedded default store: one SQLite file shared by the threads and processes of one machine.

Dedupe keys, chat state, the outbox and its dead letters live in one database file (``sqlite3``
from the standard library; no server). The file is opened in WAL mode so readers never wait for
the writer, with a busy timeout so processes sharing the file queue up instead of failing, and
every read-modify-write (claiming chat heads, moving an item to the dead letters) runs inside
``BEGIN IMMEDIATE``, which takes SQLite's write lock before reading: two processes can never
lease the same chat.

Within a process one connection is shared by all threads behind a lock (SQLite serializes
writers anyway, and one connection keeps ``close`` simple). A process that inherits a store
through ``fork`` opens its own connection on first use.

Expired dedupe keys are purged every ``purge_interval`` seconds (in chunks, so a large purge
never holds the write lock for long), keeping the file bounded by the keys seen within one TTL.

With ``synchronous=NORMAL`` (the default, the usual choice with WAL) a committed write survives a
crash or ``SIGKILL`` of the process; after a power cut the last few commits may be lost. Use
``synchronous="FULL"`` to make every commit durable against power loss as well (slower).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.stores.base import QueueItem

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS seen (
        key TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at)",
    """CREATE TABLE IF NOT EXISTS chat_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    # seq orders items: a new row always gets a rowid above every existing one
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        chat_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        deadline REAL NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_chat ON outbox (chat_key, seq)",
    """CREATE TABLE IF NOT EXISTS chat_lease (
        chat_key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS dead_letter (
        id TEXT PRIMARY KEY,
        destination TEXT NOT NULL,
        chat_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        deadline REAL NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        buried_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

# Statements are literals (no string building): values always go through placeholders.
_INSERT_ITEM = """
    INSERT INTO outbox (
        id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
        last_error
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_INSERT_DEAD_LETTER = """
    INSERT OR REPLACE INTO dead_letter (
        id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
        last_error, buried_at
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_SELECT_DEAD_LETTERS = """
    SELECT id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
           last_error
    FROM dead_letter
"""

# The due head of every chat whose lease is free or expired, oldest first.
_DUE_HEADS = """
    SELECT id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
           last_error
    FROM outbox AS o
    WHERE o.seq IN (SELECT MIN(seq) FROM outbox GROUP BY chat_key)
      AND o.next_attempt_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM chat_lease AS l WHERE l.chat_key = o.chat_key AND l.expires_at > :now
      )
    ORDER BY o.seq
    LIMIT :limit
"""

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _dump(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _item(row: tuple[Any, ...]) -> QueueItem:
    return QueueItem(
        id=row[0],
        destination=row[1],
        chat_key=row[2],
        payload=json.loads(row[3]),
        created_at=row[4],
        deadline=row[5],
        attempts=row[6],
        next_attempt_at=row[7],
        last_error=row[8],
    )


def _values(item: QueueItem) -> tuple[Any, ...]:
    return (
        item.id,
        item.destination,
        item.chat_key,
        _dump(item.payload),
        item.created_at,
        item.deadline,
        item.attempts,
        item.next_attempt_at,
        item.last_error,
    )


class SQLiteStore:
    """A :class:`~omnichannel.runtime.stores.Store` in one SQLite file.

    Args:
        path: the database file (created when missing; its directory must exist), or
            ``":memory:"`` for a private in-memory database (one store object only).
        busy_timeout: seconds to wait for another process's write lock before failing.
        synchronous: SQLite's ``synchronous`` pragma: ``"NORMAL"`` (survives process crashes)
            or ``"FULL"`` (also survives power loss).
        purge_interval: seconds between purges of expired dedupe keys and leases.

    Raises:
        ConfigurationError: the file cannot be opened or is not an omnichannel database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
        purge_interval: float = 60.0,
    ) -> None:
        self.path = os.fspath(path)
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous: expected one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous.upper()
        self.purge_interval = purge_interval
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._next_purge = time.time() + purge_interval
        self._conn = self._connect()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        ``sqlite:///:memory:`` gives a private in-memory database. Query parameters
        ``busy_timeout`` (seconds) and ``synchronous`` are passed on.

        Raises:
            ConfigurationError: not a ``sqlite:///`` URL, no path, or an unknown parameter.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite" or not url.lower().startswith("sqlite:///"):
            raise ConfigurationError(
                "store: expected sqlite:///relative.db or sqlite:////absolute/path.db, "
                f"got {parts.scheme or '(no scheme)'}://{parts.netloc}…"
            )
        path = unquote(parts.path[1:])  # "/rel.db" -> "rel.db", "//abs.db" -> "/abs.db"
        if not path:
            raise ConfigurationError("store: the sqlite URL has no file path")
        options: dict[str, Any] = {}
        for name, values in parse_qs(parts.query, keep_blank_values=True).items():
            value = values[-1]
            if name == "busy_timeout":
                try:
                    options[name] = float(value)
                except ValueError:
                    raise ConfigurationError(
                        f"store: busy_timeout must be a number of seconds, got {value!r}"
                    ) from None
            elif name == "synchronous":
                options[name] = value
            else:
                raise ConfigurationError(
                    f"store: unknown sqlite URL parameter {name!r} "
                    "(accepted: busy_timeout, synchronous)"
                )
        return cls(path, **options)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # connection -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,  # shared by threads, guarded by self._lock
            )
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"store: cannot open SQLite file {self.path!r}: {exc}"
            ) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if self.path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("sqlite store %s: journal_mode is %s, not wal", self.path, mode)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > _SCHEMA_VERSION:
                    raise ConfigurationError(
                        f"store: {self.path!r} has schema version {version}; this omnichannel "
                        f"knows up to {_SCHEMA_VERSION} (upgrade omnichannel)"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
                if version < _SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigurationError(
                f"store: {self.path!r} is not a usable SQLite database: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, held exclusively by the calling thread."""
        if os.getpid() != self._pid:
            # a forked child: never touch the parent's connection (or its lock state)
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._conn = self._connect()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            yield self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: SQLite's write lock is taken before anything is read."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # dedupe ---------------------------------------------------------------------------------
    def mark_seen(self, key: str, ttl: float) -> bool:
        """Record ``key``; ``True`` when it was new, ``False`` when seen within its TTL."""
        now = time.time()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval
            self.purge_expired(now)
        with self._connection() as conn:
            # one statement, so atomic: insert, or take over a key whose time ran out
            cursor = conn.execute(
                "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE seen.expires_at <= ?",
                (key, now + ttl, now),
            )
            return cursor.rowcount == 1

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        with self._connection() as conn:
            conn.execute("DELETE FROM seen WHERE key = ?", (key,))

    def purge_expired(self, now: float | None = None, *, chunk: int = 5000) -> int:
        """Delete expired dedupe keys and chat leases; return how many dedupe keys went.

        Runs by itself every ``purge_interval`` seconds; deletes in chunks of ``chunk`` rows,
        each in its own short transaction.
        """
        now = time.time() if now is None else now
        purged = 0
        while True:
            with self._transaction() as conn:
                deleted = conn.execute(
                    "DELETE FROM seen WHERE key IN "
                    "(SELECT key FROM seen WHERE expires_at <= ? LIMIT ?)",
                    (now, chunk),
                ).rowcount
            purged += deleted
            if deleted < chunk:
                break
        with self._transaction() as conn:
            conn.execute("DELETE FROM chat_lease WHERE expires_at <= ?", (now,))
        if purged:
            log.debug("sqlite store %s: purged %d expired dedupe keys", self.path, purged)
        return purged

    # chat state -----------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM chat_state WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def set_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Store ``value`` under ``key`` (``None`` deletes it)."""
        with self._connection() as conn:
            if value is None:
                conn.execute("DELETE FROM chat_state WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO chat_state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, _dump(value)),
                )

    # outbox ---------------------------------------------------------------------------------
    def outbox_add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue (committed when this returns)."""
        with self._connection() as conn:
            conn.execute(_INSERT_ITEM, _values(item))

    def outbox_claim(self, owner: str, now: float, limit: int, lease: float) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads to ``owner`` until ``now + lease``."""
        if limit <= 0:
            return []
        params = {"now": now, "limit": limit}
        with self._connection() as conn:
            # a cheap look without the write lock first: idle pollers never queue for it
            if conn.execute(_DUE_HEADS, params).fetchone() is None:
                return []
        with self._transaction() as conn:
            rows = conn.execute(_DUE_HEADS, params).fetchall()
            conn.executemany(
                "INSERT INTO chat_lease (chat_key, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (chat_key) DO UPDATE SET "
                "owner = excluded.owner, expires_at = excluded.expires_at",
                [(row[2], owner, now + lease) for row in rows],
            )
        return [_item(row) for row in rows]

    def outbox_ack(self, item: QueueItem) -> None:
        """The item was delivered: remove it and release its chat."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            conn.execute("DELETE FROM chat_lease WHERE chat_key = ?", (item.chat_key,))

    def outbox_reschedule(self, item: QueueItem) -> None:
        """Save ``attempts``, ``next_attempt_at``, ``deadline`` and ``last_error``; release."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, deadline = ?, "
                "last_error = ? WHERE id = ?",
                (item.attempts, item.next_attempt_at, item.deadline, item.last_error, item.id),
            )
            conn.execute("DELETE FROM chat_lease WHERE chat_key = ?", (item.chat_key,))

    def outbox_bury(self, item: QueueItem) -> None:
        """Move the item to the dead letters (keeping ``last_error``); release its chat."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            conn.execute(_INSERT_DEAD_LETTER, (*_values(item), time.time()))
            conn.execute("DELETE FROM chat_lease WHERE chat_key = ?", (item.chat_key,))

    def outbox_pending(self) -> int:
        """How many items wait for delivery (dead letters excluded)."""
        with self._connection() as conn:
            count: int = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return count

    def dead_letters(self) -> list[QueueItem]:
        """The items that gave up, oldest first."""
        with self._connection() as conn:
            rows = conn.execute(_SELECT_DEAD_LETTERS + " ORDER BY created_at, buried_at").fetchall()
        return [_item(row) for row in rows]

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue, due now."""
        with self._transaction() as conn:
            row = conn.execute(_SELECT_DEAD_LETTERS + " WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return False
            item = _item(row)
            item.next_attempt_at = 0.0
            item.deadline = 0.0
            conn.execute("DELETE FROM dead_letter WHERE id = ?", (item_id,))
            conn.execute(_INSERT_ITEM, _values(item))
            return True

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        with self._connection() as conn:
            return conn.execute("DELETE FROM dead_letter WHERE id = ?", (item_id,)).rowcount > 0

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise ``RuntimeError``."""
        if os.getpid() != self._pid:
            self._closed = True
            return
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
