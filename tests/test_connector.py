"""The connector over real HTTP: the seed's status contract, dedupe, ordering, retries, errors."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from omnichannel import (
    NO_ACTIVE_CHANNEL,
    Bot,
    Button,
    Connector,
    FileLink,
    Keyboard,
    NotSupported,
    Runtime,
    Turn,
)
from omnichannel.testing import (
    RecordingChannelServer,
    button_event,
    file_event,
    new_chat_event,
    text_event,
)
from tests.helpers import serve_handler, wait_until

TOKEN = "s3cr3t-token"
CHANNEL_TOKEN = "ac650a3c369a4b9599ad52ab71943712"


@pytest.fixture
def channel() -> Iterator[RecordingChannelServer]:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as server:
        yield server


def make_connector(
    channel: RecordingChannelServer, bot: Bot | None = None, **options: Any
) -> Connector:
    options.setdefault("runtime", Runtime(outbox_backoff=0.05, outbox_cap=0.2))
    return Connector(
        bot, token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN, **options
    )


@pytest.fixture
def served(channel: RecordingChannelServer) -> Iterator[tuple[str, Connector]]:
    connector = make_connector(channel)
    with serve_handler(connector) as url:
        yield url + connector.webhook_path, connector
    connector.close(timeout=5)


def post(url: str, payload: Any) -> requests.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)


# status contract ------------------------------------------------------------------------------
def test_accepted_event_answers_200_ok_and_echoes_with_token_header(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, _ = served
    response = post(url, text_event("Hello", chat_id=7))
    assert response.status_code == 200
    assert response.json() == {"result": "ok"}
    call = channel.wait_for(1)[0]
    assert call.method == "send_message"
    assert call.headers["Authorization"] == f"Token {CHANNEL_TOKEN}"
    assert call.body == {"chat_id": 7, "message": {"kind": "operator", "text": "Hello"}}


def test_unknown_token_gets_the_seed_error_text(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, _ = served
    response = post(url.replace(TOKEN, "wrong"), text_event("Hello"))
    assert response.status_code == 400
    assert response.json() == {"error": NO_ACTIVE_CHANNEL}
    time.sleep(0.2)
    assert channel.calls == []


@pytest.mark.parametrize(
    "path",
    ["/", "/connector/omnichannel/omnichannel_message/x", "/other/s3cr3t-token/bot_api_webhook"],
)
def test_wrong_url_is_404(served: tuple[str, Connector], path: str) -> None:
    url, _ = served
    base = url.split("/connector")[0]
    assert post(base + path, text_event("x")).status_code == 404


@pytest.mark.parametrize(
    ("field", "payload"),
    [
        ("event", {"chat_id": 1, "message": {"kind": "visitor", "text": "x"}}),
        ("chat_id", {"event": "new_message", "message": {"kind": "visitor", "text": "x"}}),
        ("message", {"event": "new_message", "chat_id": 1}),
        ("message.kind", {"event": "new_message", "chat_id": 1, "message": {"text": "x"}}),
        (
            "message.data.button",
            {
                "event": "new_message",
                "chat_id": 1,
                "message": {"kind": "keyboard_response", "data": {}},
            },
        ),
    ],
)
def test_missing_parameter_is_400_naming_it(
    served: tuple[str, Connector], field: str, payload: Any
) -> None:
    url, _ = served
    response = post(url, payload)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_unknown_event_or_kind_is_200_and_ignored(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    assert post(url, {**text_event("a"), "event": "typing"}).status_code == 200
    unknown_kind = text_event("a")
    unknown_kind["message"]["kind"] = "sticker"
    assert post(url, unknown_kind).status_code == 200
    connector.drain()
    assert channel.calls == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2]",
        json.dumps(
            {"event": "new_message", "chat_id": 1.5, "message": {"kind": "visitor", "text": "x"}}
        ).encode(),
    ],
)
def test_malformed_json_is_500_with_a_reason_and_no_traceback(
    served: tuple[str, Connector], body: bytes
) -> None:
    url, _ = served
    response = post(url, body)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error
    assert "Traceback" not in response.text


def test_body_over_the_limit_is_413(channel: RecordingChannelServer) -> None:
    connector = make_connector(channel, max_body=1000)
    with serve_handler(connector) as url:
        response = post(url + connector.webhook_path, text_event("x" * 2000))
    assert response.status_code == 413
    connector.close()


def test_get_on_the_webhook_is_405(served: tuple[str, Connector]) -> None:
    url, _ = served
    response = requests.get(url, timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_healthz(served: tuple[str, Connector]) -> None:
    url, _ = served
    base = url.split("/connector")[0]
    assert requests.get(base + "/healthz", timeout=5).json() == {"status": "ok"}


# what reaches the bot ---------------------------------------------------------------------------
def test_ready_file_and_button_are_echoed_not_ready_file_is_ignored(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    post(url, file_event("https://f/a.pdf", file_id="f1", chat_id=1))
    post(url, file_event("https://f/b.pdf", state="uploading", chat_id=1))
    post(url, button_event("Yes", chat_id=1))
    connector.drain()
    assert channel.texts() == ["file:application/pdf|f1|https://f/a.pdf", "Yes"]


def test_a_delivery_posted_three_times_is_answered_once(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    payload = text_event("only once", message_id="dup-1", chat_id=3)
    statuses = [post(url, payload).status_code for _ in range(3)]
    connector.drain()
    assert statuses == [200, 200, 200]
    assert channel.texts() == ["only once"]


def test_same_message_id_in_another_chat_is_a_different_delivery(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    post(url, text_event("a", message_id="m", chat_id=1))
    post(url, text_event("b", message_id="m", chat_id=2))
    connector.drain()
    assert sorted(channel.texts()) == ["a", "b"]


def test_concurrent_duplicates_are_processed_once(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    payload = text_event("race", message_id="race-1")
    threads = [threading.Thread(target=post, args=(url, payload)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    connector.drain()
    assert channel.texts() == ["race"]


def test_new_chat_messages_are_handled_in_order(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    post(url, new_chat_event("one", "two", "three", chat_id=9))
    connector.drain()
    assert channel.texts(9) == ["one", "two", "three"]


def test_still_delivers_after_the_channel_answered_503_twice(
    served: tuple[str, Connector], channel: RecordingChannelServer
) -> None:
    url, connector = served
    channel.fail_next(2, status=503)
    post(url, text_event("persistent"))
    channel.wait_for(1)
    assert [status for status, _ in channel.refused] == [503, 503]
    assert channel.texts() == ["persistent"]


def test_retry_after_is_honoured(channel: RecordingChannelServer) -> None:
    connector = make_connector(channel, inline=True, runtime=None, outbox_backoff=0.01)
    channel.fail_next(1, status=429, retry_after=0.5)
    started = time.monotonic()
    connector.reply(1, "later")
    assert wait_until(lambda: bool(connector.runtime.outbox.flush() or channel.calls), timeout=5)
    assert time.monotonic() - started >= 0.5
    connector.close()


def test_replies_to_one_chat_keep_their_order_while_a_failing_chat_waits(
    channel: RecordingChannelServer,
) -> None:
    bot = Bot()

    @bot.on_text
    def several(turn: Turn) -> list[str]:
        return [f"{turn.text}-{i}" for i in range(5)]

    connector = make_connector(channel, bot)
    with serve_handler(connector) as url:
        channel.fail_next(3, status=502)
        for chat in (1, 2):
            post(url + connector.webhook_path, text_event(f"c{chat}", chat_id=chat))
        connector.drain(timeout=10)
    assert channel.texts(1) == [f"c1-{i}" for i in range(5)]
    assert channel.texts(2) == [f"c2-{i}" for i in range(5)]
    connector.close()


def test_a_chat_whose_channel_keeps_failing_does_not_hold_up_other_chats(
    channel: RecordingChannelServer,
) -> None:
    original = channel.handle

    def refuse_chat_1(request: Any) -> Any:
        from omnichannel import Response

        if json.loads(request.body or b"{}").get("chat_id") == 1:
            return Response.error(503, "chat 1 is down")
        return original(request)

    channel.handle = refuse_chat_1  # type: ignore[method-assign]
    connector = make_connector(channel)
    with serve_handler(connector) as url:
        post(url + connector.webhook_path, text_event("stuck", chat_id=1))
        for i in range(5):
            post(url + connector.webhook_path, text_event(f"free-{i}", chat_id=2))
        channel.wait_for(5)
    assert channel.texts(2) == [f"free-{i}" for i in range(5)]
    # the server records a call a moment before the outbox acknowledges it
    assert wait_until(lambda: connector.runtime.store.pending("outbox") == 1)
    connector.close(timeout=0.1)


def test_a_refused_reply_goes_to_the_dead_letters(channel: RecordingChannelServer) -> None:
    connector = make_connector(channel, inline=True, runtime=None)
    channel.always(400)
    connector.reply(5, "never")
    dead = connector.runtime.store.dead_letters()
    assert len(dead) == 1
    assert "400" in (dead[0].last_error or "")
    assert CHANNEL_TOKEN not in (dead[0].last_error or "")
    channel.always(None)
    assert connector.runtime.store.dead_letter_retry(dead[0].id)
    connector.runtime.outbox.flush()
    assert channel.texts() == ["never"]
    connector.close()


def test_a_first_delivery_failure_warns_and_a_dead_letter_is_an_error(
    channel: RecordingChannelServer, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = Runtime(inline=True, outbox_backoff=0.01, outbox_cap=0.02)
    connector = make_connector(channel, runtime=runtime)

    def levels(what: str) -> list[int]:
        return [r.levelno for r in caplog.records if what in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="omnichannel.runtime.outbox"):
        channel.fail_next(2, status=502)
        connector.reply(5, "late")
        assert wait_until(lambda: (runtime.outbox.flush(), channel.texts(5) == ["late"])[1])
        assert levels("failed") == [logging.WARNING, logging.INFO]
        channel.always(400)
        connector.reply(5, "never")
        assert levels("dead-lettered") == [logging.ERROR]
    connector.close()


# bot behaviour ---------------------------------------------------------------------------------
def test_handlers_get_the_turn_and_may_return_any_reply_shape(
    channel: RecordingChannelServer,
) -> None:
    bot = Bot()
    seen: list[Turn] = []

    @bot.on_text
    def text(turn: Turn) -> Any:
        seen.append(turn)
        return ["Choose:", Keyboard(buttons=[[Button(id="y", text="Yes")]])]

    @bot.on_button
    def button(turn: Turn) -> Any:
        turn.reply("pressed")
        return FileLink(url="https://x/price.pdf", name="price.pdf", media_type="application/pdf")

    @bot.on_file
    def file(turn: Turn) -> None:
        return None

    connector = make_connector(channel, bot, inline=True, runtime=None)
    with serve_handler(connector) as url:
        post(
            url + connector.webhook_path,
            text_event("hi", chat_id=11, fields={"name": "Ann", "email": "a@b"}),
        )
        post(url + connector.webhook_path, button_event("Yes", button_id="y", chat_id=11))
        post(url + connector.webhook_path, file_event("https://x/a", chat_id=11))
    turn = seen[0]
    assert turn.text == "hi"
    assert turn.chat_id == 11
    assert turn.variables["channel_visitor_email"] == "a@b"
    assert turn.variables["channel_chat_id"] == "11|omnichannel"
    kinds = [c.body["message"]["kind"] for c in channel.calls]
    assert kinds == ["operator", "keyboard", "operator", "file_operator"]
    assert channel.calls[1].body["message"]["buttons"] == [[{"id": "y", "text": "Yes"}]]
    connector.close()


def test_a_raising_handler_is_reported_and_the_endpoint_still_answers_200(
    channel: RecordingChannelServer, caplog: pytest.LogCaptureFixture
) -> None:
    bot = Bot()
    errors: list[BaseException] = []

    @bot.on_text
    def broken(turn: Turn) -> str:
        raise RuntimeError(f"boom with {TOKEN}")

    @bot.on_error
    def report(turn: Turn, exc: BaseException) -> str:
        errors.append(exc)
        return "Sorry, something went wrong."

    connector = make_connector(channel, bot, inline=True, runtime=None)
    with caplog.at_level(logging.INFO), serve_handler(connector) as url:
        response = post(url + connector.webhook_path, text_event("hi"))
    assert response.status_code == 200
    assert isinstance(errors[0], RuntimeError)
    assert channel.texts() == ["Sorry, something went wrong."]
    assert "broken" in caplog.text
    connector.close()


def test_secrets_never_reach_the_log(
    channel: RecordingChannelServer, caplog: pytest.LogCaptureFixture
) -> None:
    connector = make_connector(channel, inline=True, runtime=None)
    channel.always(500)
    with caplog.at_level(logging.DEBUG), serve_handler(connector) as url:
        post(url + connector.webhook_path, text_event("hi"))
        post(
            url.replace("127.0.0.1", "localhost") + connector.webhook_path.replace(TOKEN, "bad"),
            text_event("x"),
        )
    # our loggers only: urllib3's DEBUG lines log the test client's own request URLs
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("omnichannel"))
    assert "accepted" in ours
    assert "failed" in ours
    assert TOKEN not in ours
    assert CHANNEL_TOKEN not in ours
    assert TOKEN not in repr(connector)
    connector.close(timeout=0.1)


def test_handover_without_support_is_reported_not_raised(channel: RecordingChannelServer) -> None:
    bot = Bot()
    errors: list[BaseException] = []

    @bot.on_text
    def wants_human(turn: Turn) -> None:
        turn.handover()

    bot.on_error(lambda turn, exc: errors.append(exc))
    connector = make_connector(channel, bot, inline=True, runtime=None)
    with serve_handler(connector) as url:
        assert post(url + connector.webhook_path, text_event("human please")).status_code == 200
    assert isinstance(errors[0], NotSupported)
    connector.close()


def test_handover_with_text_and_webim_redirect(channel: RecordingChannelServer) -> None:
    bot = Bot()

    @bot.on_text
    def wants_human(turn: Turn) -> None:
        turn.handover(dep_key="sales")

    connector = make_connector(
        channel, bot, inline=True, runtime=None, handover_text="Connecting you to an operator."
    )
    with serve_handler(connector) as url:
        post(url + connector.webhook_path, text_event("human please", chat_id=4))
    assert [c.method for c in channel.calls] == ["send_message", "redirect_chat"]
    assert channel.calls[0].text == "Connecting you to an operator."
    assert channel.calls[1].body == {"chat_id": 4, "dep_key": "sales"}
    connector.close()


def test_long_markdown_replies_are_split_and_sent_as_plain_text(
    channel: RecordingChannelServer,
) -> None:
    bot = Bot()
    long_text = "**Bold** start. " + " ".join(f"word{i}" for i in range(400))

    @bot.on_text
    def long(turn: Turn) -> str:
        return long_text

    connector = make_connector(channel, bot, inline=True, runtime=None)
    with serve_handler(connector) as url:
        post(url + connector.webhook_path, text_event("hi"))
    texts = channel.texts()
    assert len(texts) > 1
    assert all(len(t) <= 1000 for t in texts)
    assert " ".join(texts) == long_text.replace("**Bold**", "Bold")
    connector.close()


def test_acknowledges_before_a_slow_bot_finishes(channel: RecordingChannelServer) -> None:
    bot = Bot()
    release = threading.Event()

    @bot.on_text
    def slow(turn: Turn) -> str:
        release.wait(10)
        return "done"

    connector = make_connector(channel, bot)
    with serve_handler(connector) as url:
        started = time.monotonic()
        response = post(url + connector.webhook_path, text_event("hi"))
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert channel.calls == []
        release.set()
        channel.wait_for(1)
    assert elapsed < 5  # the bot blocks for up to 10 s; only the background runner answers first
    connector.close()


def test_files_require_state_processes_only_ready_files() -> None:
    from omnichannel import Request
    from omnichannel.testing import RecordingChannelServer
    from omnichannel.testing.events import file_event

    with RecordingChannelServer() as channel:
        strict = Connector(
            token="strict-t", channel_url=channel.channel_url, inline=True, files_require_state=True
        )
        path = strict.webhook_path
        for state, message_id in (None, "f1"), ("uploading", "f2"), ("ready", "f3"):
            event = file_event(
                "https://files.example/a.pdf",
                state=state,
                message_id=message_id,
                file_id=message_id,
            )
            response = strict.handle(Request("POST", path, body=json.dumps(event).encode()))
            assert response.status == 200
        assert strict.drain(5)
        strict.close()
        # only the file whose state said "ready" reached the (echo) bot
        assert len(channel.calls) == 1 and "f3" in channel.calls[0].text
