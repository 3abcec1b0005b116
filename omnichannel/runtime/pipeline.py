"""The machinery every channel shares: dedupe of deliveries, the runner, the outbox, the store.

A channel verifies and parses a request itself, then asks its :class:`Runtime` whether the
delivery is new (:meth:`Runtime.accept`), acknowledges, and lets the runtime run the bot.
Several channels may share one runtime (one store, one outbox, one thread pool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from omnichannel.runtime.outbox import Outbox
from omnichannel.runtime.runners import BackgroundRunner, InlineRunner, Runner
from omnichannel.runtime.stores import MemoryStore, Store, open_store

__all__ = ["Runtime", "RuntimeLifecycle"]

log = logging.getLogger(__name__)


class Runtime:
    """Store, outbox and runner of one or more channels.

    Args:
        store: a :class:`~omnichannel.runtime.stores.Store` or a store URL
            (``memory://``, ``sqlite:///path.db``, ``redis://host:6379/0``); memory by default.
        inline: run the bot and deliver replies before ``handle`` returns (tests, notebooks,
            serverless); otherwise a background runner and outbox thread do it.
        runner: a custom runner (overrides ``inline`` for the bot's work).
        workers: bot threads of the background runner.
        dedupe_ttl: seconds a delivery id is remembered (platforms retry within an hour).
        outbox_deadline: seconds a failing reply keeps being retried before it is dead-lettered.
    """

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        inline: bool = False,
        runner: Runner | None = None,
        workers: int = 8,
        dedupe_ttl: float = 24 * 3600,
        outbox_deadline: float = 3600.0,
        outbox_workers: int = 4,
        outbox_backoff: float = 1.0,
        outbox_cap: float = 60.0,
    ) -> None:
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = open_store(store)
        self.store: Store = store
        self.inline = inline
        self.runner: Runner = runner or (InlineRunner() if inline else BackgroundRunner(workers))
        self.dedupe_ttl = dedupe_ttl
        self.outbox = Outbox(
            store,
            inline=inline,
            deadline=outbox_deadline,
            workers=outbox_workers,
            backoff=outbox_backoff,
            cap=outbox_cap,
        )
        self._started = False

    def start(self) -> None:
        """Start background delivery (idempotent; called by the first ``handle``)."""
        if not self._started:
            self._started = True
            self.outbox.start()

    def accept(self, delivery_key: str | None) -> bool:
        """``True`` when the delivery is new (and now recorded), ``False`` for a repeat."""
        if delivery_key is None:
            return True
        return self.store.mark_seen(delivery_key, self.dedupe_ttl)

    def run(self, key: str, job: Callable[[], None], delivery_key: str | None = None) -> None:
        """Run ``job`` on the runner, after earlier jobs of ``key``.

        If the runner refuses (full, shutting down), the delivery key is forgotten so the
        platform's retry is processed, and the error propagates (the webhook answers 500).
        """
        self.start()
        try:
            self.runner.submit(key, job)
        except Exception:
            if delivery_key is not None:
                self.store.forget(delivery_key)
            raise

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait for the bot's queued work and then the outbox; ``True`` when both are idle."""
        return self.runner.drain(timeout) and self.outbox.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish queued work and replies (up to ``timeout`` each), then release everything."""
        drained = self.runner.shutdown(timeout)
        drained = self.outbox.stop(timeout) and drained
        self.store.close()
        return drained


class RuntimeLifecycle:
    """``start`` / ``drain`` / ``close`` of a channel that owns (or shares) a :class:`Runtime`."""

    runtime: Runtime

    def start(self) -> None:
        """Start background delivery (resuming replies stored by an earlier run)."""
        self.runtime.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until the bot's work and the replies are done."""
        return self.runtime.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish queued work and replies, then stop."""
        return self.runtime.close(timeout)
