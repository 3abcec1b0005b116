"""The one webhook pipeline, in process with real stores: nothing is acknowledged that is not
stored, a turn run again never sends a reply twice, stopping leaves the backlog for the next
start, a bounded inbox answers 503, a briefly failing store never stalls a chat, and forked
workers start their own threads."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from omnichannel import Bot, Connector, Request, Runtime, Turn
from omnichannel.runtime.stores import INBOX, OUTBOX, MemoryStore, QueueItem, StateWrite
from omnichannel.testing import RecordingChannelServer, new_chat_event, text_event
from tests.helpers import wait_until

TOKEN = "pipeline-token"
PATH = f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"


def request(payload: Any) -> Request:
    import json

    return Request("POST", PATH, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def connector(channel: RecordingChannelServer, bot: Bot | None = None, **runtime: Any) -> Connector:
    runtime.setdefault("outbox_backoff", 0.05)
    return Connector(bot, token=TOKEN, channel_url=channel.channel_url, runtime=Runtime(**runtime))


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'p.db'}"


class FlakyStore(MemoryStore):
    """A memory store whose writes fail while ``down`` is set (the injected fault)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def _check(self) -> None:
        if self.down.is_set():
            raise ConnectionError("store unavailable")

    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        self._check()
        return super().inbox_admit(item, dedupe_key, ttl)

    def inbox_complete(
        self, item: QueueItem, replies: Sequence[QueueItem], writes: Sequence[StateWrite] = ()
    ) -> bool:
        self._check()
        return super().inbox_complete(item, replies, writes)

    def ack(self, item: QueueItem) -> None:
        self._check()
        super().ack(item)

    def claim(self, *args: Any) -> list[QueueItem]:
        self._check()
        return super().claim(*args)


def test_the_turn_is_stored_before_the_200_and_run_by_another_runtime(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with RecordingChannelServer() as channel:
        front = Connector(token=TOKEN, channel_url=channel.channel_url, store=url, background=False)
        response = front.handle(request(text_event("stored first", chat_id=3)))
        assert response.status == 200
        assert front.runtime.store.pending(INBOX) == 1  # durable before the answer
        front.close()
        assert channel.calls == []
        worker = connector(channel, store=url)
        worker.start()
        channel.wait_for(1)
        assert worker.drain(10)
        worker.close()
        assert channel.texts() == ["stored first"]


def test_a_store_that_cannot_admit_gets_503_and_the_retry_is_processed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    with RecordingChannelServer() as channel:
        c = connector(channel, store=store, inline=True)
        store.down.set()
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                refused = c.handle(request(text_event("again", chat_id=1, message_id="m1")))
                assert refused.status == 503
                assert refused.headers["Retry-After"]
        assert "Traceback" not in caplog.text
        assert len([r for r in caplog.records if "cannot store" in r.getMessage()]) == 1
        store.down.clear()
        assert c.handle(request(text_event("again", chat_id=1, message_id="m1"))).status == 200
        assert c.handle(request(text_event("again", chat_id=1, message_id="m1"))).status == 200
        assert channel.texts() == ["again"]


def test_new_chat_stored_halfway_is_completed_by_the_retry() -> None:
    store = FlakyStore()
    calls = [0]
    original = store.inbox_admit

    def fail_second(item: QueueItem, key: str | None, ttl: float) -> bool:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError("disk full")
        return original(item, key, ttl)

    store.inbox_admit = fail_second  # type: ignore[method-assign]
    with RecordingChannelServer() as channel:
        c = connector(channel, store=store, inline=True)
        event = new_chat_event("one", "two", "three", chat_id=9)
        assert c.handle(request(event)).status == 503
        assert c.handle(request(event)).status == 200  # the platform retries the whole event
        assert channel.texts(9) == ["one", "two", "three"]


def test_a_turn_run_again_never_sends_a_committed_reply_twice() -> None:
    store = MemoryStore()
    with RecordingChannelServer() as channel:
        c = connector(channel, store=store, background=False)
        assert c.handle(request(text_event("twice?", chat_id=1))).status == 200
        (turn,) = store.claim(INBOX, "dead-worker", time.time(), 10, 0.05)
        # a worker ran the turn and committed its replies, then a second run of the same turn
        # (its lease ran out meanwhile) tries to commit the same replies again
        bot_run = c.runtime.outbox.collect(turn.id)
        with bot_run as batch:
            c.process(turn.payload)
        assert store.inbox_complete(turn, batch.items)
        assert not store.inbox_complete(turn, batch.items)
        assert store.pending(OUTBOX) == 1
        c.runtime.outbox.flush()
        assert channel.texts() == ["twice?"]


def test_replies_of_a_turn_go_out_only_once_the_turn_completed() -> None:
    gate = threading.Event()
    bot = Bot()

    @bot.on_text
    def two_parts(turn: Turn) -> str:
        turn.reply("first")
        gate.wait(10)
        return "second"

    with RecordingChannelServer() as channel:
        c = connector(channel, bot)
        assert c.handle(request(text_event("go", chat_id=1))).status == 200
        assert wait_until(lambda: c.runtime.turns.inflight == 1, 5)
        time.sleep(0.2)  # the first reply is collected, not sent, while the turn runs
        assert channel.calls == []
        gate.set()
        channel.wait_for(2)
        assert [c.body["message"]["text"] for c in channel.calls] == ["first", "second"]
        c.close()


def test_turns_of_one_chat_run_in_order_and_chats_in_parallel(store_url: str) -> None:
    order: list[str] = []
    running = {"now": 0, "max": 0}
    lock = threading.Lock()
    bot = Bot()

    @bot.on_text
    def record(turn: Turn) -> None:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        time.sleep(0.02)
        with lock:
            order.append(str(turn.text))
            running["now"] -= 1

    with RecordingChannelServer() as channel:
        c = connector(channel, bot, store=store_url, workers=4)
        for n in range(10):
            for chat in range(4):
                assert c.handle(request(text_event(f"{chat}:{n}", chat_id=chat))).status == 200
        assert c.drain(30)
        c.close()
    for chat in range(4):
        assert [t for t in order if t.startswith(f"{chat}:")] == [f"{chat}:{n}" for n in range(10)]
    assert running["max"] > 1


def test_close_finishes_running_turns_and_leaves_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_url = f"sqlite:///{tmp_path / 'close.db'}"  # the memory store does not outlive close
    bot = Bot()

    @bot.on_text
    def slow(turn: Turn) -> str:
        time.sleep(0.1)
        return str(turn.text)

    with RecordingChannelServer() as channel:
        c = connector(channel, bot, store=store_url, workers=2)
        for n in range(60):
            assert c.handle(request(text_event(f"t{n}", chat_id=n))).status == 200
        assert wait_until(lambda: len(channel.calls) >= 2, 10)
        with caplog.at_level(logging.INFO):
            c.close(timeout=5)
        left = [r.getMessage() for r in caplog.records if "in the inbox" in r.getMessage()]
        assert len(left) == 1
        answered = len(channel.calls)
        assert answered < 60
        resumed = connector(channel, store=store_url, workers=8)
        resumed.start()
        channel.wait_for(60, timeout=30)
        resumed.close()
    assert sorted(channel.texts()) == sorted(f"t{n}" for n in range(60))


def test_a_bounded_inbox_answers_503_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with RecordingChannelServer() as channel:
        c = connector(channel, background=False, max_pending=5)
        with caplog.at_level(logging.WARNING):
            statuses = [c.handle(request(text_event(f"n{n}", chat_id=n))).status for n in range(50)]
        assert statuses[:5] == [200] * 5
        assert set(statuses[5:]) == {503}
        assert len([r for r in caplog.records if "max_pending" in r.getMessage()]) == 1
        assert c.runtime.store.pending(INBOX) == 5


def test_a_briefly_failing_store_never_stalls_a_chat() -> None:
    store = FlakyStore()
    bot = Bot()
    with RecordingChannelServer() as channel:
        c = connector(channel, bot, store=store)
        c.start()
        assert c.handle(request(text_event("before", chat_id=1))).status == 200
        channel.wait_for(1)
        # the store goes down right as the next reply is delivered: its ack fails
        delivered = threading.Event()
        channel.on_call = lambda call: (store.down.set(), delivered.set())
        assert c.handle(request(text_event("during", chat_id=1))).status == 200
        assert delivered.wait(10)
        channel.on_call = None
        time.sleep(0.5)
        store.down.clear()  # back after half a second: the same worker acks at once
        started = time.monotonic()
        assert c.handle(request(text_event("after", chat_id=1))).status == 200
        channel.wait_for(3, timeout=10)
        assert time.monotonic() - started < 5  # not the 60 s lease
        c.close()
    assert channel.texts() == ["before", "during", "after"]


def test_a_long_turn_keeps_its_lease() -> None:
    store = MemoryStore()
    bot = Bot()

    @bot.on_text
    def long(turn: Turn) -> str:
        time.sleep(1.0)
        return "done"

    with RecordingChannelServer() as channel:
        c = connector(channel, bot, store=store, turn_lease=0.3)
        c.start()
        assert c.handle(request(text_event("long", chat_id=1))).status == 200
        assert wait_until(lambda: c.runtime.turns.inflight == 1, 5)
        time.sleep(0.5)  # past the first lease term: renewed, nobody else may take the chat
        assert store.claim(INBOX, "intruder", time.time(), 10, 30) == []
        channel.wait_for(1, timeout=10)
        c.close()
    assert channel.texts() == ["done"]


def test_a_turn_that_keeps_raising_is_dead_lettered() -> None:
    store = MemoryStore()

    class Broken(Connector):
        def process(self, payload: Mapping[str, Any]) -> None:
            raise RuntimeError("platform bug")

    with RecordingChannelServer() as channel:
        c = Broken(
            token=TOKEN,
            channel_url=channel.channel_url,
            runtime=Runtime(store=store, inline=True, max_turn_attempts=1),
        )
        assert c.handle(request(text_event("poison", chat_id=1))).status == 200
        (dead,) = store.dead_letters()
        assert dead.queue == INBOX and "platform bug" in str(dead.last_error)
        assert store.pending(INBOX) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_starts_its_own_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    with RecordingChannelServer() as channel:
        c = connector(channel, store=url)
        c.start()  # threads in the parent, as with gunicorn --preload
        pid = os.fork()
        if pid == 0:  # the child: a worker process of the pre-forking server
            code = 1
            try:
                response = c.handle(request(text_event("from the child", chat_id=2)))
                code = 0 if response.status == 200 and c.drain(10) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        channel.wait_for(1, timeout=10)
        c.close()
    assert channel.texts() == ["from the child"]
