"""The one local HTTP server of the SDK: ``omnichannel serve``, the demo, the fake platforms of
:mod:`omnichannel.testing` and the tests all serve a handler through it.

A threaded HTTP/1.1 server from the standard library: keep-alive connections (a platform that
posts many webhooks reuses one), a deep listen backlog (bursts wait in the kernel's queue
instead of being dropped), request bodies by ``Content-Length`` or chunked, ``GET /healthz``,
and 413 for a body over the handler's ``max_body`` before it is read. For production behind a
load balancer, a WSGI/ASGI server (gunicorn, uvicorn) through the shims is just as good.
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from typing_extensions import Self

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

__all__ = ["LocalServer"]

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is routine; anything else is logged once, without a dump
        to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("server: client %s went away: %s", client_address[0], error)
            return
        log.error("server: error while serving a request", exc_info=error)


class _BadRequest(Exception):
    pass


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # the Server header names no versions (BaseHTTPRequestHandler's adds "Python/3.x")
    server_version = "omnichannel"
    sys_version = ""
    timeout = 75  # seconds an idle keep-alive connection is kept
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK hold every keep-alive response back ~40 ms
    disable_nagle_algorithm = True

    def _read_body(self, limit: int) -> bytes | None:
        """The body, or ``None`` when it is over ``limit`` (the connection is then closed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    raise _BadRequest("malformed chunk size") from None
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > limit:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(8)  # the CRLF after the chunk
        raw = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequest("Content-Length is not a number") from None
        if length < 0:
            raise _BadRequest("Content-Length is negative")
        if length > limit:
            return None
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        if owner.healthz and parts.path == owner.healthz and self.command in ("GET", "HEAD"):
            self._send(Response.json(200, {"status": "ok"}))
            return
        limit = owner.max_body
        try:
            body = self._read_body(limit)
        except _BadRequest as exc:
            self.close_connection = True
            self._send(Response.error(400, f"Bad request: {exc}."))
            return
        if body is None:
            self.close_connection = True  # the rest of the body is not read
            self._send(too_large(owner.handler or owner, limit))
            return
        request = Request(self.command, parts.path, list(self.headers.items()), body, parts.query)
        try:
            response = owner.handle(request)
        except Exception:
            log.exception("server: the handler raised")
            response = Response.error(500, "Internal server error.")
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def version_string(self) -> str:
        """The ``Server`` header: ``omnichannel``, without the Python version."""
        return self.server_version

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def __getattr__(self, name: str) -> Any:
        # any other method (TRACE, CONNECT, FOO) goes to the handler too, which answers its
        # documented 405 with Allow (the standard library would answer 501 with an HTML page)
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: webhook paths carry secrets; the handler logs what matters."""


class LocalServer:
    """Serve ``handler`` (anything with ``handle(Request) -> Response``) over HTTP.

    Subclasses may override :meth:`handle` instead of passing a handler (the fake platforms do).
    Use as a context manager, call :meth:`start` / :meth:`stop` (a background thread), or
    :meth:`serve_forever` in the calling thread.

    Args:
        handler: what answers requests; ``None`` for a subclass that overrides :meth:`handle`.
        host: the bind address (``127.0.0.1`` by default: reachable from this machine only).
        port: the port (``0``: one the OS picks; see :attr:`port`).
        healthz: a path answered ``200 {"status": "ok"}`` to GET (``None``: none).
        backlog: the listen queue length.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        healthz: str | None = "/healthz",
        backlog: int = 1024,
    ) -> None:
        self.handler = handler
        self.healthz = healthz
        self.max_body = body_limit(handler if handler is not None else self)
        server_class: Any = type("_BoundServer", (_Server,), {"request_queue_size": backlog})
        self._server: _Server = server_class((host, port), _RequestHandler)
        self._server.owner = self
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    def handle(self, request: Request) -> Response:
        """Answer one request (the handler's answer; 404 without one)."""
        if self.handler is not None:
            return self.handler.handle(request)
        return Response.error(404, "Not found.")

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        """Serve in the calling thread until :meth:`shutdown`."""
        self._server.serve_forever(poll_interval=poll_interval)

    def shutdown(self) -> None:
        """Make :meth:`serve_forever` return (from another thread)."""
        self._server.shutdown()

    def start(self) -> Self:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
