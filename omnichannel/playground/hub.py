"""Server-sent events: every change of the playground's model goes to each open page at once."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

__all__ = ["Hub"]


class Hub:
    """Fan-out of events to subscribers (one queue per open ``/events`` stream).

    Each event is encoded once, in the text/event-stream format (``event:`` and ``data:``
    lines, an ``id:``), and put on every subscriber's queue; a stream writes what its queue
    holds as soon as it arrives. ``None`` on a queue ends the stream.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[queue.Queue[bytes | None]] = set()
        self._seq = 0
        self.closed = False

    def subscribe(self) -> queue.Queue[bytes | None]:
        """A new stream's queue (call :meth:`unsubscribe` when the stream ends)."""
        subscriber: queue.Queue[bytes | None] = queue.Queue()
        with self._lock:
            if self.closed:
                subscriber.put(None)
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: queue.Queue[bytes | None]) -> None:
        """Stop sending to ``subscriber``."""
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def subscribers(self) -> int:
        """Streams open now."""
        with self._lock:
            return len(self._subscribers)

    def encode(self, kind: str, data: Any) -> bytes:
        """One event in the text/event-stream format."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        return f"id: {seq}\nevent: {kind}\ndata: {text}\n\n".encode()

    def publish(self, kind: str, data: Any) -> None:
        """Send an event to every stream."""
        event = self.encode(kind, data)
        with self._lock:
            for subscriber in self._subscribers:
                subscriber.put(event)

    def close(self) -> None:
        """End every stream (and any opened later)."""
        with self._lock:
            self.closed = True
            for subscriber in self._subscribers:
                subscriber.put(None)
