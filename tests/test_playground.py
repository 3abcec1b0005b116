"""``omnichannel playground``: the real pipeline with fake platforms, and its page.

The model tests drive the playground through its HTTP actions (as the page does); the browser
test drives the page itself in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, through selenium with the driver's path given, so no browser or driver is
downloaded). Under ``CI=true`` a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from omnichannel.playground import Playground
from omnichannel.playground.players import PageMessengerPlayer
from omnichannel.playground.server import STATIC_FILES

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "omnichannel.playground.sample:bot"
OMNICHANNEL, OMNIDESK, WEBEX = "omnichannel:omnichannel", "omnidesk:omnidesk", "webex:webex"
PAGE = "omnichannel:pagemessenger-site"  # the connector whose bot is the Page-messenger bridge
ARTIFACTS = Path(os.environ.get("OMNICHANNEL_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll a model condition (the server side; the browser test uses WebDriverWait)."""
    end = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.02)


@pytest.fixture
def playground() -> Iterator[Playground]:
    with Playground(bot=SAMPLE, store="memory://") as running:
        yield running


def act(pg: Playground, action: str, **data: Any) -> dict[str, Any]:
    response = requests.post(
        f"{pg.url}/api/{action}", json=data, headers={"X-Playground": "1"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def bot_texts(pg: Playground, channel: str) -> list[str]:
    return [m["text"] for m in pg.snapshot()["chats"][channel]["messages"] if m["role"] == "bot"]


def exchange(pg: Playground, xid: str) -> dict[str, Any]:
    return pg.exchanges[xid]


# the model -----------------------------------------------------------------------------------
def test_each_channel_is_played_through_its_real_webhook(playground: Playground) -> None:
    pg = playground
    for channel in (OMNICHANNEL, OMNIDESK, WEBEX):
        answer = act(pg, "send", channel=channel, text="hello")
        assert answer["status"] == 200  # the channel's own answer to the real webhook
        wait_until(lambda c=channel: any("You said: hello" in t for t in bot_texts(pg, c)))
        x = exchange(pg, answer["exchange"])
        wait_until(lambda x=x: x["items"] and x["items"][0]["state"] == "delivered")
        assert x["turn"]["state"] == "done"
        assert x["bot"]["text"] == "hello" and x["bot"]["replies"] == 1
        assert x["items"][0]["calls"][0]["status"] in (200, 201)
    # each platform's own wire: the connector's /send_message, Omnidesk's staff message, 1001
    calls = {
        c: [call for x in pg.exchanges.values() if x["channel"] == c for i in x["items"]
            for call in i["calls"]]
        for c in (OMNICHANNEL, OMNIDESK, WEBEX)
    }  # fmt: skip
    assert calls[OMNICHANNEL][0]["path"] == "/channel/send_message"
    assert calls[OMNIDESK][0]["path"].endswith("/messages.json")
    assert '"eventid": "1001"' in calls[WEBEX][0]["body"]
    webex = next(x for x in pg.exchanges.values() if x["channel"] == WEBEX)
    assert "verification token" in webex["inbound"]["note"]
    # secrets never reach the page
    text = json.dumps(pg.snapshot())
    for secret in pg._secrets:
        assert secret not in text
    assert "/***/bot_api_webhook" in text


def test_buttons_on_omnichannel_numbers_elsewhere(playground: Playground) -> None:
    pg = playground
    act(pg, "send", channel=OMNICHANNEL, text="menu")
    keyboard = wait_until(
        lambda: [m for m in pg.snapshot()["chats"][OMNICHANNEL]["messages"] if m["buttons"]]
    )
    assert [b["text"] for b in keyboard[0]["buttons"][0]] == ["Delivery", "Returns"]
    act(pg, "press", channel=OMNICHANNEL, id="returns", text="Returns")
    wait_until(
        lambda: "You chose Returns. Type 'menu' to choose again." in bot_texts(pg, OMNICHANNEL)
    )
    for channel in (OMNIDESK, WEBEX):
        act(pg, "send", channel=channel, text="menu")
        wait_until(lambda c=channel: any("2. Returns" in t for t in bot_texts(pg, c)))
        act(pg, "send", channel=channel, text="2")
        wait_until(lambda c=channel: any("You chose Returns" in t for t in bot_texts(pg, c)))
    state = wait_until(lambda: (pg.snapshot()["states"].get(OMNIDESK) or {}).get("conversation"))
    assert state["state"]["choice"] == "Returns"
    assert [line[0] for line in state["history"]][:2] == ["user", "bot"]


def test_a_file_still_uploading_waits_until_it_is_ready(playground: Playground) -> None:
    pg = playground
    response = requests.post(
        f"{pg.url}/api/file?channel={OMNICHANNEL}&name=invoice.pdf&state=uploading",
        data=b"%PDF-1.4 test",
        headers={"X-Playground": "1", "Content-Type": "application/pdf"},
        timeout=10,
    )
    assert response.status_code == 200
    first = response.json()
    x = exchange(pg, first["exchange"])
    assert first["status"] == 200 and x["turn"] is None  # acknowledged, nothing to run
    assert any("nothing was stored" in note for note in x["notes"])
    assert '"state": "uploading"' in x["inbound"]["body"]
    served = requests.get(f"{pg.url}/files/{first['file']}/invoice.pdf", timeout=5)
    assert served.content == b"%PDF-1.4 test"
    act(pg, "file-ready", channel=OMNICHANNEL, file=first["file"])
    wait_until(lambda: any("invoice.pdf" in t for t in bot_texts(pg, OMNICHANNEL)))


def test_dead_letters_retry_and_drop(playground: Playground) -> None:
    pg = playground
    act(pg, "platform", channel=OMNICHANNEL, mode="refuse")
    act(pg, "send", channel=OMNICHANNEL, text="one")
    act(pg, "send", channel=OMNICHANNEL, text="two")
    dead = wait_until(lambda: len(pg.snapshot()["queues"].get("dead", [])) == 2 and
                      pg.snapshot()["queues"]["dead"])  # fmt: skip
    assert all("400" in d["error"] for d in dead)
    act(pg, "platform", channel=OMNICHANNEL, mode="ok")
    act(pg, "dead", id=dead[0]["id"], op="retry")
    act(pg, "dead", id=dead[1]["id"], op="drop")
    wait_until(lambda: any("You said: one" in t for t in bot_texts(pg, OMNICHANNEL)))
    wait_until(lambda: not pg.snapshot()["queues"]["dead"], what="no dead letters left")
    assert not any("You said: two" in t for t in bot_texts(pg, OMNICHANNEL))
    # a platform that fails once: the outbox retries, the wire shows both attempts
    act(pg, "platform", channel=WEBEX, mode="fail-next")
    x = exchange(pg, act(pg, "send", channel=WEBEX, text="three")["exchange"])
    wait_until(lambda: x["items"] and x["items"][0]["state"] == "delivered", timeout=15)
    assert [c["status"] for c in x["items"][0]["calls"]] == [503, 200]
    assert x["items"][0]["attempts"] == 2


def test_a_handover_leaves_the_bot_until_given_back(playground: Playground) -> None:
    pg = playground
    for channel in (OMNICHANNEL, OMNIDESK, WEBEX):
        act(pg, "send", channel=channel, text="operator")
        wait_until(lambda c=channel: pg.snapshot()["chats"][c]["operator"], what=channel)
    assert "redirect_chat (dep_key=support)" in pg.snapshot()["chats"][OMNICHANNEL]["operator"]
    # omnichannel: the chat is with the operator, nothing is posted; Omnidesk: the rule no
    # longer fires; Webex: the message is copied to the bot, which does not answer
    x = exchange(pg, act(pg, "send", channel=OMNICHANNEL, text="anyone?")["exchange"])
    assert x["inbound"] is None and "redirected" in x["notes"][0]
    x = exchange(pg, act(pg, "send", channel=OMNIDESK, text="anyone?")["exchange"])
    assert x["inbound"] is None and "did not fire" in x["notes"][0]
    x = exchange(pg, act(pg, "send", channel=WEBEX, text="anyone?")["exchange"])
    wait_until(lambda: x["turn"] and x["turn"]["state"] == "done")
    assert x["bot"] is None
    act(pg, "give-back", channel=OMNICHANNEL)
    act(pg, "send", channel=OMNICHANNEL, text="back")
    wait_until(lambda: any("You said: back" in t for t in bot_texts(pg, OMNICHANNEL)))
    act(pg, "new-chat", channel=WEBEX)
    assert pg.snapshot()["chats"][WEBEX]["operator"] is None


def test_page_messenger_the_ai_answers_through_the_bridge(playground: Playground) -> None:
    pg = playground
    player = pg.player(PAGE)
    assert pg.player("pagemessenger:pagemessenger") is player  # the bridge's items are its
    described = next(c for c in pg.snapshot()["channels"] if c["id"] == PAGE)
    assert described["title"] == "Page messenger" and "does not answer here" in described["hint"]
    x = exchange(pg, act(pg, "send", channel=PAGE, text="hello")["exchange"])
    wait_until(lambda: "AI: hello" in bot_texts(pg, PAGE))
    wait_until(lambda: len(x["items"]) == 2 and x["items"][1]["state"] == "delivered")
    # the visitor's webhook into the connector, whose bot is the bridge's
    assert x["inbound"]["status"] == 200 and "/***/bot_api_webhook" in x["inbound"]["path"]
    assert x["bot"]["who"].startswith("The bridge's bot") and x["bot"]["text"] == "hello"
    # the bridge's send_message_external, through the outbox, to the fake AI
    forward, answer = x["items"]
    assert forward["summary"] == "send_message_external: hello"
    assert forward["destination"] == "pagemessenger:pagemessenger"
    sent = forward["calls"][-1]
    assert sent["path"] == "/api/1.1/wf/send_message_external" and sent["status"] == 200
    assert '"chat_id": "pagemessenger-site:1001"' in sent["body"]
    # the AI's webhook back into the bridge (stored, run), then /send_message to the visitor
    relay = x["relays"][0]
    assert relay["inbound"]["path"] == "/pagemessenger/***" and relay["inbound"]["status"] == 200
    assert '"message_text": "AI: hello"' in relay["inbound"]["body"]
    assert relay["after_items"] == 1 and relay["turn"]["state"] == "done"
    assert answer["summary"] == "/send_message operator: AI: hello"
    assert answer["calls"][0]["path"] == "/channel/send_message"
    assert player.ai.messages[0].message == "hello" and player.ai.webhooks[0].status == 200
    # the AI hands over: the conversation leaves the bot, the bridge stops forwarding
    act(pg, "send", channel=PAGE, text="an operator please")
    wait_until(lambda: pg.snapshot()["chats"][PAGE]["operator"] == "the AI answered operator")
    wait_until(lambda: "I am passing you to a manager." in bot_texts(pg, PAGE))
    x = exchange(pg, act(pg, "send", channel=PAGE, text="anyone?")["exchange"])
    assert x["inbound"]["status"] == 200 and "does not forward" in x["notes"][0]
    wait_until(lambda: x["turn"] and x["turn"]["state"] == "done")
    assert not x["items"] and len(player.ai.messages) == 2
    act(pg, "give-back", channel=PAGE)
    assert pg.snapshot()["chats"][PAGE]["operator"] is None
    act(pg, "send", channel=PAGE, text="back")
    wait_until(lambda: "AI: back" in bot_texts(pg, PAGE))
    # the "Fake platform" panel is the AI's: refused, the forward is dead-lettered
    act(pg, "platform", channel=PAGE, mode="refuse")
    act(pg, "send", channel=PAGE, text="lost")
    dead = wait_until(lambda: pg.snapshot()["queues"].get("dead"))
    assert dead[0]["summary"] == "send_message_external: lost" and "400" in dead[0]["error"]
    state = wait_until(lambda: (pg.snapshot()["states"].get(PAGE) or {}).get("record"))
    assert state["bridge"]["ai_chat_id"] == "pagemessenger-site:1001"
    text = json.dumps(pg.snapshot())  # the fake's bearer tokens are masked too
    for secret in (*pg._secrets, *player.ai.issued_tokens):
        assert secret not in text


def test_config_mode_points_the_files_channels_at_fakes(tmp_path: Path) -> None:
    config = tmp_path / "omnichannel.toml"
    config.write_text(
        """
bot = "omnichannel.playground.sample:bot"
store = "sqlite:///production.db"

[[channel]]
kind = "omnichannel"
token = "${PLAYGROUND_TEST_TOKEN}"
channel_url = "https://chat.example.com/hook"
channel_token = "channel-secret-123"

[[channel]]
kind = "webex"
webhook_url = "https://webex.example.com/events/ABC"
verification_token = "verify-me-456"
service_key = "service-key-789"
access_token = "access-token-000"
secret = "path-secret-111"

[[channel]]
kind = "omnidesk"
base_url = "https://acme.omnidesk.ru"
staff_email = "bot@acme.example"
api_key = "${PLAYGROUND_TEST_OMNIDESK_KEY}"
secret = "rule-secret-222"
bot_label = 7

[[channel]]
kind = "pagemessenger"
api_key = "pm-api-key-333"
task_id = 1
secret = "pm-secret-444"
channel = "webex"

[[channel]]
kind = "pagemessenger"
name = "second"
api_key = "k"
task_id = 2
secret = "s"
channel = "webex"
""",
        encoding="utf-8",
    )
    with Playground(config=str(config), store="memory://", environ={}) as pg:
        # the bridged Webex channel is played in the Page messenger window (its bot: the AI)
        assert [p.kind for p in pg.players] == ["omnichannel", "pagemessenger", "omnidesk"]
        assert "webex 'webex' is played in the Page messenger window" in pg.notes[0]
        assert "'second' is left out: 'webex' is bridged by 'pagemessenger'" in pg.notes[1]
        connector, webex, desk = (p.channel for p in pg.players)
        assert desk.client.base_url.rstrip("/") == pg.players[2].fake.url
        assert connector.client.channel_url == pg.players[0].fake.channel_url
        assert webex.webhook_url == pg.players[1].fake.webhook_url
        bridged = pg.players[1]
        assert isinstance(bridged, PageMessengerPlayer) and bridged.visitor.kind == "webex"
        assert bridged.bridge.client.base_url == bridged.ai.base_url
        assert not (tmp_path / "production.db").exists()
        for player, said in zip(
            pg.players, ("You said: hi", "AI: hi", "You said: hi"), strict=True
        ):
            answer = act(pg, "send", channel=player.destination, text="hi")
            assert answer["status"] == 200
            wait_until(lambda p=player, s=said: s in "".join(bot_texts(pg, p.destination)))
        # the file's bot_label exists in the fake account: a handover removes it from the case
        act(pg, "send", channel="omnidesk:omnidesk", text="operator")
        wait_until(lambda: pg.snapshot()["chats"]["omnidesk:omnidesk"]["operator"])
        assert 7 not in pg.players[2].fake.case(pg.players[2].chat_id)["labels"]
        # the service key went to the fake; the access token came with the webhook
        assert pg.players[1].fake.events[0].headers["key"] == "service-key-789"
        text = json.dumps(pg.snapshot())
        for secret in ("channel-secret-123", "verify-me-456", "service-key-789", "access-token-000",
                       "path-secret-111", "playground-playground-test-token", "rule-secret-222",
                       "playground-playground-test-omnidesk-key", "pm-api-key-333",
                       "pm-secret-444"):  # fmt: skip
            assert secret not in text


def test_a_configuration_with_nothing_to_play_is_one_error(tmp_path: Path) -> None:
    from omnichannel.errors import ConfigurationError

    config = tmp_path / "c.toml"
    config.write_text('[[channel]]\nkind = "channel-server"\non_reply = "x:y"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no channel the playground can play"):
        Playground(config=str(config), store="memory://")


# the page server ---------------------------------------------------------------------------
def test_page_server_binds_loopback_and_guards_its_actions(playground: Playground) -> None:
    pg = playground
    assert pg.page._server.server_address[0] == "127.0.0.1"
    assert pg.webhooks._socket.getsockname()[0] == "127.0.0.1"
    page = requests.get(pg.url, timeout=5)
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for name in STATIC_FILES:
        assert requests.get(f"{pg.url}/static/{name}", timeout=5).status_code == 200
    assert requests.get(f"{pg.url}/static/../app.py", timeout=5).status_code == 404
    # no CDN, no other origin: every URL the page loads is its own
    for name in STATIC_FILES:
        assert "https://" not in requests.get(f"{pg.url}/static/{name}", timeout=5).text
    refused = requests.post(f"{pg.url}/api/send", json={"channel": OMNICHANNEL, "text": "x"})
    assert refused.status_code == 403  # no X-Playground header: not the page
    rebound = requests.get(pg.url, headers={"Host": "evil.example:80"}, timeout=5)
    assert rebound.status_code == 421
    bad = requests.post(f"{pg.url}/api/send", json={"channel": "nope", "text": "x"},
                        headers={"X-Playground": "1"}, timeout=5)  # fmt: skip
    assert bad.status_code == 400 and "no channel" in bad.json()["error"]


def test_events_stream_a_snapshot_then_each_change_at_once(playground: Playground) -> None:
    pg = playground
    seen: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()

    def read() -> None:
        with requests.get(f"{pg.url}/events", stream=True, timeout=20) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            kind = None
            for line in response.iter_lines(chunk_size=1):  # no read-ahead
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: ") and kind:
                    seen.append((kind, json.loads(line[6:])))
                    ready.set()
                    if kind == "chat" and any(m["role"] == "bot" for m in seen[-1][1]["messages"]):
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(5)
    assert seen[0][0] == "snapshot" and len(seen[0][1]["channels"]) == 4
    started = time.monotonic()
    act(pg, "send", channel=OMNICHANNEL, text="stream me")
    reader.join(10)
    assert not reader.is_alive(), "the reply never came down the stream"
    assert time.monotonic() - started < 3
    kinds = {kind for kind, _ in seen}
    assert {"exchange", "chat"} <= kinds


# the command line ----------------------------------------------------------------------------
def test_cli_playground_prints_its_url_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "omnichannel", "playground", "--port", "0", "--store", "memory://"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("omnichannel playground: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        second = process.stdout.readline()
        assert "bound to 127.0.0.1 only" in second
        assert requests.get(url, timeout=5).status_code == 200
        snapshot = requests.get(f"{url}api/snapshot", timeout=5).json()
        assert snapshot["info"]["bot"] == "the echo bot"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_serve_never_loads_the_playground() -> None:
    code = (
        "import sys; from omnichannel.cli import build_parser; build_parser(); "
        "import omnichannel.integrations.server, omnichannel.config; "
        "print('omnichannel.playground' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_page_is_package_data() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "playground/static/*" in project["tool"]["setuptools"]["package-data"]["omnichannel"]
    for name in STATIC_FILES:
        assert (ROOT / "omnichannel" / "playground" / "static" / name).is_file()


# the browser ---------------------------------------------------------------------------------
@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (
            f"the browser test needs {', '.join(missing)} (apt-get install chromium "
            "chromium-driver; pip install selenium)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1440,900", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1440, 900)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    if os.environ.get("OMNICHANNEL_UPDATE_SCREENSHOTS"):
        shutil.copy(path, ROOT / "docs" / "img" / name)
    return path


def test_browser_chats_presses_sends_a_file_and_watches_the_wire(
    playground: Playground, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 10)

    def css(selector: str) -> list[Any]:
        return driver.find_elements(By.CSS_SELECTOR, selector)  # type: ignore[no-any-return]

    def shows(selector: str, text: str) -> Any:
        # the element, once one matching selector contains text (stale nodes: try again)
        def found(_: Any) -> Any:
            try:
                return next((e for e in css(selector) if text in e.text), None)
            except Exception:
                return None

        return wait.until(found, f"{selector} showing {text!r}")

    def say(text: str) -> None:
        field = driver.find_element(By.ID, "text")
        field.send_keys(text, Keys.ENTER)

    driver.get(playground.url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    shows("#live", "live")
    assert "127.0.0.1 only" in driver.find_element(By.ID, "info").text

    # a text: the reply, and the wire: the webhook's 200, the turn, /send_message
    say("hello")
    shows(".msg.bot", "You said: hello")
    shows("#wire details.exchange .inbound", "bot_api_webhook")
    shows("#wire details.exchange .call", "POST /channel/send_message")
    shows("#wire details.exchange .state", "delivered")
    shows("#variables", "channel_chat_id")

    # the bot's buttons, pressed
    say("menu")
    returns = shows("button.kb", "Returns")
    wait.until(lambda d: returns.is_enabled())
    returns.click()
    shows(".msg.bot", "You chose Returns")
    shows("#turn-state", '"choice": "Returns"')
    shows("#history", "You chose Returns")
    shows("#wire details.exchange .what", "button: Returns")
    screenshot(driver, "playground.png")

    # a file, still uploading (nothing for the bot), then ready
    upload = tmp_path / "invoice.pdf"
    upload.write_bytes(b"%PDF-1.4 playground")
    Select(driver.find_element(By.ID, "file-state")).select_by_value("uploading")
    driver.find_element(By.ID, "file").send_keys(str(upload))
    shows(".msg.visitor", "still uploading")
    shows("#wire .note", "nothing was stored")
    shows(".ready-btn", "Upload finished").click()
    shows(".msg.bot", "Thanks, I got your file invoice.pdf")

    # the platform refuses: a dead letter, retried from the page
    Select(driver.find_element(By.ID, "platform-mode")).select_by_value("refuse")
    wait.until(lambda d: playground.players[0].mode == "refuse")
    say("ping")
    shows("#queues .dead", "dead letter")
    shows("#wire .state", "dead")
    Select(driver.find_element(By.ID, "platform-mode")).select_by_value("ok")
    wait.until(lambda d: playground.players[0].mode == "ok")
    shows("#queues .dead .retry", "Retry").click()
    shows(".msg.bot", "You said: ping")
    shows("#dead-count", "0")

    # a handover: the chat leaves the bot, and comes back
    say("operator")
    shows("#operator", "redirect_chat")
    shows(".msg.system", "Handed over")
    shows("#give-back", "Give back").click()
    wait.until(lambda d: not css("#operator"))

    # Omnidesk: a numbered list, answered with a digit
    shows(".tab", "Omnidesk").click()
    say("menu")
    shows(".msg.bot", "3. Talk to a person")
    say("2")
    shows(".msg.bot", "You chose Returns")
    shows("#wire .call", "/messages.json")
    say("operator")
    shows("#operator", "the case was edited")
    screenshot(driver, "playground-omnidesk.png")

    # Webex Connect: the acknowledgement carries the verification token; 1001 events out
    shows(".tab", "Webex").click()
    say("hi")
    shows(".msg.bot", "You said: hi")
    shows("#wire .inbound .note", "verification token")
    shows("#wire .call", "/events/")

    # Page messenger: the bridge forwards to the fake AI, whose webhook answers; a handover
    shows(".tab", "Page messenger").click()
    shows("#hint", "Your bot does not answer here")
    shows("#platform", "Page messenger AI")
    say("hello")
    shows(".msg.bot", "AI: hello")
    shows("#wire details.exchange .inbound", "bot_api_webhook")
    shows("#wire details.exchange .call", "POST /api/1.1/wf/send_message_external")
    shows("#wire details.exchange .relay", "POST /pagemessenger/***")
    shows("#wire details.exchange .relay .state", "done")
    shows("#wire details.exchange .call", "POST /channel/send_message")
    shows("#wire details.exchange .state", "delivered")
    shows("#wire details.exchange summary .relay-badge", "AI 200")
    shows("#wire details.exchange .inbound summary", "request").click()  # the whole chain
    screenshot(driver, "playground-pagemessenger.png")
    say("I need an operator")
    shows("#operator", "the AI answered operator")
    shows(".msg.bot", "I am passing you to a manager.")
    shows("#give-back", "Give back to the AI").click()
    wait.until(lambda d: not css("#operator"))
