"""Group commit: the write operations of many threads in one transaction.

A thread with a write to make queues it and waits. The first waiting thread that finds no batch
running becomes the *leader*: it takes every operation queued so far, runs them in one
transaction (each in a savepoint of its own, so one that raises rolls back alone), commits once
and wakes the others. Threads that queued meanwhile form the next batch. Under load, one commit
(and one write lock of the database) serves many webhooks and workers instead of each queueing
for the lock in turn; alone, an operation runs at once in a transaction of its own, as before.

An operation's outcome is its caller's: its return value, or what it raised. When the commit
itself fails (a full disk), every operation of the batch gets that error and none is written.
"""

from __future__ import annotations

import copy
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["GroupCommit"]

MAX_BATCH = 256  # operations per transaction: bounds how long the write lock is held


class _Operation(Generic[T]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Run ``fn(conn)`` operations of many threads in shared write transactions.

    Args:
        connection: returns the connection, holding the store's connection lock.
        release: releases that lock.
    """

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection],
        release: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._release = release
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Operation[Any]] = []
        self._leading = False

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction (shared with other threads' operations) and
        return its result once committed; raise what it raised, or the commit's error."""
        if os.getpid() != self._pid:  # a forked child: the parent's waiters are not ours
            self._reset()
        cond = self._cond
        cond.acquire()
        if not self._leading and not self._queue:
            # nobody else is writing: run at once in a transaction of its own
            self._leading = True
            cond.release()
            try:
                return self._alone(fn)
            finally:
                with cond:
                    self._leading = False
                    if self._queue:  # writes that queued meanwhile: one of them leads next
                        cond.notify_all()
        operation: _Operation[T] = _Operation(fn)
        with _Held(cond):
            self._queue.append(operation)
            while not operation.done:
                if self._leading:
                    cond.wait()
                    continue
                self._leading = True
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                cond.release()
                try:
                    self._commit(batch)
                finally:
                    cond.acquire()
                    self._leading = False
                    cond.notify_all()
        if operation.error is not None:
            raise operation.error
        result: T = operation.result
        return result

    def _alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        try:
            self._begin(conn)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result
        finally:
            self._release()

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting for another process's write lock in steps of at most
        2 ms (SQLite's own busy handler sleeps 10, 20, then 100 ms at a time, which holds up
        every webhook of the batch), up to the connection's busy timeout."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
        timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
        deadline = time.monotonic() + timeout
        pause = 0.0002
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                time.sleep(pause)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _locked(exc) or time.monotonic() >= deadline:
                        raise
                pause = min(pause * 2, 0.002)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")

    def _commit(self, batch: list[_Operation[Any]]) -> None:
        try:
            conn = self._connection()
        except BaseException as exc:
            _fail(batch, exc)
            return
        try:
            try:
                self._begin(conn)
            except BaseException as exc:
                _fail(batch, exc)
                return
            single = len(batch) == 1
            for operation in batch:
                if single:
                    try:
                        operation.result = operation.fn(conn)
                    except BaseException as exc:
                        operation.error = exc
                        _rollback(conn)
                        operation.done = True
                        return
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    operation.result = operation.fn(conn)
                except BaseException as exc:
                    operation.error = exc
                    conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            try:
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                _fail(batch, exc)
                return
            for operation in batch:
                operation.done = True
        except BaseException as exc:  # the connection itself failed mid-batch
            _rollback(conn)
            _fail(batch, exc)
        finally:
            self._release()


class _Held:
    """``with _Held(cond)``: a condition already acquired, released on exit."""

    __slots__ = ("_cond",)

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._cond.release()


def _fail(batch: list[_Operation[Any]], error: BaseException) -> None:
    for operation in batch:
        operation.result = None
        # each caller raises its own copy (a traceback is per raise)
        operation.error = copy.copy(error) if len(batch) > 1 else error
        operation.done = True


def _locked(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
