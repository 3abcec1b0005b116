"""The inline turn's shortcuts keep their promises (issue 16: the hot path): a turn reads its
records from the memory store without a copy yet never shares an object with a handler, a
state write not marked fresh is still copied, the admission's INFO lines carry their fields,
``admission_concurrency`` still bounds the writers, and a completion that fails at once is
retried as before."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from omnichannel import Bot, Connector, Request, Runtime, Turn
from omnichannel.runtime.conversation import conversation_key
from omnichannel.runtime.stores import MemoryStore, QueueItem, StateWrite
from omnichannel.runtime.workers import RateLimitedLog, retry_store_call
from omnichannel.testing import text_event
from tests.helpers import wait_until

TOKEN = "hot-path-token"
PATH = f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
KEY = conversation_key("omnichannel:omnichannel", 1)


def request(payload: Any) -> Request:
    return Request("POST", PATH, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def inline_connector(bot: Bot, store: MemoryStore, **runtime: Any) -> Connector:
    connector = Connector(
        bot,
        token=TOKEN,
        channel_url="http://127.0.0.1:9/channel",
        runtime=Runtime(store=store, inline=True, **runtime),
    )
    connector.runtime.outbox.register(connector.destination, lambda payload: None)
    return connector


def test_a_handler_keeping_its_state_cannot_change_what_was_stored() -> None:
    store = MemoryStore()
    bot = Bot()
    kept: list[Any] = []

    @bot.on_text
    def add(turn: Turn) -> str:
        cart = turn.state.setdefault("cart", {"items": []})
        cart["items"].append(turn.text)
        kept.append(cart)
        kept.append(turn.history)
        return "ok"

    connector = inline_connector(bot, store)
    assert connector.handle(request(text_event("a", chat_id=1))).status == 200
    assert connector.handle(request(text_event("b", chat_id=1))).status == 200
    for cart in kept[::2]:  # what the handlers held, changed after their turns
        cart["items"].append("changed later")
    stored = store.get_state(KEY)
    assert stored is not None
    assert stored["state"] == {"cart": {"items": ["a", "b"]}}
    assert [line[:2] for line in stored["history"]] == [
        ["user", "a"],
        ["bot", "ok"],
        ["user", "b"],
        ["bot", "ok"],
    ]
    assert [e.text for e in kept[3]] == ["a", "ok", "b"]  # the second turn's own view


def test_a_loaded_record_changed_by_its_reader_leaves_the_next_turn_alone() -> None:
    store = MemoryStore()
    bot = Bot(history=3)
    seen: list[list[str]] = []

    @bot.on_text
    def remember(turn: Turn) -> None:
        seen.append([e.text for e in turn.history])

    connector = inline_connector(bot, store)
    for text in ("one", "two"):
        assert connector.handle(request(text_event(text, chat_id=1))).status == 200
    loaded = store.load_state(KEY).value
    assert loaded is not None
    loaded["history"][0][1] = "tampered"
    loaded["history"].clear()
    assert connector.handle(request(text_event("three", chat_id=1))).status == 200
    assert connector.handle(request(text_event("four", chat_id=1))).status == 200
    assert seen == [["one"], ["one", "two"], ["one", "two", "three"], ["two", "three", "four"]]


def test_a_state_write_not_marked_fresh_is_copied() -> None:
    store = MemoryStore()
    store.inbox_admit(QueueItem(destination="d", chat_key="d:1", payload={}), None, 60)
    (item,) = store.claim("inbox", "me", time.time(), 1, 60)
    value: dict[str, Any] = {"state": {"cart": ["a"]}}
    assert StateWrite("k", value, 0).fresh is False
    assert store.inbox_complete(item, [], [StateWrite("k", value, 0)])
    value["state"]["cart"].append("b")
    assert store.get_state("k") == {"state": {"cart": ["a"]}}


def test_a_turn_with_lines_that_are_not_plain_text_still_stores_json() -> None:
    class Text(str):
        pass

    store = MemoryStore()
    bot = Bot()

    @bot.on_text
    def answer(turn: Turn) -> None:
        turn.reply(Text("a str subclass"))

    connector = inline_connector(bot, store)
    assert connector.handle(request(text_event("hi", chat_id=1))).status == 200
    stored = store.get_state(KEY)
    assert stored is not None
    assert [type(line[1]) for line in stored["history"]] == [str, str]
    assert json.loads(json.dumps(stored)) == stored


def test_admission_lines_carry_their_fields_at_info(caplog: pytest.LogCaptureFixture) -> None:
    connector = inline_connector(Bot(), MemoryStore())
    event = text_event("hi", chat_id=7, message_id="m-7")
    with caplog.at_level(logging.INFO, logger="omnichannel.runtime.pipeline"):
        connector.handle(request(event))
        connector.handle(request(event))
    accepted, repeated = (r for r in caplog.records if r.name == "omnichannel.runtime.pipeline")
    assert accepted.getMessage().startswith("omnichannel: chat 7: accepted as turn ")
    fields = {k: getattr(accepted, k) for k in ("channel", "chat", "message_id", "turn")}
    assert fields["turn"] and accepted.getMessage().endswith(fields["turn"])
    assert fields == {"channel": "omnichannel:omnichannel", "chat": "7", "message_id": "m-7",
                      "turn": fields["turn"]}  # fmt: skip
    assert repeated.getMessage() == "omnichannel: chat 7: repeated delivery ignored"
    assert (repeated.channel, repeated.chat, repeated.message_id, repeated.turn) == (  # type: ignore[attr-defined]
        "omnichannel:omnichannel",
        "7",
        "m-7",
        None,
    )


def test_admission_concurrency_bounds_the_writers() -> None:
    release = threading.Event()
    lock = threading.Lock()
    inside = [0, 0]  # now, most

    class SlowStore(MemoryStore):
        def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
            with lock:
                inside[0] += 1
                inside[1] = max(inside[1], inside[0])
            release.wait(10)
            with lock:
                inside[0] -= 1
            return super().inbox_admit(item, dedupe_key, ttl)

    connector = Connector(
        Bot(),
        token=TOKEN,
        channel_url="http://127.0.0.1:9/channel",
        runtime=Runtime(store=SlowStore(), background=False, admission_concurrency=2),
    )
    answers: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: answers.append(
                connector.handle(request(text_event(f"m{i}", chat_id=i))).status
            )
        )
        for i in range(5)
    ]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: inside[0] == 2)
    time.sleep(0.1)  # the others had time to get in, were they let in
    assert inside[1] == 2
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == [200] * 5
    assert connector.runtime.store.pending("inbox") == 5
    connector.close(0)


def test_a_first_failure_given_to_retry_store_call_is_reported_then_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="omnichannel.runtime.workers"):
        done = retry_store_call(
            lambda: calls.append(1),
            what="inbox: completing a turn",
            warn=RateLimitedLog(logging.getLogger("omnichannel.runtime.workers")),
            failed=ConnectionError("store unavailable"),
        )
    assert done and calls == [1]
    assert [r.getMessage() for r in caplog.records] == [
        "inbox: completing a turn failed, retrying: ConnectionError: store unavailable"
    ]
