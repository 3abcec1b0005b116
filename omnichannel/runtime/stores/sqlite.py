"""The embedded default store: one SQLite file shared by the threads and processes of one machine.

Dedupe keys, chat state, the inbox, the outbox and their dead letters live in one database file
(``sqlite3`` from the standard library; no server), in WAL mode so readers never wait for the
writer, with a busy timeout so processes sharing the file queue up instead of failing. Every
read-modify-write runs inside ``BEGIN IMMEDIATE``, which takes SQLite's write lock before
reading: two processes can never lease the same chat.

Schema (version 4, in ``PRAGMA user_version``; an older file is upgraded when opened)::

    seen         (key PK, expires_at)                       dedupe marks; index on expires_at
    chat_state   (key PK, value, version, expires_at)       JSON state; version for CAS
    dead_letter  (id PK, <item columns>, buried_at, queue)  both queues' dead letters
    inbox/outbox (seq INTEGER PK, <item columns>, ready, lease_owner, lease_until)
        index {q}_ready (ready, seq) WHERE ready IS NOT NULL    the chat heads, by readiness
        row seq = -1, no item: the item count (in attempts), kept by triggers
    inbox_lease/outbox_lease (chat_key PK, lease_owner, lease_until)

Each commit appends one WAL page per B-tree it changed, which is most of a queue's cost, so the
item table has one index only. Its rowid, ``seq``, is laid out by chat: 28 bits of the chat
key's CRC-32, then a 35-bit counter, one above the last item of that range. A chat's items are
therefore adjacent and in order (a range scan of the rowid, filtered on ``chat_key`` in case two
chats share a range), with no index by chat or by ``id``: an item is found through its chat,
and it is nearly always the first.

The first item of each chat, its *head*, carries the chat's lease and ``ready``, the time from
which the chat may be claimed: ``max(queued, next_attempt_at, lease_until)``, ``queued`` being
the item's ``created_at`` (at most the time it was written); other items have ``ready`` NULL.
A claim is one range scan of the small partial index, ``ready <= now`` in index order, no sort,
no look at other items (version 1 grouped the whole outbox by chat on every claim): the chats
ready the longest go first (fresh heads by age, retries from when they came due, expired leases
from when they ran out), so none starves; a lease moves ``ready`` to its end, out of range. So
an add writes the row (and the index entry when it starts its chat), in one statement; a claim
writes the row and its index entry; an ack deletes them and moves the next item up, in one
transaction. ``{q}_lease`` keeps the rare lease that outlives its chat's last item (a late
worker finished the turn another owner is redoing) until the chat's next item takes it over (a
trigger moves it onto the new head) or it runs out (purged). ``pending`` reads the count kept
in row -1 of the item table: counting the items would read every page of the table, and the
runtime asks often.

Both queues have the same tables; their statements are generated once, at import, from one
fixed template per queue name (the only text ever put into SQL); values go through placeholders.

Within a process one connection is shared by all threads behind a lock (SQLite serializes
writers anyway, and one connection keeps ``close`` simple). A process that inherits a store
through ``fork`` opens its own connection on first use; no thread is inside SQLite while the
process forks (see ``_before_fork``). Expired dedupe keys are purged every
``purge_interval`` seconds, in chunks, so a large purge never holds the write lock for long.

With ``synchronous=NORMAL`` (the default, the usual choice with WAL) a committed write survives a
crash or ``SIGKILL`` of the process; after a power cut the last few commits may be lost. Use
``synchronous="FULL"`` to make every commit durable against power loss as well (slower).

JSON is written with ``ensure_ascii``: a visitor's text may hold a lone surrogate (half an
emoji), which cannot be encoded as UTF-8 but survives as a ``\\ud83d`` escape.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
import zlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.stores._batching import GroupCommit
from omnichannel.runtime.stores._sqlite_sql import (
    BEFORE_UPGRADE_FROM_1,
    BEFORE_UPGRADE_FROM_2,
    INSERT_DEAD_LETTER,
    MARK,
    SCHEMA,
    SCHEMA_VERSION,
    SELECT_DEAD_LETTERS,
    SEQ_BITS,
    SQL,
    STATE,
    V1_ITEMS,
)
from omnichannel.runtime.stores.base import (
    INBOX,
    OUTBOX,
    QueueItem,
    QueueName,
    StateConflict,
    StateSnapshot,
    StateWrite,
)

if TYPE_CHECKING:
    from omnichannel.runtime.stores.base import Store

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


_dump = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode  # built once


def _item(row: Sequence[Any], queue: str, owner: str | None = None) -> QueueItem:
    return QueueItem(id=row[0], destination=row[1], chat_key=row[2], payload=json.loads(row[3]),
                     created_at=row[4], deadline=row[5], attempts=row[6], next_attempt_at=row[7],
                     last_error=row[8], queue=INBOX if queue == INBOX else OUTBOX,
                     owner=owner)  # fmt: skip


def _bucket(chat_key: str) -> tuple[int, int]:
    """The range of ``seq`` that holds the items of ``chat_key`` (see ``SEQ_BITS``)."""
    lo = (zlib.crc32(chat_key.encode("utf-8", "surrogatepass")) >> 4) << SEQ_BITS
    return lo, lo + (1 << SEQ_BITS) - 1


def _columns(item: QueueItem) -> tuple[Any, ...]:
    payload = _dump(item.payload)
    return (item.id, item.destination, item.chat_key, payload, item.created_at, item.deadline,
            item.attempts, item.next_attempt_at, item.last_error)  # fmt: skip


def _values(item: QueueItem, now: float) -> tuple[Any, ...]:
    """The parameters of ``add``: the item's columns, ``now``, its chat's bucket."""
    return (*_columns(item), now, *_bucket(item.chat_key))


def _sql(queue: str) -> dict[str, str]:
    try:
        return SQL[queue]
    except KeyError:
        raise ValueError(f"unknown queue {queue!r} (expected 'inbox' or 'outbox')") from None


def _left(holder: str | None, until: float, releaser: str | None) -> tuple[str | None, float]:
    """The lease left on a chat once ``releaser`` is done: only its holder releases it."""
    if holder is not None and holder == releaser:
        return None, 0.0
    return holder, until


def _new_version() -> int:
    return time.time_ns() // 1000


def _until(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl


def _snapshot(row: Sequence[Any] | None) -> StateSnapshot:
    if row is None:
        return StateSnapshot(None, 0)
    if row[2] is not None and row[2] <= time.time():
        return StateSnapshot(None, row[1])  # expired: absent, until purged
    return StateSnapshot(json.loads(row[0]), row[1])


def _save(
    conn: sqlite3.Connection,
    key: str,
    value: Mapping[str, Any] | None,
    version: int,
    ttl: float | None,
) -> bool:
    """One compare-and-set of chat state (one statement)."""
    if value is None and version == 0:  # "delete what is absent": check it still is
        return _snapshot(conn.execute(STATE["get"], (key,)).fetchone()).version == 0
    if value is None:
        cursor = conn.execute(STATE["delete_at"], (key, version))
    elif version == 0:
        cursor = conn.execute(STATE["create"], (key, _dump(value), _new_version(), _until(ttl)))
    else:
        cursor = conn.execute(STATE["update_at"], (_dump(value), _until(ttl), key, version))
    return cursor.rowcount == 1


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, never masking the error that brought us here."""
    if not conn.in_transaction:
        return  # SQLite rolled back by itself (it does on some I/O and full-disk errors)
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("sqlite store: rollback failed: %s", exc)


# No thread may be inside SQLite when the process forks: a mutex of SQLite's own (its allocator's)
# held then stays held forever in the child, whose first connection then hangs. Every call into
# SQLite here runs under its store's lock (or _LIVE_LOCK, for opening), so fork takes them all.
_LIVE: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_HELD_OVER_FORK: list[threading.Lock] = []


def _before_fork() -> None:
    _LIVE_LOCK.acquire()
    for store in list(_LIVE):
        store._lock.acquire()
        _HELD_OVER_FORK.append(store._lock)


def _after_fork() -> None:
    while _HELD_OVER_FORK:
        _HELD_OVER_FORK.pop().release()
    _LIVE_LOCK.release()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


class _Use:
    """``with store._held as conn``: the connection, held by the calling thread alone;
    ``store._tx``: the same in a write transaction (``BEGIN IMMEDIATE``). What is raised inside,
    or by the ``COMMIT`` (a full disk), rolls it all back and propagates; the connection stays
    usable. (A class, not a generator: cheaper, and it runs several times per operation.)
    """

    __slots__ = ("_store", "_write")

    def __init__(self, store: SQLiteStore, *, write: bool) -> None:
        self._store = store
        self._write = write

    def __enter__(self) -> sqlite3.Connection:
        conn = self._store._acquire()
        if self._write:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._store._lock.release()
                raise
        return conn

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn = self._store._conn
        try:
            if self._write and kind is not None:
                _rollback(conn)
            elif self._write:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
        finally:
            self._store._lock.release()


class SQLiteStore:
    """A :class:`~omnichannel.runtime.stores.Store` in one SQLite file.

    Args:
        path: the database file (created when missing; its directory must exist), or
            ``":memory:"`` for a private in-memory database (one store object only).
        busy_timeout: seconds to wait for another process's write lock before failing.
        synchronous: SQLite's ``synchronous`` pragma: ``"NORMAL"`` (survives process crashes)
            or ``"FULL"`` (also survives power loss).
        purge_interval: seconds between purges of expired dedupe keys.

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
        self._busy: set[str] = set()  # the queues whose last claim here found work
        self._held = _Use(self, write=False)
        self._tx = _Use(self, write=True)
        self._group = GroupCommit(self._acquire, lambda: self._lock.release())
        with _LIVE_LOCK:
            self._conn = self._connect()
            _LIVE.add(self)

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
                # the host only: a mistyped URL may carry credentials
                f"got {parts.scheme or '(no scheme)'}://{parts.hostname or ''}…"
            )
        path = unquote(parts.path[1:])  # "/rel.db" -> "rel.db", "//abs.db" -> "/abs.db"
        if not path:
            raise ConfigurationError("store: the sqlite URL has no file path")
        options: dict[str, Any] = {}
        for name, values in parse_qs(parts.query, keep_blank_values=True).items():
            if name not in ("busy_timeout", "synchronous"):
                raise ConfigurationError(
                    f"store: unknown sqlite URL parameter {name!r} "
                    "(accepted: busy_timeout, synchronous)"
                )
            options[name] = values[-1]
        if "busy_timeout" in options:
            try:
                options["busy_timeout"] = float(options["busy_timeout"])
            except ValueError:
                raise ConfigurationError(
                    "store: busy_timeout must be a number of seconds, "
                    f"got {options['busy_timeout']!r}"
                ) from None
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
                mode = self._enter_wal(conn)
                if mode.lower() != "wal":
                    log.warning("sqlite store %s: journal_mode is %s, not wal", self.path, mode)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._create_schema(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
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

    def _enter_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL. Processes opening a new file at once may find it busy without the
        busy timeout being applied (switching needs the file alone): retry for that long."""
        end = time.monotonic() + self.busy_timeout
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= end:
                    raise
                time.sleep(0.01)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or upgrade a version-1 file (in the caller's transaction)."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"store: {self.path!r} has schema version {version}; this omnichannel "
                f"knows up to {SCHEMA_VERSION} (upgrade omnichannel)"
            )
        if version == SCHEMA_VERSION:
            return
        for statement in {1: BEFORE_UPGRADE_FROM_1, 2: BEFORE_UPGRADE_FROM_2}.get(version, ()):
            conn.execute(statement)
        columns = {row[0] for row in conn.execute(STATE["columns"])}
        if columns and "expires_at" not in columns:  # version 3 and older: no state TTL
            conn.execute(STATE["add_expiry"])
        for statement in SCHEMA:
            conn.execute(statement)
        for sql in SQL.values():
            for name in ("table", "ready_index", "lease_table", "lease_trigger"):
                conn.execute(sql[name])
            conn.execute(sql["size_row"])
            conn.execute(sql["size_up"])
            conn.execute(sql["size_down"])
        if version == 1:  # re-add the old outbox in its order, then drop it
            add, now = SQL[OUTBOX]["add"], time.time()
            for row in conn.execute(V1_ITEMS).fetchall():
                conn.execute(add, (*row, now, *_bucket(row[2])))
            conn.execute("DROP TABLE outbox_v1")
            log.info("sqlite store %s: upgraded the schema from version 1", self.path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _acquire(self) -> sqlite3.Connection:
        """Lock and return the connection; the caller releases ``self._lock``."""
        if os.getpid() != self._pid:
            # a forked child: never touch the parent's connection (or its lock state)
            self._lock = threading.Lock()
            self._pid = os.getpid()
            if not self._closed:
                with _LIVE_LOCK:
                    self._conn = self._connect()
        self._lock.acquire()
        if self._closed:
            self._lock.release()
            raise RuntimeError(f"{self!r} is closed")
        return self._conn

    # dedupe ---------------------------------------------------------------------------------
    def _purge_when_due(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval
            self.purge_expired(now)

    def mark_seen(self, key: str, ttl: float) -> bool:
        """Record ``key``; ``True`` when it was new, ``False`` when seen within its TTL."""
        now = time.time()
        self._purge_when_due(now)
        with self._held as conn:
            # one statement, so atomic: insert, or take over a key whose time ran out
            return conn.execute(MARK, (key, now + ttl, now)).rowcount == 1

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        with self._held as conn:
            conn.execute("DELETE FROM seen WHERE key = ?", (key,))

    def purge_expired(self, now: float | None = None, *, chunk: int = 5000) -> int:
        """Delete expired dedupe keys and state (and run-out leases kept by emptied chats);
        return how many dedupe keys went.

        Runs by itself every ``purge_interval`` seconds; deletes in chunks of ``chunk`` rows,
        each in its own short transaction.
        """
        now = time.time() if now is None else now
        purged = 0
        while True:
            with self._tx as conn:
                deleted = conn.execute(
                    "DELETE FROM seen WHERE key IN "
                    "(SELECT key FROM seen WHERE expires_at <= ? LIMIT ?)",
                    (now, chunk),
                ).rowcount
            purged += deleted
            if deleted < chunk:
                break
        while True:
            with self._tx as conn:
                deleted = conn.execute(STATE["purge"], (now, chunk)).rowcount
            if deleted < chunk:
                break
        with self._tx as conn:
            for sql in SQL.values():
                conn.execute(sql["purge_kept"], (now,))
        if purged:
            log.debug("sqlite store %s: purged %d expired dedupe keys", self.path, purged)
        return purged

    # chat state -----------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        return self.load_state(key).value

    def set_state(
        self, key: str, value: Mapping[str, Any] | None, ttl: float | None = None
    ) -> None:
        """Store ``value`` under ``key`` unconditionally (``None`` deletes it); bump its version."""
        with self._held as conn:
            if value is None:
                conn.execute(STATE["delete"], (key,))
            else:
                conn.execute(STATE["set"], (key, _dump(value), _new_version(), _until(ttl)))

    def load_state(self, key: str) -> StateSnapshot:
        """The state under ``key`` with its version (``version`` 0 when absent)."""
        with self._held as conn:
            row = conn.execute(STATE["get"], (key,)).fetchone()
        return _snapshot(row)

    def save_state(
        self, key: str, value: Mapping[str, Any] | None, version: int, ttl: float | None = None
    ) -> bool:
        """Compare-and-set: store ``value`` only if the version is still ``version``.

        ``None`` deletes. Returns ``False`` (and changes nothing) when someone else wrote the
        key since it was loaded. Every case is a single statement, hence atomic.
        """
        with self._held as conn:
            return _save(conn, key, value, version, ttl)

    # inbox ----------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        """Atomically record ``dedupe_key`` and append ``item`` to its chat's inbox queue.

        Returns ``False`` (nothing stored) when ``dedupe_key`` was seen within ``ttl``. When
        this raises (a full disk), neither the mark nor the item was stored.
        """
        now = time.time()
        self._purge_when_due(now)

        def admit(conn: sqlite3.Connection) -> bool:
            if (
                dedupe_key is not None
                and conn.execute(MARK, (dedupe_key, now + ttl, now)).rowcount != 1
            ):
                return False  # a repeat: nothing written
            conn.execute(SQL[INBOX]["add"], _values(item, now))
            return True

        return self._group.run(admit)

    def inbox_complete(
        self, item: QueueItem, replies: Sequence[QueueItem], writes: Sequence[StateWrite] = ()
    ) -> bool:
        """Atomically append ``replies`` to the outbox, apply the state ``writes`` (each a
        compare-and-set: :class:`StateConflict` and nothing written when one fails) and remove
        the turn ``item``.

        Releases the chat's inbox lease when ``item.owner`` holds it. Returns ``False`` and
        writes nothing when ``item`` is no longer in the inbox (another worker completed it).
        A reply whose id is already queued for its chat, or among the dead letters, is not
        added twice.
        """
        outbox = SQL[OUTBOX]

        def complete(conn: sqlite3.Connection) -> bool:
            if not self._remove(conn, SQL[INBOX], item):
                return False
            for write in writes:
                if not _save(conn, write.key, write.value, write.version, write.ttl):
                    raise StateConflict(write.key)  # rolls the operation back
            now = time.time()
            for reply in replies:
                key = (*_bucket(reply.chat_key), reply.chat_key, reply.id)
                if conn.execute(outbox["known"], key).fetchone() is None:
                    conn.execute(outbox["add"], _values(reply, now))
            return True

        return self._group.run(complete)

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        """Extend ``owner``'s leases on ``chat_keys`` to ``lease`` seconds from now."""
        sql = _sql(queue)
        until = time.time() + lease
        rows = [(until, owner, chat_key, *_bucket(chat_key)) for chat_key in chat_keys]
        with self._tx as conn:
            conn.executemany(sql["renew"], rows)
            conn.executemany(sql["renew_kept"], [row[:3] for row in rows])

    def lease_owners(self) -> set[str]:
        """The owners holding a lease on either queue (run-out leases included)."""
        with self._held as conn:
            return {row[0] for sql in SQL.values() for row in conn.execute(sql["owners"])}

    def release_owner(self, owner: str) -> int:
        """End every lease ``owner`` holds (its process died); return how many."""
        released = 0
        now = time.time()
        with self._tx as conn:
            for sql in SQL.values():
                released += conn.execute(sql["release"], (owner, now)).rowcount
                released += conn.execute(sql["release_kept"], (owner,)).rowcount
        return released

    # both queues ----------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue (committed when this returns)."""
        sql = _sql(item.queue)
        with self._held as conn:
            conn.execute(sql["add"], _values(item, time.time()))  # one statement: atomic

    def claim(
        self, queue: QueueName, owner: str, now: float, limit: int, lease: float
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads of ``queue`` to ``owner`` for ``lease`` seconds.

        The chats ready the longest go first, leased in one transaction; the returned items
        have ``owner`` set. A head counts as due from when it was queued (its ``created_at``)
        or, after a failure, from its ``next_attempt_at``, whichever is later.
        """
        sql = _sql(queue)
        if limit <= 0:
            return []
        if queue not in self._busy:
            with self._held as conn:
                # idle: a cheap look without the write lock first, so pollers never queue for it
                if conn.execute(sql["due_any"], (now,)).fetchone() is None:
                    return []
        until = now + lease

        def lease_heads(conn: sqlite3.Connection) -> list[Any]:
            rows = conn.execute(sql["due_heads"], (now, limit)).fetchall()
            conn.executemany(sql["lease"], [(owner, until, row[9]) for row in rows])
            return rows

        rows = self._group.run(lease_heads)
        if rows:
            self._busy.add(queue)
        else:
            self._busy.discard(queue)
        return [_item(row, queue, owner) for row in rows]

    @staticmethod
    def _remove(conn: sqlite3.Connection, sql: dict[str, str], item: QueueItem) -> bool:
        """Delete the queued ``item`` (inside a transaction); ``False`` when it is not queued.

        When it was its chat's head, the next item becomes the head, under the same lease
        unless ``item.owner`` holds it; with no next item, another owner's running lease is
        kept in the lease table.
        """
        lo, hi = _bucket(item.chat_key)
        found = conn.execute(sql["find"], (lo, hi, item.chat_key, item.id)).fetchone()
        if found is None:
            return False
        seq, ready, holder, until = found
        conn.execute(sql["delete"], (seq,))
        if ready is not None:
            holder, until = _left(holder, until, item.owner)
            now = time.time()
            args = (holder, until, item.chat_key, now, lo, hi)
            promoted = conn.execute(sql["promote"], args).rowcount
            if not promoted and holder is not None and until > now:
                conn.execute(sql["keep_lease"], (item.chat_key, holder, until))
        return True

    def ack(self, item: QueueItem) -> None:
        """The item is done: remove it; release its chat if ``item.owner`` holds the lease.

        An item no longer queued (a late worker's) changes nothing.
        """
        sql = _sql(item.queue)
        self._group.run(lambda conn: self._remove(conn, sql, item))

    def reschedule(self, item: QueueItem) -> None:
        """Save ``attempts``, ``next_attempt_at``, ``deadline``, ``last_error``; release."""
        sql = _sql(item.queue)

        def update(conn: sqlite3.Connection) -> None:
            key = (*_bucket(item.chat_key), item.chat_key, item.id)
            found = conn.execute(sql["find"], key).fetchone()
            if found is None:
                return
            seq, _, holder, until = found
            holder, until = _left(holder, until, item.owner)
            retry = (item.attempts, item.next_attempt_at, item.deadline, item.last_error)
            conn.execute(sql["update"], (*retry, holder, until, seq, time.time()))

        self._group.run(update)

    def bury(self, item: QueueItem) -> None:
        """Move the item to the dead letters (keeping ``last_error``); release its chat."""
        sql = _sql(item.queue)

        def move(conn: sqlite3.Connection) -> None:
            if self._remove(conn, sql, item):
                values = (*_columns(item), time.time(), item.queue)
                conn.execute(INSERT_DEAD_LETTER, values)

        self._group.run(move)

    def pending(self, queue: QueueName) -> int:
        """How many items wait in ``queue`` (claimed ones included, dead letters excluded)."""
        sql = _sql(queue)
        with self._held as conn:
            count: int = conn.execute(sql["size"]).fetchone()[0]
        return count

    def dead_letters(self) -> list[QueueItem]:
        """The items of both queues that gave up, oldest first (``queue`` says which)."""
        with self._held as conn:
            rows = conn.execute(SELECT_DEAD_LETTERS + " ORDER BY created_at, buried_at").fetchall()
        return [_item(row, row[9]) for row in rows]

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue (the queue it left), due now."""
        with self._tx as conn:
            row = conn.execute(SELECT_DEAD_LETTERS + " WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return False
            item = _item(row, row[9])
            item.next_attempt_at = 0.0
            item.deadline = 0.0
            conn.execute("DELETE FROM dead_letter WHERE id = ?", (item_id,))
            conn.execute(SQL[item.queue]["add"], _values(item, time.time()))
        return True

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        with self._held as conn:
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
        with _LIVE_LOCK:
            _LIVE.discard(self)


if TYPE_CHECKING:

    def _conforms(store: SQLiteStore) -> Store:
        return store  # mypy checks every method against the Protocol
