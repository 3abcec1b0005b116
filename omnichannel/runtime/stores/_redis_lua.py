"""The Lua of :mod:`omnichannel.runtime.stores.redis`: every change touching more than one key is
one script (see that module's docstring for the keys)."""

from __future__ import annotations

# The queue scripts are templates: $P becomes the prefix, $Q the key names (a Lua table) of the
# script's queue, $IN / $OUT those of the inbox / outbox, $MODE what a release does. Each script
# defines only the helpers it calls (defining a function costs time on every run).
HELPERS = {
    "file": r"""
local function file(q, chat, head, first)
    -- queue a chat nobody leases by its head: a retry in `delayed`, else in `ready` (at the
    -- front if `first`)
    if not head then return end
    local at = string.match(head, '^[^\n]*\n([^\n]*)')
    if tonumber(at) > 0 then
        redis.call('ZADD', q.delayed, at, chat)
    elseif first then
        redis.call('LPUSH', q.ready, chat)
    else
        redis.call('RPUSH', q.ready, chat)
    end
end""",
    "push": r"""
local function push(q, chat, item)
    -- append an item (unless its id is queued already: a repeated call adds nothing)
    if redis.call('SADD', q.items, string.match(item, '^[^\n]*')) == 0 then return false end
    if redis.call('RPUSH', q.chat .. chat, item) == 1 then file(q, chat, item) end
    return true
end""",
    "finish": r"""
local function find(list, id)
    -- the position (0-based) and text of the item `id` anywhere in a chat's list
    local prefix = id .. '\n'
    for i, item in ipairs(redis.call('LRANGE', list, 0, -1)) do
        if string.sub(item, 1, #prefix) == prefix then return i - 1, item end
    end
end

local function finish(q, chat, id, owner, queued, record)
    -- remove the item `id` (or put `record` in its place) if still `queued`; end the lease if
    -- `owner` holds it; queue the chat again by its new head unless someone else leases it
    local list, prefix = q.chat .. chat, id .. '\n'
    if queued and not record and owner ~= '' then
        -- the owner is done with its head, normally: lease, item and next head in one pop
        local top = redis.call('LPOP', list, 3)
        if top and top[2] and string.sub(top[2], 1, #prefix) == prefix
                and string.match(top[1], '^\n%d+ %d+\n(.*)$$') == owner then
            if top[3] then
                redis.call('LPUSH', list, top[3])
                file(q, chat, top[3])
            end
            return
        end
        for i = #(top or {}), 1, -1 do redis.call('LPUSH', list, top[i]) end  -- not so: undo
    end
    local top = redis.call('LRANGE', list, 0, 2)
    local leased = top[1] and string.byte(top[1]) == 10
    local held = leased and owner ~= '' and string.match(top[1], '^\n%d+ %d+\n(.*)$$') == owner
    local cut, moved = 0, held
    if held then cut = 1 end
    if queued then
        local head = top[cut + 1]
        if head and string.sub(head, 1, #prefix) == prefix then  -- the head, normally
            if record then
                redis.call('LSET', list, cut, record)
                top[cut + 1] = record
            else
                cut = cut + 1
            end
            moved = true
        else  -- further down: a late caller's item (the head stays)
            local at, item = find(list, id)
            if item and record then
                redis.call('LSET', list, at, record)
            elseif item then
                redis.call('LREM', list, 1, item)
            end
        end
    end
    if cut > 0 then redis.call('LTRIM', list, cut, -1) end
    if moved and (held or not leased) then file(q, chat, top[cut + 1]) end
end""",
    "sweep": r"""
local function sweep(q)
    -- stamp new and renewed leases with the server's clock; end those that ran out (their
    -- owner died or stalled), queueing their chats at the front; forget released ones
    local t = redis.call('TIME')
    local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
    local live, seen = {}, {}
    for _, chat in ipairs(redis.call('LRANGE', q.leased, 0, -1)) do
        if not seen[chat] then
            seen[chat] = true
            local list = q.chat .. chat
            local lease = redis.call('LINDEX', list, 0)
            local stamp, span, owner = string.match(lease or '', '^\n(%d+) (%d+)\n(.*)$$')
            if stamp == '0' then
                redis.call('LSET', list, 0, '\n' .. now_ms .. ' ' .. span .. '\n' .. owner)
                live[#live + 1] = chat
            elseif stamp and tonumber(stamp) + tonumber(span) <= now_ms then
                redis.call('LPOP', list)
                file(q, chat, redis.call('LINDEX', list, 0), true)
            elseif stamp then
                live[#live + 1] = chat
            end
        end
    end
    redis.call('DEL', q.leased)
    for i = 1, #live, 1000 do
        redis.call('RPUSH', q.leased, unpack(live, i, math.min(i + 999, #live)))
    end
end""",
    "state": r"""
local function state_write(key, data, ttl_ms)
    -- chat state is a hash {v: version, d: JSON}; data '' deletes; ttl_ms '' never expires.
    -- A new key's version is the server clock in microseconds, each write adds one.
    if data == '' then
        redis.call('DEL', key)
        return
    end
    if redis.call('HEXISTS', key, 'v') == 1 then
        redis.call('HSET', key, 'd', data)
        redis.call('HINCRBY', key, 'v', 1)
    else
        local clock = redis.call('TIME')
        redis.call('HSET', key, 'v', clock[1] .. string.format('%06d', clock[2]), 'd', data)
    end
    if ttl_ms == '' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ttl_ms) end
end""",
}


def script(helpers: str, body: str) -> str:
    """``body`` after ``P`` and the helpers named (a helper's own helpers named before it)."""
    return "\nlocal P = $P" + "".join(HELPERS[name] for name in helpers.split()) + "\n" + body


# ARGV: chat, item[, dedupe key, ttl_ms]
ADD = script(
    "file push",
    """
if ARGV[3] and not redis.call('SET', P .. 'seen:' .. ARGV[3], 1, 'NX', 'PX', ARGV[4]) then
    return 0
end
push($Q, ARGV[1], ARGV[2])
return 1
""",
)

# ARGV: owner, now, "limit lease_ms sweep due" (sweep 1: sweep unless another claim did within
# the interval; due 1: move the retries that came due to `ready`)
CLAIM = script(
    "file sweep",
    r"""
local q, owner, now = $Q, ARGV[1], tonumber(ARGV[2])
local limit, lease_ms, sweeping, due = string.match(ARGV[3], '^(%d+) (%d+) (%d) (%d)$$')
limit = tonumber(limit)
if sweeping == '1' and redis.call('SET', q.sweep, 1, 'NX', 'PX', $SWEEP_MS) then sweep(q) end
if due == '1' then
    local chats = redis.call('ZRANGEBYSCORE', q.delayed, '-inf', ARGV[2], 'LIMIT', 0, 100)
    if #chats > 0 then  -- to the front of `ready`, the first due first
        redis.call('ZREM', q.delayed, unpack(chats))
        for i = #chats, 1, -1 do redis.call('LPUSH', q.ready, chats[i]) end
    end
end
local lease, out = '\n0 ' .. lease_ms .. '\n' .. owner, {}
for _ = 1, limit + 100 do
    local chat = redis.call('LMOVE', q.ready, q.leased, 'LEFT', 'RIGHT')
    if not chat then break end
    local list = q.chat .. chat
    local head = redis.call('LINDEX', list, 0)
    if head and string.byte(head) ~= 10 then  -- else a stale entry: emptied, or leased
        local at = string.match(head, '^[^\n]*\n([^\n]*)')
        if tonumber(at) > now then  -- rescheduled by a late worker meanwhile
            redis.call('ZADD', q.delayed, at, chat)
        else
            redis.call('LPUSH', list, lease)
            out[#out + 1] = head
            if #out == limit then break end
        end
    end
end
return out
""",
)

# ARGV: id, chat, owner[, item as updated by the caller]
RELEASE = script(
    "file finish",
    r"""
local q, mode, id, chat = $Q, '$MODE', ARGV[1], ARGV[2]
if mode == 'reschedule' then
    local queued = id ~= '' and redis.call('SISMEMBER', q.items, id) == 1
    finish(q, chat, id, ARGV[3], queued, ARGV[4])
    return 1
end
local queued = id ~= '' and redis.call('SREM', q.items, id) == 1
if queued and mode == 'bury' then
    redis.call('HSET', P .. 'dead:' .. id, 'queue', q.name, 'chat_key', chat, 'item', ARGV[4])
    redis.call('ZADD', P .. 'dead', string.match(ARGV[4], '^[^\n]*\n[^\n]*\n([^\n]*)'), id)
end
finish(q, chat, id, ARGV[3], queued)
return 1
""",
)

# ARGV: id, chat, owner, number of state writes, per write: key, version, JSON ('' deletes),
# ttl_ms ('' none); then per reply: chat, item. Returns 1, 0 (the turn is gone) or -n (the
# n-th write's version is not current: nothing written).
COMPLETE = script(
    "file push finish state",
    r"""
local inbox, outbox = $IN, $OUT
local id = ARGV[1]
if id == '' or redis.call('SISMEMBER', inbox.items, id) == 0 then return 0 end
local replies = 5 + tonumber(ARGV[4]) * 4
for i = 5, replies - 1, 4 do
    if (redis.call('HGET', ARGV[i], 'v') or '0') ~= ARGV[i + 1] then return -(i - 1) / 4 end
end
redis.call('SREM', inbox.items, id)
for i = 5, replies - 1, 4 do state_write(ARGV[i], ARGV[i + 2], ARGV[i + 3]) end
for i = replies, #ARGV, 2 do
    if not redis.call('ZSCORE', P .. 'dead', string.match(ARGV[i + 1], '^[^\n]*')) then
        push(outbox, ARGV[i], ARGV[i + 1])
    end
end
finish(inbox, ARGV[2], id, ARGV[3], true)
return 1
""",
)

# ARGV: owner, lease_ms, chat... (the next sweep stamps the renewed leases)
RENEW = script(
    "",
    r"""
local q, owner = $Q, ARGV[1]
local lease = '\n0 ' .. ARGV[2] .. '\n' .. owner
for i = 3, #ARGV do
    local list = q.chat .. ARGV[i]
    local head = redis.call('LINDEX', list, 0)
    if head and string.match(head, '^\n%d+ %d+\n(.*)$$') == owner then
        redis.call('LSET', list, 0, lease)
    end
end
return 1
""",
)

# ARGV: owner ('' lists the owners instead)
OWNERS = script(
    "file",
    r"""
local released, owners = 0, {}
for _, q in ipairs({$IN, $OUT}) do
    local seen = {}
    for _, chat in ipairs(redis.call('LRANGE', q.leased, 0, -1)) do
        if not seen[chat] then
            seen[chat] = true
            local list = q.chat .. chat
            local head = redis.call('LINDEX', list, 0)
            local owner = head and string.match(head, '^\n%d+ %d+\n(.*)$$')
            if ARGV[1] == '' then
                owners[#owners + 1] = owner
            elseif owner == ARGV[1] then  -- its process died: the chat is claimable at once
                redis.call('LPOP', list)
                file(q, chat, redis.call('LINDEX', list, 0), true)
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
RETRY = script(
    "file push",
    r"""
local id = ARGV[1]
local found = redis.call('HMGET', P .. 'dead:' .. id, 'queue', 'chat_key', 'item')
if not found[3] or not redis.call('ZSCORE', P .. 'dead', id) then return 0 end
local q = $OUT
if found[1] == 'inbox' then q = $IN end
local born, data = string.match(found[3], '^[^\n]*\n[^\n]*\n([^\n]*)\n[^\n]*\n(.*)$$')
if not push(q, found[2], id .. '\n0.0\n' .. born .. '\n0.0\n' .. data) then
    return 0  -- queued already
end
redis.call('ZREM', P .. 'dead', id)
redis.call('DEL', P .. 'dead:' .. id)
return 1
""",
)

# KEYS: an `items` set, without its marker (the empty id)
PENDING = """
return redis.call('SCARD', KEYS[1]) - redis.call('SISMEMBER', KEYS[1], '')
"""

# KEYS: dead. ARGV: id
DROP = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1] .. ':' .. ARGV[1])
return 1
"""

# KEYS: state key. ARGV: expected version ('' = any), JSON ('' deletes), ttl_ms ('' = none)
SAVE_STATE = script(
    "state",
    r"""
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] ~= '' and (current or '0') ~= ARGV[1] then return 0 end
state_write(KEYS[1], ARGV[2], ARGV[3])
return 1
""",
)
