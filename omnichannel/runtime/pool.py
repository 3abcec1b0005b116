"""The SDK's default outbound transport: keep-alive HTTP/1.1 connections pooled per destination
host, on the standard library's sockets (TLS through ``ssl``).

It does per call only what a call needs: no proxy or ``.netrc`` lookup in the environment, no
hooks, no cookie jar, no redirects, and a request is one ``sendall`` of bytes built at once; the
answer is read with a small HTTP/1.1 reader (status line, headers, ``Content-Length``, chunked,
or up to the close) instead of ``http.client``'s ``email`` header parser, which costs more CPU
than everything else of a local call. Proxies, client certificates, custom auth: give the client a
``requests.Session`` instead (:func:`omnichannel.runtime.sending.new_session`).

A connection that sat idle may have been closed by the server meanwhile: it is checked before
it is reused (closed or unexpected bytes: a fresh one is opened), and when sending on a reused
connection still fails, the request goes once more on a fresh connection, because the server
cannot have processed a request it never fully received. A failure while waiting for the answer
is not retried here (the request may have been processed): it is the caller's to retry.
"""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
import logging
import os
import re
import select
import socket
import struct
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from omnichannel.runtime.http import Headers

if TYPE_CHECKING:
    import ssl

__all__ = ["PooledResponse", "PooledSession", "TransportError"]

log = logging.getLogger(__name__)

_USER_AGENT = "omnichannel-python"
_dumps = jsonlib.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class TransportError(OSError):
    """A request that got no HTTP answer: the connection failed, broke or timed out.

    ``kind`` names what happened (``ConnectTimeout``, ``ReadTimeout``, or the type of the
    underlying error, e.g. ``ConnectionRefusedError``); the message never holds the URL.
    """

    def __init__(self, kind: str, *, sent: bool) -> None:
        super().__init__(kind)
        self.kind = kind
        self.sent = sent  # the request may have reached the server


class PooledResponse:
    """A complete HTTP answer (the body is read before it is returned).

    Offers the part of ``requests.Response`` the SDK's clients use: ``status_code``,
    ``headers`` (case-insensitive), ``content``, ``text``, ``json()`` and ``ok``.
    """

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def ok(self) -> bool:
        """``True`` for a status below 400."""
        return self.status_code < 400

    @property
    def text(self) -> str:
        """The body decoded with the ``charset`` of ``Content-Type`` (UTF-8 by default)."""
        charset = "utf-8"
        for part in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip("\"' ")
        try:
            return self.content.decode(charset, "replace")
        except LookupError:
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return jsonlib.loads(self.content)

    def __repr__(self) -> str:
        return f"<PooledResponse [{self.status_code}]>"


def _timeouts(timeout: float | tuple[float, float] | None) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout


_Target = tuple[tuple[str, str, int], str]  # ((scheme, host, port), path?query)
_POOLS: weakref.WeakSet[PooledSession] = weakref.WeakSet()


def _forget_pools_after_fork() -> None:
    # a forked child must not write on its parent's connections: start with empty pools (the
    # parent keeps using its own)
    for pool in list(_POOLS):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


class PooledSession:
    """Keep-alive HTTP(S) connections, at most ``pool_size`` idle ones kept per host.

    Thread-safe: each request takes a connection of its own (an idle one, or a new one). The
    ``request`` / ``post`` methods take the arguments of ``requests.Session`` the SDK uses
    (``json``, ``data``, ``params``, ``headers``, ``auth`` as a ``(user, password)`` pair or an
    object with an ``authorization`` header value, ``timeout`` as seconds or ``(connect,
    read)``) and return a :class:`PooledResponse`; they raise :class:`TransportError` when no
    answer came.

    Args:
        pool_size: idle connections kept per destination host.
        ssl_context: for ``https://`` (default: certificates verified against ``certifi``'s
            bundle when it is installed, else the system's).
    """

    trust_env = False  # proxy variables of the environment are never read (as requests' flag)

    def __init__(self, *, pool_size: int = 16, ssl_context: ssl.SSLContext | None = None) -> None:
        self.pool_size = max(1, pool_size)
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._closed = False
        self.connections_made = 0
        self._heads: dict[tuple[Any, ...], bytes] = {}  # encoded request heads, by target
        _POOLS.add(self)

    # the API --------------------------------------------------------------------------------
    def post(self, url: str, **options: Any) -> PooledResponse:
        """``request("POST", url, **options)``."""
        return self.request("POST", url, **options)

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> PooledResponse:
        """Send one request and read its whole answer.

        Raises:
            TransportError: no answer (connection refused, reset, closed, timed out).
            ValueError: ``json`` is not JSON-serializable (or holds NaN).
        """
        key, path = self._target(url)
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        sent: dict[str, str] = {"User-Agent": _USER_AGENT, "Accept": "*/*"}
        body: bytes | None
        if json is not None:
            body = _dumps(json).encode()
            sent["Content-Type"] = "application/json"
        elif isinstance(data, Mapping):
            body = urlencode(data, doseq=True).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif isinstance(data, str):
            body = data.encode()
        else:
            body = data
        if headers:
            sent.update(headers)
        if auth is not None:
            sent["Authorization"] = _authorization(auth)
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        return self._send(method, key, path, body, sent, _timeouts(timeout))

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def idle_connections(self) -> int:
        """How many connections wait for reuse."""
        with self._lock:
            return sum(len(c) for c in self._idle.values())

    # machinery ------------------------------------------------------------------------------
    def _target(self, url: str) -> _Target:
        found = self._targets.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("only absolute http(s) URLs can be requested")
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found = ((scheme, parts.hostname, port), path)
        if len(self._targets) >= 256:  # URLs that vary per call (ids in the path)
            self._targets.clear()
        self._targets[url] = found
        return found

    def _send(
        self,
        method: str,
        key: tuple[str, str, int],
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        timeouts: tuple[float | None, float | None],
    ) -> PooledResponse:
        cache_key = (method, key, path, *headers.items())
        prefix = self._heads.get(cache_key)
        if prefix is None:
            prefix = _request_head(method, key, path, headers)
            if len(self._heads) >= 256:  # paths that vary per call (ids in the path)
                self._heads.clear()
            self._heads[cache_key] = prefix
        head = (
            prefix + b"Content-Length: %d\r\n\r\n" % len(body)
            if body is not None
            else prefix + b"\r\n"
        )
        message = head + body if body else head
        connection = self._take(key)
        reused = connection is not None
        if connection is None:
            connection = self._connect(key, timeouts)
        else:
            connection.set_timeout(timeouts[1])
        try:
            connection.sock.sendall(message)
        except OSError as exc:
            connection.close()
            if not reused:
                raise _failed(exc, sent=False) from None
            # an idle connection the server closed just now: it got nothing, send it again
            connection = self._connect(key, timeouts)
            try:
                connection.sock.sendall(message)
            except OSError as again:
                connection.close()
                raise _failed(again, sent=False) from None
        try:
            answer, keep = connection.read_response(method)
        except (OSError, _BadResponse) as exc:
            connection.close()
            raise _failed(exc, sent=True) from None
        if keep:
            self._give_back(key, connection)
        else:
            connection.close()
        return answer

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if not connection.dropped():
                return connection
            connection.close()  # closed by the server while idle (or it sent something)

    def _give_back(self, key: tuple[str, str, int], connection: _Connection) -> None:
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self.pool_size:
                    idle.append(connection)
                    return
        connection.close()

    def _connect(
        self, key: tuple[str, str, int], timeouts: tuple[float | None, float | None]
    ) -> _Connection:
        scheme, host, port = key
        try:
            sock = socket.create_connection((host, port), timeout=timeouts[0])
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":  # the handshake, under the connect timeout too
                    sock = self._context().wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise _failed(exc, sent=False, connecting=True) from None
        connection = _Connection(sock, kernel_timeouts=_KERNEL_TIMEOUTS and scheme == "http")
        connection.set_timeout(timeouts[1])
        with self._lock:
            self.connections_made += 1
        if log.isEnabledFor(logging.DEBUG):  # host and port only: a path may hold a secret
            log.debug("starting a new %s connection to %s:%d", scheme.upper(), host, port)
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            import ssl

            try:
                import certifi
            except ImportError:  # pragma: no cover - certifi comes with requests
                self._ssl = ssl.create_default_context()
            else:
                self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._idle = {}

    def __repr__(self) -> str:
        return f"PooledSession(pool_size={self.pool_size})"


class _BadResponse(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


_MAX_HEAD = 65536
_NO_BODY = frozenset({204, 304})
# plain TCP on Linux: the read/write timeout is the kernel's (SO_RCVTIMEO / SO_SNDTIMEO) on a
# blocking socket, so each send and receive is one system call (a socket with a Python timeout
# polls before each), and the idle check one non-blocking peek
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")


class _Connection:
    """One keep-alive socket and the bytes read from it beyond the last answer (none, unless
    the server sent more than it was asked for: then the connection is not reused)."""

    __slots__ = ("buffer", "kernel_timeouts", "sock", "timeout")

    def __init__(self, sock: socket.socket, *, kernel_timeouts: bool = False) -> None:
        self.sock = sock
        self.buffer = b""
        self.kernel_timeouts = kernel_timeouts
        self.timeout: float | None = -1.0  # none set yet
        if kernel_timeouts:
            sock.settimeout(None)  # blocking; the kernel times each call out

    def set_timeout(self, timeout: float | None) -> None:
        """Each later send and receive fails after ``timeout`` seconds (``None``: never)."""
        if timeout == self.timeout:
            return
        if self.kernel_timeouts:
            seconds = 0.0 if timeout is None else max(timeout, 1e-6)  # 0: no timeout
            whole = int(seconds)
            value = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        else:
            self.sock.settimeout(timeout)
        self.timeout = timeout

    def close(self) -> None:
        with contextlib.suppress(OSError):  # closing a broken socket
            self.sock.close()

    def dropped(self) -> bool:
        """Whether the idle socket was closed by the peer (or holds bytes nobody asked for)."""
        if self.buffer:
            return True
        if self.kernel_timeouts:
            try:  # anything to read (or the end)? one system call, never waiting
                self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False  # open and idle
            except OSError:
                return True
            return True
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                readable = bool(poller.poll(0))
            else:  # pragma: no cover - Windows
                readable = bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        if hasattr(self.sock, "pending"):  # TLS: a session ticket is readable, yet no data
            return _tls_dropped(self.sock)
        return True

    def _more(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out") from None
        if not data:
            raise _BadResponse("RemoteDisconnected")
        return data

    def read_response(self, method: str) -> tuple[PooledResponse, bool]:
        """Read one whole answer; return it and whether the connection can be reused."""
        while True:
            buffer = self.buffer
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise _BadResponse("HeadersTooLong")
                buffer += self._more()
                end = buffer.find(b"\r\n\r\n")
            head, buffer = buffer[:end].decode("latin-1"), buffer[end + 4 :]
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise _BadResponse("BadStatusLine")
            status = int(parts[1])
            items: dict[str, tuple[str, str]] = {}  # Headers' own layout: lower-case name first
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon:
                    raise _BadResponse("BadHeaderLine")
                value = value.strip()
                key = name.lower()
                known = items.get(key)
                if known is not None:  # a repeated header: its values joined, as requests does
                    value = f"{known[1]}, {value}"
                items[key] = (name, value)
            self.buffer = buffer
            if status >= 200 or status == 101:
                break  # (1xx interim answers, e.g. 100 Continue, are skipped)
        headers = Headers()
        headers._items = items
        connection = items.get("connection", ("", ""))[1].lower()
        keep = "close" not in connection and (parts[0] != "HTTP/1.0" or "keep-alive" in connection)
        if method == "HEAD" or status in _NO_BODY or status < 200:
            content = b""
        elif "chunked" in items.get("transfer-encoding", ("", ""))[1].lower():
            content = self._chunked()
        elif "content-length" in items:
            length = items["content-length"][1].split(",")[0].strip()
            if not length.isdigit():
                raise _BadResponse("BadContentLength")
            content = self._exactly(int(length))
        else:  # the body ends when the server closes the connection
            content = self._until_closed()
            keep = False
        if self.buffer:
            keep = False  # more than was asked for: never reuse
        return PooledResponse(status, headers, content), keep

    def _exactly(self, size: int) -> bytes:
        buffer = self.buffer
        while len(buffer) < size:
            buffer += self._more()
        self.buffer = buffer[size:]
        return buffer[:size]

    def _line(self) -> bytes:
        buffer = self.buffer
        end = buffer.find(b"\r\n")
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                raise _BadResponse("ChunkLineTooLong")
            buffer += self._more()
            end = buffer.find(b"\r\n")
        self.buffer = buffer[end + 2 :]
        return buffer[:end]

    def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadResponse("BadChunkSize") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            chunks.append(self._exactly(size))
            if self._line():
                raise _BadResponse("BadChunkEnd")

    def _until_closed(self) -> bytes:
        chunks = [self.buffer]
        self.buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                raise TimeoutError("timed out") from None
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def _tls_dropped(sock: Any) -> bool:
    # a TLS socket is readable after a session ticket too: read without blocking to tell
    import ssl

    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        sock.recv(1)  # data nobody asked for, or b"" (closed): not reusable either way
        return True
    except ssl.SSLWantReadError:
        return False  # only a TLS record that carried no data
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


def _request_head(
    method: str, key: tuple[str, str, int], path: str, headers: dict[str, str]
) -> bytes:
    """The request line and headers, each line ending in CRLF, without Content-Length and
    without the blank line that ends the head."""
    scheme, host, port = key
    if _UNSAFE.search(method) or _UNSAFE.search(path):
        raise ValueError("a control character or space in the method or path")
    lines = [f"{method} {path} HTTP/1.1"]
    given = {name.lower() for name in headers}
    if "host" not in given:
        name = f"[{host}]" if ":" in host else host
        default = 443 if scheme == "https" else 80
        lines.append(f"Host: {name}" if port == default else f"Host: {name}:{port}")
    for name, value in headers.items():
        if _UNSAFE_HEADER.search(name) or _UNSAFE_HEADER.search(value) or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon")
        if name.lower() not in ("content-length", "transfer-encoding"):
            lines.append(f"{name}: {value}")
    lines.append("")
    return "\r\n".join(lines).encode("latin-1")


def _failed(exc: BaseException, *, sent: bool, connecting: bool = False) -> TransportError:
    if isinstance(exc, _BadResponse):
        kind = str(exc)
    elif isinstance(exc, TimeoutError | BlockingIOError):  # BlockingIOError: SO_SNDTIMEO
        kind = "ConnectTimeout" if connecting else "ReadTimeout" if sent else "WriteTimeout"
    else:
        kind = type(exc).__name__
    return TransportError(kind, sent=sent)


def _authorization(auth: Any) -> str:
    if isinstance(auth, tuple) and len(auth) == 2:
        pair = f"{auth[0]}:{auth[1]}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    value = getattr(auth, "authorization", None)
    if isinstance(value, str):
        return value
    raise TypeError(
        "PooledSession takes auth as a (user, password) pair or an object with an "
        "'authorization' header value; give the client a requests.Session for other auth"
    )
