"""The channel side of the universal connector: ``PlatformClient``, ``ChannelServer``,
``FakeAgentPlatform`` and the web chat example, over real HTTP on 127.0.0.1 (real processes
where it matters: ``omnichannel serve`` as the agent side, a channel process killed and
restarted on its SQLite store, the example under ``flask run``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from omnichannel import (
    NO_ACTIVE_CHANNEL,
    Button,
    ConfigurationError,
    DeliveryError,
    FileLink,
    Keyboard,
    PayloadError,
    RetryPolicy,
    Runtime,
    SendMessage,
    TextReply,
)
from omnichannel.channel_server import (
    ChannelInactive,
    ChannelServer,
    CloseChat,
    EventRejected,
    PlatformClient,
    PlatformNotFound,
    RedirectChat,
    file_message,
    make_visitor,
    platform_webhook_url,
    preview_variables,
)
from omnichannel.integrations.server import LocalServer
from omnichannel.runtime.stores import OUTBOX
from omnichannel.testing import FakeAgentPlatform
from tests.helpers import free_port, wait_until
from tests.processes import WEBHOOK, opened, running

ROOT = Path(__file__).resolve().parent.parent
CHANNEL_TOKEN = "channel-side-token-5f1c"


class Seen:
    """A handler that records what it is given, and lets a test wait for it."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 15.0) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                pytest.fail(f"waited for {count} items; have {self.items!r}")
            return list(self.items)


def post(url: str, body: Any, token: str | None = None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Token {token}"
    if isinstance(body, bytes):
        return requests.post(url, data=body, headers=headers, timeout=10)
    return requests.post(url, json=body, headers=headers, timeout=10)


def texts(replies: list[SendMessage]) -> list[str]:
    return [
        r.message.text if isinstance(r.message, TextReply) else repr(r.message) for r in replies
    ]


# =============================================================================================
# end to end: the SDK's channel side and the SDK's agent side (``omnichannel serve``)


@pytest.mark.parametrize("bot", ["echo", "keyboard"])
def test_end_to_end_against_omnichannel_serve(bot: str) -> None:
    replies = Seen()
    runtime = Runtime(outbox_backoff=0.05, outbox_cap=0.5)
    server = ChannelServer(token=CHANNEL_TOKEN, path="/channel", runtime=runtime, on_reply=replies)
    extra = ("--bot", "examples/echo_bot.py:bot") if bot == "keyboard" else ()
    try:
        with (
            LocalServer(server) as local,
            running(
                "memory://", local.url + "/channel", "--channel-token", CHANNEL_TOKEN, *extra
            ) as agent,
        ):
            client = PlatformClient(agent.url + WEBHOOK, runtime=runtime)
            ann = make_visitor("v-ann", name="Ann", site="shop.example")
            pdf = "http://files.example/price.pdf"
            if bot == "echo":
                client.queue_text(21, "hello", visitor=ann)
                client.queue_file(21, None, name="p.pdf", state="uploading", file_id="f-1")
                client.queue_file(
                    21, pdf, name="p.pdf", content_type="application/pdf", file_id="f-1"
                )
                client.queue_button(21, "b-9", "Blue", visitor=ann)
                client.queue_text(21, "done", visitor=ann)
                expected = ["hello", f"file:application/pdf|f-1|{pdf}", "Blue", "done"]
                assert texts(replies.wait(4)) == expected
            else:
                client.queue_text(22, "hi", visitor=ann)
                greeting, keyboard = replies.wait(2)
                assert greeting.message == TextReply(
                    text="Hello, Ann! Shall I send you our price list?"
                )
                assert isinstance(keyboard.message, Keyboard)
                yes = keyboard.message.buttons[0][0]
                assert (yes.id, yes.text) == ("yes", "Yes")
                client.queue_file(22, None, name="p.pdf", state="uploading", file_id="f-1")
                client.queue_file(
                    22, pdf, name="p.pdf", content_type="application/pdf", file_id="f-1"
                )
                client.queue_button(22, yes.id, yes.text, visitor=ann)
                client.queue_text(22, "bye", visitor=ann)
                expected = [
                    f"Thanks, I got your file (file:application/pdf|f-1|{pdf})",
                    "You pressed Yes",
                    "You said: bye",
                ]
                assert texts(replies.wait(5)[2:]) == expected
            # the last reply is in: anything sent twice before it would have arrived by now
            assert server.drain(5)
            assert len(replies.items) == (4 if bot == "echo" else 5)
            assert {r.chat_id for r in replies.items} == {21 if bot == "echo" else 22}
            assert client.dead_letters() == []
    finally:
        runtime.close()


# =============================================================================================
# PlatformClient against FakeAgentPlatform


def test_inactive_channel_is_not_retried_and_is_dead_lettered_with_its_reason() -> None:
    with FakeAgentPlatform() as fake:
        client = PlatformClient(fake.webhook_url, inline=True, outbox_backoff=0.05)
        assert client.active and client.health.reason is None
        fake.deactivate()
        with pytest.raises(ChannelInactive) as info:
            client.send_text(1, "hello")
        assert info.value.status == 400 and not info.value.retryable
        assert NO_ACTIVE_CHANNEL in str(info.value)
        assert len(fake.refused) == 1  # one attempt: not retried

        queued = client.queue_text(1, "queued while off")
        assert client.drain(5)
        assert len(fake.refused) == 2  # again one attempt
        [dead] = client.dead_letters()
        assert dead.payload["body"]["message"]["id"] == queued
        assert dead.last_error is not None and NO_ACTIVE_CHANNEL in dead.last_error
        health = client.health
        assert not client.active and not health.active
        assert health.reason == NO_ACTIVE_CHANNEL and health.since is not None

        # a wrong token in the URL is the same answer
        fake.activate()
        wrong = PlatformClient(fake.webhook_url.replace(fake.token, "not-the-token"), inline=True)
        with pytest.raises(ChannelInactive):
            wrong.send_text(1, "x")
        assert fake.messages == []

        # switched on again: the next accepted message clears the flag; the dead letter is
        # there for an operator to retry
        client.send_text(1, "back")
        assert client.active and client.health.reason is None
        assert client.runtime.store.dead_letter_retry(dead.id)
        assert client.drain(5)
        assert [m.text for m in fake.messages] == ["back", "queued while off"]
        client.close()
        wrong.close()


def test_500_twice_then_200_is_delivered_once() -> None:
    with FakeAgentPlatform() as fake:
        client = PlatformClient(fake.webhook_url, inline=True, outbox_backoff=0.05, outbox_cap=0.2)
        fake.fail_next(2, status=500)
        queued = client.queue_text(3, "hello")
        assert client.drain(10)
        assert [m.id for m in fake.messages] == [queued]
        assert [status for status, _ in fake.refused] == [500, 500]
        assert client.dead_letters() == []

        # the immediate path retries per its policy
        fast = PlatformClient(
            fake.webhook_url, retry=RetryPolicy(attempts=3, backoff=0.01), inline=True
        )
        fake.fail_next(2, status=500)
        now = fast.send_text(3, "again")
        assert [m.id for m in fake.messages] == [queued, now]
        fake.fail_next(3, status=500)
        with pytest.raises(DeliveryError) as info:
            fast.send_text(3, "lost")
        assert info.value.status == 500 and info.value.retryable
        client.close()
        fast.close()


CHANNEL_PROCESS = """
import pathlib, sys, time
from omnichannel.channel_server import PlatformClient

url, store, count, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
client = PlatformClient(url, store=store, outbox_backoff=0.05, outbox_cap=0.3)
client.start()
for i in range(count):
    chat = 1 + i % 2
    client.queue_text(chat, f"m{i}", message_id=f"m{i}", visitor=f"v{chat}")
ready.write_text("ready")
while True:
    time.sleep(0.5)
"""


@contextmanager
def channel_process(script: Path, url: str, store: str, count: int, tmp: Path) -> Iterator[Any]:
    ready = tmp / f"ready-{count}-{time.monotonic_ns()}"
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, str(script), url, store, str(count), str(ready)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        if not wait_until(lambda: ready.exists() or process.poll() is not None, 20):
            pytest.fail("the channel process did not get ready")
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"the channel process exited: {log.read().decode(errors='replace')}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def test_platform_down_for_20_messages_and_the_channel_process_restarted(tmp_path: Path) -> None:
    port = free_port()
    token = "restart-token"
    url = platform_webhook_url(f"http://127.0.0.1:{port}", token)
    store = f"sqlite:///{tmp_path / 'channel.db'}"
    script = tmp_path / "channel_process.py"
    script.write_text(CHANNEL_PROCESS)

    # the platform is down: the first process stores 20 messages (they fail and back off)...
    with channel_process(script, url, store, 20, tmp_path) as first:
        first.send_signal(signal.SIGKILL)  # ...and dies without a goodbye
        first.wait(10)
    with opened(store) as kept:
        assert kept.pending(OUTBOX) == 20 and kept.dead_letters() == []
    # a new process on the same store; then the platform comes up
    with (
        channel_process(script, url, store, 0, tmp_path),
        FakeAgentPlatform(token, port=port, answer="silent") as fake,
    ):
        fake.wait_for(20, timeout=20)
        ids = [m.id for m in fake.messages]
        assert sorted(ids, key=lambda i: int(str(i)[1:])) == [f"m{i}" for i in range(20)]
        for chat in (1, 2):
            in_chat = [m.id for m in fake.messages if m.chat_id == chat]
            assert in_chat == [f"m{i}" for i in range(20) if 1 + i % 2 == chat]
        assert all(m.visitor.id == f"v{m.chat_id}" for m in fake.messages)


def test_missing_parameter_and_wrong_url_are_typed_errors() -> None:
    with FakeAgentPlatform() as fake:
        client = PlatformClient(fake.webhook_url, inline=True)
        fake.fail_next(1, status=400, body={"error": "message.kind: required field is missing"})
        with pytest.raises(EventRejected) as info:
            client.send_text(1, "x")
        assert isinstance(info.value, PayloadError)
        assert info.value.path == "message.kind" and info.value.missing
        assert not info.value.retryable and len(fake.refused) == 1

        fake.fail_next(1, status=400, body={"error": "Missing parameter: chat_id"})
        client.queue_text(1, "queued")
        assert client.drain(5)
        [dead] = client.dead_letters()
        assert dead.last_error is not None and "chat_id" in dead.last_error

        old = platform_webhook_url(fake.url + "/old", fake.token)  # a wrong prefix: 404
        moved = PlatformClient(old, inline=True, name="moved")
        with pytest.raises(PlatformNotFound) as not_found:
            moved.send_text(1, "x")
        assert isinstance(not_found.value, ConfigurationError)
        assert f"127.0.0.1:{fake.port}/…/bot_api_webhook" in str(not_found.value)
        assert "404" in str(not_found.value) and fake.token not in str(not_found.value)
        assert client.active  # neither is about the channel being off
        client.close()
        moved.close()


def test_the_token_never_appears_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    token = "tok-6b0e2f9a41"
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with FakeAgentPlatform(token) as fake:
        client = PlatformClient(
            fake.webhook_url,
            inline=True,
            retry=RetryPolicy(attempts=2, backoff=0.01),
            outbox_backoff=0.01,
            outbox_deadline=0.05,
        )
        errors.append(repr(client))
        client.send_text(1, "fine")
        # the platform echoes the URL in its error: scrubbed
        fake.fail_next(2, status=500, body={"error": f"failed at {fake.webhook_url}"})
        with pytest.raises(DeliveryError) as info:
            client.send_text(1, "x")
        errors.append(str(info.value))
        errors.append(info.value.response_text)
        fake.deactivate()
        with pytest.raises(ChannelInactive) as inactive:
            client.send_text(1, "x")
        errors.append(str(inactive.value))
        client.queue_text(1, "dead")
        client.drain(5)
        errors.extend(str(d.last_error) for d in client.dead_letters())
        errors.append(repr(client.health))
        port = fake.port
        client.close()
    # the platform is gone (nothing listens): connection errors, retried then dead-lettered
    gone = PlatformClient(
        platform_webhook_url(f"http://127.0.0.1:{free_port()}", token),
        inline=True,
        retry=RetryPolicy(attempts=2, backoff=0.01),
        outbox_backoff=0.01,
        outbox_deadline=0.05,
    )
    with pytest.raises(DeliveryError) as down:
        gone.send_text(1, "x")
    errors.append(str(down.value))
    gone.queue_text(1, "x")
    gone.drain(2)
    errors.extend(str(d.last_error) for d in gone.dead_letters())
    errors.append(repr(gone))
    gone.close()
    assert any("Connection" in e for e in errors)
    assert all(token not in e for e in errors), errors
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f":{port}" in logged  # urllib3 logged the requests...
    assert token not in logged  # ...with the token elided


def test_events_the_platform_would_ignore_are_refused_before_sending() -> None:
    with FakeAgentPlatform() as fake:
        client = PlatformClient(fake.webhook_url, inline=True)
        visitor = {"id": "v-1", "fields": {"name": "Ann"}}
        cases = {
            "message.kind": {
                "event": "new_message",
                "chat_id": 1,
                "visitor": visitor,
                "message": {"id": "1", "kind": "sticker"},
            },
            "event": {
                "event": "typing",
                "chat_id": 1,
                "message": {"id": "1", "kind": "visitor", "text": "x"},
            },
            "message.id": {
                "event": "new_message",
                "chat_id": 1,
                "message": {"kind": "visitor", "text": "x"},
            },
            "message.text": {
                "event": "new_message",
                "chat_id": 1,
                "message": {"id": "1", "kind": "visitor"},
            },
            "chat_id": {
                "event": "new_message",
                "message": {"id": "1", "kind": "visitor", "text": "x"},
            },
            "messages.0.kind": {
                "event": "new_chat",
                "chat": {"id": 1},
                "messages": [{"id": "1", "kind": "operator", "text": "x"}],
            },
            "messages": {"event": "new_chat", "chat": {"id": 1}, "messages": []},
        }
        for path, event in cases.items():
            for send in (client.send_event, client.queue_event):
                with pytest.raises(PayloadError) as info:
                    send(event)
                assert info.value.path == path, (path, info.value)
        assert client.runtime.store.pending(OUTBOX) == 0
        assert (fake.calls, fake.refused, fake.ignored) == ([], [], [])

        # a Webim-style new_chat with a text and a file goes through, in order
        pdf = file_message("http://f.example/a.pdf", content_type="application/pdf")
        ids = client.send_new_chat(4, ["hello", pdf], visitor="v-4")
        assert [m.id for m in fake.messages] == ids
        assert fake.texts(4) == ["hello", f"file:application/pdf|{pdf.id}|http://f.example/a.pdf"]

        # a file without a state: accepted, and processed only by a Webim-style platform
        client.send_file(5, "http://f.example/b.png", content_type="image/png", state=None)
        assert not fake.messages[-1].processed  # seed 000: only state == "ready" is processed
        fake.files_require_state = False
        client.send_file(5, "http://f.example/b.png", content_type="image/png", state=None)
        assert fake.messages[-1].processed
        client.close()


def test_the_visitor_fills_the_channel_variables() -> None:
    ann = make_visitor(
        "u-42",
        name="Ann",
        login="ann.k",
        phone="+79001234567",
        email="ann@example.com",
        site="shop.example",
        avatar_url="https://shop.example/ann.png",
    )
    expected = {
        "channel_visitor_id": "u-42",
        "channel_conversation_id": "42",
        "channel_visitor_firstname": "Ann",
        "channel_visitor_lastname": None,
        "channel_visitor_account": "ann.k",
        "channel_visitor_phone": "+79001234567",
        "channel_visitor_email": "ann@example.com",
        "channel_visitor_source": "shop.example",
        "channel_chat_id": "42|omnichannel",
    }
    assert preview_variables(42, ann) == expected
    assert preview_variables(9)["channel_visitor_id"] == "9"  # no visitor: the chat stands in
    with FakeAgentPlatform() as fake:
        client = PlatformClient(fake.webhook_url, inline=True)
        client.send_text(42, "hi", visitor=ann)
        [got] = fake.messages
        assert got.variables == expected
        assert got.visitor.fields.extra == {"avatar_url": "https://shop.example/ann.png"}
        client.close()
    with pytest.raises(ValueError, match="visitor"):
        make_visitor("")


# =============================================================================================
# ChannelServer


def _wait_listening(port: int) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    assert wait_until(listening, 15), f"nothing listens on {port}"


@contextmanager
def behind(framework: str, server: ChannelServer) -> Iterator[str]:
    """Serve ``server`` at ``/channel/<method>`` through a real Flask or uvicorn server."""
    port = free_port()
    if framework == "flask":
        from flask import Flask
        from werkzeug.serving import make_server

        from omnichannel.integrations.flask import make_blueprint

        app = Flask(__name__)
        app.register_blueprint(make_blueprint(server, rule="/channel/<method>", name="channel"))
        http = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            _wait_listening(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            http.shutdown()
            thread.join(5)
    else:
        import uvicorn

        from omnichannel.integrations.asgi import asgi_app

        config = uvicorn.Config(
            asgi_app(server), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        try:
            assert wait_until(lambda: uv.started, 15), "uvicorn did not start"
            yield f"http://127.0.0.1:{port}"
        finally:
            uv.should_exit = True
            thread.join(10)


@pytest.mark.parametrize("framework", ["flask", "asgi-uvicorn"])
def test_channel_server_behind_a_framework(framework: str) -> None:
    replies, closes, redirects = Seen(), Seen(), Seen()
    server = ChannelServer(token=CHANNEL_TOKEN, path="/channel", on_reply=replies)

    @server.on_close
    async def closed(close: CloseChat) -> None:  # async handlers run on the runtime's loop
        closes(close)

    server.on_redirect(redirects)
    with behind(framework, server) as base:
        url = base + "/channel/send_message"
        hello = {"chat_id": 7, "message": {"kind": "operator", "text": "Hi"}}

        missing = post(url, hello)
        assert (missing.status_code, missing.json()) == (401, {"error": "unauthorized"})
        for bad in ("wrong", CHANNEL_TOKEN + "x", ""):
            wrong = post(url, hello, token=bad)
            assert (wrong.status_code, wrong.json()) == (403, {"error": "forbidden"})
        basic = post(url, hello, Authorization=f"Bearer {CHANNEL_TOKEN}")
        assert basic.status_code == 403

        for _ in range(3):  # the platform retrying a call whose answer it lost
            ok = post(url, hello, token=CHANNEL_TOKEN)
            assert (ok.status_code, ok.json()) == (200, {"result": "ok"})

        keyboard = {"kind": "keyboard", "buttons": [[{"id": "y", "text": "Yes"}]]}
        link = {
            "kind": "file_operator",
            "data": {"url": "https://f.example/a.pdf", "name": "a.pdf"},
        }
        for message in (keyboard, link):
            assert post(url, {"chat_id": 7, "message": message}, token=CHANNEL_TOKEN).ok

        malformed = {
            "message.kind": {"chat_id": 7, "message": {"text": "no kind"}},
            "chat_id": {"message": {"kind": "operator", "text": "x"}},
            "message.text": {"chat_id": 7, "message": {"kind": "operator", "text": 5}},
            "message.buttons": {"chat_id": 7, "message": {"kind": "keyboard"}},
        }
        for field, body in malformed.items():
            answer = post(url, body, token=CHANNEL_TOKEN)
            assert answer.status_code == 400, (field, answer.text)
            assert answer.json()["field"] == field and field in answer.json()["error"]
        not_json = post(url, b"{", token=CHANNEL_TOKEN)
        assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]

        close = post(base + "/channel/close_chat", {"chat_id": 7}, token=CHANNEL_TOKEN)
        redirect = post(
            base + "/channel/redirect_chat", {"chat_id": 7, "dep_key": "sales"}, token=CHANNEL_TOKEN
        )
        assert close.ok and redirect.ok
        nobody = post(base + "/channel/redirect_chat", {"chat_id": 7}, token=CHANNEL_TOKEN)
        assert nobody.status_code == 400 and nobody.json()["field"] == "operator_id"
        assert post(base + "/channel/unknown_method", hello, token=CHANNEL_TOKEN).status_code == 404

        assert closes.wait(1) == [CloseChat(chat_id=7)]
        assert redirects.wait(1) == [RedirectChat(chat_id=7, dep_key="sales")]
        got = replies.wait(3)
        assert server.drain(5)
        assert [r.message for r in replies.items] == [
            TextReply(text="Hi"),
            Keyboard(buttons=[[Button(id="y", text="Yes")]]),
            FileLink(url="https://f.example/a.pdf", name="a.pdf"),
        ]
        assert all(r.chat_id == 7 for r in got)
    server.close()


def test_a_secret_in_the_url_instead_of_the_header() -> None:
    replies = Seen()
    server = ChannelServer(secret="s3cr3t-segment", path="/channel", inline=True, on_reply=replies)
    hello = {"chat_id": "c-1", "message": {"kind": "operator", "text": "Hi"}}
    with LocalServer(server) as local:
        assert post(f"{local.url}/channel/s3cr3t-segment/send_message", hello).json() == {
            "result": "ok"
        }
        for path in ("/channel/nope/send_message", "/channel/send_message"):
            refused = post(local.url + path, hello)
            assert (refused.status_code, refused.json()) == (403, {"error": "forbidden"})
        assert post(f"{local.url}/elsewhere/s3cr3t-segment/send_message", hello).status_code == 404
        assert (
            requests.get(f"{local.url}/channel/s3cr3t-segment/send_message", timeout=5).status_code
            == 405
        )
    assert texts(replies.items) == ["Hi"]
    assert "s3cr3t" not in repr(server)
    server.close()
    with pytest.raises(ConfigurationError):
        ChannelServer()


def test_dedupe_by_idempotency_header_and_body_window() -> None:
    replies = Seen()
    server = ChannelServer(token=CHANNEL_TOKEN, inline=True, on_reply=replies)
    body = {"chat_id": 1, "message": {"kind": "operator", "text": "same"}}
    other = {"chat_id": 1, "message": {"kind": "operator", "text": "other"}}
    with LocalServer(server) as local:
        url = local.url + "/send_message"
        post(url, body, CHANNEL_TOKEN, **{"Idempotency-Key": "k-1"})
        post(url, other, CHANNEL_TOKEN, **{"Idempotency-Key": "k-1"})  # same key: a repeat
        post(url, body, CHANNEL_TOKEN, **{"Idempotency-Key": "k-2"})  # new key: shown
        assert texts(replies.items) == ["same", "same"]
    server.close()

    off = Seen()
    undeduped = ChannelServer(token=CHANNEL_TOKEN, inline=True, on_reply=off, dedupe_window=None)
    with LocalServer(undeduped) as local:
        for _ in range(2):
            post(local.url + "/send_message", body, CHANNEL_TOKEN)
    assert texts(off.items) == ["same", "same"]
    undeduped.close()


def test_a_handler_that_raises_is_retried_then_dead_lettered() -> None:
    calls: list[SendMessage] = []
    runtime = Runtime(max_turn_attempts=2)
    server = ChannelServer(token=CHANNEL_TOKEN, runtime=runtime)

    @server.on_reply
    def broken(reply: SendMessage) -> None:
        calls.append(reply)
        raise RuntimeError("the screen is off")

    body = {"chat_id": 3, "message": {"kind": "operator", "text": "Hi"}}
    with LocalServer(server) as local:
        answer = post(local.url + "/send_message", body, CHANNEL_TOKEN)
        assert answer.json() == {"result": "ok"}  # stored: the handler runs afterwards
        assert wait_until(lambda: runtime.store.dead_letters() != [], 15)
    [dead] = runtime.store.dead_letters()
    assert dead.queue == "inbox" and dead.last_error is not None
    assert "the screen is off" in dead.last_error
    assert len(calls) == 2
    runtime.close()


# =============================================================================================
# the web chat example under ``flask run``


@contextmanager
def flask_run(module: str, port: int, env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", module, "run", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_web_chat_example(tmp_path: Path) -> None:
    port = free_port()
    with FakeAgentPlatform(
        channel_url=f"http://127.0.0.1:{port}/channel",
        channel_token="web-chat-token",
        echo_prefix="You said: ",
    ) as fake:
        env = {
            "OMNICHANNEL_PLATFORM_URL": fake.webhook_url,
            "OMNICHANNEL_CHANNEL_TOKEN": "web-chat-token",
            "OMNICHANNEL_STORE": f"sqlite:///{tmp_path / 'web_chat.db'}",
        }
        with flask_run("examples.web_chat_channel", port, env) as base:
            assert "<script>" in requests.get(base + "/", timeout=5).text
            seen: list[dict[str, Any]] = []

            def transcript(count: int) -> Callable[[], bool]:
                def enough() -> bool:
                    answer = requests.get(
                        f"{base}/api/messages", params={"chat": 12, "after": len(seen)}, timeout=5
                    )
                    seen.extend(answer.json()["messages"])
                    return len(seen) >= count

                return enough

            fake.reply_next("Pick one", Keyboard(buttons=[[Button(id="y", text="Yes")]]))
            assert post(base + "/api/send", {"chat": 12, "text": "hello"}).json() == {"ok": True}
            assert wait_until(transcript(3), 15), seen
            assert seen[0] == {"from": "visitor", "text": "hello"}
            assert seen[1] == {"from": "agent", "text": "Pick one"}
            assert seen[2] == {"from": "agent", "buttons": [[{"id": "y", "text": "Yes"}]]}
            post(base + "/api/send", {"chat": 12, "button": {"id": "y", "text": "Yes"}})
            assert wait_until(transcript(5), 15), seen
            assert seen[4] == {"from": "agent", "text": "You said: Yes"}
            fake.close_chat(12)
            assert wait_until(transcript(6), 15), seen
            assert seen[5]["from"] == "system"
            [hello, press] = fake.messages
            assert hello.variables["channel_visitor_id"] == "web-12"
            assert press.kind == "keyboard_response" and press.text == "Yes"
            assert all(a.delivered for a in fake.answers)
