"""Conversation state and history: what ``turn.state``, ``turn.user_state`` and ``turn.history``
are made of, and how they are committed with the turn.

A conversation (one chat of one channel) has one record in the store, under
``omnichannel:conversation:{channel destination}:{chat id}``::

    {"state": {...}, "history": [[role, text, at], ...]}

and a visitor one, under ``omnichannel:user:{channel destination}:{visitor id}``:
``{"state": {...}}``. A turn loads a record when it is first used (turns of one chat run one at
a time, so that is the value at the start of the turn), and the turn's changes are written in
the same atomic step that completes the turn and commits its replies to the outbox: a turn run
again after a crash never applies them twice. The write is a compare-and-set; when another
writer changed the record meanwhile (a turn of the same visitor in another chat, ``forget``),
the turn's changes, not its whole value, are applied again to the fresh record (the keys it
set or deleted, the history lines it added) when the other writer changed other keys; when it
changed one of the same keys (two turns incrementing one counter), the turn is run again from
the start on the fresh state, its replies not sent meanwhile, as after a crash. Nothing either
side wrote is lost.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, overload

import attrs

from omnichannel.runtime.stores.base import StateWrite, Store, json_copy

__all__ = [
    "History",
    "HistoryEntry",
    "Role",
    "TurnRecords",
    "conversation_key",
    "current_records",
    "record",
    "record_for",
    "user_key",
]

log = logging.getLogger(__name__)

Role = Literal["user", "bot", "operator"]
DEFAULT_KEEP = 20


class _Unset:
    """The type of :data:`UNSET`."""


UNSET = _Unset()
"""Not given: take the record's own setting."""


def _int(value: object, default: int) -> int:
    return value if type(value) is int and value > 0 else default


ROLES: tuple[str, ...] = ("user", "bot", "operator")
_NUMBERS = (int, float)

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode


def conversation_key(destination: str, chat_id: object) -> str:
    """The store key of a conversation's record."""
    return f"omnichannel:conversation:{destination}:{chat_id}"


def user_key(destination: str, visitor_id: object) -> str:
    """The store key of a visitor's record."""
    return f"omnichannel:user:{destination}:{visitor_id}"


@attrs.frozen
class HistoryEntry:
    """One message of a conversation.

    Attributes:
        role: ``"user"`` (the visitor), ``"bot"`` (a reply of the bot) or ``"operator"`` (a
            human answering in the channel).
        text: the text as the agent sees it (a file's text, a button's label; a keyboard as
            its numbered list).
        at: when, in Unix seconds.
    """

    role: str
    text: str
    at: float

    @property
    def time(self) -> datetime:
        """:attr:`at` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.at, timezone.utc)


class History(Sequence[HistoryEntry]):
    """The last messages of a conversation, oldest first (``turn.history``).

    During a turn it ends with the visitor's message being handled, followed by the replies the
    turn has sent so far.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Sequence[HistoryEntry] = ()) -> None:
        self._entries = tuple(entries)

    @overload
    def __getitem__(self, index: int) -> HistoryEntry: ...
    @overload
    def __getitem__(self, index: slice) -> History: ...
    def __getitem__(self, index: int | slice) -> HistoryEntry | History:
        if isinstance(index, slice):
            return History(self._entries[index])
        return self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self._entries == other._entries
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"History({list(self._entries)!r})"

    def to_messages(
        self,
        system: str | None = None,
        *,
        bot_role: str = "assistant",
        operator_role: str = "assistant",
    ) -> list[dict[str, str]]:
        """The history as chat-completion messages (``[{"role": …, "content": …}]``): the
        visitor's lines as ``"user"``, the bot's and operators' as ``"assistant"``, after a
        ``system`` message when given. Ready for an OpenAI-compatible ``messages`` field."""
        roles = {"user": "user", "bot": bot_role, "operator": operator_role}
        out = [{"role": "system", "content": system}] if system else []
        out.extend({"role": roles.get(e.role, "user"), "content": e.text} for e in self._entries)
        return out


class _Record:
    """One store record a turn uses: its loaded value, the live state dict, the lines added."""

    def __init__(self, key: str, ttl: float | _Unset | None, keep: int) -> None:
        self.key = key
        self.ttl = ttl  # UNSET: the record's own (a line recorded by a bridge, not a bot)
        self.keep = keep  # 0: the record's own
        self.loaded = False
        self.version = 0
        self.value: dict[str, Any] | None = None
        self.state: dict[str, Any] = {}
        self._base: dict[str, str] = {}
        self.appended: list[list[Any]] = []
        self.plain = True  # every line appended is made of exact str and float (see fresh)
        self.shared = False  # value is the store's own object (peek_state): never changed
        self.forgotten = False
        self._sets: dict[str, Any] | None = None
        self._deleted: list[str] = []

    def load(self, store: Store | None) -> None:
        if store is None:
            self.loaded = True
            return
        peek = getattr(store, "peek_state", None)
        snapshot = store.load_state(self.key) if peek is None else peek(self.key)
        self.loaded = True
        self.shared = peek is not None
        self.version = snapshot.version
        self.value = snapshot.value
        if self._sets is None and not self.forgotten:  # the first load: hand out the state
            state = (snapshot.value or {}).get("state")
            if not isinstance(state, Mapping) or not state:
                self.state = {}
            else:
                # the handler may change nested values: a value read without a copy is copied
                self.state = json_copy(state) if self.shared else dict(state)
                base = self._base
                for key, value in self.state.items():
                    try:
                        base[key] = _dumps(value)
                    except (TypeError, ValueError):
                        continue

    def history(self) -> list[HistoryEntry]:
        lines = [] if self.forgotten else list((self.value or {}).get("history") or [])
        lines.extend(self.appended)
        entries = [
            HistoryEntry(str(line[0]), str(line[1]), float(line[2]))
            for line in lines
            if isinstance(line, (list, tuple)) and len(line) == 3
        ]
        keep = self.keep or _int((self.value or {}).get("keep"), DEFAULT_KEEP)
        return entries[-keep:]

    def diff(self) -> None:
        """Fix the turn's changes to the state (once, at the end of the turn)."""
        if self._sets is not None:
            return
        self._sets = {}
        for key, value in self.state.items():
            try:
                text = _dumps(value)
            except (TypeError, ValueError) as exc:
                log.error(
                    "state %r is not JSON-serializable (%s: %s); that change is not saved",
                    key,
                    type(exc).__name__,
                    exc,
                )
                continue
            if self._base.get(key) != text:
                self._sets[key] = json.loads(text)
        self._deleted = [key for key in self._base if key not in self.state]

    @property
    def dirty(self) -> bool:
        self.diff()
        return bool(self._sets or self._deleted or self.appended or self.forgotten)

    def collides(self) -> bool:
        """After a reload: did the other writer change a key this turn changed too?"""
        self.diff()
        fresh = (self.value or {}).get("state") or {}
        for key in [*(self._sets or {}), *self._deleted]:
            theirs = _dumps(fresh[key]) if key in fresh and _serializable(fresh[key]) else None
            if theirs != self._base.get(key):
                return True
        return False

    @property
    def fresh(self) -> bool:
        """What :meth:`apply` makes of :attr:`value` may be stored without a copy: it shares
        only the store's own objects (read with ``peek_state``, never changed) and new plain
        JSON (the changed state keys come from ``json.loads``, the lines are exact types)."""
        return self.shared and self.plain and type(self.keep) is int

    def apply(self, current: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The record once the turn's changes are applied to ``current``."""
        self.diff()
        base: Mapping[str, Any] = {} if current is None or self.forgotten else current
        state = dict(base.get("state") or {})
        for key in self._deleted:
            state.pop(key, None)
        state.update(self._sets or {})
        keep = self.keep or _int(base.get("keep"), DEFAULT_KEEP)
        history = list(base.get("history") or []) + self.appended
        history = history[-keep:]
        new: dict[str, Any] = {}
        if state:
            new["state"] = state
        if history:
            new["history"] = history
            new["keep"] = keep
        ttl = self.effective_ttl(base)
        if new and ttl is not None:
            new["ttl"] = ttl
        return new or None

    def effective_ttl(self, base: Mapping[str, Any] | None = None) -> float | None:
        """The TTL to write: the bot's, else the one the record was written with."""
        if not isinstance(self.ttl, _Unset):
            return self.ttl
        stored = (self.value or {}) if base is None else base
        ttl = stored.get("ttl")
        return float(ttl) if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) else None


def _serializable(value: object) -> bool:
    try:
        _dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class TurnRecords:
    """The records one turn uses, written with its completion (see the module docstring).

    Made by the runtime for every turn; ``store=None`` keeps them in memory only (a bot called
    outside a runtime).
    """

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._records: dict[str, _Record] = {}

    def get(self, key: str, *, ttl: float | _Unset | None = None, keep: int = 0) -> _Record:
        """The record under ``key``, loaded on first use."""
        found = self._records.get(key)
        if found is None:
            found = self._records[key] = _Record(key, ttl, keep)
        else:
            found.keep = max(found.keep, keep)
            if isinstance(found.ttl, _Unset):
                found.ttl = ttl
        if not found.loaded:
            found.load(self.store)
        return found

    def append(
        self,
        key: str,
        role: str,
        text: str,
        *,
        ttl: float | _Unset | None,
        keep: int,
        at: float | None,
    ) -> None:
        """Add a history line to the record under ``key``."""
        record = self._records.get(key)
        if record is None or not record.loaded or keep > record.keep or record.ttl is UNSET:
            record = self.get(key, ttl=ttl, keep=keep)
        if at is None:
            at = time.time()
        elif type(at) is not float:
            record.plain = False
        if type(text) is not str or type(role) is not str:
            record.plain = False
        record.appended.append([role, text, at])

    def forget(self, key: str) -> None:
        """The record under ``key`` is erased: the turn's earlier changes to it are dropped."""
        record = self._records.get(key)
        if record is not None:
            record.forgotten = True
            record.state.clear()
            record._base = {}
            record._sets = None
            record.appended.clear()

    def writes(self) -> list[StateWrite]:
        """The compare-and-set writes that commit the turn's changes."""
        out: list[StateWrite] = []
        for record in self._records.values():
            if record.dirty and not (record.forgotten and not record.appended):
                value = record.apply(record.value)
                ttl = record.effective_ttl()
                fresh = record.fresh and (value is None or type(value.get("ttl", 0)) in _NUMBERS)
                out.append(StateWrite(record.key, value, record.version, ttl, fresh=fresh))
        return out

    def reload(self, *, force: bool = False) -> bool:
        """Another writer won: read the records again (the turn's changes are kept).

        Returns ``True`` when the turn's changes still apply: the other writer changed other
        keys, or added history. ``False`` when it changed a key the turn changed too (a
        counter both incremented): the turn must run again on the fresh state. With
        ``force``, the turn's values are written over the other's anyway (logged).
        """
        for record in self._records.values():
            if record.dirty:
                record.load(self.store)
                if not record.forgotten and record.collides():
                    if not force:
                        return False
                    log.warning(
                        "state %s: a key this turn changed was changed by other turns each "
                        "time it ran; its values are written over theirs",
                        record.key,
                    )
        return True


_RECORDS: contextvars.ContextVar[TurnRecords | None] = contextvars.ContextVar(
    "omnichannel_turn_records", default=None
)


def current_records() -> TurnRecords | None:
    """The records of the turn running in this context (``None`` outside a turn)."""
    return _RECORDS.get()


def activate(records: TurnRecords) -> contextvars.Token[TurnRecords | None]:
    """Make ``records`` the current turn's (the runtime does this around a turn)."""
    return _RECORDS.set(records)


def deactivate(token: contextvars.Token[TurnRecords | None]) -> None:
    """Undo :func:`activate`."""
    _RECORDS.reset(token)


def record(
    store: Store,
    destination: str,
    chat_id: object,
    role: str,
    text: str,
    *,
    keep: int = 0,
    ttl: float | _Unset | None = UNSET,
) -> None:
    """Add a line to a conversation's history (an operator's answer, the agent writing first).

    Inside a turn on the same store it is committed with the turn; elsewhere it is written at
    once (compare-and-set). ``keep`` and ``ttl`` default to what the conversation's bot set
    (``Bot(history=…, state_ttl=…)``).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    key = conversation_key(destination, chat_id)
    records = current_records()
    if records is not None and records.store is store:
        records.append(key, role, text, ttl=ttl, keep=keep, at=None)
        return
    line = [role, text, time.time()]
    written = _Record(key, ttl, keep)
    written.appended = [line]
    for _ in range(50):  # compare-and-set, with the TTL the record carries
        snapshot = store.load_state(key)
        new = written.apply(snapshot.value)
        ttl_now = written.effective_ttl(snapshot.value or {})
        if store.save_state(key, new, snapshot.version, ttl_now):
            return
    raise RuntimeError(f"state {key!r}: gave up after 50 conflicting updates")


def record_for(channel: Any, chat_id: object, role: str, text: str) -> None:
    """:func:`record` for a channel object (its runtime's store and its destination); nothing
    when the channel has no store (not attached to a runtime)."""
    store = getattr(getattr(channel, "runtime", None), "store", None)
    if store is None or not text:
        return
    destination = str(getattr(channel, "destination", None) or channel.name)
    record(store, destination, chat_id, role, text)
