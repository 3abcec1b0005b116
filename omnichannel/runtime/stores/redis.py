"""The shared store for several workers or machines: Redis 6.2 or later (redis-py is the optional
extra ``pip install "omnichannel[redis]"``).

**Keys.** Every key starts with ``prefix`` (``omnichannel:`` by default; ``?prefix=`` in the
URL), so several apps can share one Redis database. Changes that touch several keys run as Lua
scripts, which Redis executes atomically.

**Dedupe**: ``{prefix}seen:{key}`` is set with ``SET key 1 NX PX ttl``: exactly one caller wins,
and Redis expires the key by itself (memory stays bounded by the keys seen within one TTL).
**Chat state**: ``{prefix}state:{key}``, a JSON string.

**Outbox**, on a Redis Stream with a consumer group:

- ``{prefix}item:{id}``: a hash per item (destination, chat key, payload JSON, times, attempts,
  last error); ``{prefix}items``: the set of queued ids (its size is ``outbox_pending``).
- ``{prefix}chat:{chat_key}``: a list of the chat's item ids; ``RPUSH`` makes the order of
  arrival at Redis the delivery order, whichever process added the item.
- ``{prefix}outbox``: a **stream** of "this chat has a due head" notices, read through the
  **consumer group** ``outbox`` (each :class:`~omnichannel.runtime.outbox.Outbox` is a consumer
  named by its owner id). ``{prefix}notice`` maps each chat to its one live notice; a notice
  that is not the live one is stale and deleted when read.
- ``{prefix}delayed``: a sorted set of chats whose head waits for a retry, scored by the head's
  ``next_attempt_at``; a claim turns the due ones back into notices.
- ``{prefix}leases``: a sorted set of leased chats scored by the lease's end (milliseconds of
  the Redis server's clock). While a chat's lease runs no other worker gets that chat, so one
  item per chat is in flight. A sorted set rather than one expiring key per chat, so that a
  claim finds the leases that ran out (their worker died) with one range query.
- ``{prefix}dead``: a sorted set of dead-letter ids by creation time (their hashes stay).

Invariant: a chat with queued items has exactly one live notice (in the stream, or pending with
the consumer that holds its lease) or one entry in ``delayed``.

A **claim** (one script) moves the due ``delayed`` chats into the stream; takes over, with
``XCLAIM``, the notices of chats whose lease ran out, and with ``XAUTOCLAIM`` any other notice
pending longer than the claimer's lease (pending entries of a dead worker); then reads new
notices with ``XREADGROUP``. For each notice: a stale notice or an empty chat is acknowledged
and deleted; a chat whose lease still runs is left pending; a head not yet due moves the chat to
``delayed``; otherwise the chat is leased to the claimer and its head returned.
**Ack, bury and reschedule** (one script each) end the lease, acknowledge and delete the notice,
and post a fresh notice (or a ``delayed`` entry) when the chat has more. Acknowledging an item
that is no longer queued (a worker that outlived its lease, after another one delivered the
item) changes nothing.

Leases are timed by the Redis server's clock; due times (``next_attempt_at``) are compared with
the caller's ``now``. Redis Cluster: the scripts derive keys from the prefix, so put a hash tag
in it (``"{omnichannel}:"``) to keep every key in one slot.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.sending import redact_url
from omnichannel.runtime.stores.base import QueueItem

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

INSTALL_HINT = 'the Redis store needs redis-py: pip install "omnichannel[redis]"'

GROUP = "outbox"

MIN_VERSION = (6, 2)

# KEYS: stream, notice, delayed, items, leases. ARGV: prefix, ...
_LUA_HELPERS = """
local function drop_notice(chat)
    local old = redis.call('HGET', KEYS[2], chat)
    if old then
        redis.call('XACK', KEYS[1], 'outbox', old)
        redis.call('XDEL', KEYS[1], old)
        redis.call('HDEL', KEYS[2], chat)
    end
end
local function post_notice(chat)
    drop_notice(chat)
    redis.call('ZREM', KEYS[3], chat)
    local id = redis.call('XADD', KEYS[1], '*', 'chat', chat)
    redis.call('HSET', KEYS[2], chat, id)
end
local function settle(chat, prefix)
    -- after the chat's head left (or was rescheduled): notice the next head, if any
    drop_notice(chat)
    redis.call('ZREM', KEYS[3], chat)
    if redis.call('LLEN', prefix .. 'chat:' .. chat) > 0 then
        post_notice(chat)
    end
end
"""

# ARGV: prefix, id, chat, field, value, ...
_ADD = (
    _LUA_HELPERS
    + """
local prefix, id, chat = ARGV[1], ARGV[2], ARGV[3]
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', prefix .. 'item:' .. id, unpack(fields))
redis.call('RPUSH', prefix .. 'chat:' .. chat, id)
redis.call('SADD', KEYS[4], id)
if redis.call('HEXISTS', KEYS[2], chat) == 0 and not redis.call('ZSCORE', KEYS[3], chat) then
    post_notice(chat)
end
return 1
"""
)

# ARGV: prefix, owner, now, limit, lease_ms.
_CLAIM = (
    _LUA_HELPERS
    + """
local prefix, owner, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local limit, lease_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local claimed = {}
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3], 'LIMIT', 0, limit)
for _, chat in ipairs(due) do post_notice(chat) end

local function consider(entry)
    local id, fields = entry[1], entry[2]
    local chat = fields and fields[2]
    if not chat or redis.call('HGET', KEYS[2], chat) ~= id then
        -- stale: its chat got a newer notice, or the entry is malformed
        redis.call('XACK', KEYS[1], 'outbox', id)
        redis.call('XDEL', KEYS[1], id)
        return
    end
    local head = redis.call('LINDEX', prefix .. 'chat:' .. chat, 0)
    if not head then
        drop_notice(chat)
        return
    end
    local leased_until = redis.call('ZSCORE', KEYS[5], chat)
    if leased_until and tonumber(leased_until) > now_ms then
        return  -- a live worker holds the chat: the notice stays pending
    end
    local item = prefix .. 'item:' .. head
    if redis.call('EXISTS', item) == 0 then
        -- an id without its item (deleted by hand): skip it and notice the next head
        redis.call('LREM', prefix .. 'chat:' .. chat, 1, head)
        redis.call('SREM', KEYS[4], head)
        settle(chat, prefix)
        return
    end
    local next_at = redis.call('HGET', item, 'next_attempt_at')
    if next_at and tonumber(next_at) > now then
        drop_notice(chat)
        redis.call('ZADD', KEYS[3], next_at, chat)
        return
    end
    redis.call('ZADD', KEYS[5], now_ms + lease_ms, chat)
    claimed[#claimed + 1] = {head, redis.call('HGETALL', item)}
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms, 'LIMIT', 0, limit)
for _, chat in ipairs(expired) do
    redis.call('ZREM', KEYS[5], chat)
    local id = redis.call('HGET', KEYS[2], chat)
    if id then
        local taken = redis.call('XCLAIM', KEYS[1], 'outbox', owner, 0, id)
        if taken[1] then consider(taken[1]) else post_notice(chat) end
    elseif redis.call('LLEN', prefix .. 'chat:' .. chat) > 0
            and not redis.call('ZSCORE', KEYS[3], chat) then
        post_notice(chat)  -- lost its notice somehow: give it a fresh one
    end
end
if #claimed < limit then
    local reclaimed = redis.call('XAUTOCLAIM', KEYS[1], 'outbox', owner, lease_ms, '0-0',
                                 'COUNT', limit - #claimed)
    for _, entry in ipairs(reclaimed[2]) do consider(entry) end
end
while #claimed < limit do
    local read = redis.call('XREADGROUP', 'GROUP', 'outbox', owner,
                            'COUNT', limit - #claimed, 'STREAMS', KEYS[1], '>')
    if not read then break end
    for _, entry in ipairs(read[1][2]) do consider(entry) end
end
return claimed
"""
)

# ARGV: prefix, id, chat, mode, field, value, ...
# mode: "ack" removes the item, "bury" moves it to the dead letters, "reschedule" updates it.
_RELEASE = (
    _LUA_HELPERS
    + """
local prefix, id, chat, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local item = prefix .. 'item:' .. id
if redis.call('SISMEMBER', KEYS[4], id) == 0 then
    return 0  -- already acknowledged (a duplicate after a lease ran out): nothing to do
end
redis.call('ZREM', KEYS[5], chat)
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
if mode == 'reschedule' then
    if #fields > 0 then redis.call('HSET', item, unpack(fields)) end
    drop_notice(chat)
    local head = redis.call('LINDEX', prefix .. 'chat:' .. chat, 0)
    local next_at = head and redis.call('HGET', prefix .. 'item:' .. head, 'next_attempt_at')
    redis.call('ZADD', KEYS[3], next_at or '0', chat)
    return 1
end
redis.call('LREM', prefix .. 'chat:' .. chat, 1, id)
redis.call('SREM', KEYS[4], id)
if mode == 'bury' then
    redis.call('HDEL', item, 'last_error')
    if #fields > 0 then redis.call('HSET', item, unpack(fields)) end
    redis.call('ZADD', KEYS[6], redis.call('HGET', item, 'created_at') or '0', id)
else
    redis.call('DEL', item)
end
settle(chat, prefix)
return 1
"""
)

# ARGV: prefix, id.
_RETRY = (
    _LUA_HELPERS
    + """
local prefix, id = ARGV[1], ARGV[2]
if redis.call('ZREM', KEYS[6], id) == 0 then return 0 end
local item = prefix .. 'item:' .. id
local chat = redis.call('HGET', item, 'chat_key')
if not chat then return 0 end
redis.call('HSET', item, 'next_attempt_at', '0.0', 'deadline', '0.0')
redis.call('RPUSH', prefix .. 'chat:' .. chat, id)
redis.call('SADD', KEYS[4], id)
if redis.call('HEXISTS', KEYS[2], chat) == 0 and not redis.call('ZSCORE', KEYS[3], chat) then
    post_notice(chat)
end
return 1
"""
)

# KEYS: dead. ARGV: prefix, id.
_DROP = """
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('DEL', ARGV[1] .. 'item:' .. ARGV[2])
return 1
"""

# KEYS: stream. ARGV: idle_ms. Consumers of stopped outboxes with nothing pending are removed.
_FORGET_CONSUMERS = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], 'outbox')) do
    local info = {}
    for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
    if info['pending'] == 0 and info['idle'] > tonumber(ARGV[1]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'outbox', info['name'])
        removed = removed + 1
    end
end
return removed
"""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc
    return redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> str:
    return repr(float(value))


def _fields(item: QueueItem) -> list[str]:
    fields = [
        "destination",
        item.destination,
        "chat_key",
        item.chat_key,
        "payload",
        json.dumps(item.payload, ensure_ascii=False, separators=(",", ":")),
        "created_at",
        _float(item.created_at),
        "deadline",
        _float(item.deadline),
        "attempts",
        str(int(item.attempts)),
        "next_attempt_at",
        _float(item.next_attempt_at),
    ]
    if item.last_error is not None:
        fields += ["last_error", item.last_error]
    return fields


def _item(item_id: Any, flat: Sequence[Any] | Mapping[Any, Any]) -> QueueItem:
    if isinstance(flat, Mapping):
        pairs = {_text(k): _text(v) for k, v in flat.items()}
    else:
        pairs = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    return QueueItem(
        id=_text(item_id),
        destination=pairs["destination"],
        chat_key=pairs["chat_key"],
        payload=json.loads(pairs["payload"]),
        created_at=float(pairs["created_at"]),
        deadline=float(pairs["deadline"]),
        attempts=int(pairs["attempts"]),
        next_attempt_at=float(pairs["next_attempt_at"]),
        last_error=pairs.get("last_error"),
    )


class RedisStore:
    """A :class:`~omnichannel.runtime.stores.Store` in Redis, shared by any number of processes.

    Args:
        client_or_url: a ``redis.Redis`` client (not closed by :meth:`close`) or a URL such as
            ``redis://localhost:6379/0`` (``rediss://`` for TLS, ``unix:///path.sock``).
        prefix: prepended to every key; stores with different prefixes never see each other.
        maintenance_interval: seconds between clean-ups of the consumer group, which removes
            consumers (outboxes of stopped processes) idle for ``forget_consumers_after``
            seconds with nothing pending.

    Raises:
        ConfigurationError: redis-py is not installed, or the server cannot be reached.
    """

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        *,
        prefix: str = "omnichannel:",
        maintenance_interval: float = 300.0,
        forget_consumers_after: float = 3600.0,
    ) -> None:
        module = _import_redis()
        self._errors = module.exceptions
        self.prefix = prefix
        self.maintenance_interval = maintenance_interval
        self.forget_consumers_after = forget_consumers_after
        if isinstance(client_or_url, str):
            self._url = redact_url(client_or_url)
            self.client: redis.Redis = module.Redis.from_url(client_or_url)
            self._owns_client = True
        else:
            self._url = repr(client_or_url)
            self.client = client_or_url
            self._owns_client = False
        self._stream = prefix + "outbox"
        self._notice = prefix + "notice"
        self._delayed = prefix + "delayed"
        self._items = prefix + "items"
        self._leases = prefix + "leases"
        self._dead = prefix + "dead"
        self._add = self.client.register_script(_ADD)
        self._claim = self.client.register_script(_CLAIM)
        self._release = self.client.register_script(_RELEASE)
        self._retry = self.client.register_script(_RETRY)
        self._drop = self.client.register_script(_DROP)
        self._forget_consumers = self.client.register_script(_FORGET_CONSUMERS)
        self._maintenance_lock = threading.Lock()
        self._next_maintenance = time.monotonic() + maintenance_interval
        try:
            self._check_version()
            self._ensure_group()
        except self._errors.ConnectionError as exc:
            self.close()
            raise ConfigurationError(f"store: cannot reach Redis at {self._url}: {exc}") from exc
        except ConfigurationError:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, *, prefix: str | None = None) -> RedisStore:
        """Open ``redis://host:port/db`` (``rediss://`` with TLS, ``unix:///path.sock``).

        A ``prefix`` query parameter (``redis://host:6379/0?prefix=shop:``) sets the key prefix
        (the ``prefix`` argument wins); the other parameters go to redis-py.
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        in_url = [value for name, value in query if name == "prefix"]
        if in_url:
            url = urlunsplit(
                parts._replace(query=urlencode([q for q in query if q[0] != "prefix"]))
            )
        chosen = prefix if prefix is not None else (in_url[-1] if in_url else "omnichannel:")
        return cls(url, prefix=chosen)

    def __repr__(self) -> str:
        return f"RedisStore({self._url}, prefix={self.prefix!r})"

    def _check_version(self) -> None:
        version = str(self.client.info("server").get("redis_version", ""))
        try:
            major, minor = (int(part) for part in version.split(".")[:2])
        except ValueError:
            return  # a Redis-compatible server with its own numbering: let it try
        if (major, minor) < MIN_VERSION:
            raise ConfigurationError(
                f"store: Redis at {self._url} is version {version}; the Redis store needs "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or later (XAUTOCLAIM)"
            )

    def _ensure_group(self) -> None:
        try:
            # from "0": notices posted before the group existed are not lost
            self.client.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except self._errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=keys, args=args)
        except self._errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the stream was deleted (FLUSHDB, an operator): recreate the group and go on
            self._ensure_group()
            return script(keys=keys, args=args)

    # dedupe ---------------------------------------------------------------------------------
    def mark_seen(self, key: str, ttl: float) -> bool:
        """``SET key 1 NX PX ttl``: ``True`` for the one caller that set it."""
        ttl_ms = max(1, round(ttl * 1000))
        return bool(self.client.set(f"{self.prefix}seen:{key}", 1, nx=True, px=ttl_ms))

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        self.client.delete(f"{self.prefix}seen:{key}")

    # chat state -----------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        raw = self.client.get(f"{self.prefix}state:{key}")
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def set_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Store ``value`` under ``key`` (``None`` deletes it)."""
        name = f"{self.prefix}state:{key}"
        if value is None:
            self.client.delete(name)
        else:
            self.client.set(name, json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    # outbox ---------------------------------------------------------------------------------
    def _keys(self) -> list[str]:
        # every script gets the same KEYS: stream, notice, delayed, items, leases, dead
        return [
            self._stream,
            self._notice,
            self._delayed,
            self._items,
            self._leases,
            self._dead,
        ]

    def outbox_add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue and notify the consumer group."""
        self._run(
            self._add,
            self._keys(),
            [self.prefix, item.id, item.chat_key, *_fields(item)],
        )

    def outbox_claim(self, owner: str, now: float, limit: int, lease: float) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads to ``owner`` for ``lease`` seconds."""
        if limit <= 0:
            return []
        self._maintain()
        lease_ms = max(1, round(lease * 1000))
        rows = self._run(
            self._claim, self._keys(), [self.prefix, owner, _float(now), limit, lease_ms]
        )
        return [_item(row[0], row[1]) for row in rows]

    def _release_item(self, item: QueueItem, mode: str, fields: list[str]) -> None:
        self._run(self._release, self._keys(), [self.prefix, item.id, item.chat_key, mode, *fields])

    def outbox_ack(self, item: QueueItem) -> None:
        """The item was delivered: remove it and release its chat."""
        self._release_item(item, "ack", [])

    def outbox_reschedule(self, item: QueueItem) -> None:
        """Save ``attempts``, ``next_attempt_at``, ``deadline`` and ``last_error``; release."""
        fields = [
            "attempts",
            str(int(item.attempts)),
            "next_attempt_at",
            _float(item.next_attempt_at),
            "deadline",
            _float(item.deadline),
        ]
        if item.last_error is not None:
            fields += ["last_error", item.last_error]
        self._release_item(item, "reschedule", fields)

    def outbox_bury(self, item: QueueItem) -> None:
        """Move the item to the dead letters (keeping ``last_error``); release its chat."""
        self._release_item(item, "bury", _fields(item))

    def outbox_pending(self) -> int:
        """How many items wait for delivery (dead letters excluded)."""
        return int(self.client.scard(self._items))

    def dead_letters(self) -> list[QueueItem]:
        """The items that gave up, oldest first."""
        ids = self.client.zrange(self._dead, 0, -1)
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hgetall(f"{self.prefix}item:{_text(item_id)}")
        found = pipe.execute()
        return [_item(i, flat) for i, flat in zip(ids, found, strict=True) if flat]

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue, due now."""
        return bool(self._run(self._retry, self._keys(), [self.prefix, item_id]))

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        return bool(self._drop(keys=[self._dead], args=[self.prefix, item_id]))

    def _maintain(self) -> None:
        now = time.monotonic()
        if now < self._next_maintenance or not self._maintenance_lock.acquire(blocking=False):
            return
        try:
            self._next_maintenance = now + self.maintenance_interval
            idle_ms = max(1, round(self.forget_consumers_after * 1000))
            removed = self._run(self._forget_consumers, [self._stream], [idle_ms])
            if removed:
                log.debug("redis store: removed %d idle outbox consumer(s)", removed)
        except self._errors.RedisError:
            log.warning("redis store: removing idle outbox consumers failed", exc_info=True)
        finally:
            self._maintenance_lock.release()

    def close(self) -> None:
        """Close the connections of a client this store created from a URL."""
        if self._owns_client:
            self.client.close()
