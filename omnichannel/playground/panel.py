"""The playground's panel: what the bot saw, and the inbox, the outbox and the state.

:class:`PipelinePanel` is the part of :class:`~omnichannel.playground.app.Playground` that
watches the pipeline and publishes what it sees to the page: a middleware on the bot records
what each turn saw and did; as the :class:`~omnichannel.playground.watch.StoreObserver` of the
watched store, it follows every queue item (a turn waiting, running, failed or dead; a reply
sending, retrying or delivered) under the exchange it belongs to; and a refresher thread reads
the queues and each conversation's state from the store and sends them to the page.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from omnichannel.runtime.conversation import conversation_key, user_key
from omnichannel.runtime.stores import INBOX, OUTBOX, QueueItem, QueueName

if TYPE_CHECKING:
    from omnichannel.playground.app import Exchange
    from omnichannel.playground.hub import Hub
    from omnichannel.playground.players import Player
    from omnichannel.playground.watch import WatchedStore
    from omnichannel.runtime.bot import Turn

__all__ = ["PipelinePanel"]

log = logging.getLogger(__name__)


class PipelinePanel:
    """The bot's middleware, the store's observer and the refresher of the page's queues and
    state (a mixin of :class:`~omnichannel.playground.app.Playground`, which sets the
    attributes declared here and starts and stops the refresher thread)."""

    # the playground's model, which the panel reads and updates under ``_lock``
    _lock: threading.RLock
    hub: Hub
    players: list[Player]
    store: WatchedStore
    exchanges: dict[str, Exchange]
    _latest: dict[str, str]
    _expect: dict[str, tuple[str, dict[str, Any]]]
    _turns: dict[str, tuple[str, dict[str, Any]]]
    _by_destination: dict[str, Player]

    if TYPE_CHECKING:

        def mask(self, text: str) -> str: ...

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}  # queue items seen, by id
        self._inflight: dict[str, str] = {}  # chat key -> the outbox item being sent
        self._states: dict[str, Any] = {}
        self._queues: dict[str, Any] = {}
        self._dirty_queues = True
        self._dirty_states: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None

    def state_dirty(self, player: Player) -> None:
        """Read and send ``player``'s conversation state soon."""
        with self._lock:
            self._dirty_states.add(player.destination)
        self._wake.set()

    # the bot (a middleware on the bot: what it saw, what it did) ----------------------------
    def _spy(self, turn: Turn, go_on: Callable[[], None]) -> None:
        player = self._by_destination.get(str(getattr(turn.channel, "destination", "")))
        variables = dict(turn.variables)
        seen: dict[str, Any] = {
            "who": player.bot_name if player is not None else "The bot",
            "kind": turn.message.kind,
            "text": turn.text,
            "variables": variables,
            "replies": None,
            "handed_over": False,
        }
        with self._lock:
            exchange = self._exchange_of_turn(turn.id or "")
            if player is not None and str(turn.chat_id) == str(player.chat_id):
                player.variables = variables
                player.visitor_id = turn.visitor_id
            if exchange is not None:
                exchange["bot"] = seen
                self.hub.publish("exchange", exchange)
        try:
            go_on()
        finally:
            with self._lock:
                seen["replies"] = len(turn.replies)
                seen["handed_over"] = turn.handed_over
                if exchange is not None:
                    self.hub.publish("exchange", exchange)

    # the store's reports (WatchedStore) -----------------------------------------------------
    def _view(
        self,
        item: QueueItem,
        queue: QueueName,
        exchange: Exchange | None,
        part: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        player = self._by_destination.get(item.destination)
        if queue == OUTBOX and player is not None:
            summary = player.summarize(item.payload)
        elif part is not None and part.get("summary"):
            summary = str(part["summary"])
        elif exchange is not None:
            summary = f"turn: {exchange['action'].get('text', '')}"
        else:
            summary = "turn"
        return {
            "id": item.id,
            "queue": queue,
            "destination": item.destination,
            "chat_key": item.chat_key,
            "summary": self.mask(summary)[:200],
            "state": "waiting",
            "attempts": item.attempts,
            "error": None,
            "next_at": None,
            "exchange": exchange["id"] if exchange is not None else None,
            "calls": [],
        }

    def _changed(self, view: dict[str, Any] | None) -> None:
        self._dirty_queues = True
        if view is not None:
            exchange = self.exchanges.get(view.get("exchange") or "")
            if exchange is not None:
                self.hub.publish("exchange", exchange)
        self._wake.set()

    def _exchange_of_turn(self, turn_id: str) -> Exchange | None:
        found = self._turns.get(turn_id)
        return self.exchanges.get(found[0]) if found is not None else None

    def _turn(self, item: QueueItem, **changes: Any) -> None:
        found = self._turns.get(item.id)
        exchange = self.exchanges.get(found[0]) if found is not None else None
        if found is not None and exchange is not None and found[1]["turn"] is not None:
            found[1]["turn"].update(changes)
            self.hub.publish("exchange", exchange)

    def admitted(self, item: QueueItem, new: bool) -> None:
        with self._lock:
            expected = self._expect.get(item.chat_key)
            exchange = self.exchanges.get(expected[0]) if expected is not None else None
            part = expected[1] if expected is not None else None
            if exchange is not None and part is not None:
                part["turn"] = {
                    "id": item.id if new else None,
                    "state": "waiting" if new else "duplicate",
                    "attempt": 0,
                    "error": None,
                }
                if new:
                    self._turns[item.id] = (exchange["id"], part)
            if new:
                self._items[item.id] = self._view(item, INBOX, exchange, part)
            self._changed(self._items.get(item.id))

    def claimed(self, queue: QueueName, items: Sequence[QueueItem]) -> None:
        with self._lock:
            for item in items:
                view = self._items.get(item.id)
                if queue == INBOX:
                    self._turn(item, state="running", attempt=item.attempts + 1)
                    if view is not None:
                        view["state"] = "running"
                else:
                    self._inflight[item.chat_key] = item.id
                    if view is not None:
                        view["state"] = "sending"
                        view["attempts"] = item.attempts + 1
                self._changed(view)

    def completed(self, item: QueueItem, replies: Sequence[QueueItem], done: bool) -> None:
        if not done:
            return
        with self._lock:
            self._items.pop(item.id, None)
            self._turn(item, state="done", error=None)
            exchange = self._exchange_of_turn(item.id)
            for reply in replies:
                view = self._view(reply, OUTBOX, exchange)
                self._items[reply.id] = view
                if exchange is not None:
                    exchange["items"].append(view)
            self._changed(None)
            if exchange is not None:
                self.hub.publish("exchange", exchange)
            player = self._by_destination.get(item.destination)
        if player is not None:
            self.state_dirty(player)

    def added(self, item: QueueItem) -> None:
        with self._lock:
            exchange = self.exchanges.get(self._latest.get(item.chat_key, ""))
            view = self._view(item, item.queue, exchange)
            self._items[item.id] = view
            if exchange is not None:
                exchange["items"].append(view)
            self._changed(view)

    def _settled(self, item: QueueItem) -> None:
        # the item is no longer in hand: its chat shows nothing in flight (held: self._lock)
        if self._inflight.get(item.chat_key) == item.id:
            del self._inflight[item.chat_key]

    def acked(self, item: QueueItem) -> None:
        with self._lock:
            view = self._items.pop(item.id, None)
            self._settled(item)
            if view is not None and view["queue"] == OUTBOX:
                view.update(state="delivered", next_at=None, attempts=item.attempts)
            self._changed(view)

    def rescheduled(self, item: QueueItem) -> None:
        with self._lock:
            view = self._items.get(item.id)
            self._settled(item)
            error = self.mask(item.last_error or "")
            if view is not None:
                view.update(
                    state="retrying",
                    attempts=item.attempts,
                    error=error,
                    next_at=item.next_attempt_at,
                )
                if view["queue"] == INBOX:
                    self._turn(item, state="failed", error=error, next_at=item.next_attempt_at)
            self._changed(view)

    def buried(self, item: QueueItem) -> None:
        with self._lock:
            view = self._items.get(item.id)
            self._settled(item)
            error = self.mask(item.last_error or "")
            if view is not None:
                view.update(state="dead", attempts=item.attempts, error=error, next_at=None)
                if view["queue"] == INBOX:
                    self._turn(item, state="dead", error=error)
            self._changed(view)

    def revived(self, item_id: str, retried: bool) -> None:
        with self._lock:
            view = self._items.get(item_id)
            if view is not None:
                view.update(state="waiting" if retried else "dropped", next_at=None)
                if not retried:
                    del self._items[item_id]
            self._changed(view)

    def state_written(self, keys: Sequence[str]) -> None:
        with self._lock:
            for destination, player in self._by_destination.items():
                if any(destination in key for key in keys):
                    self._dirty_states.add(player.destination)
        self._wake.set()

    # the queues and the state, read from the store (in the refresher thread) ----------------
    def _refresh_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            if self._stopping.is_set():
                return
            self._wake.clear()
            time.sleep(0.02)  # one read for a burst of changes
            with self._lock:
                retrying = any(v["state"] == "retrying" for v in self._items.values())
                queues = self._dirty_queues or retrying
                self._dirty_queues = False
                dirty = [p for p in self.players if p.destination in self._dirty_states]
                self._dirty_states.clear()
            try:
                if queues:
                    self._publish_queues()
                for player in dirty:
                    self._publish_state(player)
            except Exception:  # the page misses one refresh; the next change sends it again
                log.debug("playground: refresh failed", exc_info=True)

    def _publish_queues(self) -> None:
        store = self.store.inner
        inbox, outbox = store.pending(INBOX), store.pending(OUTBOX)
        dead = store.dead_letters()
        with self._lock:
            rows = []
            for item in dead:
                view = self._items.get(item.id)
                rows.append(
                    {
                        "id": item.id,
                        "queue": item.queue,
                        "destination": item.destination,
                        "chat_key": item.chat_key,
                        "attempts": item.attempts,
                        "error": self.mask(item.last_error or ""),
                        "summary": view["summary"] if view else self._dead_summary(item),
                        "created_at": item.created_at,
                    }
                )
            active = [
                {k: v for k, v in view.items() if k != "calls"}
                for view in self._items.values()
                if view["state"] in ("waiting", "running", "sending", "retrying")
            ]
            self._queues = {
                "inbox_pending": inbox,
                "outbox_pending": outbox,
                "pending": active,
                "dead": rows,
                "now": time.time(),
            }
            self.hub.publish("queues", self._queues)

    def _dead_summary(self, item: QueueItem) -> str:
        player = self._by_destination.get(item.destination)
        if item.queue == OUTBOX and player is not None:
            return self.mask(player.summarize(item.payload))[:200]
        return "turn"

    def _publish_state(self, player: Player) -> None:
        store = self.store.inner
        chat = player.chat_id
        conversation = user = None
        if chat is not None:
            conversation = store.get_state(conversation_key(player.destination, chat))
        if player.visitor_id is not None:
            user = store.get_state(user_key(player.destination, player.visitor_id))
        try:
            record = player.channel_record()
        except Exception:
            record = None
        state = {
            "channel": player.destination,
            "chat": chat,
            "conversation": conversation,
            "user": user,
            "record": json.loads(self.mask(json.dumps(record, default=str))),
            "variables": player.variables,
        }
        with self._lock:
            self._states[player.destination] = state
            self.hub.publish("state", state)
