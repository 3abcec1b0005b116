"""ASGI shim: serve any handler from uvicorn, hypercorn or an ASGI framework's mount.

The core is synchronous (``requests``): each request runs in a worker thread so the event loop
never blocks. On lifespan shutdown the handler's queued work and replies are finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

__all__ = ["ASGIApp", "asgi_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ASGIApp:
    """An ASGI 3 application around a handler, with ``GET /healthz``."""

    def __init__(
        self, handler: Handler, *, healthz: str | None = "/healthz", close_timeout: float = 30.0
    ) -> None:
        self.handler = handler
        self.healthz = healthz
        self.max_body = body_limit(handler)
        self.close_timeout = close_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            response = await self._respond(scope, receive)
        except Exception:
            log.exception("asgi: unexpected error")
            response = Response.error(500, "Internal server error.")
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
        ]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        # relative to the mount: servers and Starlette >= 0.33 put root_path inside path too
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
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
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.handler.handle, request)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                start = getattr(self.handler, "start", None)
                if callable(start):
                    start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                close = getattr(self.handler, "close", None)
                if callable(close):
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, close, self.close_timeout)
                await send({"type": "lifespan.shutdown.complete"})
                return


def asgi_app(handler: Handler, *, healthz: str | None = "/healthz") -> ASGIApp:
    """The ASGI application serving ``handler`` (see :class:`ASGIApp`)."""
    return ASGIApp(handler, healthz=healthz)
