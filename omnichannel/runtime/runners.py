"""Runners decide where the bot runs after a delivery is acknowledged.

:class:`BackgroundRunner` (the default for servers) runs jobs on a bounded thread pool, one job
at a time per key (a chat), so a chat's messages are handled in order while chats run in
parallel. :class:`InlineRunner` runs the job before ``handle`` returns (tests, notebooks,
serverless functions that are frozen once they answer).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

__all__ = ["BackgroundRunner", "InlineRunner", "Runner"]

log = logging.getLogger(__name__)

Job = Callable[[], None]


class Runner(Protocol):
    """Where the bot's work runs."""

    def submit(self, key: str, job: Job) -> None:
        """Run ``job``; jobs with the same ``key`` run one at a time, in submission order."""
        ...

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job finished; ``True`` when none is left."""
        ...

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting jobs and finish the queued ones (up to ``timeout``)."""
        ...


class InlineRunner:
    """Runs each job at once, in the caller's thread."""

    def submit(self, key: str, job: Job) -> None:
        """Run ``job`` now; its exceptions are logged, never raised."""
        try:
            job()
        except Exception:
            log.exception("job for %s raised", key)

    def drain(self, timeout: float | None = None) -> bool:
        """Nothing is ever queued."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Nothing to stop."""
        return True


class BackgroundRunner:
    """A bounded thread pool with per-key ordering.

    Args:
        max_workers: threads running jobs at once (different keys).
        max_pending: jobs accepted but not started before :meth:`submit` raises
            :class:`RuntimeError` (the webhook then answers 500 and the platform retries,
            instead of this process growing without bound).
    """

    def __init__(self, max_workers: int = 8, max_pending: int = 10_000) -> None:
        self.max_workers = max_workers
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="omnichannel-bot")
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._queues: dict[str, deque[Job]] = {}
        self._pending = 0
        self._closed = False

    def submit(self, key: str, job: Job) -> None:
        """Queue ``job`` behind earlier jobs of ``key``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("runner is shut down")
            if self._pending >= self.max_pending:
                raise RuntimeError("runner queue is full")
            self._pending += 1
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque([job])
        self._pool.submit(self._drain_key, key)

    def _drain_key(self, key: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[key]
                job = queue[0]
            try:
                job()
            except Exception:
                log.exception("bot job raised")
            with self._lock:
                queue.popleft()
                self._pending -= 1
                if not queue:
                    del self._queues[key]
                    self._done.notify_all()
                    return

    @property
    def pending(self) -> int:
        """Jobs accepted and not finished."""
        with self._lock:
            return self._pending

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every accepted job has finished."""
        with self._lock:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, finish queued ones (up to ``timeout``), stop the threads."""
        with self._lock:
            self._closed = True
        drained = self.drain(timeout)
        self._pool.shutdown(wait=drained, cancel_futures=not drained)
        return drained
