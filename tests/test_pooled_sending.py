"""The default outbound transport (:class:`~omnichannel.runtime.pool.PooledSession`) against
real HTTP servers on 127.0.0.1: one keep-alive connection reused for many replies, a server that
closes idle connections (no reply lost, none sent twice), a request the server may have
processed is not sent again, proxy variables ignored unless asked for, secrets kept out of
errors. Counts and contents only, never timings."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from omnichannel import Connector
from omnichannel.channels.omnichannel import OmnichannelClient
from omnichannel.errors import DeliveryError
from omnichannel.runtime import pool
from omnichannel.runtime.pool import PooledSession
from omnichannel.runtime.sending import RetryPolicy, new_session

SECRET = "s3cret-path-token"


class Sink(ThreadingHTTPServer):
    """Records each POST body and counts the TCP connections it accepted."""

    daemon_threads = True

    def __init__(self, *, idle_timeout: float | None = None, reset: bool = False) -> None:
        self.bodies: list[Any] = []
        self.connections = 0
        self.idle_timeout = idle_timeout  # close a connection idle this long
        self.reset = reset  # close it with a TCP reset rather than a FIN
        self.status = 200
        self.answer: bytes = b'{"result":"ok"}'
        self.hang_up_on: int | None = None  # read request number n, then close unanswered
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{SECRET}/channel"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Sink

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
        if self.server.idle_timeout is not None:
            self.connection.settimeout(self.server.idle_timeout)

    def finish(self) -> None:
        if self.server.reset:
            linger = struct.pack("ii", 1, 0)  # close() sends RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        super().finish()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
            hang_up = self.server.hang_up_on == len(self.server.bodies)
        if hang_up:
            self.close_connection = True
            return
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def sink(**options: Any) -> Iterator[Sink]:
    server = Sink(**options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def reply(chat: int, text: str) -> dict[str, Any]:
    return {"method": "send_message",
            "body": {"chat_id": chat, "message": {"kind": "operator", "text": text}}}  # fmt: skip


def test_many_replies_go_over_one_kept_alive_connection() -> None:
    with sink() as server:
        connector = Connector(token="t", channel_url=server.url, inline=True)
        try:
            for i in range(25):
                connector.deliver(reply(1, f"reply {i}"))
            assert isinstance(connector.client.session, PooledSession)
        finally:
            connector.close()
    assert [b["message"]["text"] for b in server.bodies] == [f"reply {i}" for i in range(25)]
    assert server.connections == 1


def test_threads_sending_at_once_share_a_bounded_pool() -> None:
    with sink() as server:
        client = OmnichannelClient(server.url)
        session = PooledSession(pool_size=2)
        client.session = session

        def send(n: int) -> None:
            for i in range(10):
                client.call("send_message", {"chat_id": n, "message": {"text": str(i)}})

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert session.idle_connections() <= 2
        session.close()
        assert session.idle_connections() == 0
    assert len(server.bodies) == 40
    assert server.connections <= 4 + 40  # never more than one per request; usually 4


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_server_closing_idle_connections_loses_and_repeats_nothing(reset: bool) -> None:
    import time

    with sink(idle_timeout=0.05, reset=reset) as server:
        connector = Connector(token="t", channel_url=server.url, inline=True)
        try:
            for i in range(4):
                connector.deliver(reply(1, f"reply {i}"))
                time.sleep(0.2)  # the server closes the connection meanwhile
        finally:
            connector.close()
    assert [b["message"]["text"] for b in server.bodies] == [f"reply {i}" for i in range(4)]
    assert server.connections == 4


def test_a_send_failing_on_a_reused_connection_goes_once_on_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    # the check before reuse misses the closed connection (the server closed it just after
    # the check): sending on it fails, and the request goes again, once, on a new connection
    monkeypatch.setattr(pool._Connection, "dropped", lambda self: False)
    with sink(idle_timeout=0.05, reset=True) as server:
        client = OmnichannelClient(server.url)
        client.call("send_message", {"chat_id": 1, "message": {"text": "one"}}, attempts=1)
        time.sleep(0.3)  # the server resets the idle connection
        client.call("send_message", {"chat_id": 1, "message": {"text": "two"}}, attempts=1)
    assert [b["message"]["text"] for b in server.bodies] == ["one", "two"]
    assert server.connections == 2


def test_a_request_the_server_may_have_processed_is_not_sent_again() -> None:
    with sink() as server:
        server.hang_up_on = 2  # reads the second request, then closes without an answer
        connector = Connector(token="t", channel_url=server.url, inline=True)
        try:
            connector.deliver(reply(1, "first"))
            with pytest.raises(DeliveryError) as caught:
                connector.deliver(reply(1, "second"))
            assert caught.value.retryable  # the outbox tries again later (at least once)
            assert caught.value.status is None
            assert SECRET not in str(caught.value)
        finally:
            connector.close()
    assert [b["message"]["text"] for b in server.bodies] == ["first", "second"]


def test_proxy_variables_are_ignored_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    once = RetryPolicy(attempts=1, timeout=5.0)
    with sink() as server:
        default = OmnichannelClient(server.url, retry=once)
        default.call("send_message", {"chat_id": 1, "message": {"text": "direct"}})
        proxied = OmnichannelClient(server.url, session=new_session(trust_env=True), retry=once)
        with pytest.raises(DeliveryError) as caught:
            proxied.call("send_message", {"chat_id": 1, "message": {"text": "via proxy"}})
        assert SECRET not in str(caught.value)
        proxied.session.close()
    assert [b["message"]["text"] for b in server.bodies] == ["direct"]


def test_refusals_are_classified_and_keep_the_secret_out() -> None:
    with sink() as server:
        server.status = 503
        server.answer = json.dumps({"error": f"bad token {SECRET}-token"}).encode()
        client = OmnichannelClient(server.url, token=SECRET + "-token")
        client.retry = RetryPolicy(attempts=1)
        with pytest.raises(DeliveryError) as caught:
            client.call("send_message", {"chat_id": 1, "message": {"text": "x"}})
        error = caught.value
        assert error.status == 503 and error.retryable
        server.status = 400
        with pytest.raises(DeliveryError) as refused:
            client.call("send_message", {"chat_id": 1, "message": {"text": "x"}})
        assert refused.value.status == 400 and not refused.value.retryable
    for text in (str(error), error.response_text or "", str(refused.value)):
        assert SECRET not in text  # neither the token nor the URL's secret path segment
    assert "/…/send_message" in str(error)


def test_a_refused_connection_and_a_silent_server_are_retryable_failures() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OmnichannelClient(f"http://127.0.0.1:{port}/{SECRET}", retry=RetryPolicy(attempts=1))
    with pytest.raises(DeliveryError) as refused:
        client.call("send_message", {"chat_id": 1})
    assert refused.value.retryable and "ConnectionRefusedError" in str(refused.value)
    assert SECRET not in str(refused.value)

    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/c"
        client = OmnichannelClient(url, retry=RetryPolicy(attempts=1, timeout=(1.0, 0.2)))
        with pytest.raises(DeliveryError) as timed_out:
            client.call("send_message", {"chat_id": 1})
    assert timed_out.value.retryable and "ReadTimeout" in str(timed_out.value)


def test_the_response_offers_what_the_clients_read() -> None:
    with sink() as server:
        server.answer = '{"result":"ok","name":"Ёж"}'.encode()
        session = PooledSession()
        response = session.post(
            server.url + "/x?a=1", json={"chat_id": 1}, params={"b": "2"}, auth=("u", "p")
        )
        assert response.status_code == 200 and response.ok
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"result": "ok", "name": "Ёж"}
        assert "Ёж" in response.text
        with pytest.raises(TypeError):
            session.post(server.url, json={}, auth=object())
        session.close()


def test_a_shorter_timeout_applies_to_a_reused_connection() -> None:
    # one connection: the first request is answered, the second never is; the second request's
    # own (shorter) read timeout must apply although the connection was made with a longer one
    answered = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                    data += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                answered.set()
                conn.recv(65536)  # the second request: never answered
                conn.recv(65536)  # until the client gives up and closes

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        session = PooledSession()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/c"
        assert session.post(url, json={"a": 1}, timeout=(5.0, 30.0)).status_code == 200
        assert answered.is_set() and session.idle_connections() == 1
        with pytest.raises(pool.TransportError) as timed_out:
            session.post(url, json={"a": 2}, timeout=(5.0, 0.2))
        assert "ReadTimeout" in str(timed_out.value) and timed_out.value.sent
        assert session.connections_made == 1  # the same connection, with the new timeout
        session.close()
        server.join(10)
