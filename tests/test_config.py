"""``omnichannel serve --config``: one real process hosting every channel kind, driven over HTTP by
the fake platforms on 127.0.0.1; ``check``; and every misconfiguration is exit status 2 with one
line on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from omnichannel.config import load_config
from omnichannel.errors import ConfigurationError
from omnichannel.testing import RecordingChannelServer
from omnichannel.testing.events import text_event
from omnichannel.testing.omnidesk import FakeOmnidesk
from omnichannel.testing.pagemessenger import FakePageMessenger
from omnichannel.testing.webex import FakeWebexConnect
from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "OC_TOKEN": "cfg-token-1a2b",
    "OC_CHANNEL_TOKEN": "cfg-channel-token-3c4d",
    "DESK_SECRET": "cfg-desk-secret-5e6f",
    "DESK_KEY": "fake-omnidesk-api-key",
    "CUSTOM_SECRET": "cfg-custom-secret-7a8b",
    "WEBEX_VERIFY": "cfg-webex-verify-9c0d",
    "WEBEX_SECRET": "cfg-webex-secret-1e2f",
    "PM_KEY": "cfg-pm-key-3a4b",
    "PM_SECRET": "cfg-pm-secret-5c6d",
}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHANNEL_")}
    return {**base, **(extra or {})}


def omnichannel(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "omnichannel", *args],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr


@contextmanager
def serving(config: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "omnichannel", "serve", "--config", str(config),
             "--port", str(port)],
            cwd=ROOT, env=_env(env), stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        healthy = wait_until(lambda: _ok(url + "/healthz") or process.poll() is not None, 20)
        assert healthy and process.poll() is None, log.read_text()
        yield url, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


def test_one_serve_hosts_every_channel_kind(tmp_path: Path) -> None:
    with (
        RecordingChannelServer(token=SECRETS["OC_CHANNEL_TOKEN"]) as channel,
        FakeOmnidesk(api_key=SECRETS["DESK_KEY"]) as desk,
        FakeWebexConnect(SECRETS["WEBEX_VERIFY"], time_factor=0.001) as webex,
        FakePageMessenger(api_key=SECRETS["PM_KEY"]) as pm,
    ):
        config = tmp_path / "omnichannel.toml"
        config.write_text(f"""
store = "sqlite:///{tmp_path / "store.db"}"

[runtime]
workers = 4

[[channel]]
kind = "omnichannel"
token = "${{OC_TOKEN}}"
channel_url = "{channel.channel_url}"
channel_token = "${{OC_CHANNEL_TOKEN}}"

[[channel]]
kind = "omnichannel"
name = "ai-visitors"
token = "ai-visitors-token"
channel_url = "{channel.channel_url}"
channel_token = "${{OC_CHANNEL_TOKEN}}"

[[channel]]
kind = "omnidesk"
base_url = "{desk.url}"
staff_email = "{desk.email}"
api_key = "${{DESK_KEY}}"
secret = "${{DESK_SECRET}}"

[[channel]]
kind = "omnidesk-custom"
base_url = "{desk.url}"
staff_email = "{desk.email}"
api_key = "${{DESK_KEY}}"
channel = "cch1"
secret = "${{CUSTOM_SECRET}}"
bridge = ["omnichannel"]

[[channel]]
kind = "webex"
webhook_url = "{webex.webhook_url}"
verification_token = "${{WEBEX_VERIFY}}"
secret = "${{WEBEX_SECRET}}"

[[channel]]
kind = "pagemessenger"
api_key = "${{PM_KEY}}"
task_id = "task-1"
secret = "${{PM_SECRET}}"
channel = "ai-visitors"
base_url = "{pm.base_url}"
""")
        code, out = omnichannel("check", "--config", str(config), env=SECRETS)
        assert code == 0, out
        with serving(config, SECRETS) as (url, log):
            # the omnichannel connector (its bot wrapped by the Omnidesk bridge)
            webhook = f"{url}/connector/omnichannel/omnichannel_message/{SECRETS['OC_TOKEN']}"
            answer = requests.post(webhook + "/bot_api_webhook", json=text_event("hi", chat_id=7))
            assert answer.status_code == 200
            channel.wait_for(1)
            assert channel.texts(7) == ["hi"]
            # a wrong token reaches the connector, which answers the seed's 400
            wrong = f"{url}/connector/omnichannel/omnichannel_message/nope/bot_api_webhook"
            assert requests.post(wrong, json=text_event("x")).status_code == 400
            assert requests.post(f"{url}/api{webhook[len(url) :]}").status_code == 404
            # Omnidesk rules
            case_id = desk.open_case("Hello desk")
            rules = f"{url}/omnidesk/rules/{SECRETS['DESK_SECRET']}"
            assert desk.fire_rule(rules, case_id, new_case=True).status_code == 200
            assert wait_until(lambda: desk.staff_texts(case_id) == ["Hello desk"], 20)
            assert requests.post(f"{url}/omnidesk/rules/wrong", json={}).status_code == 403
            # Webex Connect
            webex.bot_url = f"{url}/webex/{SECRETS['WEBEX_SECRET']}"
            assert webex.send_message("conv-1", "hello webex").wait().state == "delivered"
            assert wait_until(lambda: webex.texts("conv-1") == ["hello webex"], 20)
            # Page messenger: the second connector's visitors talk to the AI task
            pm.webhook_url = f"{url}/pagemessenger/{SECRETS['PM_SECRET']}"
            ai = f"{url}/connector/omnichannel/omnichannel_message/ai-visitors-token"
            assert requests.post(ai + "/bot_api_webhook", json=text_event("to the AI", chat_id=9))
            pm.wait_for_messages(1)
            assert wait_until(lambda: channel.texts(9) == ["AI: to the AI"], 20)
            metrics = requests.get(url + "/metrics", timeout=10).text
            text = log.read_text()
        # /metrics counts each channel's turns (the pagemessenger AI answer is a turn too)
        for channel_label in ("omnichannel:omnichannel", "omnidesk:omnidesk", "webex:webex",
                              "pagemessenger:pagemessenger"):  # fmt: skip
            line = f'omnichannel_turns_accepted_total{{channel="{channel_label}"}}'
            assert any(
                m.startswith(line) and float(m.split()[-1]) >= 1 for m in metrics.splitlines()
            ), (channel_label, metrics)
        for secret in SECRETS.values():
            if secret != SECRETS["DESK_KEY"]:  # the fake's well-known default key
                assert secret not in text
        # one line per channel at start, secrets masked
        assert text.count("channel ") >= 6
        assert "omnidesk 'omnidesk' at /omnidesk/rules/***" in text
        assert "webex 'webex' at /webex/***" in text


def test_the_config_names_the_key_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    cases = {
        '[[channel]]\nkind = "omnichannel"\ntoken = "${NOT_SET_ANYWHERE}"\nchannel_url = "x"\n': (
            "bad.toml: channel[0].token: the environment variable NOT_SET_ANYWHERE is not set"
        ),
        '[[channel]]\nkind = "omnichannel"\ntokn = "t"\n': "channel[0].tokn: unknown key",
        '[[channel]]\nkind = "omnichannel"\ntoken = "t"\n': "channel[0].channel_url: required",
        '[[channel]]\nkind = "telegram"\n': "channel[0].kind: expected one of",
        '[runtime]\nworkers = "many"\n': "runtime.workers: expected int",
        "[server]\nthreads = 0\n": "server.threads: must be 1 or more",
        "channel = [": "not valid TOML",
        "": "give at least one [[channel]] table",
    }
    for text, expected in cases.items():
        config.write_text(text)
        with pytest.raises(ConfigurationError) as raised:
            load_config(config)
        assert expected in str(raised.value), text
        assert str(config) in str(raised.value)
    with pytest.raises(ConfigurationError, match="no such file"):
        load_config(tmp_path / "missing.toml")


def test_every_misconfiguration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    base = ("--token", "t", "--channel-url", "http://127.0.0.1:9/c")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    try:
        cases = [
            (("serve", *base, "--port", port, "--store", "memory://"), "cannot listen on"),
            (("serve", *base, "--workers", "0"), "--workers must be 1 or more"),
            (("serve", *base, "--http-threads", "0"), "--http-threads must be 1 or more"),
            (("serve", *base, "--port", "eighty"), "--port expects a number"),
            (("serve", *base, "--bot", "/missing/x.py:bot"), "no such file /missing/x.py"),
            (("serve", *base, "--bot", "no_such_module_x:bot"), "cannot import"),
            (("serve", *base, "--store", "postgres://u:pw@h/db"), "store"),
            (("serve", "--config", str(tmp_path / "nope.toml")), "no such file"),
            (("check",), "missing --token and --channel-url"),
            (("outbox", "list", "--store", "mysql://x"), "store"),
            (("serve", "--no-such-flag"), "unrecognized arguments"),
        ]
        for args, expected in cases:
            code, err = omnichannel(*args)
            lines = err.strip().splitlines()
            assert code == 2, (args, err)
            assert len(lines) == 1 and expected in lines[0], (args, err)
            assert "Traceback" not in err and "pw" not in err
    finally:
        busy.close()


def test_outbox_takes_the_store_on_either_side(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 's.db'}"
    for args in (("outbox", "--store", store, "list"), ("outbox", "list", "--store", store)):
        done = subprocess.run(
            [sys.executable, "-m", "omnichannel", *args],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "0 turns waiting, 0 replies pending, 0 dead" in done.stdout
    assert (tmp_path / "s.db").exists()


def test_a_bot_in_the_current_directory_is_found(tmp_path: Path) -> None:
    (tmp_path / "mybot.py").write_text(
        "from omnichannel import Bot\nbot = Bot()\nbot.on_text(lambda turn: 'mine')\n"
    )
    code, err = omnichannel(
        "check", "--bot", "mybot:bot", "--token", "t", "--channel-url", "http://127.0.0.1:9/c",
        "--store", "memory://", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err


def test_the_example_config_is_valid() -> None:
    names = ("OMNICHANNEL_TOKEN", "OMNICHANNEL_CHANNEL_URL", "OMNICHANNEL_CHANNEL_TOKEN",
             "OMNIDESK_API_KEY", "OMNIDESK_RULE_SECRET", "OMNIDESK_CUSTOM_SECRET",
             "WEBEX_WEBHOOK_URL", "WEBEX_VERIFICATION_TOKEN", "WEBEX_PATH_SECRET",
             "SITE_CHAT_TOKEN", "SITE_CHAT_URL", "PAGEMESSENGER_API_KEY",
             "PAGEMESSENGER_TASK_ID", "PAGEMESSENGER_SECRET")  # fmt: skip
    env = {name: f"value-{i}" for i, name in enumerate(names)}
    env.update(OMNICHANNEL_CHANNEL_URL="http://127.0.0.1:9/c", SITE_CHAT_URL="http://127.0.0.1:9/s",
               WEBEX_WEBHOOK_URL="http://127.0.0.1:9/e")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "omnichannel", "check", "--config", "examples/omnichannel.toml",
         "--store", "memory://"],
        cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok: 6 channel(s), store memory://"
    assert all(env[n] not in done.stdout for n in ("OMNIDESK_RULE_SECRET", "WEBEX_PATH_SECRET"))


def test_check_prints_each_channel_with_its_path_and_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "omnichannel.toml"
    config.write_text(
        'store = "memory://"\n[[channel]]\nkind = "webex"\nwebhook_url = "http://127.0.0.1:9/e"\n'
        'verification_token = "${V}"\nsecret = "${S}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "omnichannel", "check", "--config", str(config)],
        cwd=ROOT, env=_env({"V": "verify-x", "S": "secret-segment-y"}), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "webex 'webex' at /webex/***",
        "ok: 1 channel(s), store memory://",
    ]
    assert json.dumps(done.stdout).find("secret-segment-y") == -1


def test_a_channel_server_in_the_config_receives_the_platforms_answers(tmp_path: Path) -> None:
    replies = tmp_path / "replies.txt"
    (tmp_path / "shown.py").write_text(
        "import os\n"
        "def show(call):\n"
        "    with open(os.environ['REPLIES'], 'a') as f:\n"
        "        f.write(f'{call.chat_id} {call.message.text}\\n')\n"
    )
    config = tmp_path / "omnichannel.toml"
    config.write_text(
        'store = "memory://"\n[[channel]]\nkind = "channel-server"\ntoken = "${PLATFORM_TOKEN}"\n'
        'on_reply = "shown:show"\n'
    )
    env = {
        "PLATFORM_TOKEN": "platform-token-42",
        "REPLIES": str(replies),
        "PYTHONPATH": str(tmp_path),
    }
    with serving(config, env) as (url, _):
        body = {"chat_id": 5, "message": {"kind": "operator", "text": "Hello from the agent"}}
        headers = {"Authorization": "Token platform-token-42"}
        answer = requests.post(f"{url}/channel/send_message", json=body, headers=headers)
        assert answer.status_code == 200 and answer.json() == {"result": "ok"}
        assert requests.post(f"{url}/channel/send_message", json=body).status_code == 401
        assert wait_until(lambda: replies.exists() and replies.read_text(), 10)
    assert replies.read_text() == "5 Hello from the agent\n"
