"""The embedded default store: one SQLite file shared by the threads and processes of one machine.

Dedupe keys, chat state, the inbox, the outbox and their dead letters live in one database file
(``sqlite3`` from the standard library; no server). The file is opened in WAL mode so readers
never wait for the writer, with a busy timeout so processes sharing the file queue up instead of
failing, and every read-modify-write runs inside ``BEGIN IMMEDIATE``, which takes SQLite's write
lock before reading: two processes can never lease the same chat.

Schema (version 2, in ``PRAGMA user_version``; a version-1 file is upgraded when opened)::

    seen         (key PK, expires_at)                       dedupe marks; index on expires_at
    chat_state   (key PK, value, version)                   JSON state; version for CAS
    dead_letter  (id PK, <item columns>, buried_at, queue)  both queues' dead letters
    inbox/outbox (seq INTEGER PK, <item columns>, ready, lease_owner, lease_until)
        index {q}_chat  (chat_key, seq)                     a chat's items, in order
        index {q}_ready (ready, seq) WHERE ready IS NOT NULL    the chat heads, by readiness
    inbox_lease/outbox_lease (chat_key PK, lease_owner, lease_until)

``seq`` is the rowid: a new row always gets one above every existing row, so it orders the
items of a chat. The first item of each chat, its *head*, carries the chat's lease and
``ready``: the time from which the chat may be claimed, ``max(queued, next_attempt_at,
lease_until)``, where ``queued`` is the item's ``created_at`` (at most the time it was written);
every other item has ``ready`` NULL. A claim is then one range scan of the small partial index,
``ready <= now`` in index order, with no sort and no look at the other items: the chats that
have been ready longest go first (fresh heads by age, retries from when they came due, expired
leases from when they ran out), so none starves. Leasing a head moves its ``ready`` to the end
of the lease, out of that range. (The version-1 claim grouped the whole outbox by chat on every
call: tens of items per second under a backlog.)

Each commit appends one WAL page per B-tree it changed, and in a queue that is most of the
cost, so the layout keeps them few: the lease lives on the head row (a claim writes the row and
the ready index, nothing else), and there is no index on ``id`` (an item is found through its
``chat_key``; it is nearly always the first). An add is one statement that works out by itself
whether it starts its chat. The heads move in the transaction of the change that moves them
(ack, bury, complete, reschedule, retry).

``{q}_lease`` keeps the rare lease that outlives its chat's last item (a late worker finished
the turn another owner is redoing): the chat's next item takes it over (a trigger deletes the
row), or it runs out and is purged. Both queues have the same tables; their statements are
generated once, at import, from one fixed template per queue name (the only text ever put into
SQL); values always go through placeholders.

Within a process one connection is shared by all threads behind a lock (SQLite serializes
writers anyway, and one connection keeps ``close`` simple). A process that inherits a store
through ``fork`` opens its own connection on first use.

Expired dedupe keys are purged every ``purge_interval`` seconds (in chunks, so a large purge
never holds the write lock for long), keeping the file bounded by the keys seen within one TTL.

With ``synchronous=NORMAL`` (the default, the usual choice with WAL) a committed write survives a
crash or ``SIGKILL`` of the process; after a power cut the last few commits may be lost. Use
``synchronous="FULL"`` to make every commit durable against power loss as well (slower).

Payloads and state are stored as JSON with ``ensure_ascii``: a visitor's text may hold a lone
surrogate (half an emoji), which cannot be encoded as UTF-8 but survives as a ``\\ud83d`` escape.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.stores.base import INBOX, OUTBOX, QueueItem, QueueName, StateSnapshot

if TYPE_CHECKING:
    from omnichannel.runtime.stores.base import Store

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 2
_COLUMNS = (
    "id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at, "
    "last_error"
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS seen (
        key TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at)",
    """CREATE TABLE IF NOT EXISTS chat_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1
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
        buried_at REAL NOT NULL,
        queue TEXT NOT NULL DEFAULT 'outbox'
    ) WITHOUT ROWID""",
)

# Version 1 had no inbox, no state versions, an outbox with a UNIQUE id and no heads, and its
# leases in chat_lease (dropped: a lease of the old engine ends with the upgrade).
_BEFORE_UPGRADE_FROM_1 = (
    "ALTER TABLE chat_state ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE dead_letter ADD COLUMN queue TEXT NOT NULL DEFAULT 'outbox'",
    "DROP TABLE chat_lease",
    "DROP INDEX outbox_chat",
    "ALTER TABLE outbox RENAME TO outbox_v1",
)
_AFTER_UPGRADE_FROM_1 = (
    """INSERT INTO outbox (seq, id, destination, chat_key, payload, created_at, deadline,
            attempts, next_attempt_at, last_error)
        SELECT seq, id, destination, chat_key, payload, created_at, deadline, attempts,
            next_attempt_at, last_error
        FROM outbox_v1""",
    "DROP TABLE outbox_v1",
    """UPDATE outbox SET ready = MAX(MIN(created_at, ?), next_attempt_at)
        WHERE seq IN (SELECT MIN(seq) FROM outbox GROUP BY chat_key)""",
)


class _QueueSql(NamedTuple):
    """The statements of one queue: ``{q}`` is the queue's name, ``{cols}`` the item columns."""

    table: str
    chat_index: str
    ready_index: str
    lease_table: str
    lease_trigger: str
    add: str
    add_new: str
    find: str
    delete: str
    promote: str
    keep_lease: str
    update: str
    due_any: str
    due_heads: str
    lease: str
    renew: str
    renew_kept: str
    owners: str
    release: str
    release_kept: str
    size: str
    purge_kept: str


# ?1..?9 the item's columns, ?10 now. The chat's first item becomes its head (taking over a
# lease the chat kept); is_head is worked out once, in a one-row subquery.
_ADD = """INSERT INTO {q} ({cols}, ready, lease_owner, lease_until)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
        CASE WHEN c.is_head THEN MAX(MIN(?5, ?10), ?8, COALESCE(k.lease_until, 0)) END,
        CASE WHEN c.is_head THEN k.lease_owner END,
        CASE WHEN c.is_head THEN COALESCE(k.lease_until, 0) ELSE 0 END
    FROM (SELECT NOT EXISTS (SELECT 1 FROM {q} WHERE chat_key = ?3) AS is_head) AS c
    LEFT JOIN {q}_lease AS k ON k.chat_key = ?3
    WHERE {only_new}"""
# a reply already queued for its chat, or dead, is not added again
_ONLY_NEW = """NOT EXISTS (SELECT 1 FROM {q} WHERE chat_key = ?3 AND id = ?1)
    AND NOT EXISTS (SELECT 1 FROM dead_letter WHERE id = ?1)"""

_TEMPLATE = _QueueSql(
    table="""CREATE TABLE IF NOT EXISTS {q} (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        destination TEXT NOT NULL,
        chat_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        deadline REAL NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        ready REAL,
        lease_owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0
    )""",
    chat_index="CREATE INDEX IF NOT EXISTS {q}_chat ON {q} (chat_key, seq)",
    ready_index="CREATE INDEX IF NOT EXISTS {q}_ready ON {q} (ready, seq) WHERE ready IS NOT NULL",
    lease_table="""CREATE TABLE IF NOT EXISTS {q}_lease (
        chat_key TEXT PRIMARY KEY,
        lease_owner TEXT NOT NULL,
        lease_until REAL NOT NULL
    ) WITHOUT ROWID""",
    lease_trigger="""CREATE TRIGGER IF NOT EXISTS {q}_lease_taken AFTER INSERT ON {q}
        WHEN NEW.lease_owner IS NOT NULL
        BEGIN DELETE FROM {q}_lease WHERE chat_key = NEW.chat_key; END""",
    add=_ADD.replace("{only_new}", "1"),
    add_new=_ADD.replace("{only_new}", _ONLY_NEW),
    find="SELECT seq, ready, lease_owner, lease_until FROM {q} WHERE chat_key = ? AND id = ?",
    delete="DELETE FROM {q} WHERE seq = ?",
    # ?1 lease owner, ?2 lease end, ?3 chat key, ?4 now
    promote="""UPDATE {q} SET lease_owner = ?1, lease_until = ?2,
            ready = MAX(MIN(created_at, ?4), next_attempt_at, ?2)
        WHERE seq = (SELECT seq FROM {q} WHERE chat_key = ?3 ORDER BY seq LIMIT 1)""",
    keep_lease="INSERT OR REPLACE INTO {q}_lease (chat_key, lease_owner, lease_until) "
    "VALUES (?, ?, ?)",
    # ?1..?4 the retry fields, ?5 lease owner, ?6 lease end, ?7 seq, ?8 now
    update="""UPDATE {q} SET attempts = ?1, next_attempt_at = ?2, deadline = ?3, last_error = ?4,
            lease_owner = ?5, lease_until = ?6,
            ready = CASE WHEN ready IS NOT NULL THEN MAX(MIN(created_at, ?8), ?2, ?6) END
        WHERE seq = ?7""",
    due_any="SELECT 1 FROM {q} WHERE ready <= ? LIMIT 1",
    due_heads="SELECT {cols}, seq FROM {q} WHERE ready <= ? ORDER BY ready, seq LIMIT ?",
    lease="UPDATE {q} SET lease_owner = ?1, lease_until = ?2, ready = MAX(ready, ?2) "
    "WHERE seq = ?3",
    # ?1 lease end, ?2 owner, ?3 chat key
    renew="""UPDATE {q} SET lease_until = ?1, ready = MAX(ready, ?1)
        WHERE lease_owner = ?2
          AND seq = (SELECT seq FROM {q} WHERE chat_key = ?3 ORDER BY seq LIMIT 1)""",
    renew_kept="UPDATE {q}_lease SET lease_until = ?1 WHERE lease_owner = ?2 AND chat_key = ?3",
    owners="SELECT lease_owner FROM {q} WHERE lease_owner IS NOT NULL "
    "UNION SELECT lease_owner FROM {q}_lease",
    release="""UPDATE {q} SET lease_owner = NULL, lease_until = 0,
            ready = MAX(MIN(created_at, ?2), next_attempt_at)
        WHERE lease_owner = ?1""",
    release_kept="DELETE FROM {q}_lease WHERE lease_owner = ?",
    size="SELECT COUNT(*) FROM {q}",
    purge_kept="DELETE FROM {q}_lease WHERE lease_until <= ?",
)

# the only text ever formatted into SQL: these two fixed names and the column list
_SQL: dict[str, _QueueSql] = {
    q: _QueueSql._make(s.format(q=q, cols=_COLUMNS) for s in _TEMPLATE) for q in (INBOX, OUTBOX)
}

_MARK = (
    "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE seen.expires_at <= ?"
)
_INSERT_DEAD_LETTER = """
    INSERT OR REPLACE INTO dead_letter (
        id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
        last_error, buried_at, queue
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_DEAD_LETTERS = """
    SELECT id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
           last_error, queue
    FROM dead_letter
"""

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _item(row: Sequence[Any], queue: QueueName, owner: str | None = None) -> QueueItem:
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
        queue=queue,
        owner=owner,
    )


def _values(item: QueueItem, now: float) -> tuple[Any, ...]:
    """The parameters of ``add``: the item's columns, then ``now``."""
    payload = _dump(item.payload)
    return (item.id, item.destination, item.chat_key, payload, item.created_at, item.deadline,
            item.attempts, item.next_attempt_at, item.last_error, now)  # fmt: skip


def _sql(queue: str) -> _QueueSql:
    try:
        return _SQL[queue]
    except KeyError:
        raise ValueError(f"unknown queue {queue!r} (expected 'inbox' or 'outbox')") from None


def _dead_queue(name: str) -> QueueName:
    return INBOX if name == INBOX else OUTBOX


def _left(holder: str | None, until: float, releaser: str | None) -> tuple[str | None, float]:
    """The lease left on a chat once ``releaser`` is done: only its holder releases it."""
    if holder is not None and holder == releaser:
        return None, 0.0
    return holder, until


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, never masking the error that brought us here."""
    if not conn.in_transaction:
        return  # SQLite rolled back by itself (it does on some I/O and full-disk errors)
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("sqlite store: rollback failed: %s", exc)


class _Held:
    """``with store._held as conn``: the connection, held exclusively by the calling thread.

    (A class rather than a generator: it runs several times per queue operation.)
    """

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        return self._store._acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._store._lock.release()


class _Transaction(_Held):
    """``with store._tx as conn``: a write transaction, SQLite's write lock taken first.

    Anything raised inside, or by the ``COMMIT`` (a full disk), rolls the whole transaction
    back and propagates; the connection stays usable.
    """

    __slots__ = ()

    def __enter__(self) -> sqlite3.Connection:
        conn = self._store._acquire()
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
            if kind is not None:
                _rollback(conn)
                return
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
        self._held = _Held(self)
        self._tx = _Transaction(self)
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
                # the host only: a mistyped URL may carry credentials
                f"got {parts.scheme or '(no scheme)'}://{parts.hostname or ''}…"
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

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or upgrade a version-1 file (in the caller's transaction)."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise ConfigurationError(
                f"store: {self.path!r} has schema version {version}; this omnichannel "
                f"knows up to {_SCHEMA_VERSION} (upgrade omnichannel)"
            )
        if version == _SCHEMA_VERSION:
            return
        for statement in _BEFORE_UPGRADE_FROM_1 if version == 1 else ():
            conn.execute(statement)
        for statement in _SCHEMA:
            conn.execute(statement)
        for sql in _SQL.values():
            for statement in sql[:5]:  # the table, its indexes, the lease table, the trigger
                conn.execute(statement)
        if version == 1:
            conn.execute(_AFTER_UPGRADE_FROM_1[0])
            conn.execute(_AFTER_UPGRADE_FROM_1[1])
            conn.execute(_AFTER_UPGRADE_FROM_1[2], (time.time(),))
            log.info("sqlite store %s: upgraded the schema from version 1", self.path)
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _acquire(self) -> sqlite3.Connection:
        """Lock and return the connection; the caller releases ``self._lock``."""
        if os.getpid() != self._pid:
            # a forked child: never touch the parent's connection (or its lock state)
            self._lock = threading.Lock()
            self._pid = os.getpid()
            if not self._closed:
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
            return conn.execute(_MARK, (key, now + ttl, now)).rowcount == 1

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        with self._held as conn:
            conn.execute("DELETE FROM seen WHERE key = ?", (key,))

    def purge_expired(self, now: float | None = None, *, chunk: int = 5000) -> int:
        """Delete expired dedupe keys (and run-out leases kept by emptied chats); return how
        many dedupe keys went.

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
        with self._tx as conn:
            for sql in _SQL.values():
                conn.execute(sql.purge_kept, (now,))
        if purged:
            log.debug("sqlite store %s: purged %d expired dedupe keys", self.path, purged)
        return purged

    # chat state -----------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        return self.load_state(key).value

    def set_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Store ``value`` under ``key`` unconditionally (``None`` deletes it); bump its version."""
        with self._held as conn:
            if value is None:
                conn.execute("DELETE FROM chat_state WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO chat_state (key, value, version) VALUES (?, ?, 1) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value, version = chat_state.version + 1",
                    (key, _dump(value)),
                )

    def load_state(self, key: str) -> StateSnapshot:
        """The state under ``key`` with its version (``version`` 0 when absent)."""
        with self._held as conn:
            row = conn.execute(
                "SELECT value, version FROM chat_state WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return StateSnapshot(None, 0)
        return StateSnapshot(json.loads(row[0]), row[1])

    def save_state(self, key: str, value: Mapping[str, Any] | None, version: int) -> bool:
        """Compare-and-set: store ``value`` only if the version is still ``version``.

        ``None`` deletes. Returns ``False`` (and changes nothing) when someone else wrote the
        key since it was loaded. Every case is a single statement, hence atomic.
        """
        with self._held as conn:
            if value is None and version == 0:
                found = conn.execute("SELECT 1 FROM chat_state WHERE key = ?", (key,)).fetchone()
                return found is None
            if value is None:
                cursor = conn.execute(
                    "DELETE FROM chat_state WHERE key = ? AND version = ?", (key, version)
                )
            elif version == 0:
                cursor = conn.execute(
                    "INSERT INTO chat_state (key, value, version) VALUES (?, ?, 1) "
                    "ON CONFLICT (key) DO NOTHING",
                    (key, _dump(value)),
                )
            else:
                cursor = conn.execute(
                    "UPDATE chat_state SET value = ?, version = version + 1 "
                    "WHERE key = ? AND version = ?",
                    (_dump(value), key, version),
                )
            return cursor.rowcount == 1

    # inbox ----------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        """Atomically record ``dedupe_key`` and append ``item`` to its chat's inbox queue.

        Returns ``False`` (nothing stored) when ``dedupe_key`` was seen within ``ttl``. When
        this raises (a full disk), neither the mark nor the item was stored.
        """
        now = time.time()
        self._purge_when_due(now)
        with self._tx as conn:
            if (
                dedupe_key is not None
                and conn.execute(_MARK, (dedupe_key, now + ttl, now)).rowcount != 1
            ):
                return False  # a repeat: nothing written
            conn.execute(_SQL[INBOX].add, _values(item, now))
        return True

    def inbox_complete(self, item: QueueItem, replies: Sequence[QueueItem]) -> bool:
        """Atomically append ``replies`` to the outbox and remove the turn ``item``.

        Releases the chat's inbox lease when ``item.owner`` holds it. Returns ``False`` and
        writes nothing when ``item`` is no longer in the inbox (another worker completed it).
        A reply whose id is already queued for its chat, or among the dead letters, is not
        added twice.
        """
        add_new = _SQL[OUTBOX].add_new
        with self._tx as conn:
            if not self._remove(conn, _SQL[INBOX], item):
                return False
            now = time.time()
            for reply in replies:
                conn.execute(add_new, _values(reply, now))
        return True

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        """Extend ``owner``'s leases on ``chat_keys`` to ``lease`` seconds from now."""
        sql = _sql(queue)
        until = time.time() + lease
        rows = [(until, owner, chat_key) for chat_key in chat_keys]
        with self._tx as conn:
            conn.executemany(sql.renew, rows)
            conn.executemany(sql.renew_kept, rows)

    def lease_owners(self) -> set[str]:
        """The owners holding a lease on either queue (run-out leases included)."""
        with self._held as conn:
            return {row[0] for sql in _SQL.values() for row in conn.execute(sql.owners)}

    def release_owner(self, owner: str) -> int:
        """End every lease ``owner`` holds (its process died); return how many."""
        released = 0
        now = time.time()
        with self._tx as conn:
            for sql in _SQL.values():
                released += conn.execute(sql.release, (owner, now)).rowcount
                released += conn.execute(sql.release_kept, (owner,)).rowcount
        return released

    # both queues ----------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue (committed when this returns)."""
        sql = _sql(item.queue)
        with self._held as conn:
            conn.execute(sql.add, _values(item, time.time()))  # one statement: atomic

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
                if conn.execute(sql.due_any, (now,)).fetchone() is None:
                    return []
        until = now + lease
        with self._tx as conn:
            rows = conn.execute(sql.due_heads, (now, limit)).fetchall()
            conn.executemany(sql.lease, [(owner, until, row[9]) for row in rows])
        if rows:
            self._busy.add(queue)
        else:
            self._busy.discard(queue)
        return [_item(row, queue, owner) for row in rows]

    @staticmethod
    def _remove(conn: sqlite3.Connection, sql: _QueueSql, item: QueueItem) -> bool:
        """Delete the queued ``item`` (inside a transaction); ``False`` when it is not queued.

        When it was its chat's head, the next item becomes the head, under the same lease
        unless ``item.owner`` holds it; with no next item, another owner's running lease is
        kept in the lease table.
        """
        found = conn.execute(sql.find, (item.chat_key, item.id)).fetchone()
        if found is None:
            return False
        seq, ready, holder, until = found
        conn.execute(sql.delete, (seq,))
        if ready is not None:
            holder, until = _left(holder, until, item.owner)
            now = time.time()
            promoted = conn.execute(sql.promote, (holder, until, item.chat_key, now)).rowcount
            if not promoted and holder is not None and until > now:
                conn.execute(sql.keep_lease, (item.chat_key, holder, until))
        return True

    def ack(self, item: QueueItem) -> None:
        """The item is done: remove it; release its chat if ``item.owner`` holds the lease.

        An item no longer queued (a late worker's) changes nothing.
        """
        sql = _sql(item.queue)
        with self._tx as conn:
            self._remove(conn, sql, item)

    def reschedule(self, item: QueueItem) -> None:
        """Save ``attempts``, ``next_attempt_at``, ``deadline``, ``last_error``; release."""
        sql = _sql(item.queue)
        with self._tx as conn:
            found = conn.execute(sql.find, (item.chat_key, item.id)).fetchone()
            if found is None:
                return
            seq, _, holder, until = found
            holder, until = _left(holder, until, item.owner)
            retry = (item.attempts, item.next_attempt_at, item.deadline, item.last_error)
            conn.execute(sql.update, (*retry, holder, until, seq, time.time()))

    def bury(self, item: QueueItem) -> None:
        """Move the item to the dead letters (keeping ``last_error``); release its chat."""
        sql = _sql(item.queue)
        with self._tx as conn:
            if self._remove(conn, sql, item):
                values = _values(item, time.time())
                conn.execute(_INSERT_DEAD_LETTER, (*values, item.queue))

    def pending(self, queue: QueueName) -> int:
        """How many items wait in ``queue`` (claimed ones included, dead letters excluded)."""
        sql = _sql(queue)
        with self._held as conn:
            count: int = conn.execute(sql.size).fetchone()[0]
        return count

    def dead_letters(self) -> list[QueueItem]:
        """The items of both queues that gave up, oldest first (``queue`` says which)."""
        with self._held as conn:
            rows = conn.execute(_SELECT_DEAD_LETTERS + " ORDER BY created_at, buried_at").fetchall()
        return [_item(row, _dead_queue(row[9])) for row in rows]

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue (the queue it left), due now."""
        with self._tx as conn:
            row = conn.execute(_SELECT_DEAD_LETTERS + " WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return False
            item = _item(row, _dead_queue(row[9]))
            item.next_attempt_at = 0.0
            item.deadline = 0.0
            conn.execute("DELETE FROM dead_letter WHERE id = ?", (item_id,))
            conn.execute(_SQL[item.queue].add, _values(item, time.time()))
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


if TYPE_CHECKING:

    def _conforms(store: SQLiteStore) -> Store:
        return store  # mypy checks every method against the Protocol
