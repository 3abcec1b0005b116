"""Bots for AI agents (issue 11), in process: async handlers, middleware and error handlers on
every channel (over real HTTP against the fake platforms on 127.0.0.1), matchers, error_reply,
and turn.state / user_state / history on the memory store. The process-level guarantees
(restarts, several workers on Redis) are in tests/test_bot_state.py."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from omnichannel import Bot, Connector, Turn
from omnichannel.omnidesk import OmnideskChannel
from omnichannel.runtime import aio
from omnichannel.runtime.conversation import History, HistoryEntry, conversation_key
from omnichannel.runtime.outbox import current_turn_id
from omnichannel.testing import LocalServer, RecordingChannelServer
from omnichannel.testing.events import button_event, text_event
from omnichannel.testing.omnidesk import FakeOmnidesk
from omnichannel.testing.webex import FakeWebexConnect
from omnichannel.webex import WebexConnectBot

TOKEN = "bot-token-3f9a"
CHANNEL_TOKEN = "bot-channel-token-77c2"
SECRET = "bot-rule-secret-1b2c"
WEBEX_TOKEN = "bot-verify-0d0d"


def post(url: str, payload: Any) -> requests.Response:
    return requests.post(url, data=json.dumps(payload), timeout=10)


# the same bot on every channel: each runner sends texts in one chat and returns what came back
def on_omnichannel(bot: Bot, texts: list[str]) -> list[str]:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            bot, token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN,
            inline=True,
        )  # fmt: skip
        with LocalServer(connector) as server:
            for text in texts:
                assert post(server.url + connector.webhook_path, text_event(text, chat_id=5)).ok
        connector.close()
    return [getattr(c.message, "text", "") for c in channel.calls]


def on_omnidesk(bot: Bot, texts: list[str]) -> list[str]:
    with FakeOmnidesk(retry_after=0.05) as fake:
        desk = OmnideskChannel(bot, client=fake.client(), secret=SECRET, inline=True)
        with LocalServer(desk) as server:
            url = server.url + desk.webhook_path
            case_id = fake.open_case(texts[0])
            assert fake.fire_rule(url, case_id, new_case=True).ok
            for text in texts[1:]:
                fake.user_message(case_id, text)
                assert fake.fire_rule(url, case_id).ok
        desk.close()
        return list(fake.staff_texts(case_id))


def on_webex(bot: Bot, texts: list[str]) -> list[str]:
    with FakeWebexConnect(WEBEX_TOKEN, time_factor=0.001, timeout=5.0) as webex:
        adapter = WebexConnectBot(bot, webex.webhook_url, WEBEX_TOKEN, inline=True)
        with LocalServer(adapter) as server:
            webex.bot_url = server.url + "/webex"
            for text in texts:
                webex.send_message("conv-b", text).wait()
            assert adapter.drain()
        adapter.close(5)
        return list(webex.texts("conv-b"))


CHANNELS: dict[str, Callable[[Bot, list[str]], list[str]]] = {
    "omnichannel": on_omnichannel,
    "omnidesk": on_omnidesk,
    "webex": on_webex,
}


@pytest.fixture(params=sorted(CHANNELS))
def run_on(request: pytest.FixtureRequest) -> Callable[[Bot, list[str]], list[str]]:
    return CHANNELS[request.param]


# async handlers -------------------------------------------------------------------------------
def test_async_handlers_middleware_and_error_handlers_reply_in_order_on_every_channel(
    run_on: Callable[[Bot, list[str]], list[str]],
) -> None:
    bot = Bot()
    seen: list[str] = []

    @bot.use
    async def tag(turn: Turn, next: Callable[[], Any]) -> None:
        seen.append(f"before {turn.text}")
        await next()
        seen.append(f"after {turn.text}")

    @bot.on_text
    async def answer(turn: Turn) -> list[str]:
        await asyncio.sleep(0.01)  # a real await on the runtime's loop
        if turn.text == "boom":
            raise RuntimeError("the model is down")
        turn.reply(f"first {turn.text}")
        return [f"second {turn.text}"]

    @bot.on_error
    async def sorry(turn: Turn, exc: BaseException) -> str:
        await asyncio.sleep(0)
        return f"sorry: {exc}"

    got = run_on(bot, ["one", "boom", "two"])
    assert got == ["first one", "second one", "sorry: the model is down", "first two", "second two"]
    assert seen == [f"{w} {t}" for t in ("one", "boom", "two") for w in ("before", "after")]


def test_an_async_client_made_once_works_in_every_turn_on_one_loop() -> None:
    # an asyncio object is bound to the loop it is first used on: one shared loop is what makes
    # a client made at import (AsyncOpenAI, httpx.AsyncClient) work in every turn
    bot = Bot()
    made: dict[str, Any] = {}
    loops: set[int] = set()

    @bot.on_text
    async def answer(turn: Turn) -> str:
        if "lock" not in made:
            made["lock"] = asyncio.Lock()
        async with made["lock"]:  # raises if used from another loop
            loops.add(id(asyncio.get_running_loop()))
            assert current_turn_id() == turn.id is not None  # the turn's context came along
            return f"ok {turn.text}"

    assert on_omnichannel(bot, ["a", "b", "c"]) == ["ok a", "ok b", "ok c"]
    assert len(loops) == 1


def test_a_plain_function_returning_a_coroutine_is_awaited() -> None:
    bot = Bot()

    async def later(text: str) -> str:
        return f"later {text}"

    bot.on_text(lambda turn: later(turn.text))
    assert on_omnichannel(bot, ["x"]) == ["later x"]


def test_what_cannot_run_is_refused_at_registration() -> None:
    bot = Bot()

    async def agen(turn: Turn) -> Any:
        yield "no"

    async def handler(turn: Turn) -> None:
        return None

    with pytest.raises(TypeError, match="async generator"):
        bot.on_text(agen)
    coroutine = handler(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="coroutine object"):
        bot.on_text(coroutine)
    with pytest.raises(TypeError, match="callable"):
        bot.on_message(42)
    with pytest.raises(TypeError, match="callable"):
        bot.use("not a middleware")
    with pytest.raises(TypeError, match="callable"):
        bot.on_error(None)  # type: ignore[arg-type]
    assert bot.is_echo  # nothing was registered


def test_turns_of_different_chats_await_at_the_same_time() -> None:
    # a slow async model does not hold up other chats: 6 turns of 6 chats wait on one event
    # that only the last of them sets, so they finish only if all of them await at once
    gate = threading.Event()
    arrived: list[int] = []
    bot = Bot()

    @bot.on_text
    async def wait(turn: Turn) -> str:
        arrived.append(1)
        if len(arrived) == 6:
            gate.set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
        return "done" if gate.is_set() else "timed out"

    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            bot, token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN,
            workers=6,
        )  # fmt: skip
        with LocalServer(connector) as server:
            for chat in range(6):
                payload = text_event("go", chat_id=chat)
                assert post(server.url + connector.webhook_path, payload).ok
            assert connector.drain(15)
        connector.close()
    assert sorted(getattr(c.message, "text", "") for c in channel.calls) == ["done"] * 6


# middleware and matchers ----------------------------------------------------------------------
def test_middleware_runs_in_order_and_may_stop_the_chain_or_reply_itself() -> None:
    bot = Bot()
    order: list[str] = []

    @bot.use
    def first(turn: Turn, next: Callable[[], None]) -> None:
        order.append("first")
        next()
        order.append("first done")

    @bot.use
    async def second(turn: Turn, next: Callable[[], Any]) -> None:
        order.append("second")
        if turn.text == "blocked":
            turn.reply("You are not allowed to ask that.")
            return  # the chain stops: no handler runs
        await next()

    @bot.use
    def third(turn: Turn, next: Callable[[], None]) -> None:
        order.append("third")
        next()
        next()  # a second call does nothing

    @bot.on_text
    def answer(turn: Turn) -> str:
        order.append("handler")
        return f"answer {turn.text}"

    assert on_omnichannel(bot, ["ok", "blocked"]) == [
        "answer ok",
        "You are not allowed to ask that.",
    ]
    assert order == [
        "first", "second", "third", "handler", "first done",
        "first", "second", "first done",
    ]  # fmt: skip


def test_handlers_are_chosen_by_regex_or_predicate_and_the_rest_falls_through() -> None:
    bot = Bot()

    @bot.on_text(r"^/weather (?P<city>\w+)")
    def weather(turn: Turn) -> str:
        assert turn.match is not None
        return f"weather in {turn.match['city']}"

    @bot.on_text(lambda turn: (turn.text or "").endswith("?"))
    def question(turn: Turn) -> str:
        return "a question"

    @bot.on_button("^size-")
    def size(turn: Turn) -> str:
        return f"size {turn.text}"

    @bot.on_message
    def anything(turn: Turn) -> str:
        return f"fallback {turn.text}"

    assert question(None) == "a question"  # type: ignore[arg-type]  (still the function)
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            bot, token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN,
            inline=True,
        )  # fmt: skip
        with LocalServer(connector) as server:
            url = server.url + connector.webhook_path
            for payload in (
                text_event("/weather Oslo"),
                text_event("is it late?"),
                text_event("/weather"),
                button_event("Large", button_id="size-l"),
                button_event("Red", button_id="colour-r"),
            ):
                assert post(url, payload).ok
        connector.close()
    assert [getattr(c.message, "text", "") for c in channel.calls] == [
        "weather in Oslo",
        "a question",
        "fallback /weather",
        "size Large",
        "fallback Red",
    ]


def test_a_matching_pattern_takes_the_message_from_the_catch_all() -> None:
    bot = Bot()

    @bot.on_text
    def model(turn: Turn) -> str:
        return f"model: {turn.text}"

    @bot.on_text("^/help$")
    def help_(turn: Turn) -> str:
        return "help!"

    @bot.on_text("^/")
    def command(turn: Turn) -> str:
        return "a command"

    assert on_omnichannel(bot, ["hi", "/help", "/x"]) == [
        "model: hi",
        "help!",
        "a command",  # both patterns matched /help: both ran, in order; the catch-all did not
        "a command",
    ]


# errors ---------------------------------------------------------------------------------------
def test_a_raising_handler_sends_the_error_reply_unless_an_error_handler_dealt_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def failing(bot: Bot) -> Bot:
        @bot.on_text
        def broken(turn: Turn) -> str:
            raise ValueError("bad")

        return bot

    default = on_omnichannel(failing(Bot()), ["x"])
    assert default == ["Sorry, something went wrong on our side. Please try again in a moment."]
    assert "handler" in caplog.text and "ValueError" in caplog.text
    assert on_omnichannel(failing(Bot(error_reply="Oops.")), ["x"]) == ["Oops."]
    assert on_omnichannel(failing(Bot(error_reply=None)), ["x"]) == []

    handled = failing(Bot())
    handled.on_error(lambda turn, exc: None)  # dealt with it, said nothing
    assert on_omnichannel(handled, ["x"]) == []

    broken_handler = failing(Bot(error_reply="Oops."))

    @broken_handler.on_error
    def also_broken(turn: Turn, exc: BaseException) -> None:
        raise RuntimeError("twice")

    assert on_omnichannel(broken_handler, ["x"]) == ["Oops."]


def test_a_raising_middleware_is_reported_like_a_handler() -> None:
    bot = Bot(error_reply="Oops.")

    @bot.use
    async def guard(turn: Turn, next: Callable[[], Any]) -> None:
        raise PermissionError("no")

    @bot.on_text
    def never(turn: Turn) -> str:
        raise AssertionError("the chain stopped")

    assert on_omnichannel(bot, ["x"]) == ["Oops."]


# state and history ----------------------------------------------------------------------------
def counting_bot(**options: Any) -> Bot:
    bot = Bot(**options)

    @bot.on_text
    def count(turn: Turn) -> str:
        turn.state["n"] = turn.state.get("n", 0) + 1
        turn.user_state["seen"] = turn.user_state.get("seen", 0) + 1
        if turn.text == "history":
            return json.dumps([[e.role, e.text] for e in turn.history])
        return f"n={turn.state['n']} seen={turn.user_state['seen']}"

    return bot


def test_state_and_history_on_every_channel(run_on: Callable[[Bot, list[str]], list[str]]) -> None:
    got = run_on(counting_bot(), ["a", "b", "history"])
    assert got[:2] == ["n=1 seen=1", "n=2 seen=2"]
    assert json.loads(got[2]) == [
        ["user", "a"],
        ["bot", "n=1 seen=1"],
        ["user", "b"],
        ["bot", "n=2 seen=2"],
        ["user", "history"],
    ]


def test_history_keeps_the_last_n_and_turns_into_chat_completion_messages() -> None:
    bot = Bot(history=4)
    prompts: list[list[dict[str, str]]] = []

    @bot.on_text
    async def model(turn: Turn) -> str:
        prompts.append(turn.history.to_messages(system="Be brief."))
        return f"re {turn.text}"

    assert on_omnichannel(bot, ["a", "b", "c"]) == ["re a", "re b", "re c"]
    assert prompts[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
    ]
    assert prompts[2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "re a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "re b"},
        {"role": "user", "content": "c"},
    ]  # the last 4 messages
    entry = HistoryEntry("operator", "hi", 0.0)
    assert entry.time.year == 1970
    assert History([entry]).to_messages(operator_role="user") == [{"role": "user", "content": "hi"}]


def test_state_that_is_not_json_is_not_saved_and_the_reply_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot()

    @bot.on_text
    def odd(turn: Turn) -> str:
        turn.state["ok"] = turn.state.get("ok", 0) + 1
        turn.state["bad"] = {1, 2}  # a set is not JSON
        return f"ok={turn.state['ok']}"

    assert on_omnichannel(bot, ["a", "b"]) == ["ok=1", "ok=2"]
    assert "'bad' is not JSON-serializable" in caplog.text


def test_forget_erases_one_conversation() -> None:
    bot = counting_bot()
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = Connector(
            bot, token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN,
            inline=True,
        )  # fmt: skip
        store = connector.runtime.store
        with LocalServer(connector) as server:
            url = server.url + connector.webhook_path
            for chat in (1, 1, 2):
                assert post(url, text_event("hi", chat_id=chat)).ok
            assert store.get_state(conversation_key(connector.destination, 1)) is not None
            bot.forget(connector, 1)
            assert store.get_state(conversation_key(connector.destination, 1)) is None
            bot.forget("omnichannel", 2)  # by name, once the bot served the channel
            for chat in (1, 2):
                assert post(url, text_event("hi", chat_id=chat)).ok
        connector.close()
    texts = [getattr(c.message, "text", "") for c in channel.calls]
    # the visitor (the same id on both chats) keeps user_state; the chats start again
    assert [t.split()[0] for t in texts] == ["n=1", "n=2", "n=1", "n=1", "n=1"]
    with pytest.raises(ValueError, match="no channel named"):
        Bot().forget("nowhere", 1)


@pytest.fixture(autouse=True)
def _fresh_loop() -> Iterator[None]:
    yield
    aio.shutdown()  # each test's loop goes; the next use starts one
