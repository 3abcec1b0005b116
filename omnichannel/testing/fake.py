"""The base of the fake platforms: a local server that records the calls it accepts, fails on
demand and lets a test wait for what it expects. On every fake::

    fake.fail_next(2, status=503, retry_after=0.1)  # the next two requests fail
    fake.always(400)  # every request fails, until fake.always(None)
    fake.wait_for(3)  # three calls recorded (returns them)
    fake.wait_for(lambda: fake.texts("c-1") == ["hi"])  # or until the predicate holds
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from omnichannel.runtime.http import Response
from omnichannel.testing.server import LocalServer

__all__ = ["FakePlatform"]

CallT = TypeVar("CallT")


class FakePlatform(LocalServer, Generic[CallT]):
    """A fake platform on 127.0.0.1: a subclass implements :meth:`handle`, which records accepted
    calls with :meth:`record` and, once it has checked what the real platform checks first (path,
    credentials, the body's shape), answers :meth:`scripted_failure` when there is one. A subclass
    changing other state a :meth:`wait_for` predicate may read does it under ``self._cond`` (a
    re-entrant condition) and calls ``self._cond.notify_all()``.

    Attributes:
        calls: the accepted calls (each fake has its own call type), in order.
        refused: ``(status, note)`` of each request refused (by a scripted failure, or the fake).
        on_call: called with each recorded call, in the thread that recorded it.
    """

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self._cond = threading.Condition()
        self.calls: list[CallT] = []
        self.refused: list[tuple[int, Any]] = []
        self.on_call: Callable[[CallT], None] | None = None
        self._scripted: deque[Callable[[], Response]] = deque()
        self._always: int | None = None

    def record(self, call: CallT) -> CallT:
        """Append ``call`` to :attr:`calls`, wake the waiters, call :attr:`on_call`."""
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()
        if self.on_call is not None:
            self.on_call(call)
        return call

    # scripted failures ----------------------------------------------------------------------
    def fail_next(
        self, count: int, status: int = 503, *, retry_after: float | None = None, body: Any = None
    ) -> None:
        """Answer the next ``count`` requests with ``status``, ``body`` (JSON, or as is when bytes
        or str; the fake's :meth:`error_body` by default) and ``Retry-After`` when given."""
        self._script(count, lambda: self._failure(status, retry_after, body))

    def always(self, status: int | None) -> None:
        """Answer every request with ``status`` (``None``: back to normal); :meth:`fail_next`'s
        queue waits meanwhile."""
        with self._cond:
            self._always = status

    def scripted_failure(self, note: Any = None) -> Response | None:
        """The scripted answer to this request (consumed; noted in :attr:`refused` with
        ``note``), or ``None``: answer normally."""
        with self._cond:
            if self._always is not None:
                response = self._failure(self._always)
            elif self._scripted:
                response = self._scripted.popleft()()
            else:
                return None
        return self.refuse(response.status, note, response)

    def refuse(self, status: int, note: Any, response: Response | None = None) -> Response:
        """Note a refused request in :attr:`refused`; return ``response`` (by default
        ``{"error": note}`` with ``status``)."""
        with self._cond:
            self.refused.append((status, note))
            self._cond.notify_all()
        return response if response is not None else Response.error(status, str(note))

    def error_body(self, status: int) -> Any:
        """The body of a scripted failure given none (a fake overrides it with its platform's)."""
        return {"error": f"told to answer {status}"}

    def _failure(self, status: int, retry_after: float | None = None, body: Any = None) -> Response:
        body = self.error_body(status) if body is None else body
        if isinstance(body, (bytes, str)):
            response = Response(status, body, {"Content-Type": "text/plain; charset=utf-8"})
        else:
            response = Response.json(status, body)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def _script(self, count: int, answer: Callable[[], Response]) -> None:
        with self._cond:
            self._scripted.extend([answer] * count)

    # waiting --------------------------------------------------------------------------------
    def wait_for(
        self, until: int | Callable[[], object], timeout: float = 10.0, *, what: str = ""
    ) -> list[CallT]:
        """Wait until ``until`` calls are recorded or, given a predicate, until it returns
        something truthy (checked at each change); return the calls recorded so far.

        Raises:
            TimeoutError: not within ``timeout`` seconds (``what`` names what was awaited).
        """
        if callable(until):
            predicate, name = until, getattr(until, "__name__", "")
            what = what or (name if name.isidentifier() else "the condition")
        else:
            predicate, what = (lambda: len(self.calls) >= until), what or f"{until} calls"
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(
                    f"{type(self).__name__}: still waiting for {what} after {timeout:g}s "
                    f"({len(self.calls)} calls recorded)"
                )
            return list(self.calls)
