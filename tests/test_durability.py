"""Guarantees that hold across processes, as a user runs ``omnichannel serve``: one reply per
delivery with two workers on one Redis, no lost or doubled reply after a ``SIGKILL``, and dead
letters an operator lists and retries with ``omnichannel outbox``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from omnichannel.testing import RecordingChannelServer, text_event
from tests import redis_support
from tests.helpers import free_port, wait_until
from tests.processes import ROOT, Process, opened, running
from tests.redis_support import unique_prefix

redis_url = redis_support.redis_url  # the fixture, for the tests below


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'omnichannel.db'}"
    url: str = request.getfixturevalue("redis_url")
    return f"{url}?prefix={unique_prefix('serve')}"


def stop(process: Process) -> None:
    """SIGTERM: finish running turns and due replies, then exit 0."""
    assert process.terminate(40) == 0, process.log()


def outbox_cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omnichannel", "outbox", "--store", store, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.redis
def test_two_workers_on_one_redis_reply_once_per_delivery(redis_url: str) -> None:
    store = f"{redis_url}?prefix={unique_prefix('two-workers')}"
    with RecordingChannelServer() as channel:
        with (
            running(store, channel.channel_url) as first,
            running(store, channel.channel_url) as second,
        ):
            events = [
                text_event(f"hello {i}", chat_id=i % 3, message_id=f"m-{i}") for i in range(8)
            ]
            statuses: list[int] = []

            def post_to(worker: Process) -> None:
                statuses.extend(worker.post(event).status_code for event in events)

            # the platform retries each delivery to the other worker, at the same time
            posters = [threading.Thread(target=post_to, args=(w,)) for w in (first, second)]
            for poster in posters:
                poster.start()
            for poster in posters:
                poster.join(60)
            assert statuses == [200] * 16
            channel.wait_for(8, timeout=30)
            stop(first)  # each finishes its work and replies before exiting
            stop(second)
        assert sorted(channel.texts()) == sorted(f"hello {i}" for i in range(8))


def test_replies_survive_sigkill_and_arrive_once_in_order(store_url: str) -> None:
    channel_port = free_port()
    channel_url = f"http://127.0.0.1:{channel_port}/channel"  # nothing listens there yet
    chats = range(4)
    with running(store_url, channel_url) as worker:
        for n in range(5):
            for chat in chats:
                assert worker.post(text_event(f"c{chat} m{n}", chat_id=chat)).status_code == 200
        with opened(store_url) as store:
            # every reply is stored (the first attempts failed: the channel is down)
            assert wait_until(lambda: store.pending("outbox") == 20, 20)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(10)
    with RecordingChannelServer(port=channel_port) as channel:
        with running(store_url, channel_url) as restarted:
            channel.wait_for(20, timeout=30)
            stop(restarted)
        assert len(channel.calls) == 20
        for chat in chats:
            assert channel.texts(chat) == [f"c{chat} m{n}" for n in range(5)]
    with opened(store_url) as store:
        assert store.pending("outbox") == 0
        assert store.dead_letters() == []


def test_refused_reply_is_dead_lettered_listed_and_retried(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'omnichannel.db'}"
    with RecordingChannelServer() as channel, opened(store_url) as store:
        channel.always(400)
        with running(store_url, channel.channel_url) as worker:
            assert worker.post(text_event("please deliver", chat_id=5)).status_code == 200
            assert wait_until(lambda: len(store.dead_letters()) == 1, 20)
            listed = outbox_cli(store_url, "list")
            assert listed.returncode == 0, listed.stderr
            (dead,) = store.dead_letters()
            assert "0 turns waiting, 0 replies pending, 1 dead" in listed.stdout
            assert dead.id in listed.stdout
            assert "answered 400" in listed.stdout  # the last error
            as_json = outbox_cli(store_url, "list", "--json")
            (entry,) = [json.loads(line) for line in as_json.stdout.splitlines()]
            assert entry["id"] == dead.id
            assert "answered 400" in entry["error"]
            assert entry["payload"]["body"]["message"]["text"] == "please deliver"

            channel.always(None)  # the channel is fixed; the operator re-sends
            retried = outbox_cli(store_url, "retry", dead.id)
            assert retried.returncode == 0, retried.stderr
            channel.wait_for(1, timeout=20)
            assert channel.texts(5) == ["please deliver"]
            assert outbox_cli(store_url, "list").stdout.startswith(
                "0 turns waiting, 0 replies pending, 0 dead"
            )
            stop(worker)
        assert [status for status, _ in channel.refused] == [400]
