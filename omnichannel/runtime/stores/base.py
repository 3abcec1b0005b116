"""The store interface: what the runtime needs from a state engine, and the item it queues.

A store keeps four things, each safe to use from several threads (and, for SQLite and Redis,
several processes):

- **dedupe marks**: an atomic check-and-set with a time to live;
- **the inbox**: turns admitted by a webhook, written together with their dedupe mark *before*
  the platform gets its 200, claimed by workers one chat head at a time, and completed together
  with the replies they produced (one atomic step);
- **the outbox**: outbound calls, claimed the same way and removed once delivered;
- **chat state**: small JSON objects, with a compare-and-set for read-modify-write.

Both queues share one shape (:class:`QueueItem`): items of one ``chat_key`` are handed out one
at a time, in the order they were added, under a *lease* that names its owner; only the owner
releases it, and a lease whose owner died runs out and the chat's head is claimed again.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

__all__ = [
    "INBOX",
    "OUTBOX",
    "QueueItem",
    "QueueName",
    "StateConflict",
    "StateSnapshot",
    "StateWrite",
    "Store",
    "json_copy",
    "new_item_id",
    "new_owner_id",
    "owner_is_dead",
    "plain_copy",
    "update_state",
]

QueueName = Literal["inbox", "outbox"]
INBOX: QueueName = "inbox"
OUTBOX: QueueName = "outbox"

_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_item_id() -> str:
    """A unique item id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def _new_id_prefix_after_fork() -> None:
    # a forked worker (gunicorn, multiprocessing) must not repeat its parent's ids: they share
    # one SQLite file or Redis, where equal ids collide
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count()


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_new_id_prefix_after_fork)


def new_owner_id() -> str:
    """A lease owner id naming this process: ``host/pid/random``.

    The host and pid let a restarted process on the same machine recognise the leases of its
    dead predecessor (:func:`owner_is_dead`) and take them back at once.
    """
    host = socket.gethostname().replace("/", "_") or "localhost"
    return f"{host}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """``True`` when ``owner`` names a process of this machine that no longer runs."""
    parts = owner.split("/")
    if len(parts) != 3 or parts[0] != (socket.gethostname().replace("/", "_") or "localhost"):
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@attrs.define(kw_only=True)
class QueueItem:
    """One item of the inbox (a turn to run) or the outbox (a call to deliver).

    ``destination`` names the channel that handles it, ``chat_key`` the ordering key (items of
    one key are handed out one at a time, in order), ``payload`` a JSON-serializable mapping.
    Times are Unix seconds. ``owner`` is set on an item returned by a claim (the lease holder);
    it is not stored. ``queue`` says which queue the item belongs to (dead letters of both
    queues are listed together).
    """

    destination: str
    chat_key: str
    payload: Mapping[str, Any]
    id: str = attrs.field(factory=lambda: new_item_id())
    created_at: float = attrs.field(factory=time.time)
    deadline: float = 0.0
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    queue: QueueName = OUTBOX
    owner: str | None = attrs.field(default=None, eq=False)


@attrs.frozen
class StateSnapshot:
    """Chat state as read, with the version a compare-and-set must name (0: absent)."""

    value: dict[str, Any] | None
    version: int


@attrs.frozen
class StateWrite:
    """A compare-and-set of chat state committed with a turn's completion.

    ``value`` is stored under ``key`` (``None`` deletes it) only if the key's version is still
    ``version`` (0: absent); it expires ``ttl`` seconds after the write (``None``: never).
    """

    key: str
    value: Mapping[str, Any] | None
    version: int
    ttl: float | None = None
    fresh: bool = attrs.field(default=False, kw_only=True)
    """``value`` is plain JSON (``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
    ``float``, ``bool``, ``None``) that no one changes any more: a store that keeps values as
    objects may keep it without copying it (the memory store; the others encode it anyway)."""


_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class _NotPlainJSON(ValueError):
    """A value the fast copy leaves to the JSON round trip (a tuple, a non-str key, a
    subclass)."""


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain_copy(value: Any) -> Any:
    """A deep copy of a value made only of ``dict`` (``str`` keys), ``list`` and JSON scalars
    (their exact types); raises ``ValueError`` for anything else."""
    kind = type(value)
    if kind is dict:
        out = {}
        for key, inner in value.items():
            if type(key) is not str:
                raise _NotPlainJSON
            out[key] = inner if type(inner) in _SCALARS else plain_copy(inner)
        return out
    if kind is list:
        copied = value[:]
        for i, inner in enumerate(value):
            inner_kind = type(inner)
            if inner_kind in _SCALARS:
                continue
            if inner_kind is list:  # a list of scalars (a history line) without a call per item
                for item in inner:
                    if type(item) not in _SCALARS:
                        copied[i] = plain_copy(inner)
                        break
                else:
                    copied[i] = inner[:]
            else:
                copied[i] = plain_copy(inner)
        return copied
    if kind in _SCALARS:
        return value
    raise _NotPlainJSON


def json_copy(value: Any) -> Any:
    """A deep copy of ``value`` as JSON would give it back (the same value as
    ``json.loads(json.dumps(value))``; raises what ``json.dumps`` raises), made without
    encoding when it is plain dicts, lists and scalars."""
    try:
        return plain_copy(value)
    except (_NotPlainJSON, RecursionError):
        return json.loads(_encode(value))


class StateConflict(Exception):
    """A :class:`StateWrite` named a version that is no longer current: nothing was written."""

    def __init__(self, key: str) -> None:
        super().__init__(f"state {key!r} was changed by another writer")
        self.key = key


@runtime_checkable
class Store(Protocol):
    """What the runtime needs from a state engine (memory, SQLite, Redis).

    Every method may raise when the engine is unavailable (a full disk, Redis down): callers
    treat that as "not done" and retry; no method leaves a half-done change behind.
    """

    # dedupe -----------------------------------------------------------------------------------
    def mark_seen(self, key: str, ttl: float) -> bool:
        """Record ``key``; ``True`` when it was new, ``False`` when seen within its TTL."""
        ...

    def forget(self, key: str) -> None:
        """Remove a dedupe key."""
        ...

    # chat state -------------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The state stored under ``key``, or ``None``."""
        ...

    def set_state(
        self, key: str, value: Mapping[str, Any] | None, ttl: float | None = None
    ) -> None:
        """Store ``value`` under ``key`` unconditionally (``None`` deletes it); it expires after
        ``ttl`` seconds (``None``: never)."""
        ...

    def load_state(self, key: str) -> StateSnapshot:
        """The state under ``key`` with its version (``version`` 0 when absent).

        An expired value reads as absent (``None``); a compare-and-set works against what was
        read. A version is not reused for a key after a delete and a re-create (no ABA).
        """
        ...

    def save_state(
        self, key: str, value: Mapping[str, Any] | None, version: int, ttl: float | None = None
    ) -> bool:
        """Compare-and-set: store ``value`` only if the version is still ``version``.

        ``None`` deletes. Returns ``False`` (and changes nothing) when someone else wrote the
        key since it was loaded. ``ttl`` as for :meth:`set_state`.
        """
        ...

    # inbox ------------------------------------------------------------------------------------
    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        """Atomically record ``dedupe_key`` and append ``item`` to its chat's inbox queue.

        Returns ``False`` (nothing stored) when ``dedupe_key`` was seen within ``ttl``. When
        this raises, neither the mark nor the item was stored.
        """
        ...

    def inbox_complete(
        self, item: QueueItem, replies: Sequence[QueueItem], writes: Sequence[StateWrite] = ()
    ) -> bool:
        """Atomically append ``replies`` to the outbox, apply the state ``writes`` and remove
        the turn ``item``.

        Releases the chat's inbox lease when ``item.owner`` holds it. Returns ``False`` and
        writes nothing when ``item`` is no longer in the inbox (another worker completed it).
        A reply whose id is already in the outbox or the dead letters is not added twice.

        Raises:
            StateConflict: a write's version is no longer current; nothing was written.
        """
        ...

    def renew_leases(
        self, queue: QueueName, owner: str, chat_keys: Sequence[str], lease: float
    ) -> None:
        """Extend ``owner``'s leases on ``chat_keys`` to ``lease`` seconds from now."""
        ...

    def lease_owners(self) -> set[str]:
        """The owners holding a lease on either queue."""
        ...

    def release_owner(self, owner: str) -> int:
        """End every lease ``owner`` holds (its process died); return how many."""
        ...

    # both queues ------------------------------------------------------------------------------
    def add(self, item: QueueItem) -> None:
        """Persist ``item`` at the tail of its chat's queue (``item.queue``)."""
        ...

    def claim(
        self, queue: QueueName, owner: str, now: float, limit: int, lease: float
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due chat heads of ``queue`` to ``owner`` for ``lease`` seconds.

        A chat is skipped while another owner's lease on it runs; its head only when its
        ``next_attempt_at`` is after ``now``. Returned items have ``owner`` set.
        """
        ...

    def ack(self, item: QueueItem) -> None:
        """The item is done: remove it; release its chat if ``item.owner`` holds the lease."""
        ...

    def reschedule(self, item: QueueItem) -> None:
        """Save ``attempts``, ``next_attempt_at``, ``deadline``, ``last_error``; release."""
        ...

    def bury(self, item: QueueItem) -> None:
        """Move the item to the dead letters (keeping ``last_error``); release its chat."""
        ...

    def pending(self, queue: QueueName) -> int:
        """How many items wait in ``queue`` (dead letters excluded)."""
        ...

    def dead_letters(self) -> list[QueueItem]:
        """The items of both queues that gave up, oldest first (``queue`` says which)."""
        ...

    def dead_letter_retry(self, item_id: str) -> bool:
        """Put a dead letter back at the tail of its chat's queue, due now."""
        ...

    def dead_letter_drop(self, item_id: str) -> bool:
        """Delete a dead letter for good."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


StateChange = Callable[[dict[str, Any] | None], Mapping[str, Any] | None]


def update_state(
    store: Store, key: str, change: StateChange, *, attempts: int = 50, ttl: float | None = None
) -> Mapping[str, Any] | None:
    """Read-modify-write of chat state with compare-and-set: no concurrent update is lost.

    ``change(current)`` gets a copy of the state (``None`` when absent) and returns the new
    state (``None`` deletes); it is called again, on fresh state, when another writer won.
    Returns what was stored. ``ttl``: the new value expires after that many seconds.

    Raises:
        RuntimeError: ``attempts`` writers in a row won the race (pathological contention).
    """
    for _ in range(attempts):
        snapshot = store.load_state(key)
        new = change(snapshot.value)
        if new is None and snapshot.version == 0:
            return None
        if store.save_state(key, new, snapshot.version, ttl):
            return new
    raise RuntimeError(f"state {key!r}: gave up after {attempts} conflicting updates")
