"""ASGI shim: serve any handler from uvicorn, hypercorn or an ASGI framework (Starlette, FastAPI).

The core is synchronous (``requests``): each request runs in a worker thread so the event loop
never blocks.

The handler's lifecycle follows the application's lifespan: ``start()`` on startup (resuming
what an earlier run left), on shutdown ``close()`` (running turns finish and due replies go out;
with a memory store, which does not survive a restart, queued turns are drained first).

- ``asgi_app(handler)`` served as the application (``uvicorn module:app``) handles the
  ``lifespan`` scope itself.
- Mounted in another application (``app.mount("/bot", asgi_app(handler))``) it receives no
  lifespan: Starlette and FastAPI run only the outer application's. Give the outer application
  :func:`omnichannel_lifespan` (``FastAPI(lifespan=omnichannel_lifespan(handler))``), or enter it
  from your own lifespan (``async with omnichannel_lifespan(handler):``). A mounted app whose
  handler no lifespan started logs a warning on its first request.
- FastAPI: ``app.include_router(fastapi_router(handler))`` (:mod:`omnichannel.integrations.
  fastapi`) brings the route and the lifespan in one line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

__all__ = ["ASGIApp", "Lifespan", "asgi_app", "omnichannel_lifespan"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_CLOSE_TIMEOUT = 30.0


# lifecycle ----------------------------------------------------------------------------------
def _start(handler: object) -> None:
    start = getattr(handler, "start", None)
    if callable(start):
        start()


def _loses_queued_turns(handler: object) -> bool:
    """``True`` when the handler's store does not survive a restart (memory)."""
    from omnichannel.runtime.stores import MemoryStore

    runtime = getattr(handler, "runtime", None)
    return isinstance(getattr(runtime, "store", None), MemoryStore)


def _stop(handler: object, timeout: float, drain: bool | None) -> bool:
    """Drain (when asked, or by default when the store is memory), then close; ``True`` when
    nothing was left behind."""
    end = time.monotonic() + timeout
    ok = True
    if drain is None:
        drain = _loses_queued_turns(handler)
    if _REGISTRY.stopped(getattr(handler, "runtime", None)):
        drain = False  # another handler of the same runtime stopped it (a bridge, a channel)
    drainer = getattr(handler, "drain", None)
    if drain and callable(drainer):
        try:
            ok = bool(drainer(timeout))
        except Exception:
            log.exception("asgi: draining %r failed", handler)
            ok = False
    close = getattr(handler, "close", None)
    if callable(close):
        ok = bool(close(max(0.5, end - time.monotonic()))) and ok
    _REGISTRY.stop(getattr(handler, "runtime", None))
    return ok


class _Registry:
    """The handlers a lifespan started (weakly: a handler may be collected)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._managed: weakref.WeakSet[Any] = weakref.WeakSet()
        self._warned: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stopped: weakref.WeakSet[Any] = weakref.WeakSet()

    def stop(self, runtime: object) -> None:
        if runtime is not None:
            with self._lock:
                self._stopped.add(runtime)

    def stopped(self, runtime: object) -> bool:
        if runtime is None:
            return False
        with self._lock:
            return runtime in self._stopped

    def manage(self, handler: object) -> None:
        try:
            with self._lock:
                self._managed.add(handler)
        except TypeError:  # not weak-referenceable: nothing to track
            pass

    def first_unmanaged(self, handler: object) -> bool:
        """``True`` once per handler that no lifespan started."""
        try:
            with self._lock:
                if handler in self._managed or handler in self._warned:
                    return False
                self._warned.add(handler)
                return True
        except TypeError:
            return False


_REGISTRY = _Registry()


class Lifespan:
    """Starts handlers when an ASGI application starts and closes them when it stops.

    Use it as the application's lifespan (``FastAPI(lifespan=omnichannel_lifespan(h))``,
    ``Starlette(lifespan=…)``: called with the app it returns itself), or enter it from your
    own lifespan (``async with omnichannel_lifespan(h):``). It yields no state.

    On startup each handler's ``start()`` runs (in a thread: it touches the store). On shutdown,
    within ``close_timeout`` seconds in all: ``drain()`` when ``drain`` is true (``None``: only
    for a handler whose store is memory, where queued turns would be lost), then ``close()``:
    running turns finish, due replies are delivered, and with a durable store turns not yet
    started wait in the inbox for the next start.
    """

    def __init__(
        self,
        *handlers: Handler,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        drain: bool | None = None,
    ) -> None:
        if not handlers:
            raise TypeError("omnichannel_lifespan() needs at least one handler")
        self.handlers = handlers
        self.close_timeout = close_timeout
        self.drain = drain

    def __call__(self, app: object = None) -> Lifespan:
        """The lifespan context for ``app`` (itself)."""
        return self

    async def startup(self) -> None:
        """Start every handler."""
        loop = asyncio.get_running_loop()
        for handler in self.handlers:
            _REGISTRY.manage(handler)
            await loop.run_in_executor(None, _start, handler)

    async def shutdown(self) -> bool:
        """Drain (see the class) and close every handler; ``True`` when nothing was left."""
        loop = asyncio.get_running_loop()
        end = time.monotonic() + self.close_timeout
        ok = True
        for handler in self.handlers:
            left = max(0.5, end - time.monotonic())
            try:
                done = await loop.run_in_executor(None, _stop, handler, left, self.drain)
            except Exception:
                log.exception("asgi: closing %r failed", handler)
                done = False
            ok = done and ok
        return ok

    async def __aenter__(self) -> None:
        await self.startup()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


def omnichannel_lifespan(
    *handlers: Handler, close_timeout: float = DEFAULT_CLOSE_TIMEOUT, drain: bool | None = None
) -> Lifespan:
    """The lifespan that starts and closes ``handlers`` (see :class:`Lifespan`), e.g.
    ``FastAPI(lifespan=omnichannel_lifespan(connector))`` with
    ``app.mount("/bot", asgi_app(connector))``."""
    return Lifespan(*handlers, close_timeout=close_timeout, drain=drain)


# the application ----------------------------------------------------------------------------
class ASGIApp:
    """An ASGI 3 application around a handler, with ``GET /healthz``.

    Paths are relative to where it is mounted (``root_path`` is taken off ``path``), so
    ``app.mount("/bot", asgi_app(h))`` serves ``/bot/healthz`` and the webhook under ``/bot``.
    Served as the application, it runs the handler's lifespan itself (see the module).

    Args:
        handler: what answers requests.
        healthz: a path answered ``200 {"status": "ok"}`` to GET (``None``: none).
        close_timeout: seconds the shutdown may take (running turns, due replies).
        routed: the requests were chosen by a framework's URL rule (``fastapi_router``), so the
            handler reads only the segments it owns (a token, a secret).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        healthz: str | None = "/healthz",
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        routed: bool = False,
    ) -> None:
        self.handler = handler
        self.healthz = healthz
        self.max_body = body_limit(handler)
        self.close_timeout = close_timeout
        self.routed = routed
        self._lifespan = Lifespan(handler, close_timeout=close_timeout)
        self._checked = False

    def lifespan(self, app: object = None) -> Lifespan:
        """The handler's lifespan, for the application this one is mounted in
        (``FastAPI(lifespan=bot.lifespan)``; see :class:`Lifespan`)."""
        return self._lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self._checked:
            self._check_managed()
        try:
            response = await self.respond(scope, receive)
        except Exception:
            log.exception("asgi: unexpected error")
            response = Response.error(500, "Internal server error.")
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
        ]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _check_managed(self) -> None:
        self._checked = True
        if _REGISTRY.first_unmanaged(self.handler):
            log.warning(
                "asgi: %r serves requests but no lifespan started it, so nothing will close it "
                "at shutdown (running turns are cut short; with a memory store, queued turns "
                "are lost). app.mount() runs no lifespan of the mounted app: pass "
                "lifespan=omnichannel_lifespan(handler) to the outer app, or include "
                "fastapi_router(handler) instead",
                self.handler,
            )

    async def respond(self, scope: Scope, receive: Receive) -> Response:
        """The handler's answer to one ``http`` scope (its body read from ``receive``)."""
        # relative to the mount: servers and Starlette >= 0.33 put root_path inside path too
        path, root = scope["path"], scope.get("root_path", "")
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :] or "/"
        method = scope["method"]
        if self.healthz and path == self.healthz and method in ("GET", "HEAD"):
            return Response.json(200, {"status": "ok"})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Response.error(400, "Client disconnected.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return too_large(self.handler, self.max_body)
            chunks.append(chunk)
            more = message.get("more_body", False)
        request = Request(
            method,
            path,
            headers,
            b"".join(chunks),
            scope.get("query_string", b"").decode("latin-1"),
            routed=self.routed,
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.handler.handle, request)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._lifespan.startup()
                except Exception as exc:
                    log.exception("asgi: starting %r failed", self.handler)
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self._lifespan.shutdown()
                except Exception as exc:
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


def asgi_app(
    handler: Handler,
    *,
    healthz: str | None = "/healthz",
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
) -> ASGIApp:
    """The ASGI application serving ``handler`` (see :class:`ASGIApp`)."""
    return ASGIApp(handler, healthz=healthz, close_timeout=close_timeout)
