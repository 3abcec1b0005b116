"""The shared store for several workers or machines: Redis 6.2 or later (redis-py is the optional
extra ``pip install "omnichannel[redis]"``).

Every change that touches more than one key is one Lua script, called with ``EVALSHA``: one
round trip per operation, done entirely or not at all (Redis away, a timeout). Repeating a call
whose answer was lost is harmless (an ``add`` of an id already queued, an ``ack`` of an item
already gone change nothing), since callers retry what raised.

**Keys** start with ``prefix`` (``omnichannel:`` by default; ``?prefix=`` in the URL), so apps
share one database. The scripts are rendered per store with the key names written in: on Redis
Cluster put a hash tag in the prefix (``"{omnichannel}:"``) to keep every key in one slot.

- ``{p}seen:{key}``: a dedupe mark, ``SET key 1 NX PX ttl`` (Redis expires it by itself).
- ``{p}state:{key}``: chat state, a hash ``{v: version, d: JSON}``. A new key's version is the
  server clock in microseconds and each write adds one, so a version never comes back after a
  delete and a re-create (no ABA for a compare-and-set).
- ``{p}dead``: dead letters of both queues, ids scored by ``created_at``; ``{p}dead:{id}`` a
  hash ``{queue, chat_key, item}``.

Each queue has the same keys, under ``{b} = {p}inbox:`` or ``{b} = {p}outbox:``:

- ``{b}chat:{chat_key}``: a list, the chat's items in order of arrival at Redis. An item is one
  string, ``id \\n next_attempt_at \\n created_at \\n deadline \\n JSON`` (ASCII JSON of the
  other fields): a claim hands it back as is, a script reads id and due time without decoding.
  A leased chat's list starts with its **lease**, ``\\n since span \\n owner`` (no item starts
  with a line break: ids are non-empty and have none).
- ``{b}items``: the set of queued ids ("still queued"; its size is ``pending``), plus the empty
  id, which keeps the set from being deleted and made again each time the queue drains.
- ``{b}ready``: a list of chats whose head is due, served first come first served (chats that
  waited longest, from a lease that ran out or a retry that came due, go to the front).
- ``{b}delayed``: chats whose head waits for a retry, scored by its ``next_attempt_at``.
- ``{b}leased``: the chats claimed since the last sweep and those leased then;
  ``{b}sweep``: a mark that lets one claim a second, from whichever process, sweep.

**Leases** are timed by the Redis server's clock alone: the sweep stamps a new or renewed lease
with ``TIME`` (``since``, 0 until then) and ends it once ``span`` milliseconds have passed (a
30 s lease ends 30 to 32 s after its claim or last renewal), its chat going to the front of
``ready``. Otherwise only the owner named in the lease ends it.

Invariants: a chat with items and no lease is in ``ready`` or ``delayed``; every lease's chat
is in ``leased``. An entry of ``ready`` may be stale (its chat was leased or emptied meanwhile,
by a second entry or a late worker); a claim skips it, so no chat is leased twice. Deleting
every key of the prefix (or ``FLUSHDB``) is safe; deleting ``ready``, ``delayed`` or ``leased``
alone strands the chats they name.

**Claim**: the sweep when due; every 0.1 s per store (or when the caller's ``now`` jumps),
retries that came due move to ``ready``; then ``LMOVE`` of chats from ``ready`` to ``leased``
until ``limit`` are leased (``LPUSH`` of the lease). **Add**: ``SADD``, ``RPUSH``, and the chat
goes to ``ready`` if its list is new. **Ack, bury, reschedule, inbox complete** change the item
if still queued and end the lease only if the caller owns it (a late worker never releases the
new owner's); the owner's ack pops lease, item and next head in one ``LPOP``.

Why this shape: on a local Redis an operation's cost beyond its round trip is mostly each call
inside a script that touches data, and the client's packing of arguments and parsing of
replies. A put, claim and ack here make eight list and set calls in all (sorted sets, dearer,
only hold retries), keep nothing per worker (unlike a stream's consumer group), send an item as
one string both ways, and build scripts, their call heads and claim arguments once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from json import encoder as _json_encoder
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.sending import redact_url
from omnichannel.runtime.stores._redis_lua import (
    ADD,
    CLAIM,
    COMPLETE,
    DROP,
    OWNERS,
    PENDING,
    RELEASE,
    RENEW,
    RETRY,
    SAVE_STATE,
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
    import redis

__all__ = ["RedisStore"]

INSTALL_HINT = 'the Redis store needs redis-py: pip install "omnichannel[redis]"'

MIN_VERSION = (6, 2)  # LMOVE, LPOP with a count

SWEEP_INTERVAL = 1.0  # seconds between sweeps of the leases (one sweep for all processes)
DUE_INTERVAL = 0.1  # seconds between looks (per store) for retries that came due


def _ttl_ms(ttl: float | None) -> str:
    return "" if ttl is None else str(max(1, round(ttl * 1000)))


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
    base = f"{prefix}{queue}:"
    names = ("items", "ready", "delayed", "leased", "sweep")
    return {"name": queue, "chat": base + "chat:"} | {name: base + name for name in names}


def _lua(text: str) -> str:
    """``text`` as a Lua string literal (any byte outside a safe set as a decimal escape)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-./{}"
    return "'" + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in _bytes(text)) + "'"


def _render(template: str, prefix: str, queue: str = OUTBOX, mode: str = "") -> str:
    def table(name: str) -> str:
        keys = _queue_keys(prefix, name)
        return "{" + ", ".join(f"{k} = {_lua(v)}" for k, v in keys.items()) + "}"

    names = {"P": _lua(prefix), "Q": table(queue), "IN": table(INBOX), "OUT": table(OUTBOX)}
    return Template(template).substitute(
        names, MODE=mode, SWEEP_MS=max(1, round(SWEEP_INTERVAL * 1000))
    )


class _Script:
    """A Lua script run by its SHA1, loaded again when the server lost it. ``head`` starts a
    call: ``EVALSHA sha 0`` (the scripts name their keys in their text), on Redis Cluster
    ``EVALSHA sha 1 route`` (a key of its slot, to route by), or ``EVALSHA sha 1`` (``keyed``:
    the first argument is the script's one key)."""

    __slots__ = ("head", "sha", "text")

    def __init__(self, text: str, route: bytes | None = None, *, keyed: bool = False) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("ascii"), usedforsecurity=False).hexdigest().encode()
        # a cluster client routes by the keys of an "EVALSHA" (a str); b"EVALSHA" packs faster
        self.head: tuple[Any, ...] = (b"EVALSHA", self.sha, b"0")
        if keyed or route is not None:
            self.head = ("EVALSHA", self.sha, b"1", *([route] if route is not None else []))


_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _c_encoder() -> Any:
    """The C encoder to call directly (``JSONEncoder.encode`` sets one up on every call), if this
    interpreter has one that works as expected."""
    try:
        make: Any = _json_encoder.c_make_encoder  # type: ignore[attr-defined]
        encoder = make(None, _ENCODER.default, _json_encoder.encode_basestring_ascii, None,
                       ":", ",", False, False, True)  # fmt: skip
        expected = '["\\ud83d",{"a":1.5}]'
        return encoder if "".join(encoder(["\ud83d", {"a": 1.5}], 0)) == expected else None
    except Exception:  # absent, or another signature
        return None


_C_ENCODE = _c_encoder()


def _encode(value: Any) -> str:
    """``value`` as compact ASCII JSON."""
    return "".join(_C_ENCODE(value, 0)) if _C_ENCODE else _ENCODER.encode(value)


def _json(value: Mapping[str, Any]) -> str:
    return _encode(value if type(value) is dict else dict(value))


def _record(item: QueueItem, queue: str) -> bytes:
    """The item as stored: ``id \\n next_attempt_at \\n created_at \\n deadline \\n JSON``, the
    JSON (ASCII) a list of the other fields."""
    item_id, payload = item.id, item.payload
    if not item_id or "\n" in item_id:
        raise ValueError(f"a queue item id must be non-empty, without line breaks: {item_id!r}")
    payload = payload if type(payload) is dict else dict(payload)
    data = _encode(
        (item.destination, item.chat_key, payload, item.attempts, item.last_error, queue)
    )
    times = f"{float(item.next_attempt_at)!r}\n{float(item.created_at)!r}\n{float(item.deadline)!r}"
    return f"{item_id}\n{times}\n{data}".encode("utf-8", "surrogatepass")


def _parse(record: Any, owner: str | None = None) -> QueueItem:
    """The item a record describes (see :func:`_record`)."""
    if type(record) is str:
        record = _bytes(record)
    item_id, next_at, created, deadline, data = record.split(b"\n", 4)
    destination, chat_key, payload, attempts, last_error, queue = _SCAN(data.decode(), 0)[0]
    return QueueItem(
        id=item_id.decode("utf-8", "surrogatepass"), destination=destination, chat_key=chat_key,
        payload=payload, created_at=float(created), deadline=float(deadline), attempts=attempts,
        next_attempt_at=float(next_at), last_error=last_error, queue=queue, owner=owner,
    )  # fmt: skip


class RedisStore:
    """A :class:`~omnichannel.runtime.stores.Store` in Redis, shared by any number of processes.

    Args:
        client_or_url: a ``redis.Redis`` client (not closed by :meth:`close`) or a URL such as
            ``redis://localhost:6379/0`` (``rediss://`` for TLS, ``unix:///path.sock``).
        prefix: prepended to every key; stores with different prefixes never see each other.

    Raises:
        ConfigurationError: redis-py is not installed, the server cannot be reached, or it is
            older than Redis 6.2.
    """

    def __init__(self, client_or_url: redis.Redis | str, *, prefix: str = "omnichannel:") -> None:
        module = _import_redis()
        self._errors = module.exceptions
        self._no_script = module.exceptions.NoScriptError
        self.prefix = prefix
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
        self._dead = self._p + b"dead"
        queues: tuple[str, ...] = (INBOX, OUTBOX)
        keys = {queue: _queue_keys(prefix, queue) for queue in queues}
        self._items = {queue: _bytes(keys[queue]["items"]) for queue in queues}
        # on Redis Cluster a call declares a key of its queue, for the client to route it by
        cluster = isinstance(self.client, getattr(module, "RedisCluster", ()))
        route = {queue: _bytes(keys[queue]["ready"]) if cluster else None for queue in queues}

        def script(template: str, queue: str = OUTBOX, mode: str = "") -> _Script:
            return _Script(_render(template, prefix, queue, mode), route[queue])

        self._add = {q: script(ADD, q) for q in queues}
        self._claim = {q: script(CLAIM, q) for q in queues}
        self._renew = {q: script(RENEW, q) for q in queues}
        self._release = {
            (q, mode): script(RELEASE, q, mode)
            for q in queues
            for mode in ("ack", "reschedule", "bury")
        }
        self._complete = script(COMPLETE, INBOX)
        self._owners = script(OWNERS)
        self._retry = script(RETRY)
        self._pending = _Script(PENDING, keyed=True)
        self._drop = _Script(DROP, keyed=True)
        self._save_state = _Script(_render(SAVE_STATE, prefix), keyed=True)
        self._next_sweep = dict.fromkeys(queues, 0.0)
        self._due_seen = dict.fromkeys(queues, float("-inf"))  # the `now` of the last look
        self._specs: dict[tuple[int, float, bool, bool], bytes] = {}  # claim arguments
        try:
            self._check_version()
            for items in self._items.values():  # the empty id: see the module docstring
                self.client.sadd(items, b"")
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
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or later"
            )

    def _run(self, script: _Script, *args: Any) -> Any:
        # EVALSHA straight through the client: redis-py's Script.__call__ adds its own cost
        execute: Callable[..., Any] = self.client.execute_command
        try:
            return execute(*script.head, *args)
        except self._no_script:
            self.client.script_load(script.text)  # a restarted server, or SCRIPT FLUSH
            return execute(*script.head, *args)

    @staticmethod
    def _unknown(queue: object) -> ValueError:
        return ValueError(f"unknown queue {queue!r} (expected 'inbox' or 'outbox')")

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

    def set_state(
        self, key: str, value: Mapping[str, Any] | None, ttl: float | None = None
    ) -> None:
        """Store ``value`` under ``key`` unconditionally (``None`` deletes it); a new version."""
        if value is None:
            self.client.delete(self._state_key(key))
        else:
            self._run(self._save_state, self._state_key(key), "", _json(value), _ttl_ms(ttl))

    def load_state(self, key: str) -> StateSnapshot:
        """The state under ``key`` with its version (0 when absent)."""
        version, raw = self.client.hmget(self._state_key(key), ["v", "d"])
        if raw is None:
            return StateSnapshot(None, 0)
        return StateSnapshot(json.loads(raw), int(version or 0))

    def save_state(
        self, key: str, value: Mapping[str, Any] | None, version: int, ttl: float | None = None
    ) -> bool:
        """Compare-and-set ``value`` (``None`` deletes) if the version is still ``version``."""
        data = "" if value is None else _json(value)
        args = (str(int(version)), data, _ttl_ms(ttl))
        return bool(self._run(self._save_state, self._state_key(key), *args))

    # inbox ----------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        """Atomically set ``dedupe_key`` (``SET NX PX``, the key :meth:`mark_seen` sets) and
        append ``item`` to the inbox; ``False`` (nothing stored) when the key was seen."""
        args: list[Any] = [_bytes(item.chat_key), _record(item, INBOX)]
        if dedupe_key is not None:
            args += [_bytes(dedupe_key), max(1, round(ttl * 1000))]
        return bool(self._run(self._add[INBOX], *args))

    def inbox_complete(
        self, item: QueueItem, replies: Sequence[QueueItem], writes: Sequence[StateWrite] = ()
    ) -> bool:
        """Atomically add ``replies`` to the outbox, apply the state ``writes`` and remove the
        turn ``item``.

        Releases the turn's inbox lease when ``item.owner`` holds it. ``False`` (nothing
        written) when the turn is no longer in the inbox; a reply whose id is queued or dead
        already is skipped.

        Raises:
            StateConflict: a write's version is no longer current; nothing was written.
        """
        args: list[Any] = [_bytes(item.id), _bytes(item.chat_key), item.owner or "", len(writes)]
        for write in writes:
            data = "" if write.value is None else _json(write.value)
            args += [self._state_key(write.key), str(write.version), data, _ttl_ms(write.ttl)]
        for reply in replies:
            args += [_bytes(reply.chat_key), _record(reply, OUTBOX)]
        if writes:
            done = int(self._run(self._complete, *args))
            if done < 0:
                raise StateConflict(writes[-done - 1].key)
            return done == 1
        return bool(self._run(self._complete, *args))

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        """Extend ``owner``'s leases on ``chat_keys`` to at least ``lease`` seconds from now (by
        the Redis server's clock, from the next sweep); leases held by others are left alone."""
        try:
            script = self._renew[queue]
        except KeyError:
            raise self._unknown(queue) from None
        if chat_keys:
            chats = [_bytes(chat) for chat in chat_keys]
            self._run(script, owner, max(1, round(lease * 1000)), *chats)

    def lease_owners(self) -> set[str]:
        """The owners holding a lease (running or run out) on either queue."""
        owners = self._run(self._owners, "")
        return {_text(owner) for owner in owners if owner}

    def release_owner(self, owner: str) -> int:
        """End every lease ``owner`` holds on either queue (its process died) and make those
        chats claimable at once; return how many."""
        if not owner:
            return 0
        return int(self._run(self._owners, owner))

    # both queues ----------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue (``item.queue``); adding an id that
        is queued already changes nothing."""
        queue = item.queue
        try:
            script = self._add[queue]
        except KeyError:
            raise self._unknown(queue) from None
        self._run(script, _bytes(item.chat_key), _record(item, queue))

    def claim(
        self, queue: QueueName, owner: str, now: float, limit: int, lease: float
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads of ``queue`` to ``owner`` for at least ``lease``
        seconds (by the Redis server's clock, from the sweep that stamps the lease, within a
        second); ``now`` decides which heads are due."""
        try:
            script = self._claim[queue]
        except KeyError:
            raise self._unknown(queue) from None
        if limit <= 0:
            return []
        moment, now = time.monotonic(), float(now)
        sweep = moment >= self._next_sweep[queue]
        if sweep:
            self._next_sweep[queue] = moment + SWEEP_INTERVAL
        due = abs(now - self._due_seen[queue]) >= DUE_INTERVAL  # or the caller's clock jumped
        if due:
            self._due_seen[queue] = now
        spec = self._specs.get((limit, lease, sweep, due))
        if spec is None:
            if len(self._specs) > 64:
                self._specs.clear()
            ms = max(1, round(lease * 1000))
            spec = self._specs[limit, lease, sweep, due] = b"%d %d %d %d" % (limit, ms, sweep, due)
        rows = self._run(script, owner, now, spec)
        return [_parse(row, owner) for row in rows]

    def _release_item(self, item: QueueItem, mode: str, *extra: Any) -> None:
        try:
            script = self._release[item.queue, mode]
        except KeyError:
            raise self._unknown(item.queue) from None
        self._run(script, _bytes(item.id), _bytes(item.chat_key), item.owner or "", *extra)

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
        self._release_item(item, "bury", _record(item, item.queue))

    def pending(self, queue: QueueName) -> int:
        """How many items wait in ``queue`` (claimed ones included, dead letters excluded)."""
        try:
            key = self._items[queue]
        except KeyError:
            raise self._unknown(queue) from None
        return int(self._run(self._pending, key))

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
        return bool(self._run(self._retry, _bytes(item_id)))

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

    def close(self) -> None:
        """Close the connections of a client this store created from a URL."""
        if self._owns_client:
            self.client.close()
