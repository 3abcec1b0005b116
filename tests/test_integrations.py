"""Each framework shim through its real framework serving real HTTP: the examples, started the
way their docstrings say (Flask, Django, uvicorn for ASGI, gunicorn for WSGI)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from omnichannel import NO_ACTIVE_CHANNEL
from omnichannel.testing import RecordingChannelServer, button_event, text_event
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "integration-token"
CHANNEL_TOKEN = "integration-channel-token"


@contextmanager
def running(command: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    """Start ``command`` from the repository root and wait until ``port`` accepts connections."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"{command[:3]} exited with {process.returncode}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{command[:3]} did not listen on {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def commands(port: int) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "flask": [py, "-m", "flask", "--app", "examples.flask_app", "run", "--port", str(port)],
        "django": [py, "examples/django_app.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        "asgi-uvicorn": [
            py,
            "-m",
            "uvicorn",
            "examples.asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        "wsgi-gunicorn": [
            py,
            "-m",
            "gunicorn",
            "examples.wsgi_app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
        ],
    }


@pytest.mark.parametrize("framework", ["flask", "django", "asgi-uvicorn", "wsgi-gunicorn"])
def test_example_app_serves_the_connector(framework: str, tmp_path: Path) -> None:
    port = free_port()
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        env = {
            "OMNICHANNEL_TOKEN": TOKEN,
            "OMNICHANNEL_CHANNEL_URL": channel.channel_url,
            "OMNICHANNEL_CHANNEL_TOKEN": CHANNEL_TOKEN,
            # several gunicorn workers share one store, so a delivery is deduplicated across them
            "OMNICHANNEL_STORE": f"sqlite:///{tmp_path / 'bot.db'}",
        }
        with running(commands(port)[framework], port, env) as base:
            url = f"{base}/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
            hello = json.dumps(
                text_event("hi", chat_id=5, message_id="hello-1", fields={"name": "Ann"})
            )
            for _ in range(3):  # the same delivery three times: answered once
                response = requests.post(
                    url, data=hello, headers={"Content-Type": "application/json"}, timeout=10
                )
                assert response.status_code == 200, response.text
                assert response.json() == {"result": "ok"}
            calls = channel.wait_for(2)
            assert calls[0].text == "Hello, Ann! Shall I send you our price list?"
            assert calls[1].body["message"]["kind"] == "keyboard"
            assert all(c.headers["Authorization"] == f"Token {CHANNEL_TOKEN}" for c in calls)

            response = requests.post(
                url, data=json.dumps(button_event("Yes", chat_id=5)), timeout=10
            )
            assert response.status_code == 200
            assert channel.wait_for(3)[2].text == "You pressed Yes"

            wrong = url.replace(TOKEN, "nope")
            response = requests.post(wrong, data=hello, timeout=10)
            assert (response.status_code, response.json()) == (400, {"error": NO_ACTIVE_CHANNEL})
            response = requests.post(url, data=b"{", timeout=10)
            assert response.status_code == 500
            assert "JSON" in response.json()["error"]
            assert requests.post(f"{base}/elsewhere", data=hello, timeout=10).status_code == 404

            # a chunked body (no Content-Length): read where the server ends the input; the
            # Django dev server (wsgiref) cannot, so it is refused with 411, never read as empty
            chunked = json.dumps(text_event("chunks", chat_id=6, message_id="chunked-1")).encode()
            response = requests.post(url, data=iter([chunked[:10], chunked[10:]]), timeout=10)
            if framework == "django":
                assert response.status_code == 411, response.text
                expected = 3
            else:
                assert (response.status_code, response.json()) == (200, {"result": "ok"})
                assert channel.wait_for(4)[3].text == "You said: chunks"
                expected = 4
            time.sleep(0.3)
            assert len(channel.calls) == expected


# chunked bodies through the WSGI shim ---------------------------------------------------------
def test_chunked_post_through_gunicorn_sync_worker(tmp_path: Path) -> None:
    """gunicorn's sync worker dechunks and says so (``wsgi.input_terminated``): the body is read
    to its end, the message answered once."""
    port = free_port()
    py = sys.executable
    command = [py, "-m", "gunicorn", "examples.wsgi_app:app", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1", "--worker-class", "sync"]
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        env = {
            "OMNICHANNEL_TOKEN": TOKEN,
            "OMNICHANNEL_CHANNEL_URL": channel.channel_url,
            "OMNICHANNEL_CHANNEL_TOKEN": CHANNEL_TOKEN,
            "OMNICHANNEL_STORE": f"sqlite:///{tmp_path / 'bot.db'}",
        }
        with running(command, port, env) as base:
            url = f"{base}/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
            body = json.dumps(text_event("in chunks", chat_id=8, message_id="c-1")).encode()
            pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
            for _ in range(2):  # the same delivery twice: answered once
                response = requests.post(url, data=iter(pieces), timeout=10)
                assert (response.status_code, response.json()) == (200, {"result": "ok"})
            assert channel.wait_for(1)[0].text == "You said: in chunks"
            # a raw chunked request, one more message of the same chat: its reply comes after
            # any repeat of the first, so two replies in all means the first was answered once
            barrier = json.dumps(text_event("barrier", chat_id=8, message_id="c-2")).encode()
            path = url.split(str(port), 1)[1]
            raw = _raw_chunked_post(port, path, [barrier[:9], barrier[9:]])
            assert raw.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), raw
            channel.wait_for(2)
            assert channel.texts(8) == ["You said: in chunks", "You said: barrier"]


def _raw_chunked_post(port: int, path: str, pieces: list[bytes]) -> bytes:
    """POST ``pieces`` as a chunked body over a raw socket; the response's bytes."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@contextmanager
def wsgiref_serving(app: object) -> Iterator[str]:
    """``app`` under the standard library's wsgiref server (it cannot read chunked bodies)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_chunked_post_gets_411_where_the_server_cannot_end_it() -> None:
    from omnichannel import Connector
    from omnichannel.integrations.wsgi import wsgi_app

    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN, inline=True
        )
        with wsgiref_serving(wsgi_app(connector)) as base:
            url = f"{base}/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
            body = json.dumps(text_event("hi", chat_id=9, message_id="w-1")).encode()
            response = requests.post(url, data=iter([body[:5], body[5:]]), timeout=10)
            assert response.status_code == 411
            assert "Content-Length" in response.json()["error"]
            # with a length the same server reads it
            response = requests.post(url, data=body, timeout=10)
            assert (response.status_code, response.json()) == (200, {"result": "ok"})
        assert channel.texts(9) == ["hi"]
        connector.close()


def test_wsgi_body_reads_a_terminated_input_up_to_max_body() -> None:
    import io

    from omnichannel.integrations import wsgi_body
    from omnichannel.runtime.http import Response

    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    assert wsgi_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 100)}, None, 100) == b"x" * 100
    over = wsgi_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 101)}, None, 100)
    assert isinstance(over, Response) and over.status == 413
    # a chunked body has no length, whatever Content-Length says
    both = {**chunked, "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abcdef")}
    assert wsgi_body(both, None, 100) == b"abcdef"
    unterminated = wsgi_body(
        {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"abc")}, None, 100
    )
    assert isinstance(unterminated, Response) and unterminated.status == 411
    assert wsgi_body({"wsgi.input": io.BytesIO(b"abc")}, None, 100) == b""  # no body
    assert wsgi_body({"CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"abc")}, None, 100) == b"ab"
    bad = wsgi_body({"CONTENT_LENGTH": "x", "wsgi.input": io.BytesIO(b"")}, None, 100)
    assert isinstance(bad, Response) and bad.status == 400
    big = wsgi_body({"CONTENT_LENGTH": "101", "wsgi.input": io.BytesIO(b"")}, None, 100)
    assert isinstance(big, Response) and big.status == 413


# the local server's Server header --------------------------------------------------------------
def test_local_server_names_no_python_version() -> None:
    from omnichannel.integrations.server import LocalServer

    with LocalServer() as server:
        for response in (
            requests.get(server.url + "/healthz", timeout=5),
            requests.post(server.url + "/anything", data=b"{}", timeout=5),
        ):
            assert response.headers["Server"] == "omnichannel"
            assert "Python" not in response.headers["Server"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            # a header line over the standard library's limit: its own error page (431)
            sock.sendall(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"Python/" not in answer and b"Server: omnichannel" in answer


# default routes: each handler at its own path -------------------------------------------------
def _handlers() -> dict[str, object]:
    from omnichannel import Connector
    from omnichannel.channel_server import ChannelServer
    from omnichannel.omnidesk import CustomChannel, OmnideskChannel, OmnideskClient
    from omnichannel.pagemessenger import PageMessengerBridge, PageMessengerClient
    from omnichannel.webex import WebexConnectBot

    desk = OmnideskClient("https://x.omnidesk.ru", "bot@example.com", "key")
    connector = Connector(token="tok", channel_url="http://127.0.0.1:1")
    return {
        "connector": connector,
        "rules": OmnideskChannel(client=desk, secret="s3cret"),
        "custom": CustomChannel(desk, "cch1", secret="s3cret"),
        "webex": WebexConnectBot(None, "http://127.0.0.1:1/events", "vtoken"),
        "webex-secret": WebexConnectBot(
            None, "http://127.0.0.1:1/events", "vtoken", secret="s3cret"
        ),
        "webex-path": WebexConnectBot(
            None, "http://127.0.0.1:1/events", "vtoken", path="/hooks/wx", secret="s3cret"
        ),
        "bridge": PageMessengerBridge(
            PageMessengerClient(api_key="k"), "task", connector, secret="s3cret"
        ),
        "channel-server": ChannelServer(token="t", path="/channel"),
        "channel-server-secret": ChannelServer(secret="s3cret", path="/channel"),
    }


EXPECTED_ROUTES = {
    "connector": (
        "/connector/omnichannel/omnichannel_message/{token}/bot_api_webhook",
        ("POST",),
    ),
    "rules": ("/omnidesk/rules/{secret}", ("POST",)),
    "custom": ("/omnidesk/custom-channel/{secret}", ("POST",)),
    "webex": ("/webex", ("POST", "GET", "HEAD")),
    "webex-secret": ("/webex/{secret}", ("POST", "GET", "HEAD")),
    "webex-path": ("/hooks/wx/{secret}", ("POST", "GET", "HEAD")),
    "bridge": ("/pagemessenger/{secret}", ("POST",)),
    "channel-server": ("/channel/{method}", ("POST",)),
    "channel-server-secret": ("/channel/{secret}/{method}", ("POST",)),
}


def test_every_channel_has_a_default_route_at_its_webhook_path() -> None:
    from omnichannel.integrations import webhook_route

    handlers = _handlers()
    try:
        for key, handler in handlers.items():
            route = webhook_route(handler)
            assert (route.path, route.methods) == EXPECTED_ROUTES[key], key
            # the placeholder stands for the secret segment of the real path
            path = getattr(handler, "webhook_path", None)
            if path is not None:
                pattern = re.compile(route.django_pattern())
                assert pattern.match(path.lstrip("/")), (key, path)
        assert webhook_route(object()).path == EXPECTED_ROUTES["connector"][0]

        class Own:
            webhook_path = "/mine"

        assert webhook_route(Own()).path == "/mine"
    finally:
        for handler in handlers.values():
            handler.close()  # type: ignore[attr-defined]


def test_flask_blueprint_serves_a_webex_adapter_at_its_own_path() -> None:
    from flask import Flask
    from werkzeug.serving import make_server

    from omnichannel import Bot
    from omnichannel.integrations.flask import make_blueprint
    from omnichannel.testing import FakeWebexConnect
    from omnichannel.webex import WebexConnectBot

    bot = Bot()

    @bot.on_text
    def echo(turn: object) -> str:
        return f"You wrote: {turn.text}"  # type: ignore[attr-defined]

    with FakeWebexConnect("vtoken", time_factor=0.001, timeout=5.0) as webex:
        adapter = WebexConnectBot(bot, webex.webhook_url, "vtoken", secret="s3cret")
        app = Flask(__name__)
        app.register_blueprint(make_blueprint(adapter, name="webex"))  # no rule=
        port = free_port()
        http = make_server("127.0.0.1", port, app, threaded=True)
        import threading

        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{port}"
            assert adapter.webhook_path == "/webex/s3cret"
            webex.bot_url = base + adapter.webhook_path
            assert webex.verify()  # Verify: a POST answered with the token
            got = requests.get(base + adapter.webhook_path, timeout=5)  # GET verification
            assert (got.status_code, got.text) == (200, "vtoken")
            delivery = webex.send_message("conv-1", "hi").wait()
            assert delivery.state == "delivered"
            adapter.drain()
            assert webex.texts("conv-1") == ["You wrote: hi"]
            # the secret is the handler's to check (403), not a 404 of the URL map
            wrong = requests.post(base + "/webex/nope", data=b"{}", timeout=5)
            assert wrong.status_code == 403
            omni = f"{base}/connector/omnichannel/omnichannel_message/x/bot_api_webhook"
            assert requests.post(omni, data=b"{}", timeout=5).status_code == 404
        finally:
            http.shutdown()
            thread.join(5)
            adapter.close()


def test_django_urlpatterns_default_to_the_handlers_path() -> None:
    from omnichannel.integrations.django import OMNICHANNEL_PATTERN, urlpatterns

    handlers = _handlers()
    try:
        (connector,) = urlpatterns(handlers["connector"])
        assert connector.pattern.regex.pattern == OMNICHANNEL_PATTERN
        (rules,) = urlpatterns(handlers["rules"], name="rules")
        assert rules.pattern.regex.match("omnidesk/rules/s3cret")
        assert rules.pattern.regex.match("omnidesk/rules/other")  # the handler answers 403
        assert not rules.pattern.regex.match("connector/omnichannel/omnichannel_message/t/x")
        (webex,) = urlpatterns(handlers["webex"], name="webex")
        assert webex.pattern.regex.match("webex") and webex.pattern.regex.match("webex/")
    finally:
        for handler in handlers.values():
            handler.close()  # type: ignore[attr-defined]
