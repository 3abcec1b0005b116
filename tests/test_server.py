"""LocalServer over real sockets on 127.0.0.1: HTTP/1.1 framing, keep-alive, pipelining,
refusals (400, 413, 431), shutdown, load shedding and a burst of concurrent clients.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import pytest
import requests

import omnichannel.integrations.server as server_module
from omnichannel.integrations.server import LocalServer
from omnichannel.runtime.http import Request, Response

TIMEOUT = 5.0  # the longest any single socket read may block


# fixtures and helpers ---------------------------------------------------------------------------
def set_loop_factory(monkeypatch: pytest.MonkeyPatch, factory: Callable[[], Any]) -> None:
    """Make the server's next loops with ``factory`` (it calls ``asyncio.new_event_loop()``)."""
    monkeypatch.setattr(asyncio, "new_event_loop", factory)


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


class Echo:
    """Answers every request with what it received, as JSON; records each call."""

    def __init__(self, max_body: int | None = None) -> None:
        if max_body is not None:
            self.max_body = max_body
        self.lock = threading.Lock()
        self.requests: list[Request] = []

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
        return Response.json(
            200,
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode("latin-1"),
                "headers": {key.lower(): value for key, value in request.headers.items()},
            },
        )

    @property
    def calls(self) -> int:
        with self.lock:
            return len(self.requests)


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A raw HTTP/1.1 client on one socket: send bytes, read responses one at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; unread: {self.buffer!r}")
        self.buffer += data

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        data, _, self.buffer = self.buffer.partition(marker)
        return data + marker

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_response(self, *, head: bool = False) -> Reply:
        lines = self.read_until(b"\r\n\r\n")[:-4].decode("latin-1").split("\r\n")
        version, status, _reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        length = 0 if head or int(status) in (100, 204, 304) else int(headers["content-length"])
        return Reply(int(status), headers, self.read_exactly(length))

    def request(self, method: str, target: str, body: bytes = b"", **headers: str) -> Reply:
        self.send(http_request(method, target, body, **headers))
        return self.read_response(head=method == "HEAD")

    def at_eof(self) -> bool:
        """Whether the server closed the connection (blocks up to TIMEOUT; extra data fails)."""
        try:
            data = self.buffer or self.sock.recv(65536)
        except ConnectionResetError:
            return True
        assert not data, f"unexpected data: {data!r}"
        return True


def http_request(method: str, target: str, body: bytes = b"", **headers: str) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: test"]
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    head += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
def echo() -> Echo:
    return Echo(max_body=1000)


@pytest.fixture
def server(echo: Echo) -> Iterator[LocalServer]:
    with LocalServer(echo) as running:
        yield running


# keep-alive and pipelining ----------------------------------------------------------------------
def test_keep_alive_reuses_one_connection(
    echo: Echo, monkeypatch: pytest.MonkeyPatch, server: LocalServer
) -> None:
    # the handler sees no peer address, so count the distinct client ports the server accepts
    lock = threading.Lock()
    peers: set[int] = set()
    made = server_module._Connection.connection_made

    def counting(self: Any, transport: Any) -> None:
        with lock:
            peers.add(transport.get_extra_info("peername")[1])
        made(self, transport)

    monkeypatch.setattr(server_module._Connection, "connection_made", counting)
    with requests.Session() as session:
        first = session.post(server.url + "/one", data=b"1")
        second = session.post(server.url + "/two", data=b"22")
    assert [first.json()["path"], second.json()["path"]] == ["/one", "/two"]
    assert [first.json()["body"], second.json()["body"]] == ["1", "22"]
    assert "close" not in first.headers.get("Connection", "")
    with lock:
        assert len(peers) == 1
    requests.get(server.url + "/three", timeout=TIMEOUT)  # a new session: a new connection
    with lock:
        assert len(peers) == 2
    assert echo.calls == 3


def test_pipelined_requests_are_answered_in_order(server: LocalServer, echo: Echo) -> None:
    with Client(server.port) as client:
        client.send(
            http_request("POST", "/a", b"first")
            + http_request("PUT", "/b?x=1", b"second body")
            + http_request("POST", "/c", b"3")
        )
        replies = [client.read_response() for _ in range(3)]
        assert [reply.status for reply in replies] == [200, 200, 200]
        got = [(r.json()["method"], r.json()["path"], r.json()["body"]) for r in replies]
        assert got == [("POST", "/a", "first"), ("PUT", "/b", "second body"), ("POST", "/c", "3")]
        assert replies[1].json()["query"] == "x=1"
        assert client.request("GET", "/d").json()["path"] == "/d"  # the connection is still open
    assert echo.calls == 4


def test_pipelined_healthz_keeps_its_place(server: LocalServer) -> None:
    with Client(server.port) as client:
        client.send(
            http_request("POST", "/a", b"x")
            + http_request("GET", "/healthz")
            + http_request("POST", "/c", b"y")
        )
        replies = [client.read_response() for _ in range(3)]
    assert replies[0].json()["path"] == "/a"
    assert replies[1].json() == {"status": "ok"}
    assert replies[2].json()["path"] == "/c"


def test_connection_close_and_http_1_0_close_after_the_answer(server: LocalServer) -> None:
    with Client(server.port) as client:
        reply = client.request("GET", "/x", Connection="close")
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        assert client.at_eof()
    with Client(server.port) as client:
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        assert client.read_response().json()["path"] == "/old"
        assert client.at_eof()


# bodies -----------------------------------------------------------------------------------------
def test_chunked_body_with_extensions_and_trailers(server: LocalServer) -> None:
    with Client(server.port) as client:
        client.send(
            b"POST /chunked HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n"
            b"1\r\n \r\n"
            b"A ; ext\r\n0123456789\r\n"
            b"0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n"
        )
        reply = client.read_response()
        assert reply.status == 200
        assert reply.json()["body"] == "hello 0123456789"
        # the trailers were consumed: the next request on the connection parses
        assert client.request("POST", "/next", b"ok").json()["body"] == "ok"


def test_chunked_body_arriving_byte_by_byte(server: LocalServer) -> None:
    message = (
        b"POST /slow HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    with Client(server.port) as client:
        for byte in message:
            client.send(bytes([byte]))
        assert client.read_response().json()["body"] == "abcde"


@pytest.mark.parametrize(
    "size_line", [b"zz", b"", b"-5", b"+3", b"0x3", b"0_3", b"3 3", b"1" * 2000]
)
def test_malformed_chunk_size_is_400_and_closes(
    server: LocalServer, echo: Echo, size_line: bytes
) -> None:
    with Client(server.port) as client:
        client.send(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size_line
            + (b"\r\nabc\r\n0\r\n\r\n" if len(size_line) < 1000 else b"")
        )
        reply = client.read_response()
        assert reply.status == 400
        assert "chunk" in reply.json()["error"]
        assert reply.headers["connection"] == "close"
        assert client.at_eof()
    assert echo.calls == 0


@pytest.mark.parametrize(
    "lengths",
    [["abc"], ["-1"], ["5", "6"], ["1.5"], [""], ["+5"], ["1_0"], ["0x5"]],
    ids=["nan", "negative", "conflicting", "decimal", "empty", "plus", "underscore", "hex"],
)
def test_bad_content_length_is_400_and_closes(
    server: LocalServer, echo: Echo, lengths: list[str]
) -> None:
    head = "POST /x HTTP/1.1\r\nHost: test\r\n"
    head += "".join(f"Content-Length: {length}\r\n" for length in lengths)
    with Client(server.port) as client:
        client.send(head.encode() + b"\r\nhello")
        reply = client.read_response()
        assert reply.status == 400
        assert "Content-Length" in reply.json()["error"]
        assert reply.headers["connection"] == "close"
        assert client.at_eof()
    assert echo.calls == 0


def test_repeated_equal_content_length_is_accepted(server: LocalServer) -> None:
    with Client(server.port) as client:
        client.send(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
        assert client.read_response().json()["body"] == "hello"


def test_body_over_max_body_is_413_unread(server: LocalServer, echo: Echo) -> None:
    with Client(server.port) as client:
        client.send(b"POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 1001\r\n\r\n")
        reply = client.read_response()
        assert reply.status == 413
        assert "1000" in reply.json()["error"]
        assert reply.headers["connection"] == "close"
        assert client.at_eof()
    with Client(server.port) as client:  # exactly the limit is fine
        assert client.request("POST", "/limit", b"x" * 1000).status == 200
    assert [request.path for request in echo.requests] == ["/limit"]


def test_chunked_body_over_max_body_is_413(server: LocalServer, echo: Echo) -> None:
    with Client(server.port) as client:
        client.send(
            b"POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"200\r\n" + b"x" * 512 + b"\r\n"
            b"200\r\n"  # 1024 bytes in all: over 1000
        )
        assert client.read_response().status == 413
        assert client.at_eof()
    assert echo.calls == 0


def test_handler_too_large_answer_is_used() -> None:
    class Picky(Echo):
        max_body = 10

        def too_large(self) -> Response:
            return Response.json(400, {"code": "payload_too_big"})

    handler = Picky()
    with LocalServer(handler) as running, Client(running.port) as client:
        client.send(b"POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        reply = client.read_response()
        assert (reply.status, reply.json()) == (400, {"code": "payload_too_big"})
        assert client.at_eof()
    assert handler.calls == 0


def test_expect_100_continue(server: LocalServer, echo: Echo) -> None:
    with Client(server.port) as client:
        client.send(
            b"POST /e HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert echo.calls == 0
        client.send(b"body")
        reply = client.read_response()
        assert (reply.status, reply.json()["body"]) == (200, "body")
    with Client(server.port) as client:  # too large: the final answer at once, no 100
        client.send(b"POST /e HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        assert client.read_until(b"\r\n").startswith(b"HTTP/1.1 413 ")


def test_expect_100_continue_through_http_client(server: LocalServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request("PUT", "/put", body=b"payload", headers={"Expect": "100-continue"})
        response = connection.getresponse()
        # http.client skips the interim 100 and returns the final answer
        assert response.status == 200
        assert json.loads(response.read())["body"] == "payload"
    finally:
        connection.close()


# malformed requests -----------------------------------------------------------------------------
def test_head_over_64_kib_is_431(server: LocalServer, echo: Echo) -> None:
    with Client(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n")
        reply = client.read_response()
        assert reply.status == 431
        assert client.at_eof()
    with Client(server.port) as client:  # an unterminated head over the limit is refused too
        client.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (65 * 1024))
        assert client.read_response().status == 431
        assert client.at_eof()
    assert echo.calls == 0


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
        b"GET /\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nName : space before the colon\r\n\r\n",
        b"GET / HTTP/1.1\r\n: no name\r\n\r\n",
    ],
)
def test_malformed_head_is_400_and_closes(server: LocalServer, echo: Echo, head: bytes) -> None:
    with Client(server.port) as client:
        client.send(head)
        reply = client.read_response()
        assert reply.status == 400
        assert reply.headers["connection"] == "close"
        assert client.at_eof()
    assert echo.calls == 0


# answers ----------------------------------------------------------------------------------------
def test_head_has_content_length_but_no_body(server: LocalServer, echo: Echo) -> None:
    with Client(server.port) as client:
        client.send(http_request("HEAD", "/h") + http_request("GET", "/g"))
        head = client.read_response(head=True)
        assert head.status == 200
        assert int(head.headers["content-length"]) > 0
        assert head.body == b""
        get = client.read_response()  # parses only if the HEAD answer carried no body
        assert get.json()["path"] == "/g"
        assert int(get.headers["content-length"]) == len(get.body)
    assert [request.method for request in echo.requests] == ["HEAD", "GET"]


def test_healthz_is_answered_without_the_handler(server: LocalServer, echo: Echo) -> None:
    response = requests.get(server.url + "/healthz?probe=1", timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    head = requests.head(server.url + "/healthz", timeout=TIMEOUT)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(response.content)
    assert head.content == b""
    assert echo.calls == 0
    assert requests.post(server.url + "/healthz", timeout=TIMEOUT).json()["path"] == "/healthz"
    assert echo.calls == 1


def test_healthz_with_a_body_reads_the_body(server: LocalServer, echo: Echo) -> None:
    # the body of a health check is read and dropped, never parsed as a request of its own
    smuggled = http_request("GET", "/smuggled")
    with Client(server.port) as client:
        client.send(
            http_request("GET", "/healthz", smuggled)
            + http_request("GET", "/x", Connection="close")
        )
        assert client.read_response().json() == {"status": "ok"}
        assert client.read_response().json()["path"] == "/x"
        assert client.at_eof()
    assert [request.path for request in echo.requests] == ["/x"]


def test_healthz_can_be_turned_off(echo: Echo) -> None:
    with LocalServer(echo, healthz=None) as running:
        assert requests.get(running.url + "/healthz", timeout=TIMEOUT).json()["path"] == "/healthz"
    assert echo.calls == 1


def test_absolute_form_target_routes_to_the_path(server: LocalServer) -> None:
    with Client(server.port) as client:
        reply = client.request("POST", "http://example.com:8080/hook/x?token=t", b"b")
        assert (reply.json()["path"], reply.json()["query"]) == ("/hook/x", "token=t")
        assert client.request("GET", "http://example.com").json()["path"] == "/"
        assert client.request("GET", "https://example.com/s").json()["path"] == "/s"


def test_query_string_is_passed_as_request_query(server: LocalServer, echo: Echo) -> None:
    response = requests.get(server.url + "/q", params={"a": "1", "b": "x y"}, timeout=TIMEOUT)
    assert response.json()["path"] == "/q"
    assert response.json()["query"] == "a=1&b=x+y"
    assert echo.requests[0].query_params == {"a": "1", "b": "x y"}
    assert requests.get(server.url + "/q", timeout=TIMEOUT).json()["query"] == ""


def test_request_headers_reach_the_handler(server: LocalServer) -> None:
    with Client(server.port) as client:
        reply = client.request("POST", "/h", b"{}", Content_Type="application/json", X_Token="s3")
    assert reply.json()["headers"]["x-token"] == "s3"
    assert reply.json()["headers"]["content-type"] == "application/json"


def test_server_and_date_headers() -> None:
    class Branded:
        def handle(self, request: Request) -> Response:
            # the server writes these itself: the handler's own are dropped, not duplicated
            return Response(
                201, b"ok", {"Server": "other", "Content-Length": "99", "X-Custom": "kept"}
            )

    with LocalServer(Branded()) as running, Client(running.port) as client:
        reply = client.request("GET", "/")
    assert (reply.status, reply.body) == (201, b"ok")
    assert reply.headers["server"] == "omnichannel"
    assert "python" not in reply.headers["server"].lower()
    assert reply.headers["content-length"] == "2"
    assert reply.headers["x-custom"] == "kept"
    date = parsedate_to_datetime(reply.headers["date"])
    assert abs(date.timestamp() - time.time()) < 5
    assert reply.headers["date"].endswith(" GMT")


def test_default_handle_without_handler_is_404() -> None:
    with LocalServer() as running:
        assert requests.get(running.url + "/x", timeout=TIMEOUT).status_code == 404


def test_subclass_overriding_handle() -> None:
    class Fake(LocalServer):
        max_body = 8

        def handle(self, request: Request) -> Response:
            return Response(200, f"fake {request.method} {request.path} {request.body!r}")

    with Fake(threads=2) as running:
        assert running.url == f"http://127.0.0.1:{running.port}"
        response = requests.post(running.url + "/api/send", data=b"hi", timeout=TIMEOUT)
        assert response.text == "fake POST /api/send b'hi'"
        too_big = requests.post(running.url + "/api/send", data=b"123456789", timeout=TIMEOUT)
        assert too_big.status_code == 413


# errors -----------------------------------------------------------------------------------------
def test_handler_exception_is_500_logged_once(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    class Flaky:
        def handle(self, request: Request) -> Response:
            if request.path == "/boom":
                raise RuntimeError("kaboom")
            return Response(200, "fine")

    caplog.set_level(logging.DEBUG)
    with LocalServer(Flaky()) as running, Client(running.port) as client:
        reply = client.request("GET", "/boom")
        assert reply.status == 500
        assert reply.json() == {"error": "Internal server error."}
        assert "kaboom" not in reply.body.decode()
        assert client.request("GET", "/ok").body == b"fine"  # same connection, still serving
        assert requests.get(running.url + "/ok", timeout=TIMEOUT).text == "fine"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "omnichannel.integrations.server"
    assert errors[0].exc_info is not None
    assert "kaboom" in str(errors[0].exc_info[1])
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert "Traceback" not in capfd.readouterr().err


def test_client_closing_mid_request_does_not_break_the_server(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    entered = threading.Event()
    release = threading.Event()

    class Blocking(Echo):
        def handle(self, request: Request) -> Response:
            if request.path == "/block":
                entered.set()
                release.wait(TIMEOUT)
            return super().handle(request)

    handler = Blocking()
    caplog.set_level(logging.WARNING)
    with LocalServer(handler, threads=2) as running:
        partials = [
            b"GET /half",
            b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly part",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
        ]
        for partial in partials:
            with Client(running.port) as client:
                client.send(partial)
        # a client that leaves while its request is with the handler; one that resets
        gone = Client(running.port)
        gone.send(http_request("GET", "/block"))
        assert entered.wait(TIMEOUT)
        gone.sock.close()
        reset = Client(running.port)
        reset.send(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.sock.close()
        release.set()
        wait_for(lambda: handler.calls == 1)  # the blocked one finished, its answer dropped
        wait_for(lambda: not running._connections)
        with Client(running.port) as client:
            assert client.request("POST", "/after", b"fine").json()["body"] == "fine"
    assert [request.path for request in handler.requests] == ["/block", "/after"]
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "Traceback" not in capfd.readouterr().err


# keep-alive timeout and stopping ----------------------------------------------------------------
def test_idle_keep_alive_connection_is_closed(echo: Echo) -> None:
    with LocalServer(echo, keep_alive=1) as running, Client(running.port) as client:
        assert client.request("GET", "/x").status == 200
        answered = time.monotonic()
        assert client.at_eof()  # blocks until the server closes it (the socket times out at 5 s)
        idle = time.monotonic() - answered
    assert 0.9 <= idle <= TIMEOUT


def test_keep_alive_idle_time_counts_from_the_answer() -> None:
    # a handler slower than keep_alive: the connection is idle from when it was answered, not
    # from when the request arrived, so a sweep right after the answer leaves it open
    class Slow(Echo):
        def handle(self, request: Request) -> Response:
            if request.path == "/slow":
                time.sleep(1.2)
            return super().handle(request)

    with LocalServer(Slow(), keep_alive=1) as running, Client(running.port) as client:
        assert client.request("GET", "/slow").status == 200
        loop = running._loop
        assert loop is not None
        swept = threading.Event()
        # an idle sweep right after the answer (the once-a-second timer may fall anywhere)
        loop.call_soon_threadsafe(running._sweep)
        loop.call_soon_threadsafe(swept.set)
        assert swept.wait(TIMEOUT)
        assert client.request("GET", "/again").json()["path"] == "/again"


def test_stop_closes_keep_alive_connections_and_frees_the_port(echo: Echo) -> None:
    running = LocalServer(echo).start()
    port = running.port
    try:
        busy = Client(port)
        idle = Client(port)
        assert busy.request("GET", "/x").status == 200
        wait_for(lambda: len(running._connections) == 2)
    finally:
        running.stop()
    with busy, idle:
        assert busy.at_eof()
        assert idle.at_eof()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    with LocalServer(echo, port=port) as again:  # the same port, bound again at once
        assert again.port == port
        assert requests.get(again.url + "/y", timeout=TIMEOUT).json()["path"] == "/y"
    with pytest.raises(RuntimeError):
        running.serve_forever()


def test_stop_right_after_a_slow_start(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    # a loop that takes a moment to begin serving: stop() must still stop it, cleanly
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    probe = asyncio.new_event_loop()
    base = type(probe)
    probe.close()

    class SlowLoop(base):  # type: ignore[valid-type, misc]
        async def create_server(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.05)
            return await super().create_server(*args, **kwargs)

    set_loop_factory(monkeypatch, SlowLoop)
    for _ in range(3):
        running = LocalServer(echo).start()
        thread = running._thread
        began = time.monotonic()
        running.stop()
        assert time.monotonic() - began < 2
        assert thread is not None and not thread.is_alive()
    assert errors == []


def test_stop_is_idempotent_and_works_without_start(echo: Echo) -> None:
    never_started = LocalServer(echo)
    never_started.stop()
    never_started.stop()
    running = LocalServer(echo).start()
    running.stop()
    running.stop()


def test_port_in_use_is_oserror_at_construction(server: LocalServer, echo: Echo) -> None:
    with pytest.raises(OSError):
        LocalServer(echo, port=server.port)
    assert requests.get(server.url + "/still", timeout=TIMEOUT).status_code == 200


def test_threads_must_be_positive(echo: Echo) -> None:
    with pytest.raises(ValueError, match="threads"):
        LocalServer(echo, threads=0)


# load shedding ----------------------------------------------------------------------------------
class Shedding(Echo):
    """Blocks on ``release``; sheds with 503 + Retry-After when the server says it's busy."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.offered: list[tuple[str, bool]] = []

    def handle(self, request: Request) -> Response:
        response = super().handle(request)
        self.release.wait(TIMEOUT)
        return response

    def shed(self, request: Request, *, busy: bool) -> Response | None:
        with self.lock:
            self.offered.append((request.path, busy))
        if busy:
            return Response(503, b"busy", {"Retry-After": "1"})
        return None


def one_thread_one_waiting(handler: Any) -> LocalServer:
    """One thread, and a second request may wait for it: a third at once is offered busy."""
    return LocalServer(handler, threads=1, max_waiting=1)


def test_shed_answers_at_once_when_busy() -> None:
    handler = Shedding()
    with one_thread_one_waiting(handler) as running:
        clients = [Client(running.port) for _ in range(4)]
        try:
            clients[0].send(http_request("POST", "/1", b"a"))
            wait_for(lambda: handler.calls == 1)  # running
            clients[1].send(http_request("POST", "/2", b"b"))
            wait_for(lambda: len(handler.offered) == 2)  # waiting for the one thread
            clients[2].send(http_request("POST", "/3", b"c"))
            shed = clients[2].read_response()
            assert (shed.status, shed.body, shed.headers["retry-after"]) == (503, b"busy", "1")
            assert not handler.release.is_set()
            assert handler.calls == 1  # the second still waits; the third never went in
            assert handler.offered == [("/1", False), ("/2", False), ("/3", True)]
            handler.release.set()
            assert clients[0].read_response().json()["path"] == "/1"
            assert clients[1].read_response().json()["path"] == "/2"
            # the shed connection stays usable, and nothing counts as in flight any more
            assert clients[2].request("POST", "/3", b"c").json()["path"] == "/3"
            assert clients[3].request("POST", "/4", b"d").json()["path"] == "/4"
            assert handler.offered[-2:] == [("/3", False), ("/4", False)]
        finally:
            handler.release.set()
            for client in clients:
                client.sock.close()


def test_busy_while_the_oldest_waiting_request_waited_too_long() -> None:
    handler = Shedding()
    with LocalServer(handler, threads=1, max_queue_delay=0.05) as running:
        clients = [Client(running.port) for _ in range(3)]
        try:
            clients[0].send(http_request("POST", "/1", b"a"))
            wait_for(lambda: handler.calls == 1)  # running
            clients[1].send(http_request("POST", "/2", b"b"))
            wait_for(lambda: len(handler.offered) == 2)  # waits (nobody waited before it)
            queued = time.monotonic()
            wait_for(lambda: time.monotonic() - queued > 0.1)
            clients[2].send(http_request("POST", "/3", b"c"))  # /2 waited too long: busy
            assert clients[2].read_response().status == 503
            assert handler.offered[:3] == [("/1", False), ("/2", False), ("/3", True)]
        finally:
            handler.release.set()
            for client in clients:
                client.sock.close()


def test_a_request_that_waited_too_long_for_a_thread_is_shed_when_taken() -> None:
    # /2 was accepted into the queue, but by the time the one thread is free it has waited
    # longer than max_queue_delay: its thread offers it to shed (busy) instead of handling it
    handler = Shedding()
    with LocalServer(handler, threads=1, max_queue_delay=0.05) as running:
        clients = [Client(running.port) for _ in range(2)]
        try:
            clients[0].send(http_request("POST", "/1", b"a"))
            wait_for(lambda: handler.calls == 1)
            clients[1].send(http_request("POST", "/2", b"b"))
            wait_for(lambda: len(handler.offered) == 2)
            waited_from = time.monotonic()
            wait_for(lambda: time.monotonic() - waited_from > 0.1)
            handler.release.set()
            assert clients[0].read_response().json()["path"] == "/1"
            shed = clients[1].read_response()
            assert (shed.status, shed.headers["retry-after"]) == (503, "1")
            assert handler.calls == 1  # /2 never reached handle()
            assert handler.offered == [("/1", False), ("/2", False), ("/2", True)]
            # the connection stays usable and the next request is served
            assert clients[1].request("POST", "/3", b"c").json()["path"] == "/3"
        finally:
            handler.release.set()
            for client in clients:
                client.sock.close()


def test_busy_when_a_new_request_would_wait_too_long_by_the_recent_time_per_request() -> None:
    # two requests took 0.6 s each: with one thread, a request behind one already waiting
    # would wait ~1.2 s > max_queue_delay (1 s), so it is shed at once, long before the one
    # waiting has waited 1 s; the one behind nobody (~0.6 s expected) is queued
    class Slow(Shedding):
        def handle(self, request: Request) -> Response:
            if request.path.startswith("/warm"):
                time.sleep(0.6)
                return Echo.handle(self, request)
            return super().handle(request)

    handler = Slow()
    with LocalServer(handler, threads=1, max_queue_delay=1.0) as running:
        clients = [Client(running.port) for _ in range(3)]
        try:
            for index in range(2):
                assert clients[0].request("POST", f"/warm{index}", b"w").status == 200
            clients[0].send(http_request("POST", "/a", b"a"))
            wait_for(lambda: handler.calls == 3)  # /a runs (blocked)
            clients[1].send(http_request("POST", "/b", b"b"))
            wait_for(lambda: len(handler.offered) == 4)
            queued = time.monotonic()
            clients[2].send(http_request("POST", "/c", b"c"))
            shed = clients[2].read_response()
            assert shed.status == 503 and time.monotonic() - queued < 0.9
            assert handler.offered[-2:] == [("/b", False), ("/c", True)]
        finally:
            handler.release.set()
            for client in clients:
                client.sock.close()


def test_a_late_start_of_a_free_thread_is_not_congestion() -> None:
    # max_queue_delay 0: any wait behind a busy thread is too long; yet requests sent one at a
    # time always find a thread free, so however late the thread takes one, none is shed
    handler = Shedding()
    handler.release.set()
    with LocalServer(handler, threads=1, max_queue_delay=0.0) as running:
        client = Client(running.port)
        try:
            for index in range(20):
                assert client.request("POST", f"/{index}", b"x").status == 200
            assert all(not busy for _, busy in handler.offered)
        finally:
            client.sock.close()


def test_max_waiting_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_waiting"):
        LocalServer(Echo(), max_waiting=0)


def test_no_load_shedding_by_default() -> None:
    # without max_queue_delay requests queue however long: shed() is never told busy
    handler = Shedding()
    with LocalServer(handler, threads=1) as running:
        clients = [Client(running.port) for _ in range(3)]
        try:
            for index, client in enumerate(clients):
                client.send(http_request("POST", f"/{index}", b"x"))
                wait_for(lambda index=index: len(handler.offered) == index + 1)
            assert handler.offered == [("/0", False), ("/1", False), ("/2", False)]
            handler.release.set()
            assert [client.read_response().json()["path"] for client in clients] == [
                "/0",
                "/1",
                "/2",
            ]
        finally:
            handler.release.set()
            for client in clients:
                client.sock.close()


def test_shed_head_answer_has_no_body() -> None:
    class AlwaysShed(Echo):
        def shed(self, request: Request, *, busy: bool) -> Response:
            return Response(503, b"go away", {"Retry-After": "3"})

    handler = AlwaysShed()
    with LocalServer(handler) as running, Client(running.port) as client:
        client.send(http_request("HEAD", "/x") + http_request("GET", "/y"))
        head = client.read_response(head=True)
        assert (head.status, head.headers["content-length"], head.body) == (503, "7", b"")
        assert client.read_response().body == b"go away"
    assert handler.calls == 0


def test_shed_raising_is_logged_and_the_request_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenShed(Echo):
        def shed(self, request: Request, *, busy: bool) -> Response | None:
            raise ValueError("shed broke")

    handler = BrokenShed()
    caplog.set_level(logging.ERROR)
    with LocalServer(handler) as running:
        response = requests.post(running.url + "/p", data=b"kept", timeout=TIMEOUT)
    assert (response.status_code, response.json()["body"]) == (200, "kept")
    assert handler.calls == 1
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "shed" in errors[0].getMessage()
    assert errors[0].exc_info is not None


# concurrency ------------------------------------------------------------------------------------
def test_many_concurrent_keep_alive_clients() -> None:
    clients, per_client = 200, 20

    class Counting:
        def handle(self, request: Request) -> Response:
            return Response(200, request.path + "|" + request.body.decode())

    errors: list[BaseException] = []
    answers = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(index: int, port: int) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            start.wait(30)
            try:
                for n in range(per_client):
                    connection.request("POST", f"/c/{index}/{n}", body=f"{index}-{n}".encode())
                    response = connection.getresponse()
                    body = response.read()
                    assert response.status == 200
                    assert body == f"/c/{index}/{n}|{index}-{n}".encode()
                    assert not response.will_close
                    answers[index] += 1
            finally:
                connection.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    began = time.monotonic()
    with LocalServer(Counting()) as running:
        threads = [
            threading.Thread(target=client, args=(index, running.port), daemon=True)
            for index in range(clients)
        ]
        for thread in threads:
            thread.start()
        start.wait(30)
        for thread in threads:
            thread.join(max(0.0, 60 - (time.monotonic() - began)))
        assert not any(thread.is_alive() for thread in threads), "clients still running at 60 s"
    assert not errors, errors[:3]
    assert sum(answers) == clients * per_client
    assert time.monotonic() - began <= 60
