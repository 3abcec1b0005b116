"""The shared store for several workers or machines: Redis 6.2 or later (redis-py is the optional
extra ``pip install "omnichannel[redis]"``).

Every change that touches more than one key is one Lua script (Redis runs a script atomically),
called with ``EVALSHA``: one round trip per operation, and a call that fails (Redis away, a
timeout) happened entirely or not at all. The scripts are written so that repeating a call whose
answer was lost is harmless (an ``add`` of an id already queued, an ``ack`` of an item already
gone change nothing), since callers retry what raised.

**Keys.** Every key starts with ``prefix`` (``omnichannel:`` by default; ``?prefix=`` in the
URL), so several apps share one database. The scripts are rendered per store with the key names
written in, so on Redis Cluster put a hash tag in the prefix (``"{omnichannel}:"``) to keep
every key in one slot.

- ``{p}seen:{key}``: a dedupe mark, ``SET key 1 NX PX ttl`` (Redis expires it by itself).
- ``{p}state:{key}``: chat state, a hash ``{v: version, d: JSON}``. A new key's version is the
  server clock in microseconds and each write adds one, so a version never comes back after a
  delete and a re-create (no ABA for a compare-and-set).
- ``{p}dead``: dead letters of both queues, ids scored by ``created_at``; ``{p}dead:{id}`` a
  hash ``{queue, chat_key, item}``.

Each queue has its own keys, the outbox's under ``{b} = {p}``, the inbox's under
``{b} = {p}inbox:``:

- ``{b}chat:{chat_key}``: a list, the chat's items in order (``RPUSH``: the order of arrival at
  Redis, whichever process added them). An item is one string, ``id \\n next_attempt_at \\n
  deadline \\n JSON`` (the JSON, ASCII only, holds the other fields): a claim hands it back as
  is, and a script reads the due time without decoding anything.
- ``{b}items``: the set of queued ids (its size is :meth:`RedisStore.pending`; membership is
  "still queued").
- the notice **stream** (``{p}outbox`` for the outbox, ``{p}inbox:stream`` for the inbox), read
  through a **consumer group** named after the queue, one consumer per lease owner: an entry
  says "this chat has a head to hand out".
- ``{b}head:{chat_key}``: a hash on how the chat's head is handled: ``notice`` (the id of its
  one live notice) or ``delayed`` (it waits for a retry), and while leased ``owner`` and
  ``until`` (the lease's end).
- ``{b}delayed``: chats whose head waits for a retry, scored by its ``next_attempt_at``.
- ``{b}leases``: leased chats scored by the lease's end, in milliseconds of the Redis server's
  clock (workers' clocks never matter for leases), so a claim finds the leases that ran out (a
  worker died) with one range query.

Invariants: a chat with items has exactly one live notice (unread, or pending with a consumer,
normally its lease owner) or is in ``delayed``, never both; a leased chat keeps its notice
pending until the lease ends; only the ``owner`` named in the head hash ends a lease, and a
lease that ran out is taken over by the next claim. Deleting every key of the prefix (or
``FLUSHDB``) is safe: the groups are recreated on ``NOGROUP``. Deleting a stream alone loses the
notices of chats not leased at that moment (leased ones get fresh notices when their lease
runs out).

**Claim** (one script): due ``delayed`` chats get notices; the notices of chats whose lease ran
out are taken over with ``XCLAIM``; about once a second also ``XAUTOCLAIM`` of any notice
pending longer than a lease (a dead consumer's, whatever the reason); then ``XREADGROUP`` of new
notices. For each: a notice that is not the chat's live one is deleted; a chat leased by someone
else is left alone; a head not yet due moves the chat to ``delayed``; otherwise the chat is
leased and its head returned. **Ack, bury, reschedule** remove or update the item when it is
still queued, and end the lease only when the caller owns it (a late worker whose lease was
taken over never releases the new owner's): the notice is deleted and a fresh one posted when
the chat has more. **Inbox admit** sets the dedupe mark and adds the turn in one script;
**inbox complete** adds the replies to the outbox, removes the turn and ends its lease in one.

Why this shape: on a local Redis an operation's cost beyond the round trip is mostly the
client's packing of arguments and parsing of replies, and the server's per-``redis.call``
overhead. So an item travels as one string both ways, a script learns its key names from its
text rather than from arguments, and the per-chat facts a claim or an ack needs sit in one
small hash (one ``HMGET``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.sending import redact_url
from omnichannel.runtime.stores.base import INBOX, OUTBOX, QueueItem, QueueName, StateSnapshot

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

INSTALL_HINT = 'the Redis store needs redis-py: pip install "omnichannel[redis]"'

MIN_VERSION = (6, 2)

SWEEP_INTERVAL = 1.0  # seconds between XAUTOCLAIM sweeps of one queue by one store handle

# The queue scripts are templates: $P becomes the prefix, $Q the key names (a Lua table) of the
# script's queue, $IN / $OUT those of the inbox / outbox, $MODE what a release does. Each script
# defines only the helpers it calls (defining a function costs time on every run).
_HELPERS = {
    "post": """
local function post(q, chat)
    redis.call('HSET', q.head .. chat, 'notice', redis.call('XADD', q.stream, '*', 'chat', chat))
end""",
    "unpost": """
local function unpost(q, id)
    redis.call('XACK', q.stream, q.group, id)
    redis.call('XDEL', q.stream, id)
end""",
    "push": r"""
local function push(q, chat, item)
    -- append an item (unless its id is queued already: a repeated call adds nothing)
    if redis.call('SADD', q.items, string.match(item, '^[^\n]*')) == 0 then return false end
    redis.call('RPUSH', q.chat .. chat, item)
    local head = redis.call('HMGET', q.head .. chat, 'notice', 'delayed')
    if not head[1] and not head[2] then post(q, chat) end
    return true
end""",
    "find": r"""
local function find(list, id)
    -- the position (0-based) and text of the item `id` in a chat's list: the head, normally
    local prefix = id .. '\n'
    local first = redis.call('LINDEX', list, 0)
    if not first or string.sub(first, 1, #prefix) == prefix then return first and 0, first end
    for i, item in ipairs(redis.call('LRANGE', list, 1, -1)) do
        if string.sub(item, 1, #prefix) == prefix then return i, item end
    end
end""",
    "remove": r"""
local function remove(list, id)
    local prefix = id .. '\n'
    local first = redis.call('LPOP', list)
    if not first or string.sub(first, 1, #prefix) == prefix then return first end
    redis.call('LPUSH', list, first)  -- not the head (a late caller): look further
    local _, item = find(list, id)
    if item then redis.call('LREM', list, 1, item) end
    return item
end""",
    "let_go": """
local function let_go(q, chat, notice)
    -- the chat's lease ended: drop its notice, and post a fresh one if items are left
    if notice then unpost(q, notice) end
    redis.call('DEL', q.head .. chat)
    if redis.call('LLEN', q.chat .. chat) > 0 then post(q, chat) end
end""",
    "release": """
local function release(q, chat, owner)
    -- end the lease if `owner` holds it
    local head = redis.call('HMGET', q.head .. chat, 'owner', 'notice')
    if owner == '' or head[1] ~= owner then return false end
    redis.call('ZREM', q.leases, chat)
    return true, head[2]
end""",
}


def _script(helpers: str, body: str) -> str:
    """``body`` after ``P`` and the helpers named (a helper's own helpers named before it)."""
    return "\nlocal P = $P" + "".join(_HELPERS[name] for name in helpers.split()) + "\n" + body


# ARGV: chat, item[, dedupe key, ttl_ms]
_ADD = _script(
    "post push",
    """
if ARGV[3] and not redis.call('SET', P .. 'seen:' .. ARGV[3], 1, 'NX', 'PX', ARGV[4]) then
    return 0
end
push($Q, ARGV[1], ARGV[2])
return 1
""",
)

# ARGV: owner, now, limit, lease_ms, sweep ('1': XAUTOCLAIM too)
_CLAIM = _script(
    "post unpost let_go",
    r"""
local q, owner, now = $Q, ARGV[1], tonumber(ARGV[2])
local limit, lease_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}

local function consider(id, fields)
    local chat = fields and fields[2]
    local key = chat and q.head .. chat
    local head = key and redis.call('HMGET', key, 'notice', 'until')
    if not head or head[1] ~= id then
        unpost(q, id)  -- not the chat's live notice (or malformed): delete it
        return
    end
    if head[2] and tonumber(head[2]) > now_ms then return end  -- leased: stays pending
    local item = redis.call('LINDEX', q.chat .. chat, 0)
    local due = item and string.match(item, '^[^\n]*\n([^\n]*)')
    if item and tonumber(due) <= now then
        local until_ms = now_ms + lease_ms
        redis.call('ZADD', q.leases, until_ms, chat)
        redis.call('HSET', key, 'owner', owner, 'until', until_ms)
        out[#out + 1] = item
        return
    end
    if head[2] then redis.call('ZREM', q.leases, chat) end  -- ran out, not handed out now
    unpost(q, id)
    redis.call('DEL', key)
    if item then  -- not due: wait in `delayed`
        redis.call('ZADD', q.delayed, due, chat)
        redis.call('HSET', key, 'delayed', 1)
    end
end

local retries = redis.call('ZRANGEBYSCORE', q.delayed, '-inf', ARGV[2], 'LIMIT', '0', ARGV[3])
for _, chat in ipairs(retries) do
    redis.call('ZREM', q.delayed, chat)
    redis.call('HDEL', q.head .. chat, 'delayed')
    post(q, chat)
end
local ran_out = redis.call('ZRANGEBYSCORE', q.leases, '-inf', now_ms, 'LIMIT', '0', ARGV[3])
for _, chat in ipairs(ran_out) do
    local key = q.head .. chat
    local id = redis.call('HGET', key, 'notice')
    local taken = id and redis.call('XCLAIM', q.stream, q.group, owner, 0, id)
    redis.call('ZREM', q.leases, chat)
    redis.call('HDEL', key, 'owner', 'until')
    if taken and taken[1] and taken[1][2] then
        consider(taken[1][1], taken[1][2])
    else  -- its notice is gone (deleted by hand): a fresh one, if items are left
        let_go(q, chat, nil)
    end
end
if ARGV[5] == '1' and #out < limit then
    local swept = redis.call('XAUTOCLAIM', q.stream, q.group, owner, lease_ms, '0-0',
                             'COUNT', limit - #out)
    for _, entry in ipairs(swept[2]) do
        if entry then consider(entry[1], entry[2]) end
    end
end
while #out < limit do
    local want = limit - #out
    local read = redis.call('XREADGROUP', 'GROUP', q.group, owner, 'COUNT', want,
                            'STREAMS', q.stream, '>')
    if not read then break end
    local entries = read[1][2]
    for _, entry in ipairs(entries) do consider(entry[1], entry[2]) end
    if #entries < want then break end
end
return out
""",
)

# ARGV: id, chat, owner[, item as updated by the caller[, created_at]]
_RELEASE = _script(
    "post unpost find remove let_go release",
    r"""
local q, mode, id, chat = $Q, '$MODE', ARGV[1], ARGV[2]
local list = q.chat .. chat
if mode == 'reschedule' then
    if redis.call('SISMEMBER', q.items, id) == 1 then
        local at = find(list, id)
        if at then redis.call('LSET', list, at, ARGV[4]) end
    end
elseif redis.call('SREM', q.items, id) == 1 then
    remove(list, id)
    if mode == 'bury' then
        redis.call('HSET', P .. 'dead:' .. id, 'queue', q.group, 'chat_key', chat, 'item', ARGV[4])
        redis.call('ZADD', P .. 'dead', ARGV[5], id)
    end
end
local held, notice = release(q, chat, ARGV[3])
if held and mode == 'reschedule' then
    if notice then unpost(q, notice) end
    redis.call('DEL', q.head .. chat)
    local first = redis.call('LINDEX', list, 0)
    if first then
        redis.call('ZADD', q.delayed, string.match(first, '^[^\n]*\n([^\n]*)'), chat)
        redis.call('HSET', q.head .. chat, 'delayed', 1)
    end
elseif held then
    let_go(q, chat, notice)
end
return 1
""",
)

# ARGV: id, chat, owner, then per reply: chat, item
_COMPLETE = _script(
    "post unpost push find remove let_go release",
    r"""
local inbox, outbox = $IN, $OUT
local id, chat = ARGV[1], ARGV[2]
if redis.call('SREM', inbox.items, id) == 0 then return 0 end
remove(inbox.chat .. chat, id)
for i = 4, #ARGV, 2 do
    if not redis.call('ZSCORE', P .. 'dead', string.match(ARGV[i + 1], '^[^\n]*')) then
        push(outbox, ARGV[i], ARGV[i + 1])
    end
end
local held, notice = release(inbox, chat, ARGV[3])
if held then let_go(inbox, chat, notice) end
return 1
""",
)

# ARGV: owner, lease_ms, chat...
_RENEW = _script(
    "",
    """
local q, owner = $Q, ARGV[1]
local clock = redis.call('TIME')
local until_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + ARGV[2]
for i = 3, #ARGV do
    local key = q.head .. ARGV[i]
    local head = redis.call('HMGET', key, 'owner', 'notice')
    if head[1] == owner then
        redis.call('ZADD', q.leases, until_ms, ARGV[i])
        redis.call('HSET', key, 'until', until_ms)
        if head[2] then  -- keep the notice pending with its owner, and not idle
            redis.call('XCLAIM', q.stream, q.group, owner, 0, head[2], 'JUSTID')
        end
    end
end
return 1
""",
)

# ARGV: owner ('' lists the owners instead)
_OWNERS = _script(
    "post unpost let_go release",
    """
local released, owners = 0, {}
for _, q in ipairs({$IN, $OUT}) do
    for _, chat in ipairs(redis.call('ZRANGE', q.leases, 0, -1)) do
        if ARGV[1] == '' then
            owners[#owners + 1] = redis.call('HGET', q.head .. chat, 'owner')
        else
            local held, notice = release(q, chat, ARGV[1])
            if held then
                let_go(q, chat, notice)
                released = released + 1
            end
        end
    end
end
if ARGV[1] == '' then return owners end
return released
""",
)

# ARGV: id
_RETRY = _script(
    "post push",
    r"""
local id = ARGV[1]
local found = redis.call('HMGET', P .. 'dead:' .. id, 'queue', 'chat_key', 'item')
if not found[3] or not redis.call('ZSCORE', P .. 'dead', id) then return 0 end
local q = $OUT
if found[1] == 'inbox' then q = $IN end
local data = string.match(found[3], '^[^\n]*\n[^\n]*\n[^\n]*\n(.*)$$')
if not push(q, found[2], id .. '\n0.0\n0.0\n' .. data) then return 0 end  -- queued already
redis.call('ZREM', P .. 'dead', id)
redis.call('DEL', P .. 'dead:' .. id)
return 1
""",
)

# KEYS: dead. ARGV: id
_DROP = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1] .. ':' .. ARGV[1])
return 1
"""

# KEYS: state key. ARGV: expected version ('' = any)[, JSON]; without JSON: delete.
_SAVE_STATE = """
local key = KEYS[1]
local current = redis.call('HGET', key, 'v')
if ARGV[1] ~= '' and (current or '0') ~= ARGV[1] then return 0 end
if not ARGV[2] then
    redis.call('DEL', key)
elseif current then
    redis.call('HSET', key, 'd', ARGV[2])
    redis.call('HINCRBY', key, 'v', 1)
else
    local clock = redis.call('TIME')
    redis.call('HSET', key, 'v', clock[1] .. string.format('%06d', clock[2]), 'd', ARGV[2])
end
return 1
"""

# KEYS: the streams, ARGV: idle_ms, then the group of each stream. Consumers (lease owners of
# stopped processes) idle that long with nothing pending are removed.
_FORGET_CONSUMERS = """
local removed = 0
for k, stream in ipairs(KEYS) do
    local group = ARGV[k + 1]
    if redis.call('EXISTS', stream) == 1 then
        for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
            local info = {}
            for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
            if info['pending'] == 0 and info['idle'] > tonumber(ARGV[1]) then
                redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
                removed = removed + 1
            end
        end
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


def _bytes(text: str) -> bytes:
    # surrogatepass: a lone surrogate (from a visitor's text) must not make a write impossible
    return text.encode("utf-8", "surrogatepass")


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def _queue_keys(prefix: str, queue: str) -> dict[str, str]:
    """The key names of one queue (see the module docstring), as the scripts name them."""
    base = prefix if queue == OUTBOX else f"{prefix}{queue}:"
    stream = prefix + "outbox" if queue == OUTBOX else base + "stream"
    keys = {"group": queue, "stream": stream, "chat": base + "chat:", "head": base + "head:"}
    return keys | {name: base + name for name in ("items", "delayed", "leases")}


def _lua(text: str) -> str:
    """``text`` as a Lua string literal (any byte outside a safe set as a decimal escape)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-./{}"
    return "'" + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in _bytes(text)) + "'"


def _render(template: str, prefix: str, queue: str = OUTBOX, mode: str = "") -> str:
    def table(name: str) -> str:
        keys = _queue_keys(prefix, name)
        return "{" + ", ".join(f"{k} = {_lua(v)}" for k, v in keys.items()) + "}"

    names = {"P": _lua(prefix), "Q": table(queue), "IN": table(INBOX), "OUT": table(OUTBOX)}
    return Template(template).substitute(names, MODE=mode)


_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def _json(value: Mapping[str, Any]) -> str:
    return _ENCODER.encode(value if isinstance(value, dict) else dict(value))


def _record(item: QueueItem, queue: str) -> str:
    """The item as stored: ``id \\n next_attempt_at \\n deadline \\n JSON`` (ASCII JSON)."""
    if "\n" in item.id:
        raise ValueError(f"a queue item id cannot contain a line break: {item.id!r}")
    data = {
        "destination": item.destination,
        "chat_key": item.chat_key,
        "payload": item.payload if isinstance(item.payload, dict) else dict(item.payload),
        "created_at": item.created_at,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "queue": queue,
    }
    deadline, next_at = float(item.deadline), float(item.next_attempt_at)
    return f"{item.id}\n{next_at!r}\n{deadline!r}\n{_ENCODER.encode(data)}"


def _parse(record: Any, owner: str | None = None) -> QueueItem:
    """The item a record describes (see :func:`_record`)."""
    if isinstance(record, bytes):
        record = record.decode("utf-8", "surrogatepass")
    item_id, next_at, deadline, data = record.split("\n", 3)
    fields = json.loads(data)
    return QueueItem(
        id=item_id,
        destination=fields["destination"],
        chat_key=fields["chat_key"],
        payload=fields["payload"],
        created_at=float(fields["created_at"]),
        deadline=float(deadline),
        attempts=int(fields["attempts"]),
        next_attempt_at=float(next_at),
        last_error=fields["last_error"],
        queue=fields["queue"],
        owner=owner,
    )


class RedisStore:
    """A :class:`~omnichannel.runtime.stores.Store` in Redis, shared by any number of processes.

    Args:
        client_or_url: a ``redis.Redis`` client (not closed by :meth:`close`) or a URL such as
            ``redis://localhost:6379/0`` (``rediss://`` for TLS, ``unix:///path.sock``).
        prefix: prepended to every key; stores with different prefixes never see each other.
        maintenance_interval: seconds between clean-ups of the consumer groups, which remove
            consumers (lease owners of stopped processes) idle for ``forget_consumers_after``
            seconds with nothing pending.

    Raises:
        ConfigurationError: redis-py is not installed, the server cannot be reached, or it is
            older than Redis 6.2.
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
        self._secret: str | None = None
        if isinstance(client_or_url, str):
            self._url = redact_url(client_or_url)
            self._secret = urlsplit(client_or_url).password or None
            self.client: redis.Redis = module.Redis.from_url(client_or_url)
            self._owns_client = True
        else:
            self._url = repr(client_or_url)
            self.client = client_or_url
            self._owns_client = False
        self._p = _bytes(prefix)
        queues: tuple[str, ...] = (INBOX, OUTBOX)
        self._keys = {queue: _queue_keys(prefix, queue) for queue in queues}
        # a script call names its queue's stream as KEYS[1] (what Redis Cluster routes by)
        self._streams = {queue: _bytes(keys["stream"]) for queue, keys in self._keys.items()}
        self._dead = self._p + b"dead"
        register = self.client.register_script
        self._add = {q: register(_render(_ADD, prefix, q)) for q in queues}
        self._claim = {q: register(_render(_CLAIM, prefix, q)) for q in queues}
        self._renew = {q: register(_render(_RENEW, prefix, q)) for q in queues}
        self._release = {
            (q, mode): register(_render(_RELEASE, prefix, q, mode))
            for q in queues
            for mode in ("ack", "reschedule", "bury")
        }
        self._complete = register(_render(_COMPLETE, prefix))
        self._owners = register(_render(_OWNERS, prefix))
        self._retry = register(_render(_RETRY, prefix))
        self._drop = register(_DROP)
        self._save_state = register(_SAVE_STATE)
        self._forget_consumers = register(_FORGET_CONSUMERS)
        self._maintenance_lock = threading.Lock()
        self._next_maintenance = time.monotonic() + maintenance_interval
        self._next_sweep = dict.fromkeys(queues, 0.0)
        try:
            self._check_version()
            self._ensure_groups()
        except self._errors.ConnectionError as exc:
            self.close()
            raise ConfigurationError(
                f"store: cannot reach Redis at {self._url}: {self._redact(exc)}"
            ) from None
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

    def _redact(self, exc: BaseException) -> str:
        text = str(exc)
        return text.replace(self._secret, "***") if self._secret else text

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

    def _ensure_groups(self) -> None:
        for queue, stream in self._streams.items():
            try:
                # from "0": notices posted before the group existed are not lost
                self.client.xgroup_create(stream, queue, id="0", mkstream=True)
            except self._errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _run(self, script: Any, key: bytes, *args: Any) -> Any:
        # EVALSHA straight through the client: redis-py's Script.__call__ adds its own cost
        execute: Callable[..., Any] = self.client.execute_command
        for attempt in (1, 2, 3):
            try:
                return execute("EVALSHA", script.sha, 1, key, *args)
            except self._errors.NoScriptError:
                if attempt == 3:
                    raise
                script.sha = self.client.script_load(script.script)  # a restarted server
            except self._errors.ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt == 3:
                    raise
                # a stream was deleted (FLUSHDB, an operator): recreate the groups and run
                # again; the scripts use a group before any change a second run would repeat
                self._ensure_groups()
        raise AssertionError("unreachable")

    def _queue(self, queue: str) -> str:
        if queue not in self._keys:
            raise ValueError(f"unknown queue {queue!r} (expected 'inbox' or 'outbox')")
        return queue

    # dedupe ---------------------------------------------------------------------------------
    def mark_seen(self, key: str, ttl: float) -> bool:
        """``SET key 1 NX PX ttl``: ``True`` for the one caller that set it."""
        ttl_ms = max(1, round(ttl * 1000))
        return bool(self.client.set(self._p + b"seen:" + _bytes(key), 1, nx=True, px=ttl_ms))

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        self.client.delete(self._p + b"seen:" + _bytes(key))

    # chat state -----------------------------------------------------------------------------
    def _state_key(self, key: str) -> bytes:
        return self._p + b"state:" + _bytes(key)

    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        raw = self.client.hget(self._state_key(key), "d")
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def set_state(self, key: str, value: Mapping[str, Any] | None) -> None:
        """Store ``value`` under ``key`` unconditionally (``None`` deletes it); a new version."""
        if value is None:
            self.client.delete(self._state_key(key))
        else:
            self._run(self._save_state, self._state_key(key), "", _json(value))

    def load_state(self, key: str) -> StateSnapshot:
        """The state under ``key`` with its version (0 when absent)."""
        version, raw = self.client.hmget(self._state_key(key), ["v", "d"])
        if raw is None:
            return StateSnapshot(None, 0)
        return StateSnapshot(json.loads(raw), int(version or 0))

    def save_state(self, key: str, value: Mapping[str, Any] | None, version: int) -> bool:
        """Compare-and-set ``value`` (``None`` deletes) if the version is still ``version``."""
        args = [str(int(version))] if value is None else [str(int(version)), _json(value)]
        return bool(self._run(self._save_state, self._state_key(key), *args))

    # inbox ----------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        """Atomically set ``dedupe_key`` (``SET NX PX``, the key :meth:`mark_seen` sets) and
        append ``item`` to the inbox; ``False`` (nothing stored) when the key was seen."""
        args: list[Any] = [_bytes(item.chat_key), _record(item, INBOX)]
        if dedupe_key is not None:
            args += [_bytes(dedupe_key), max(1, round(ttl * 1000))]
        return bool(self._run(self._add[INBOX], self._streams[INBOX], *args))

    def inbox_complete(self, item: QueueItem, replies: Sequence[QueueItem]) -> bool:
        """Atomically add ``replies`` to the outbox and remove the turn ``item``.

        Releases the turn's inbox lease when ``item.owner`` holds it. ``False`` (nothing
        written) when the turn is no longer in the inbox; a reply whose id is queued or dead
        already is skipped.
        """
        args: list[Any] = [_bytes(item.id), _bytes(item.chat_key), item.owner or ""]
        for reply in replies:
            args += [_bytes(reply.chat_key), _record(reply, OUTBOX)]
        return bool(self._run(self._complete, self._streams[INBOX], *args))

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        """Extend ``owner``'s leases on ``chat_keys`` to ``lease`` seconds from now (by the
        Redis server's clock); leases held by others are left alone."""
        if chat_keys:
            script, lease_ms = self._renew[self._queue(queue)], max(1, round(lease * 1000))
            chats = [_bytes(chat) for chat in chat_keys]
            self._run(script, self._streams[queue], owner, lease_ms, *chats)

    def lease_owners(self) -> set[str]:
        """The owners holding a lease (running or run out) on either queue."""
        owners = self._run(self._owners, self._streams[OUTBOX], "")
        return {_text(owner) for owner in owners if owner}

    def release_owner(self, owner: str) -> int:
        """End every lease ``owner`` holds on either queue (its process died) and make those
        chats claimable at once; return how many."""
        if not owner:
            return 0
        return int(self._run(self._owners, self._streams[OUTBOX], owner))

    # both queues ----------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue (``item.queue``); adding an id that
        is queued already changes nothing."""
        queue = self._queue(item.queue)
        record = _record(item, queue)
        self._run(self._add[queue], self._streams[queue], _bytes(item.chat_key), record)

    def claim(
        self, queue: QueueName, owner: str, now: float, limit: int, lease: float
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads of ``queue`` to ``owner`` for ``lease`` seconds
        (timed by the Redis server's clock); ``now`` decides which heads are due."""
        if limit <= 0:
            return []
        self._maintain()
        moment, script = time.monotonic(), self._claim[self._queue(queue)]
        sweep = moment >= self._next_sweep[queue]  # XAUTOCLAIM about once a second
        if sweep:
            self._next_sweep[queue] = moment + SWEEP_INTERVAL
        args = (owner, repr(float(now)), limit, max(1, round(lease * 1000)), "01"[sweep])
        rows = self._run(script, self._streams[queue], *args)
        return [_parse(row, owner) for row in rows]

    def _release_item(self, item: QueueItem, mode: str, *extra: Any) -> None:
        queue = self._queue(item.queue)
        script, chat = self._release[queue, mode], _bytes(item.chat_key)
        self._run(script, self._streams[queue], _bytes(item.id), chat, item.owner or "", *extra)

    def ack(self, item: QueueItem) -> None:
        """The item is done: remove it (if still queued); release its chat if ``item.owner``
        holds the lease. Repeating it is harmless."""
        self._release_item(item, "ack")

    def reschedule(self, item: QueueItem) -> None:
        """Save ``attempts``, ``next_attempt_at``, ``deadline``, ``last_error`` (if still
        queued); release the chat if ``item.owner`` holds the lease."""
        self._release_item(item, "reschedule", _record(item, item.queue))

    def bury(self, item: QueueItem) -> None:
        """Move the item (if still queued) to the dead letters, keeping ``last_error``; release
        its chat if ``item.owner`` holds the lease."""
        created = repr(float(item.created_at))
        self._release_item(item, "bury", _record(item, item.queue), created)

    def pending(self, queue: QueueName) -> int:
        """How many items wait in ``queue`` (claimed ones included, dead letters excluded)."""
        return int(self.client.scard(self._keys[self._queue(queue)]["items"]))

    def dead_letters(self) -> list[QueueItem]:
        """The items of both queues that gave up, oldest first (``queue`` says which)."""
        ids: list[Any] = list(self.client.zrange(self._dead, 0, -1))
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hget(self._dead + b":" + _bytes(_text(item_id)), "item")
        return [_parse(record) for record in pipe.execute() if record is not None]

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue, due now."""
        return bool(self._run(self._retry, self._streams[OUTBOX], _bytes(item_id)))

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        return bool(self._run(self._drop, self._dead, _bytes(item_id)))

    # operations -----------------------------------------------------------------------------
    def has_persistence(self) -> bool:
        """Whether the server writes its data to disk: AOF (``appendonly yes``) or RDB save
        points. Without ``CONFIG`` (managed Redis), ``INFO persistence`` tells whether AOF is on
        or a snapshot was taken since the server started."""
        try:
            config = {**self.client.config_get("appendonly"), **self.client.config_get("save")}
        except self._errors.ResponseError:  # CONFIG disabled or renamed
            info = self.client.info("persistence")
            return bool(
                int(info.get("aof_enabled", 0))
                or int(info.get("rdb_saves", 0))
                or int(info.get("rdb_last_bgsave_time_sec", -1)) >= 0
            )
        found = {_text(name): _text(value).strip() for name, value in config.items()}
        return found.get("appendonly", "").lower() == "yes" or bool(found.get("save"))

    def _maintain(self) -> None:
        now = time.monotonic()
        if now < self._next_maintenance or not self._maintenance_lock.acquire(blocking=False):
            return
        try:
            self._next_maintenance = now + self.maintenance_interval
            idle_ms = max(1, round(self.forget_consumers_after * 1000))
            removed = self._forget_consumers(
                keys=list(self._streams.values()), args=[idle_ms, *self._streams]
            )
            if removed:
                log.debug("redis store: removed %d idle consumer(s)", removed)
        except self._errors.RedisError:
            log.warning("redis store: removing idle consumers failed", exc_info=True)
        finally:
            self._maintenance_lock.release()

    def close(self) -> None:
        """Close the connections of a client this store created from a URL."""
        if self._owns_client:
            self.client.close()
