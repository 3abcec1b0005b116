"""The command line as a user runs it: ``omnichannel serve`` and ``omnichannel demo``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from omnichannel import NO_ACTIVE_CHANNEL, Bot, ConfigurationError
from omnichannel.cli import load_bot
from omnichannel.testing import RecordingChannelServer, button_event, file_event, text_event
from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "cli-token"
CHANNEL_TOKEN = "cli-channel-token"


@contextmanager
def serve(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    command = [sys.executable, "-m", "omnichannel", "serve", "--port", str(port), *args]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ok = wait_until(lambda: _healthy(base) or process.poll() is not None, timeout=20)
        if process.poll() is not None or not ok:
            raise AssertionError(
                process.stderr.read().decode() if process.stderr else "serve did not start"
            )
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _healthy(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


def post(url: str, payload: object) -> requests.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)


def test_serve_follows_the_status_contract_and_echoes(tmp_path: Path) -> None:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        args = ["--token", TOKEN, "--channel-url", channel.channel_url, "--channel-token", CHANNEL_TOKEN,
                "--store", f"sqlite:///{tmp_path / 'serve.db'}"]  # fmt: skip
        with serve(args) as (base, process):
            url = base + f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
            channel.fail_next(2, status=503)
            assert post(url, text_event("hello", chat_id=1, message_id="a")).json() == {
                "result": "ok"
            }
            assert (
                post(url, file_event("https://f/x.pdf", file_id="fx", chat_id=1)).status_code == 200
            )
            assert (
                post(url, file_event("https://f/y.pdf", state="processing", chat_id=1)).status_code
                == 200
            )
            assert post(url, button_event("Yes", chat_id=1)).status_code == 200
            for _ in range(3):
                assert post(url, text_event("thrice", chat_id=2, message_id="t")).status_code == 200
            calls = channel.wait_for(4, timeout=20)
            assert channel.texts(1) == ["hello", "file:application/pdf|fx|https://f/x.pdf", "Yes"]
            assert channel.texts(2) == ["thrice"]
            assert all(c.headers["Authorization"] == f"Token {CHANNEL_TOKEN}" for c in calls)
            assert [s for s, _ in channel.refused] == [503, 503]

            bad_token = post(url.replace(TOKEN, "x"), text_event("no"))
            assert (bad_token.status_code, bad_token.json()) == (400, {"error": NO_ACTIVE_CHANNEL})
            missing = post(url, {"event": "new_message", "chat_id": 1})
            assert missing.status_code == 400
            assert "message" in missing.json()["error"]
            assert post(url, {"event": "typing", "chat_id": 1}).status_code == 200
            assert post(url, b"garbage").status_code == 500
            assert post(base + "/nowhere", text_event("x")).status_code == 404
            time.sleep(0.3)
            assert len(channel.calls) == 4

            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
            log = process.stderr.read().decode() if process.stderr else ""
    assert TOKEN not in log
    assert CHANNEL_TOKEN not in log
    assert "accepted" in log
    assert "stopped (all turns answered and replies delivered)" in log


def test_sigterm_finishes_queued_replies_before_exiting(tmp_path: Path) -> None:
    bot_file = tmp_path / "slow_bot.py"
    bot_file.write_text(
        "import time\nfrom omnichannel import Bot\nbot = Bot()\n"
        "@bot.on_text\ndef slow(turn):\n    time.sleep(1.0)\n    return 'slow ' + turn.text\n"
    )
    with RecordingChannelServer() as channel:
        env = {"OMNICHANNEL_TOKEN": TOKEN, "OMNICHANNEL_CHANNEL_URL": channel.channel_url,
               "OMNICHANNEL_BOT": f"{bot_file}:bot", "OMNICHANNEL_STORE": f"sqlite:///{tmp_path / 's.db'}"}  # fmt: skip
        with serve([], env) as (base, process):
            url = base + f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
            for i in range(3):
                assert post(url, text_event(f"m{i}", chat_id=i)).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        assert sorted(channel.texts()) == ["slow m0", "slow m1", "slow m2"]


def test_serve_without_required_flags_explains_what_is_missing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omnichannel", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("OMNICHANNEL_")},
    )  # fmt: skip
    assert result.returncode == 2
    assert "--token" in result.stderr
    assert "--channel-url" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_a_bad_store_url_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omnichannel", "serve", "--token", "t", "--channel-url", "http://127.0.0.1:1/x", "--store", "mongo://x"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "store" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_and_prints_the_conversation() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omnichannel", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "file:application/pdf|f-1|https://files.example/invoice.pdf" in out
    assert "not processed: the file is not ready" in out
    assert "channel_chat_id            4242|omnichannel" in out
    assert "all steps as expected" in out
    assert "store           sqlite" in out


def test_load_bot_accepts_module_and_file_specs(tmp_path: Path) -> None:
    assert isinstance(load_bot("examples.echo_bot:bot"), Bot)
    path = tmp_path / "factory.py"
    path.write_text("from omnichannel import Bot\ndef make():\n    return Bot()\n")
    assert isinstance(load_bot(f"{path}:make"), Bot)
    with pytest.raises(ConfigurationError, match="no attribute"):
        load_bot("examples.echo_bot:missing")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_bot("no_such_module:bot")
