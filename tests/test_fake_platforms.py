"""The contract every fake platform shares (:class:`omnichannel.testing.FakePlatform`): scripted
failures, ``always``, recording and waiting — over real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import requests

from omnichannel.testing import FakePlatform, RecordingChannelServer
from omnichannel.testing.channel import Call
from omnichannel.testing.omnidesk import FakeCall, FakeOmnidesk
from omnichannel.testing.pagemessenger import FakePageMessenger, ReceivedMessage
from omnichannel.testing.webex import BotEvent, FakeWebexConnect


def _channel_call(fake: Any) -> requests.Response:
    return requests.post(f"{fake.channel_url}/close_chat", json={"chat_id": 1}, timeout=5)


def _webex_call(fake: Any) -> requests.Response:
    event = {"eventid": "1001", "conversation_id": "c-1", "message": "hi"}
    return requests.post(fake.webhook_url, json=event, timeout=5)


def _omnidesk_call(fake: Any) -> requests.Response:
    return requests.get(f"{fake.url}/api/labels.json", auth=(fake.email, fake.api_key), timeout=5)


def _pagemessenger_call(fake: Any) -> requests.Response:
    auth = requests.post(f"{fake.base_url}/wf/auth", json={"key": fake.api_key}, timeout=5)
    token = auth.json()["response"]["token"]
    return requests.post(
        f"{fake.base_url}/wf/send_message_external",
        json={"task_id": "t-1", "chat_id": "c-1", "message": "hi"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


@attrs.frozen
class Platform:
    """How to start one fake and make one valid call to it."""

    make: Callable[[], FakePlatform[Any]]
    call: Callable[[Any], requests.Response]
    call_type: type
    records_failures: bool = False  # Omnidesk records every call it answers, failures too


PLATFORMS = {
    "channel": Platform(RecordingChannelServer, _channel_call, Call),
    "webex": Platform(lambda: FakeWebexConnect("token"), _webex_call, BotEvent),
    "omnidesk": Platform(FakeOmnidesk, _omnidesk_call, FakeCall, records_failures=True),
    "pagemessenger": Platform(
        lambda: FakePageMessenger(answer="silent"), _pagemessenger_call, ReceivedMessage
    ),
}


@pytest.fixture(params=list(PLATFORMS))
def platform(request: pytest.FixtureRequest) -> Platform:
    return PLATFORMS[request.param]


@pytest.fixture
def fake(platform: Platform) -> Iterator[FakePlatform[Any]]:
    with platform.make() as server:
        yield server


def later(action: Callable[[], object], delay: float = 0.1) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_fail_next_then_success(platform: Platform, fake: FakePlatform[Any]) -> None:
    fake.fail_next(2, 503, retry_after=0.5)
    answers = [platform.call(fake) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "0.5"
    assert "Retry-After" not in answers[2].headers
    assert [status for status, _ in fake.refused] == [503, 503]
    assert len(fake.calls) == (3 if platform.records_failures else 1)
    assert isinstance(fake.calls[-1], platform.call_type)


def test_fail_next_with_a_body(platform: Platform, fake: FakePlatform[Any]) -> None:
    fake.fail_next(1, 418, body={"error": "teapot"})
    fake.fail_next(1, 500, body="plain words")
    first, second = platform.call(fake), platform.call(fake)
    assert (first.status_code, first.json()) == (418, {"error": "teapot"})
    assert (second.status_code, second.text) == (500, "plain words")
    assert platform.call(fake).status_code == 200


def test_always_comes_before_the_queue(platform: Platform, fake: FakePlatform[Any]) -> None:
    fake.fail_next(1, 502)
    fake.always(400)
    assert [platform.call(fake).status_code for _ in range(2)] == [400, 400]
    fake.always(None)
    assert [platform.call(fake).status_code for _ in range(2)] == [502, 200]


def test_wait_for_a_count_returns_the_calls(platform: Platform, fake: FakePlatform[Any]) -> None:
    seen: list[Any] = []
    fake.on_call = seen.append
    timer = later(lambda: platform.call(fake))
    calls = fake.wait_for(1, timeout=5)
    assert len(calls) == 1
    assert isinstance(calls[0], platform.call_type)
    timer.join()  # on_call runs after the waiters wake
    assert seen == calls
    assert calls is not fake.calls, "a snapshot"


def test_wait_for_a_predicate(platform: Platform, fake: FakePlatform[Any]) -> None:
    timers = [later(lambda: platform.call(fake), delay) for delay in (0.05, 0.15)]
    assert len(fake.wait_for(lambda: len(fake.calls) >= 2, timeout=5)) == 2
    for timer in timers:
        timer.join()


def test_wait_for_times_out_with_a_clear_message(fake: FakePlatform[Any]) -> None:
    name = type(fake).__name__
    with pytest.raises(TimeoutError, match=rf"^{name}: still waiting for 1 calls after 0.05s"):
        fake.wait_for(1, timeout=0.05)

    def replied() -> bool:
        return False

    with pytest.raises(TimeoutError, match="still waiting for replied after"):
        fake.wait_for(replied, timeout=0.05)
    with pytest.raises(TimeoutError, match=r"waiting for the reply after 0.05s \(0 calls"):
        fake.wait_for(lambda: False, timeout=0.05, what="the reply")
