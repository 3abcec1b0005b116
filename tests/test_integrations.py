"""Each framework shim through its real framework serving real HTTP: the examples, started the
way their docstrings say (Flask, Django, uvicorn for ASGI, gunicorn for WSGI)."""

from __future__ import annotations

import json
import os
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
            time.sleep(0.3)
            assert len(channel.calls) == 3
