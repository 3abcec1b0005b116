"""The one local HTTP server of the SDK: ``omnichannel serve``, the demo, the fake platforms of
:mod:`omnichannel.testing` and the tests all serve a handler through it.

An HTTP/1.1 server on one event loop (the standard library's ``asyncio``): the loop reads
and writes every connection and parses requests; handlers run in a bounded pool of threads
(they are synchronous and may block on the store). Compared with a thread per connection it
keeps the tail latency flat at hundreds of connections (requests wait in one FIFO queue instead
of contending for the GIL) and costs a few threads instead of one per client.

- keep-alive (idle connections closed after ``keep_alive`` seconds), pipelined requests answered
  in order, a deep listen backlog (bursts wait in the kernel's queue instead of being dropped);
- bodies by ``Content-Length`` or chunked; ``Expect: 100-continue`` honoured; a body over the
  handler's ``max_body`` gets 413 (or the handler's own answer) before it is read, and the
  connection is closed; a malformed request 400, an oversized head 431;
- ``GET /healthz`` answered on the loop; a ``Server`` header without versions; no access log
  (webhook paths carry secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate
from types import TracebackType
from typing import cast

from typing_extensions import Self

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Headers, Request, Response

__all__ = ["LocalServer"]

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024  # request line and headers
_PAUSE_ABOVE = 1 << 20  # buffered bytes of pipelined requests before reading pauses
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_HEALTHY = Response.json(200, {"status": "ok"})
_OWN_HEADERS = frozenset(("content-length", "connection", "server", "date"))  # the server's


class _Clock:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection(asyncio.Protocol):
    """One client connection: parse requests from the buffer, one at a time, in order."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a request is with the handler
        self.closing = False
        self.paused = False
        self.last_active = time.monotonic()
        # the request being read: (method, target, version, headers, keep-alive, remaining)
        self.head: tuple[str, str, str, dict[str, tuple[str, str]], bool] | None = None
        self.length = 0  # body bytes expected (Content-Length), or -1 for chunked
        self.chunks: list[bytes] = []
        self.chunked_size = 0
        self.continued = False

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buffer += data
        if self.busy:
            if len(self.buffer) > _PAUSE_ABOVE and not self.paused and self.transport:
                self.paused = True
                self.transport.pause_reading()
            return
        self._advance()

    # parsing ----------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Parse and dispatch what the buffer holds, until a request goes to the handler."""
        try:
            while not self.busy and not self.closing:
                if self.head is None:
                    if not self._read_head():
                        return
                    continue
                body = self._read_body()
                if body is None:
                    return
                self._dispatch(body)
        except _BadRequest as exc:
            self._fail(exc.status, str(exc))

    def _read_head(self) -> bool:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            while buffer[:2] == b"\r\n":  # stray line ends between requests (RFC 9112, 2.2)
                del buffer[:2]
            if len(buffer) > _MAX_HEAD:
                raise _BadRequest(431, "Request header fields too large.")
            return False
        if end > _MAX_HEAD:
            raise _BadRequest(431, "Request header fields too large.")
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        while lines and not lines[0]:
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "Bad request: malformed request line.")
        method, target, version = parts
        headers: dict[str, tuple[str, str]] = {}
        length: str | None = None
        chunked = False
        connection = ""
        expect = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "Bad request: malformed header line.")
            value = value.strip()
            lower = name.lower()
            headers[lower] = (name, value)  # a repeated header: the last one (as before)
            if lower == "content-length":
                if length is not None and length != value:
                    raise _BadRequest(400, "Bad request: conflicting Content-Length.")
                length = value
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "connection":
                connection = value.lower()
            elif lower == "expect":
                expect = value.lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        self.head = (method.upper(), target, version, headers, keep_alive)
        server = self.server
        limit = server.max_body
        if chunked:  # a chunked body has no length, whatever Content-Length says
            self.length = -1
            self.chunks, self.chunked_size = [], 0
        else:
            try:
                self.length = int(length) if length is not None else 0
            except ValueError:
                raise _BadRequest(400, "Bad request: Content-Length is not a number.") from None
            if self.length < 0:
                raise _BadRequest(400, "Bad request: Content-Length is negative.")
            if length is not None and not (length.isascii() and length.isdigit()):  # "+5", "1_0"
                raise _BadRequest(400, "Bad request: Content-Length is not a number.")
            if self.length > limit:
                self.head = None
                self._refuse(too_large(server.handler or server, limit))
                return True
        self.continued = False
        if expect == "100-continue" and version == "HTTP/1.1" and self.length != 0:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.continued = True
        return True

    def _read_body(self) -> bytes | None:
        if self.length >= 0:
            if len(self.buffer) < self.length:
                return None
            body = bytes(self.buffer[: self.length])
            del self.buffer[: self.length]
            return body
        return self._read_chunks()

    def _read_chunks(self) -> bytes | None:
        buffer = self.buffer
        limit = self.server.max_body
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 1024:
                    raise _BadRequest(400, "Bad request: malformed chunk size.")
                return None
            if self.length == -2:  # trailers, up to an empty line
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                if not line:
                    self.length = -1
                    return b"".join(self.chunks)
                continue
            digits = bytes(buffer[:end]).split(b";", 1)[0].strip()
            if not digits or digits.translate(None, b"0123456789abcdefABCDEF"):
                raise _BadRequest(400, "Bad request: malformed chunk size.")
            size = int(digits, 16)
            if size == 0:
                del buffer[: end + 2]
                self.length = -2
                continue
            if self.chunked_size + size > limit:
                self.head = None
                self._refuse(too_large(self.server.handler or self.server, limit))
                return None
            if len(buffer) < end + 2 + size + 2:
                return None
            start = end + 2
            self.chunks.append(bytes(buffer[start : start + size]))
            self.chunked_size += size
            del buffer[: start + size + 2]

    # answering --------------------------------------------------------------------------------
    def _dispatch(self, body: bytes) -> None:
        assert self.head is not None
        method, target, _version, headers, keep_alive = self.head
        self.head = None
        server = self.server
        if (
            server.healthz
            and method in ("GET", "HEAD")
            and target.split("?", 1)[0] == server.healthz
        ):
            self._respond(_HEALTHY, keep_alive, head_only=method == "HEAD")  # its body dropped
            return
        path, _, query = target.partition("?")
        if path.startswith(("http://", "https://")):  # absolute form (RFC 9112, 3.2.2)
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        request = Request(method, path, Headers.from_lowered(headers), body, query)
        server = self.server
        if server._shed is not None:
            # the handler's immediate answer (503 + Retry-After from an overloaded pipeline, or
            # when this request would wait too long for a thread), on the loop
            try:
                most = server.max_waiting
                busy = (most is not None and len(server._waiting) >= most) or server._congested()
                shed = server._shed(request, busy=busy)
            except Exception:
                log.exception("server: the handler's shed() raised")
                shed = None
            if shed is not None:
                self._respond(shed, keep_alive, head_only=method == "HEAD")
                return
        self.busy = True
        # when it was queued, and whether every thread was taken then (only such a wait is
        # congestion; a free thread that starts late is not)
        server._waiting.append((time.monotonic(), server._no_free_thread()))
        future = server._pool.submit(server._call, request)
        loop = server._loop
        assert loop is not None

        def answered(done: Future[Response]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                loop.call_soon_threadsafe(self._answered, done, keep_alive, method)

        future.add_done_callback(answered)

    def _answered(self, future: Future[Response], keep_alive: bool, method: str) -> None:
        self.busy = False
        self.last_active = time.monotonic()  # idle from the answer, however long it took
        if self.closing:
            return
        try:
            response = future.result()
        except BaseException:  # cancelled at shutdown
            response = Response.error(503, "Service unavailable: the server is stopping.")
            keep_alive = False
        self._respond(response, keep_alive, head_only=method == "HEAD")
        if self.paused and self.transport is not None and not self.closing:
            self.paused = False
            self.transport.resume_reading()
        if not self.closing and self.buffer:
            self._advance()

    def _refuse(self, response: Response) -> None:
        """Answer and close: the rest of the request is not read."""
        self._respond(response, keep_alive=False)

    def _fail(self, status: int, message: str) -> None:
        self.head = None
        self._respond(Response.error(status, message), keep_alive=False)

    def _respond(self, response: Response, keep_alive: bool, *, head_only: bool = False) -> None:
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("ascii"),
            b"Server: omnichannel\r\nDate: ",
            self.server._clock.date(),
            b"\r\n",
        ]
        for key, value in response.headers.pairs():
            if key.lower() not in _OWN_HEADERS:
                lines.append(f"{key}: {value}\r\n".encode("latin-1", "replace"))
        body = response.body
        lines.append(b"Content-Length: %d\r\n" % len(body))
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        if not head_only:
            lines.append(body)
        self._write(b"".join(lines))
        if not keep_alive and self.transport is not None:
            self.closing = True
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class LocalServer:
    """Serve ``handler`` (anything with ``handle(Request) -> Response``) over HTTP.

    Subclasses may override :meth:`handle` instead of passing a handler (the fake platforms do).
    Use as a context manager, call :meth:`start` / :meth:`stop` (a background thread), or
    :meth:`serve_forever` in the calling thread. The socket is bound when the server is made
    (:class:`OSError` then when the port is taken), so :attr:`port` is known at once.

    Args:
        handler: what answers requests; ``None`` for a subclass that overrides :meth:`handle`.
        host: the bind address (``127.0.0.1`` by default: reachable from this machine only).
        port: the port (``0``: one the OS picks; see :attr:`port`).
        healthz: a path answered ``200 {"status": "ok"}`` to GET (``None``: none).
        backlog: the listen queue length.
        threads: the most requests with the handler at once (the others wait their turn, in
            order of arrival).
        keep_alive: seconds an idle keep-alive connection is kept open.
        max_queue_delay: for a handler with ``shed(request, busy=...)`` (every channel and
            the ``serve`` router): while the oldest request waiting for a thread has waited
            longer than this (seconds), or a new request would wait longer than this (its
            place in the queue times the recent time per request, over the threads), new
            requests are offered to ``shed`` with ``busy=True``, which answers the channel's
            retryable refusal (503 + ``Retry-After``) at once instead of queueing them; a
            request that still waited longer than this when its thread takes it is offered to
            ``shed`` then. Load
            shedding, so that acknowledgements stay fast under a flood (``None``: requests
            queue however long; ``omnichannel serve`` uses 10 ms).
        max_waiting: with ``shed`` too: while this many requests already wait for a thread,
            new ones are offered to ``shed`` with ``busy=True`` (``None``: no such bound).
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        healthz: str | None = "/healthz",
        backlog: int = 2048,
        threads: int = 16,
        keep_alive: float = 75.0,
        max_queue_delay: float | None = None,
        max_waiting: int | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if max_waiting is not None and max_waiting < 1:
            raise ValueError("max_waiting must be at least 1")
        self.handler = handler
        self.healthz = healthz
        self.max_body = body_limit(handler if handler is not None else self)
        self.host = host
        self.keep_alive = keep_alive
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=backlog)
        self._socket.setblocking(False)
        self._port = int(self._socket.getsockname()[1])
        self._backlog = backlog
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"http:{self._port}")
        self._thread_count = threads
        self._service = 0.0  # seconds per request in a thread, a moving average
        self._served = 0
        self._running = 0  # requests in a thread now
        self._counting = threading.Lock()
        self._clock = _Clock()
        shed = getattr(handler, "shed", None)
        self._shed: Callable[..., Response | None] | None = shed if callable(shed) else None
        self.max_queue_delay = max_queue_delay
        self.max_waiting = max_waiting
        # when each request still waiting for a thread was queued (the pool takes them in order)
        self._waiting: deque[tuple[float, bool]] = deque()
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._serving = threading.Event()  # the loop is past create_server
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

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

    def _no_free_thread(self) -> bool:
        return len(self._waiting) + self._running >= self._thread_count

    def _congested(self) -> bool:
        """Whether a request queued now would wait for a thread longer than
        ``max_queue_delay``: every thread is taken, and the oldest waiting request has waited
        that long, or the requests ahead times the recent time per request, over the threads,
        make that long (Little's law)."""
        limit = self.max_queue_delay
        if limit is None or not self._no_free_thread():
            return False
        waiting = self._waiting
        if waiting and time.monotonic() - waiting[0][0] > limit:
            return True
        return (len(waiting) + 1) * self._service / self._thread_count > limit

    def _call(self, request: Request) -> Response:
        started = time.monotonic()
        try:  # this one's wait is over (the pool takes them in order)
            queued, congested = self._waiting.popleft()
        except IndexError:
            queued, congested = started, False
        limit, shed = self.max_queue_delay, self._shed
        if limit is not None and shed is not None and congested and started - queued > limit:
            # it waited too long for a thread: the refusal now beats a late answer
            try:
                refusal = shed(request, busy=True)
            except Exception:
                log.exception("server: the handler's shed() raised")
                refusal = None
            if refusal is not None:
                return refusal
        with self._counting:
            self._running += 1
        try:
            return self.handle(request)
        except Exception:
            log.exception("server: the handler raised")
            return Response.error(500, "Internal server error.")
        finally:  # the time per request: the mean of the first 10, then a moving average
            with self._counting:
                self._running -= 1
                self._served += 1
                took = time.monotonic() - started
                self._service += (took - self._service) / min(self._served, 10)

    # running ----------------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.2) -> None:
        """Serve in the calling thread until :meth:`shutdown` (``poll_interval`` is unused: the
        loop wakes on events)."""
        if self._closed:
            raise RuntimeError("this server was stopped")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stopped.clear()
        try:
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _Connection(self), sock=self._socket, backlog=self._backlog
                )
            )
            sweep = loop.call_later(1.0, self._sweep)
            self._serving.set()
            loop.run_forever()
            sweep.cancel()
            server.close()
            for connection in list(self._connections):
                if connection.transport is not None:
                    connection.transport.abort()
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            self._serving.clear()
            self._loop = None
            loop.close()
            self._stopped.set()

    def _sweep(self) -> None:
        """Close the keep-alive connections idle for longer than :attr:`keep_alive`."""
        loop = self._loop
        if loop is None:
            return
        idle_since = time.monotonic() - self.keep_alive
        for connection in list(self._connections):
            if not connection.busy and connection.last_active < idle_since:
                connection.closing = True
                if connection.transport is not None:
                    connection.transport.close()
        loop.call_later(1.0, self._sweep)

    def shutdown(self) -> None:
        """Make :meth:`serve_forever` return (from another thread, or a signal handler)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.stop)

    def start(self) -> Self:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, name=f"{type(self).__name__}:{self.port}", daemon=True
            )
            self._thread.start()
            # until serving: a stop() before would end run_until_complete(create_server)
            _wait(lambda: self._serving.is_set() or self._stopped.is_set())
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.001)
