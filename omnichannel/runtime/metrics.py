"""What the pipeline did, as numbers: counters and histograms kept in memory by the runtime, and
gauges read from the store when asked, rendered in the Prometheus text format (version 0.0.4).

Every :class:`~omnichannel.Runtime` has one :class:`Metrics` (``runtime.metrics``)::

    runtime.metrics.snapshot()    # a dict, for code and tests
    runtime.metrics.render()      # the exposition text
    metrics_response(connector)   # a Response for GET /metrics (any framework, the local server)

Counting costs the hot path an integer increment (counters: no lock, a race between threads
can only lose a count) or one short lock (histograms and the running-turns gauge, one lock
each). The store is read only at scrape time, at most once per ``store_interval`` seconds
(dead letters at most once per ``dead_letters_interval``), and scraping never raises: when the
store does not answer, ``omnichannel_store_up`` is 0 and the store gauges are left out with a
comment saying why.

The numbers are per process: with several processes (gunicorn workers, ``omnichannel worker``
processes) scrape each one; Prometheus sums them with ``sum by (channel)``.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.stores.base import INBOX, OUTBOX, Store

__all__ = [
    "CONTENT_TYPE",
    "DELIVERY_BUCKETS",
    "HANDLER_BUCKETS",
    "ChannelMetrics",
    "Histogram",
    "Metrics",
    "MetricsEndpoint",
    "find_metrics",
    "metrics_response",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the Prometheus text exposition format."""

HANDLER_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
"""Upper bounds (seconds) of ``omnichannel_handler_seconds`` (LLM agents take seconds)."""

DELIVERY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of ``omnichannel_delivery_seconds``."""


class Histogram:
    """Observations counted in buckets (cumulated when rendered), with their sum.

    ``counts[i]`` counts values ``<= bounds[i]`` and above the bound before it; the last slot
    counts values above every bound (``+Inf``).
    """

    __slots__ = ("_lock", "bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds if not math.isinf(b)))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one value (seconds)."""
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.sum += value

    def read(self) -> tuple[list[int], float]:
        """The cumulative bucket counts (the last is ``+Inf``, the count) and the sum."""
        with self._lock:
            counts, total = list(self.counts), self.sum
        running = 0
        for i, count in enumerate(counts):
            running += count
            counts[i] = running
        return counts, total

    @property
    def count(self) -> int:
        """How many values were observed."""
        with self._lock:
            return sum(self.counts)


class ChannelMetrics:
    """The numbers of one channel (one ``destination``); the runtime increments them.

    Attributes:
        accepted: deliveries stored as new turns.
        duplicate: deliveries whose dedupe key was already seen (acknowledged, not stored).
        refused: deliveries answered with the channel's retryable status (503 + Retry-After)
            because the inbox was over ``max_pending`` or the store failed.
        lost: deliveries acknowledged without being stored (the store failed and the channel
            has no retryable answer, e.g. Webex).
        webhook_errors: requests answered 500 (an unexpected error while accepting them).
        completed: turns whose run was committed with its replies.
        failed: runs of a turn that raised (each attempt; the last one of a dead turn too).
        dead: turns dead-lettered after ``max_turn_attempts``.
        running: turns being processed now (a gauge).
        delivered: outbox items the far side accepted.
        delivery_failed: delivery attempts that failed (retried or dead-lettered).
        delivery_dead: outbox items dead-lettered.
        handler: seconds each run of a turn's handler took (failed runs included).
        delivery: seconds each delivery attempt took (failed attempts included).
    """

    __slots__ = (
        "_running_lock",
        "accepted",
        "completed",
        "dead",
        "delivered",
        "delivery",
        "delivery_dead",
        "delivery_failed",
        "destination",
        "duplicate",
        "failed",
        "handler",
        "lost",
        "refused",
        "running",
        "webhook_errors",
    )

    def __init__(
        self,
        destination: str,
        handler_buckets: Sequence[float] = HANDLER_BUCKETS,
        delivery_buckets: Sequence[float] = DELIVERY_BUCKETS,
    ) -> None:
        self.destination = destination
        self.accepted = 0
        self.duplicate = 0
        self.refused = 0
        self.lost = 0
        self.webhook_errors = 0
        self.completed = 0
        self.failed = 0
        self.dead = 0
        self.running = 0
        self.delivered = 0
        self.delivery_failed = 0
        self.delivery_dead = 0
        self.handler = Histogram(handler_buckets)
        self.delivery = Histogram(delivery_buckets)
        self._running_lock = threading.Lock()

    def turn_started(self) -> None:
        """A turn started running (the gauge is exact: a lost update would never heal)."""
        with self._running_lock:
            self.running += 1

    def turn_ended(self) -> None:
        """A turn stopped running."""
        with self._running_lock:
            self.running -= 1


# the per-channel counters, in rendering order: (name, help, attribute of ChannelMetrics)
_CHANNEL_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("omnichannel_turns_accepted_total", "Deliveries stored as new turns.", "accepted"),
    (
        "omnichannel_turns_duplicate_total",
        "Deliveries acknowledged as repeats of a stored one (same dedupe key).",
        "duplicate",
    ),
    (
        "omnichannel_turns_refused_total",
        "Deliveries answered with the retryable status (503 + Retry-After): inbox over "
        "max_pending or store unavailable.",
        "refused",
    ),
    (
        "omnichannel_turns_lost_total",
        "Deliveries acknowledged without being stored (store unavailable, channel without a "
        "retryable answer).",
        "lost",
    ),
    (
        "omnichannel_webhook_errors_total",
        "Webhook requests answered 500 (unexpected error while accepting them).",
        "webhook_errors",
    ),
    (
        "omnichannel_turns_completed_total",
        "Turns run and committed with their replies.",
        "completed",
    ),
    (
        "omnichannel_turns_failed_total",
        "Runs of a turn whose handler raised (each attempt).",
        "failed",
    ),
    (
        "omnichannel_turns_dead_total",
        "Turns dead-lettered after max_turn_attempts failed runs.",
        "dead",
    ),
    (
        "omnichannel_replies_delivered_total",
        "Outbox items the channel accepted.",
        "delivered",
    ),
    (
        "omnichannel_replies_failed_total",
        "Delivery attempts that failed (then retried or dead-lettered).",
        "delivery_failed",
    ),
    (
        "omnichannel_replies_dead_total",
        "Outbox items dead-lettered (past the deadline or refused for good).",
        "delivery_dead",
    ),
)

_STORE_GAUGES: tuple[tuple[str, str], ...] = (
    ("omnichannel_inbox_pending", "Turns waiting in the inbox (every channel of the store)."),
    ("omnichannel_outbox_pending", "Replies waiting in the outbox (every channel of the store)."),
    ("omnichannel_inbox_dead_letters", "Turns in the dead letters (every channel of the store)."),
    (
        "omnichannel_outbox_dead_letters",
        "Replies in the dead letters (every channel of the store).",
    ),
)


def escape_label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote, newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers as such, ``NaN``, ``+Inf``, ``-Inf``, else Python's repr."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _StoreSample:
    """The store's gauges as last read (``None``: not read, or the store did not answer)."""

    __slots__ = ("dead_at", "dead_error", "dead_letters", "error", "pending", "pending_at")

    def __init__(self) -> None:
        self.pending: tuple[int, int] | None = None
        self.pending_at = -math.inf
        self.error: str | None = None
        self.dead_letters: tuple[int, int] | None = None
        self.dead_at = -math.inf
        self.dead_error: str | None = None


class Metrics:
    """The runtime's counters and histograms per channel, and the store's gauges.

    Args:
        store: the store whose queues the gauges describe (``None``: no store gauges).
        store_interval: the pending counts are read from the store at most this often (s).
        dead_letters_interval: the dead letters are counted at most this often (s; listing
            them costs more than a count).
        handler_buckets, delivery_buckets: histogram bucket bounds (seconds).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        store_interval: float = 1.0,
        dead_letters_interval: float = 10.0,
        handler_buckets: Sequence[float] = HANDLER_BUCKETS,
        delivery_buckets: Sequence[float] = DELIVERY_BUCKETS,
    ) -> None:
        self.store = store
        self.store_interval = max(1.0, store_interval)
        self.dead_letters_interval = max(self.store_interval, dead_letters_interval)
        self.handler_buckets = tuple(handler_buckets)
        self.delivery_buckets = tuple(delivery_buckets)
        self._reset()

    def _reset(self) -> None:
        self._channels: dict[str, ChannelMetrics] = {}
        self._lock = threading.Lock()  # creating a channel's entry
        self._store_lock = threading.Lock()  # one scrape reads the store at a time
        self._sample = _StoreSample()

    def reset_after_fork(self) -> None:
        """Start from zero in a forked child (its numbers are its own; locks are new)."""
        destinations = list(self._channels)  # no lock: the parent may have held it at fork
        self._reset()
        for destination in destinations:
            self.channel(destination)

    # counting -------------------------------------------------------------------------------
    def channel(self, destination: str) -> ChannelMetrics:
        """The numbers of ``destination`` (created, at zero, on first use)."""
        stats = self._channels.get(destination)
        if stats is None:
            with self._lock:
                stats = self._channels.get(destination)
                if stats is None:
                    stats = ChannelMetrics(destination, self.handler_buckets, self.delivery_buckets)
                    self._channels[destination] = stats
        return stats

    @property
    def channels(self) -> dict[str, ChannelMetrics]:
        """The channels counted so far, by destination."""
        return dict(self._items())

    def _items(self) -> list[tuple[str, ChannelMetrics]]:
        with self._lock:  # not while a channel is being added
            return sorted(self._channels.items())

    # the store's gauges ---------------------------------------------------------------------
    def _read_store(self) -> _StoreSample:
        store = self.store
        sample = self._sample
        if store is None:
            return sample
        with self._store_lock:  # concurrent scrapes wait for one read and share it
            now = time.monotonic()
            if now - sample.pending_at >= self.store_interval:
                sample.pending_at = now
                try:
                    sample.pending = (store.pending(INBOX), store.pending(OUTBOX))
                    sample.error = None
                except Exception as exc:
                    sample.pending, sample.error = None, _describe(exc)
            if sample.error is not None:
                sample.dead_letters, sample.dead_at = None, -math.inf
            elif now - sample.dead_at >= self.dead_letters_interval:
                sample.dead_at = now
                try:
                    inbox_dead = outbox_dead = 0
                    for item in store.dead_letters():
                        if item.queue == INBOX:
                            inbox_dead += 1
                        else:
                            outbox_dead += 1
                    sample.dead_letters = (inbox_dead, outbox_dead)
                    sample.dead_error = None
                except Exception as exc:
                    sample.dead_letters, sample.dead_error = None, _describe(exc)
            return sample

    # reading --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every number as plain data.

        ``{"channels": {destination: {"turns_accepted": 3, …, "handler_seconds": {"count",
        "sum", "buckets": {le: cumulative count, …, inf: count}}, …}}, "store_up": True,
        "inbox_pending": 0, "outbox_pending": 0, "inbox_dead_letters": 0,
        "outbox_dead_letters": 0}`` (a store gauge is ``None`` when the store did not answer;
        ``store_up`` is ``None`` without a store).
        """
        channels: dict[str, Any] = {}
        for destination, stats in self._items():
            numbers: dict[str, Any] = {
                name.removeprefix("omnichannel_").removesuffix("_total"): getattr(stats, attr)
                for name, _, attr in _CHANNEL_COUNTERS
            }
            numbers["turns_running"] = stats.running
            numbers["handler_seconds"] = _histogram_dict(stats.handler)
            numbers["delivery_seconds"] = _histogram_dict(stats.delivery)
            channels[destination] = numbers
        result: dict[str, Any] = {"channels": channels}
        if self.store is None:
            result["store_up"] = None
            return result
        try:
            sample = self._read_store()
        except Exception as exc:  # pragma: no cover - _read_store catches the store's errors
            log.warning("metrics: reading the store failed: %s", _describe(exc))
            sample = _StoreSample()
            sample.error = _describe(exc)
        result["store_up"] = sample.error is None
        pending = sample.pending or (None, None)
        dead = sample.dead_letters or (None, None)
        result["inbox_pending"], result["outbox_pending"] = pending
        result["inbox_dead_letters"], result["outbox_dead_letters"] = dead
        return result

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4) of every number."""
        lines: list[str] = []
        channels = self._items()
        labels = {d: f'{{channel="{escape_label_value(d)}"}}' for d, _ in channels}
        for name, help_text, attr in _CHANNEL_COUNTERS:
            _header(lines, name, "counter", help_text)
            for destination, stats in channels:
                lines.append(f"{name}{labels[destination]} {getattr(stats, attr)}")
        _header(lines, "omnichannel_turns_running", "gauge", "Turns being processed now.")
        for destination, stats in channels:
            lines.append(f"omnichannel_turns_running{labels[destination]} {stats.running}")
        for name, help_text, attr in (
            ("omnichannel_handler_seconds", "Seconds each run of a turn handler took.", "handler"),
            ("omnichannel_delivery_seconds", "Seconds each delivery attempt took.", "delivery"),
        ):
            _header(lines, name, "histogram", help_text)
            for destination, stats in channels:
                histogram: Histogram = getattr(stats, attr)
                counts, total = histogram.read()
                channel_label = f'channel="{escape_label_value(destination)}"'
                for bound, count in zip((*histogram.bounds, math.inf), counts, strict=True):
                    le = format_value(bound)
                    lines.append(f'{name}_bucket{{{channel_label},le="{le}"}} {count}')
                lines.append(f"{name}_sum{labels[destination]} {format_value(total)}")
                lines.append(f"{name}_count{labels[destination]} {counts[-1]}")
        if self.store is not None:
            self._render_store(lines)
        lines.append("")
        return "\n".join(lines)

    def _render_store(self, lines: list[str]) -> None:
        try:
            sample = self._read_store()
        except Exception as exc:  # pragma: no cover - _read_store catches the store's errors
            sample = _StoreSample()
            sample.error = _describe(exc)
        _header(lines, "omnichannel_store_up", "gauge", "1 when the store answered the scrape.")
        lines.append(f"omnichannel_store_up {0 if sample.error is not None else 1}")
        values = (
            *(sample.pending or (None, None)),
            *(sample.dead_letters or (None, None)),
        )
        for (name, help_text), value in zip(_STORE_GAUGES, values, strict=True):
            _header(lines, name, "gauge", help_text)
            if value is not None:
                lines.append(f"{name} {value}")
            else:
                why = sample.error or sample.dead_error or "not read"
                lines.append(f"# {name} omitted: the store did not answer ({why})")


def _header(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {_escape_help(help_text)}")
    lines.append(f"# TYPE {name} {kind}")


def _histogram_dict(histogram: Histogram) -> dict[str, Any]:
    counts, total = histogram.read()
    return {
        "count": counts[-1],
        "sum": total,
        "buckets": dict(zip((*histogram.bounds, math.inf), counts, strict=True)),
    }


def _describe(exc: BaseException) -> str:
    # the type only: a store's message may carry its URL (with a password)
    return type(exc).__name__


# serving ----------------------------------------------------------------------------------------
def find_metrics(source: object) -> Metrics | None:
    """The :class:`Metrics` of ``source``: a ``Metrics``, a ``Runtime`` or anything with a
    ``metrics`` or ``runtime`` attribute (a channel, a connector); ``None`` when it has none."""
    for _ in range(3):
        if isinstance(source, Metrics):
            return source
        metrics = getattr(source, "metrics", None)
        if isinstance(metrics, Metrics):
            return metrics
        source = getattr(source, "runtime", None)
        if source is None:
            return None
    return None


def metrics_response(source: object) -> Response:
    """``GET /metrics``: the exposition of ``source``'s metrics (see :func:`find_metrics`).

    Never raises: 404 when ``source`` has no metrics, 500 (with a comment) if rendering
    failed unexpectedly.
    """
    try:
        metrics = find_metrics(source)
        if metrics is None:
            return Response.error(404, "Not found.")
        return Response(200, metrics.render(), {"Content-Type": CONTENT_TYPE})
    except Exception as exc:
        log.warning("metrics: rendering failed: %s", _describe(exc), exc_info=exc)
        return Response(
            500, f"# metrics unavailable: {_describe(exc)}\n", {"Content-Type": CONTENT_TYPE}
        )


class MetricsEndpoint:
    """A handler answering ``GET``/``HEAD`` ``path`` with the metrics of ``source`` (404 for any
    other request): serve it alone on a port, e.g. for an ``omnichannel worker`` process::

        LocalServer(MetricsEndpoint(runtime), host="0.0.0.0", port=9464).start()
    """

    def __init__(self, source: object, path: str = "/metrics") -> None:
        self.source = source
        self.path = path

    def handle(self, request: Request) -> Response:
        """The metrics, or 404 / 405."""
        if request.path != self.path:
            return Response.error(404, "Not found.")
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"", {"Allow": "GET, HEAD"})
        return metrics_response(self.source)
