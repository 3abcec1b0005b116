"""The connector's lifespan under FastAPI / Starlette: started on startup, closed on shutdown, so
a turn in flight at SIGTERM is finished and its reply delivered before the process ends, whether
the connector is mounted (``app.mount`` + ``omnichannel_lifespan``) or included
(``fastapi_router``). Mounted with no lifespan at all, a warning says so and the durable store
still runs the cut-short turn at the next start. Real uvicorn processes, a SQLite store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from omnichannel import Connector
from omnichannel.runtime.stores import INBOX, OUTBOX
from omnichannel.testing import RecordingChannelServer, text_event
from tests.helpers import free_port, wait_until
from tests.processes import opened

pytest.importorskip("fastapi")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "lifespan-token"
CHANNEL_TOKEN = "lifespan-channel-token"
WEBHOOK = f"/bot/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"


class Uvicorn:
    """``uvicorn tests.fastapi_app:app`` in its own process, its log in a file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHANNEL_")}
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**base, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.session = requests.Session()
        self.session.trust_env = False
        if not wait_until(lambda: self._ready() or self.process.poll() is not None, 30):
            self.stop()
            pytest.fail("uvicorn did not start")
        if self.process.poll() is not None:
            log = self.log()
            self.stop()
            pytest.fail(f"uvicorn exited at start: {log}")

    def _ready(self) -> bool:
        try:
            return self.session.get(self.url + "/ready", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    def post(self, event: dict[str, Any]) -> requests.Response:
        return self.session.post(self.url + WEBHOOK, data=json.dumps(event), timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM; the exit status."""
        self.session.close()  # no idle keep-alive connection for uvicorn to wait on
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.session.close()
        self._log.close()


@contextmanager
def uvicorn_app(env: dict[str, str]) -> Iterator[Uvicorn]:
    server = Uvicorn(env)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["lifespan", "router", "mount"])
def test_sigterm_mid_turn_delivers_the_reply_once(mode: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'bot.db'}"
    marks = tmp_path / "marks"
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        env = {
            "OMNICHANNEL_TEST_ASGI_MODE": mode,
            "OMNICHANNEL_TOKEN": TOKEN,
            "OMNICHANNEL_CHANNEL_URL": channel.channel_url,
            "OMNICHANNEL_CHANNEL_TOKEN": CHANNEL_TOKEN,
            "OMNICHANNEL_STORE": store,
        }
        slow = {**env, "OMNICHANNEL_TEST_BOT_DELAY": "2", "OMNICHANNEL_TEST_BOT_MARKS": str(marks)}
        with uvicorn_app(slow) as first:
            # the shim's paths are relative to the mount: /bot/healthz, the webhook under /bot
            health = first.session.get(first.url + "/bot/healthz", timeout=5)
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            assert first.session.get(first.url + "/healthz", timeout=5).status_code == 404
            response = first.post(text_event("slow", chat_id=7, message_id="m-slow"))
            assert (response.status_code, response.json()) == (200, {"result": "ok"})
            assert wait_until(lambda: marks.exists() and "7 slow" in marks.read_text(), 15)
            assert channel.calls == []  # the turn is in flight
            # uvicorn re-raises the SIGTERM once it has shut down gracefully
            assert first.terminate() in (0, -signal.SIGTERM), first.log()
            log = first.log()
        if mode == "mount":
            # nothing closed the connector: the turn was cut short; the store kept it (its
            # lease names the dead process), so the next start runs it again
            assert "no lifespan started it" in log
        else:
            # shutdown closed the connector: the running turn finished and its reply went out
            # before the process ended (not at the next start)
            assert "no lifespan" not in log
            assert channel.texts(7) == ["slow"], log
            with opened(store) as inspect:
                assert (inspect.pending(INBOX), inspect.pending(OUTBOX)) == (0, 0)

        with uvicorn_app(env) as second:
            again = second.post(text_event("slow", chat_id=7, message_id="m-slow"))  # a retry
            assert again.status_code == 200
            barrier = second.post(text_event("again", chat_id=7, message_id="m-again"))
            assert barrier.status_code == 200
            # one chat's replies go out in order: "again" arriving means nothing came before it
            channel.wait_for(lambda: "again" in channel.texts(7), 15)
            assert second.terminate() in (0, -signal.SIGTERM), second.log()
        assert channel.texts(7) == ["slow", "again"]


# in-process: the lifespan objects --------------------------------------------------------------
class Spy:
    """Records the lifecycle calls made on a connector."""

    def __init__(self, connector: Connector) -> None:
        self.calls: list[str] = []
        start, close = connector.start, connector.close

        def spied_start() -> None:
            self.calls.append("start")
            start()

        def spied_close(timeout: float | None = 10.0) -> bool:
            self.calls.append("close")
            return close(timeout)

        connector.start = spied_start  # type: ignore[method-assign]
        connector.close = spied_close  # type: ignore[method-assign]


def make_connector(channel_url: str) -> Connector:
    return Connector(token=TOKEN, channel_url=channel_url, channel_token=CHANNEL_TOKEN)


def test_omnichannel_lifespan_inside_your_own_lifespan() -> None:
    from omnichannel.integrations.asgi import omnichannel_lifespan

    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = make_connector(channel.channel_url)
        spy = Spy(connector)
        seen: list[str] = []

        @asynccontextmanager
        async def lifespan(app: object) -> Any:
            async with omnichannel_lifespan(connector):
                seen.append(f"inside {spy.calls}")
                yield

        async def main() -> None:
            async with lifespan(None):
                pass

        asyncio.run(main())
        assert seen == ["inside ['start']"]
        assert spy.calls == ["start", "close"]


def test_asgi_app_answers_a_failed_start_with_startup_failed() -> None:
    from omnichannel.integrations.asgi import asgi_app

    class Broken:
        def handle(self, request: Any) -> Any:
            raise AssertionError("not reached")

        def start(self) -> None:
            raise RuntimeError("the store is down")

    sent: list[dict[str, Any]] = []

    async def main() -> None:
        messages = iter([{"type": "lifespan.startup"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(dict(message))

        await asgi_app(Broken())({"type": "lifespan"}, receive, send)

    asyncio.run(main())
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "the store is down" in sent[0]["message"]


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 15), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_starlette_mount_serves_healthz_and_the_webhook_under_the_prefix() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from omnichannel.integrations.asgi import asgi_app

    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = make_connector(channel.channel_url)
        spy = Spy(connector)
        bot = asgi_app(connector)
        app = Starlette(routes=[Mount("/bot", app=bot)], lifespan=bot.lifespan)
        with uvicorn_thread(app) as base:
            assert spy.calls == ["start"]
            health = requests.get(base + "/bot/healthz", timeout=5)
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            assert requests.get(base + "/healthz", timeout=5).status_code == 404
            event = json.dumps(text_event("hi", chat_id=3, message_id="mounted-1"))
            response = requests.post(base + WEBHOOK, data=event, timeout=5)
            assert (response.status_code, response.json()) == (200, {"result": "ok"})
            assert channel.wait_for(1)[0].text == "hi"
            # the mount's own paths: the webhook's full path below /bot, nothing else
            inner = WEBHOOK.removeprefix("/bot")
            assert requests.post(base + inner, data=event, timeout=5).status_code == 404
            doubled = requests.post(base + "/bot" + WEBHOOK, data=event, timeout=5)
            assert doubled.status_code == 404
            wrong = requests.post(base + WEBHOOK.replace(TOKEN, "nope"), data=event, timeout=5)
            assert wrong.status_code == 400
        assert spy.calls == ["start", "close"]
        assert len(channel.calls) == 1


def test_fastapi_router_under_a_prefix_runs_the_lifespan() -> None:
    from fastapi import FastAPI

    from omnichannel.integrations.fastapi import fastapi_router

    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = make_connector(channel.channel_url)
        spy = Spy(connector)
        app = FastAPI()
        app.include_router(fastapi_router(connector, healthz="/healthz"), prefix="/bot")
        with uvicorn_thread(app) as base:
            assert spy.calls == ["start"]
            health = requests.get(base + "/bot/healthz", timeout=5)
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            event = json.dumps(text_event("hi", chat_id=4, message_id="routed-1"))
            response = requests.post(base + WEBHOOK, data=event, timeout=5)
            assert (response.status_code, response.json()) == (200, {"result": "ok"})
            assert channel.wait_for(1)[0].text == "hi"
            wrong = requests.post(base + WEBHOOK.replace(TOKEN, "nope"), data=event, timeout=5)
            assert (wrong.status_code, wrong.json()["error"][:8]) == (400, "There is")
            assert requests.get(base + WEBHOOK, timeout=5).status_code == 405
            assert "/bot" + WEBHOOK not in requests.get(base + "/openapi.json", timeout=5).text
        assert spy.calls == ["start", "close"]
