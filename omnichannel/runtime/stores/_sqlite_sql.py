"""The SQL of :mod:`omnichannel.runtime.stores.sqlite`: its schema, the upgrades from older
files and every statement (generated once, at import, from fixed templates; values always go
through placeholders). See that module's docstring for the layout."""

from __future__ import annotations

from omnichannel.runtime.stores.base import INBOX, OUTBOX

SCHEMA_VERSION = 4
COLUMNS = (
    "id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at, "
    "last_error"
)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) "
    "WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at)",
    """CREATE TABLE IF NOT EXISTS chat_state (
        key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1,
        expires_at REAL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS chat_state_expiry ON chat_state (expires_at) "
    "WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS dead_letter (
        id TEXT PRIMARY KEY, destination TEXT NOT NULL, chat_key TEXT NOT NULL,
        payload TEXT NOT NULL, created_at REAL NOT NULL, deadline REAL NOT NULL,
        attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL, last_error TEXT,
        buried_at REAL NOT NULL, queue TEXT NOT NULL DEFAULT 'outbox'
    ) WITHOUT ROWID""",
)

# Version 1 had no inbox, no state versions, an outbox keyed by a plain rowid (its items are
# re-added, to get their seq), and its leases in chat_lease (a lease of the old engine ends).
BEFORE_UPGRADE_FROM_1 = (
    "ALTER TABLE chat_state ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE dead_letter ADD COLUMN queue TEXT NOT NULL DEFAULT 'outbox'",
    "DROP TABLE IF EXISTS chat_lease",
    "DROP INDEX IF EXISTS outbox_chat",
    "ALTER TABLE outbox RENAME TO outbox_v1",
)
# Version 2 counted the items in tables of their own, by triggers that wrote there.
BEFORE_UPGRADE_FROM_2 = tuple(
    statement.format(q=q)
    for q in (INBOX, OUTBOX)
    for statement in (
        "DROP TRIGGER IF EXISTS {q}_added",
        "DROP TRIGGER IF EXISTS {q}_removed",
        "DROP TABLE IF EXISTS {q}_size",
    )
)
V1_ITEMS = """SELECT id, destination, chat_key, payload, created_at, deadline, attempts,
    next_attempt_at, last_error FROM outbox_v1 ORDER BY seq"""

# A chat's items live in one range of seq, its bucket: [lo, hi], with lo = 28 bits of the
# chat key's CRC-32 followed by 35 zero bits. ?lo ?hi in the statements below are that range;
# "the chat" is the rows of the bucket with its chat_key (two chats may share a bucket).
SEQ_BITS = 35

# The statements of one queue: {q} is the queue's name, {cols} the item columns.
TEMPLATE = {
    "table": """CREATE TABLE IF NOT EXISTS {q} (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL, destination TEXT NOT NULL,
        chat_key TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,
        deadline REAL NOT NULL, attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL,
        last_error TEXT, ready REAL, lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0
    )""",
    "ready_index": "CREATE INDEX IF NOT EXISTS {q}_ready ON {q} (ready, seq) "
    "WHERE ready IS NOT NULL",
    "lease_table": """CREATE TABLE IF NOT EXISTS {q}_lease (
        chat_key TEXT PRIMARY KEY, lease_owner TEXT NOT NULL, lease_until REAL NOT NULL
    ) WITHOUT ROWID""",
    # a new head takes over the lease its chat kept
    "lease_trigger": """CREATE TRIGGER IF NOT EXISTS {q}_lease_taken AFTER INSERT ON {q}
        WHEN NEW.ready IS NOT NULL
            AND EXISTS (SELECT 1 FROM {q}_lease WHERE chat_key = NEW.chat_key)
        BEGIN
            UPDATE {q} SET (lease_owner, lease_until, ready) = (
                SELECT lease_owner, lease_until, MAX(NEW.ready, lease_until) FROM {q}_lease
                WHERE chat_key = NEW.chat_key)
            WHERE seq = NEW.seq;
            DELETE FROM {q}_lease WHERE chat_key = NEW.chat_key;
        END""",
    # how many items wait, kept by triggers: counting the table would read every page of it
    # ... in the attempts of the row seq = -1 of the table itself, below every bucket, so no
    # statement on items sees it (nor the ready index: its ready is NULL). Not a table of its
    # own: each commit writes one WAL page per page it changed, and while the queue is small
    # the counter shares its page with the items (version 2 had {q}_size; a page more per add
    # and per ack, and as many more checkpoints).
    "size_row": "INSERT INTO {q} (seq, {cols}) VALUES "
    "(-1, '', '', '', '', 0, 0, (SELECT COUNT(*) FROM {q}), 0, NULL)",
    "size_up": """CREATE TRIGGER IF NOT EXISTS {q}_added AFTER INSERT ON {q}
        BEGIN UPDATE {q} SET attempts = attempts + 1 WHERE seq = -1; END""",
    "size_down": """CREATE TRIGGER IF NOT EXISTS {q}_removed AFTER DELETE ON {q}
        BEGIN UPDATE {q} SET attempts = attempts - 1 WHERE seq = -1; END""",
    # ?1..?9 the item's columns, ?10 now, ?11 ?12 the bucket. The new seq is one above the
    # bucket's last; the chat's first item becomes its head. (VALUES, not SELECT: SQLite copies
    # a SELECT from the table being inserted into to a temporary table first.)
    "add": """INSERT INTO {q} (seq, {cols}, ready) VALUES (
        COALESCE((SELECT MAX(seq) FROM {q} WHERE seq BETWEEN ?11 AND ?12), ?11) + 1,
        ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
        CASE WHEN NOT EXISTS (SELECT 1 FROM {q} WHERE seq BETWEEN ?11 AND ?12 AND chat_key = ?3)
            THEN MAX(MIN(?5, ?10), ?8) END)""",
    # ?1 ?2 the bucket, ?3 chat key, ?4 id: queued for the chat, or dead (in either queue)
    "known": "SELECT 1 FROM {q} WHERE seq BETWEEN ?1 AND ?2 AND chat_key = ?3 AND id = ?4 "
    "UNION ALL SELECT 1 FROM dead_letter WHERE id = ?4",
    # ?1 ?2 the bucket, ?3 chat key, ?4 id
    "find": "SELECT seq, ready, lease_owner, lease_until FROM {q} "
    "WHERE seq BETWEEN ?1 AND ?2 AND chat_key = ?3 AND id = ?4",
    "delete": "DELETE FROM {q} WHERE seq = ?",
    # ?1 lease owner, ?2 lease end, ?3 chat key, ?4 now, ?5 ?6 the bucket
    "promote": """UPDATE {q} SET lease_owner = ?1, lease_until = ?2,
            ready = MAX(MIN(created_at, ?4), next_attempt_at, ?2)
        WHERE seq = (SELECT seq FROM {q} WHERE seq BETWEEN ?5 AND ?6 AND chat_key = ?3
            ORDER BY seq LIMIT 1)""",
    "keep_lease": "INSERT OR REPLACE INTO {q}_lease (chat_key, lease_owner, lease_until) "
    "VALUES (?, ?, ?)",
    # ?1..?4 the retry fields, ?5 lease owner, ?6 lease end, ?7 seq, ?8 now
    "update": """UPDATE {q} SET attempts = ?1, next_attempt_at = ?2, deadline = ?3,
            last_error = ?4, lease_owner = ?5, lease_until = ?6,
            ready = CASE WHEN ready IS NOT NULL THEN MAX(MIN(created_at, ?8), ?2, ?6) END
        WHERE seq = ?7""",
    "due_any": "SELECT 1 FROM {q} WHERE ready <= ? LIMIT 1",
    "due_heads": "SELECT {cols}, seq FROM {q} WHERE ready <= ? ORDER BY ready, seq LIMIT ?",
    "lease": "UPDATE {q} SET lease_owner = ?1, lease_until = ?2, ready = MAX(ready, ?2) "
    "WHERE seq = ?3",
    # ?1 lease end, ?2 owner, ?3 chat key, ?4 ?5 the bucket
    "renew": """UPDATE {q} SET lease_until = ?1, ready = MAX(ready, ?1)
        WHERE lease_owner = ?2 AND seq = (SELECT seq FROM {q}
            WHERE seq BETWEEN ?4 AND ?5 AND chat_key = ?3 ORDER BY seq LIMIT 1)""",
    "renew_kept": "UPDATE {q}_lease SET lease_until = ?1 WHERE lease_owner = ?2 AND chat_key = ?3",
    "owners": "SELECT lease_owner FROM {q} WHERE lease_owner IS NOT NULL "
    "UNION SELECT lease_owner FROM {q}_lease",
    "release": """UPDATE {q} SET lease_owner = NULL, lease_until = 0,
            ready = MAX(MIN(created_at, ?2), next_attempt_at)
        WHERE lease_owner = ?1""",
    "release_kept": "DELETE FROM {q}_lease WHERE lease_owner = ?",
    "size": "SELECT attempts FROM {q} WHERE seq = -1",
    "purge_kept": "DELETE FROM {q}_lease WHERE lease_until <= ?",
}

# the only text ever formatted into SQL: these two fixed names and the column list
SQL: dict[str, dict[str, str]] = {
    q: {name: s.format(q=q, cols=COLUMNS) for name, s in TEMPLATE.items()} for q in (INBOX, OUTBOX)
}

# Versions: a new key starts at the clock in microseconds (?3 below), each write adds one, so a
# key deleted and made again never gets an old version back (no ABA for a compare-and-set).
# An expired row reads as absent but keeps its version until purged.
STATE = {
    "get": "SELECT value, version, expires_at FROM chat_state WHERE key = ?",
    # ?1 key, ?2 value, ?3 new version, ?4 expires at
    "set": "INSERT INTO chat_state (key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = chat_state.version + 1, "
    "expires_at = excluded.expires_at",
    "create": "INSERT INTO chat_state (key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (key) DO NOTHING",
    # ?1 value, ?2 expires at, ?3 key, ?4 version
    "update_at": "UPDATE chat_state SET value = ?1, expires_at = ?2, version = version + 1 "
    "WHERE key = ?3 AND version = ?4",
    "delete": "DELETE FROM chat_state WHERE key = ?",
    "delete_at": "DELETE FROM chat_state WHERE key = ? AND version = ?",
    "columns": "SELECT name FROM pragma_table_info('chat_state')",
    "add_expiry": "ALTER TABLE chat_state ADD COLUMN expires_at REAL",
    "purge": "DELETE FROM chat_state WHERE key IN "
    "(SELECT key FROM chat_state WHERE expires_at <= ? LIMIT ?)",
}
MARK = (
    "INSERT INTO seen (key, expires_at) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE seen.expires_at <= ?"
)
INSERT_DEAD_LETTER = """
    INSERT OR REPLACE INTO dead_letter (
        id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
        last_error, buried_at, queue
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SELECT_DEAD_LETTERS = """
    SELECT id, destination, chat_key, payload, created_at, deadline, attempts, next_attempt_at,
           last_error, queue
    FROM dead_letter
"""
