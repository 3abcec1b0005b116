"""Running ``async def`` handlers from the worker threads: one event loop per process.

Turns run on worker threads (one turn per chat at a time). An ``async def`` handler, error
handler or middleware runs on **one shared event loop**, in a daemon thread this module owns;
the worker thread that runs the turn waits for it. One loop (rather than one per worker thread)
means an async client made once at import (``AsyncOpenAI()``, ``httpx.AsyncClient()``) works
in every turn, and many turns can await a slow model at once without a thread each.

The turn's context variables (its reply batch and state) travel with it: a coroutine runs in a
copy of the calling thread's context, and sync parts called from a coroutine run on a
thread pool in a copy of the coroutine's context.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["check_callable", "is_async", "run_coroutine", "run_sync", "shutdown"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def is_async(fn: Callable[..., Any]) -> bool:
    """``True`` for an ``async def`` function (also through ``functools.partial`` or an object
    whose ``__call__`` is ``async def``)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance's async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def check_callable(fn: object, what: str) -> None:
    """Refuse, at registration, something the runtime cannot run as ``what``.

    Raises:
        TypeError: ``fn`` is not callable, is a coroutine object (a call instead of the
            function: ``handler()`` for ``handler``) or an async generator function.
    """
    if inspect.iscoroutine(fn) or inspect.isawaitable(fn):
        close = getattr(fn, "close", None)
        if callable(close):
            close()  # no "never awaited" warning on top of the error
        raise TypeError(
            f"{what} must be a function; got a coroutine object (pass the function itself, "
            f"not the result of calling it)"
        )
    if not callable(fn):
        raise TypeError(f"{what} must be callable; got {type(fn).__name__}")
    if inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{what} {getattr(fn, '__qualname__', fn)!r} is an async generator; return the "
            f"replies (or call turn.reply) from an async def function instead"
        )


def _ensure_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    loop = _loop
    if loop is not None and _thread is not None and _thread.is_alive():
        return loop
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="omnichannel-async", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread = loop, thread
        return loop


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=64, thread_name_prefix="omnichannel-sync"
            )
        return _executor


def run_coroutine(coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run ``coro`` on the shared loop in a copy of this thread's context; wait for its result.

    Called from a worker thread (never from the loop's own thread). Works under a running
    event loop of the caller's own (Jupyter) since the coroutine runs on another thread.
    """
    loop = _ensure_loop()
    if threading.current_thread() is _thread:
        raise RuntimeError("run_coroutine() called from the omnichannel event loop itself")
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    async def wrapper() -> T:
        return await coro

    def start() -> None:
        task = context.run(loop.create_task, wrapper())

        def finished(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                done.cancel()
            elif task.exception() is not None:
                done.set_exception(task.exception())
            else:
                done.set_result(task.result())

        task.add_done_callback(finished)

    loop.call_soon_threadsafe(start)
    return done.result()


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """From a coroutine on the shared loop: run the sync ``fn(*args)`` on a thread, in a copy of
    the current context, without blocking the loop."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await loop.run_in_executor(_pool(), call)


def shutdown() -> None:
    """Stop the shared loop and its thread pool (they start again on next use)."""
    global _loop, _thread, _executor
    with _lock:
        loop, thread, executor = _loop, _thread, _executor
        _loop = _thread = _executor = None
    if loop is not None and thread is not None and thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    if executor is not None:
        executor.shutdown(wait=False)


def _reset_after_fork() -> None:
    # the loop's thread does not survive fork(): a child makes its own on first use
    global _loop, _thread, _executor, _lock
    _loop = _thread = _executor = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
