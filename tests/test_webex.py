"""Webex Connect generic-bot adapter, against FakeWebexConnect over real HTTP on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests

from omnichannel import (
    Bot,
    Button,
    ButtonPress,
    FileMessage,
    Keyboard,
    MemoryStore,
    NewMessageEvent,
    PayloadError,
    QueueItem,
    Request,
    Response,
    Runtime,
    TextReply,
    Turn,
)
from omnichannel.integrations import Handler
from omnichannel.runtime.stores import StateSnapshot
from omnichannel.testing import LocalServer
from omnichannel.testing.webex import (
    FakeWebexConnect,
    WebexDelivery,
    incoming_message_event,
)
from omnichannel.webex import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    WebexConnectBot,
    WebexDeliveryStatus,
    WebexIncomingMessage,
    WebexMessage,
    WebexPostback,
    WebexUnknownEvent,
    format_webex_timestamp,
    parse_webex_event,
    parse_webex_timestamp,
)

TOKEN = "verify-7f3a9c"
UTC = timezone.utc


def echo_bot() -> Bot:
    bot = Bot()

    @bot.on_text
    def echo(turn: Turn) -> str:
        return f"echo: {turn.text}"

    return bot


@contextmanager
def running(
    bot: Bot,
    *,
    fake: dict[str, Any] | None = None,
    wrap: Callable[[Handler], Handler] | None = None,
    **adapter_options: Any,
) -> Iterator[tuple[FakeWebexConnect, WebexConnectBot]]:
    """The fake platform, the adapter served over HTTP, and the fake pointed at it."""
    fake_options = {"time_factor": 0.001, "timeout": 5.0, **(fake or {})}
    with FakeWebexConnect(TOKEN, **fake_options) as webex:
        if "runtime" not in adapter_options:
            adapter_options["runtime"] = Runtime(outbox_backoff=0.05, outbox_cap=0.2)
        adapter = WebexConnectBot(bot, webex.webhook_url, TOKEN, **adapter_options)
        try:
            with LocalServer(adapter if wrap is None else wrap(adapter)) as server:
                webex.bot_url = server.url + "/webex"
                yield webex, adapter
        finally:
            adapter.close(5)


def outcomes(delivery: WebexDelivery) -> list[str]:
    return [a.outcome for a in delivery.attempts]


# ---------------------------------------------------------------------------------------------
# acceptance


def test_200_slow_events_are_acknowledged_in_time_and_answered_once() -> None:
    bot = Bot()

    @bot.on_text
    def slow(turn: Turn) -> str:
        time.sleep(8)  # the bot's own work takes longer than Webex Connect waits
        return f"done: {turn.text}"

    with running(bot, runtime=Runtime(workers=200)) as (webex, adapter):
        started = time.monotonic()
        deliveries = [
            webex.send_message(f"conv-{i}", f"question {i}", message_id=f"msg-{i}")
            for i in range(200)
        ]
        for delivery in deliveries:
            delivery.wait(10)
        all_acknowledged_after = time.monotonic() - started

        assert all_acknowledged_after < 5.0
        assert [d.state for d in deliveries] == ["delivered"] * 200
        assert all(len(d.attempts) == 1 for d in deliveries), "nothing may be retried"
        assert max(d.attempts[0].elapsed for d in deliveries) < 5.0
        assert {d.attempts[0].response_text for d in deliveries} == {TOKEN}
        assert not webex.events, "the bot answered before it could have finished"

        webex.wait_for_events(200, timeout=30)
        assert adapter.drain(30)
        per_conversation = Counter(e.conversation_id for e in webex.events)
        assert per_conversation == {f"conv-{i}": 1 for i in range(200)}
        for i in (0, 99, 199):
            assert webex.texts(f"conv-{i}") == [f"done: question {i}"]
        assert webex.peak_consecutive_failures == 0


def test_a_retried_delivery_is_answered_once() -> None:
    lost_once: set[bytes] = set()

    @attrs.frozen
    class SlowNetwork:
        adapter: Handler

        def handle(self, request: Request) -> Response:
            response = self.adapter.handle(request)
            if b"retry-me" in request.body and request.body not in lost_once:
                lost_once.add(request.body)
                time.sleep(1.5)  # the acknowledgement arrives after the fake's timeout
            return response

    with running(echo_bot(), fake={"timeout": 1.0}, wrap=SlowNetwork) as (webex, adapter):
        event = incoming_message_event("conv-r", "retry-me", message_id="msg-r")
        delivery = webex.send(event).wait(10)
        assert outcomes(delivery) == ["timeout", "ok"]
        again = webex.send(event).wait(10)  # a redelivery after a success, same Messageid
        assert outcomes(again) == ["ok"]
        assert adapter.drain(10)
        assert webex.texts("conv-r") == ["echo: retry-me"]


def test_a_postback_reaches_on_button_with_its_payload() -> None:
    bot = Bot()
    presses: list[ButtonPress] = []

    @bot.on_text
    def menu(turn: Turn) -> Keyboard:
        return Keyboard(text="Choose", buttons=[Button(id="GOLD", text="Gold plan")])

    @bot.on_button
    def pressed(turn: Turn) -> str:
        assert isinstance(turn.message, ButtonPress)
        assert isinstance(turn.event, NewMessageEvent)
        presses.append(turn.message)
        return f"chose {turn.text}"

    with running(bot) as (webex, adapter):
        assert webex.send_postback("conv-p", "SILVER").wait().state == "delivered"
        assert adapter.drain()
        webex.send_message("conv-p", "menu").wait()
        assert adapter.drain()
        webex.send_postback("conv-p", "GOLD").wait()
        assert adapter.drain()
        assert [p.button for p in presses] == [
            Button(id="SILVER", text="SILVER"),
            Button(id="GOLD", text="Gold plan"),  # the label of the button the bot sent
        ]
        assert webex.texts("conv-p") == ["chose SILVER", "Choose\n1. Gold plan", "chose Gold plan"]


def test_a_delivery_failure_reaches_its_handler_once() -> None:
    statuses: list[WebexDeliveryStatus] = []
    arrived = threading.Event()

    def on_status(status: WebexDeliveryStatus) -> None:
        statuses.append(status)
        arrived.set()

    with running(echo_bot(), on_delivery_status=on_status) as (webex, adapter):
        first = webex.send_delivery_status(
            "conv-d", "out-7", "Failed", description="24h window closed"
        ).wait()
        webex.send(first.event).wait()  # a redelivery of the same status
        assert arrived.wait(5)
        assert adapter.drain()
        assert len(statuses) == 1
        status = statuses[0]
        assert status.failed
        assert (status.conversation_id, status.message_id) == ("conv-d", "out-7")
        assert status.description == "24h window closed"
        assert webex.events == []


def test_a_handover_sends_1002_and_stops_the_bot_answering_that_conversation() -> None:
    bot = Bot()

    @bot.on_text
    def handle(turn: Turn) -> str | None:
        if turn.text == "agent please":
            turn.handover(queue="billing", priority="high")
            return None
        return f"echo: {turn.text}"

    copied: list[WebexIncomingMessage] = []
    with running(
        bot,
        handover_text="Connecting you to an agent",
        custom_params={"customparam1": "tenant-a"},
        on_copied_message=copied.append,
    ) as (webex, adapter):
        for text in ("hello", "agent please"):
            webex.send_message("conv-h", text).wait()
            assert adapter.drain()
        webex.send_message("conv-h", "are you there?").wait()
        webex.send_message("conv-h", "Hi, I am Dana from billing", conversation_type="AGENT").wait()
        webex.send_message("conv-other", "hello").wait()
        assert adapter.drain()

        events = webex.events_for("conv-h")
        assert [e.eventid for e in events] == ["1001", "1001", "1002"]
        assert [e.message for e in events[:2]] == ["echo: hello", "Connecting you to an agent"]
        handover = events[2]
        assert handover.params == {
            "queue": "billing",
            "priority": "high",
            "customparam1": "tenant-a",
        }
        assert "message" not in handover.body
        assert parse_webex_timestamp(handover.body["Timestamp"]) <= datetime.now(UTC)
        assert webex.texts("conv-other") == ["echo: hello"]

        record = adapter.conversation("conv-h")
        assert record is not None
        assert record.handed_over
        assert record.handover_params == {"queue": "billing", "priority": "high"}
        assert [c["message"] for c in record.copies] == [
            "are you there?",
            "Hi, I am Dana from billing",
        ]
        assert [m.message for m in copied] == ["are you there?", "Hi, I am Dana from billing"]

        adapter.resume("conv-h")
        webex.send_message("conv-h", "back to the bot").wait()
        assert adapter.drain()
        assert webex.texts("conv-h")[-1] == "echo: back to the bot"
        adapter.close_conversation("conv-h")
        assert adapter.conversation("conv-h") is None


def test_a_non_bot_conversation_is_recorded_not_answered() -> None:
    with running(echo_bot()) as (webex, adapter):
        webex.send_message("conv-c", "agent's reply", conversation_type="CCSP").wait()
        assert adapter.drain()
        assert webex.events == []
        record = adapter.conversation("conv-c")
        assert record is not None
        assert [c["conversation_type"] for c in record.copies] == ["CCSP"]


MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be an object"),
    (json.dumps({"Event": "Incoming message", "Message": "hi"}).encode(), "Conversationid"),
    (json.dumps({"Event": ["Incoming message"], "Conversationid": "c"}).encode(), "Event"),
    (json.dumps({"Event": "FB POSTBACK", "Conversationid": "c"}).encode(), "PostbackPayload"),
    (json.dumps({"Event": "Incoming message", "Conversationid": {"id": 1}}).encode(), "Conver"),
]


def test_a_malformed_body_gets_a_4xx_and_does_not_count_toward_deactivation() -> None:
    with running(echo_bot()) as (webex, adapter):
        for n, (body, field) in enumerate(MALFORMED):
            delivery = webex.send(body).wait()
            assert delivery.state == "rejected", body
            assert len(delivery.attempts) == 1, "a refused body must not be retried"
            attempt = delivery.attempts[0]
            assert attempt.status == 400
            error = json.loads(attempt.response_text)["error"]
            assert field in error
            assert "Traceback" not in error
            assert webex.send_message("conv-ok", f"ok {n}").wait().state == "delivered"
        assert webex.active
        assert webex.peak_consecutive_failures == 0

        # an unreadable Timestamp is no reason to lose the message: kept without a time
        odd = {"Event": "Incoming message", "Conversationid": "conv-m", "Messageid": "m-1",
               "Message": "hi", "Timestamp": "02/01/2024"}  # fmt: skip
        assert webex.send(json.dumps(odd).encode()).wait().state == "delivered"
        assert adapter.drain()
        assert webex.texts("conv-m") == ["echo: hi"]
        assert webex.peak_consecutive_failures == 0


def test_malformed_events_in_a_row_never_reach_the_deactivation_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running(echo_bot()) as (webex, adapter):
        statuses = [webex.send(b"{not json").wait().attempts[0].status for _ in range(6)]
        # two refusals (the cap), then one acknowledged and recorded (which ends the run, as it
        # does for Webex Connect's count): never more than two failures in a row
        assert statuses == [400, 400, 200, 400, 400, 200]
        assert webex.active and webex.peak_consecutive_failures <= 2
        assert len(adapter.malformed_events) == 2
        assert "not valid JSON" in adapter.malformed_events[0].problem
        assert "malformed event acknowledged" in caplog.text
        # a good event ends the run: the next malformed one is refused again
        assert webex.send_message("conv-x", "hi").wait().state == "delivered"
        assert webex.send(b"[]").wait().attempts[0].status == 400


def test_an_overloaded_bot_never_causes_five_consecutive_failures() -> None:
    refusing = Runtime(max_pending=0)
    with running(echo_bot(), runtime=refusing, fake={"time_factor": 0.0005}) as (webex, _):
        for i in range(3):
            delivery = webex.send_message("conv-o", f"m{i}").wait(10)
            assert outcomes(delivery) == ["failure", "failure", "ok"]
            assert [a.status for a in delivery.attempts] == [503, 503, 200]
        assert webex.active
        assert webex.peak_consecutive_failures == 2


def test_an_event_is_answered_only_once_it_is_stored() -> None:
    store = MemoryStore()
    with FakeWebexConnect(TOKEN) as webex:
        # a webhook front-end that only admits turns (``omnichannel worker`` would run them)
        front = WebexConnectBot(
            echo_bot(), webex.webhook_url, TOKEN, runtime=Runtime(store=store, background=False)
        )
        event = json.dumps(incoming_message_event("conv-s", "kept", message_id="m-s")).encode()
        answer = front.handle(Request("POST", "/webex", body=event))
        assert (answer.status, answer.text) == (200, TOKEN)
        assert store.pending("inbox") == 1, "the 200 came after the turn was stored"
        assert store.pending("outbox") == 0
        assert webex.events == [], "nothing was sent before a worker ran the turn"
        assert front.handle(Request("POST", "/webex", body=event)).status == 200
        assert store.pending("inbox") == 1, "a redelivery is not stored twice"

        # another process (another runtime on the same store) runs it
        worker = WebexConnectBot(
            echo_bot(), webex.webhook_url, TOKEN, runtime=Runtime(store=store, outbox_backoff=0.05)
        )
        worker.start()
        assert worker.drain(10)
        assert webex.texts("conv-s") == ["echo: kept"]
        assert store.pending("inbox") == 0
        worker.close()
        front.close()


class DownStore(MemoryStore):
    """A store whose inbox cannot take anything while ``down`` (the fault under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        if self.down:
            raise OSError("disk full")
        return super().inbox_admit(item, dedupe_key, ttl)


def test_a_store_outage_gets_capped_503s_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    store = DownStore()
    adapter = WebexConnectBot(
        echo_bot(),
        "http://127.0.0.1:9/events/X",
        TOKEN,
        runtime=Runtime(store=store, background=False, retry_after=30),
        max_consecutive_refusals=2,
    )

    def post(message_id: str) -> Response:
        event = incoming_message_event("conv-down", "hi", message_id=message_id)
        return adapter.handle(Request("POST", "/webex", body=json.dumps(event).encode()))

    answers = [post(f"m-{i}") for i in range(4)]
    assert [a.status for a in answers] == [503, 503, 200, 503]
    for refusal in (answers[0], answers[1], answers[3]):
        assert refusal.headers["Retry-After"] == "30"
        assert "error" in json.loads(refusal.body)
    assert answers[2].text == TOKEN, "the third is acknowledged so the webhook stays on"
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "the loss is logged"
    assert store.pending("inbox") == 0

    store.down = False
    assert post("m-3").status == 200, "a retry is stored once the store is back"
    assert store.pending("inbox") == 1
    adapter.close()


def test_concurrent_conversation_updates_lose_nothing() -> None:
    class SlowReads(MemoryStore):
        def load_state(self, key: str) -> StateSnapshot:
            snapshot = super().load_state(key)
            time.sleep(0.001)  # widens every read-modify-write window
            return snapshot

    store = SlowReads()
    adapter = WebexConnectBot(
        echo_bot(),
        "http://127.0.0.1:9/events/X",
        TOKEN,
        runtime=Runtime(store=store, background=False),
        keep_copies=1000,
    )
    adapter.hand_over("conv-t", queue="billing")
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def copies(thread: int) -> None:
        start.wait()
        for n in range(10):
            event = incoming_message_event("conv-t", f"{thread}-{n}", message_id=f"m-{thread}-{n}")
            try:
                adapter.process({"body": json.dumps(event)})
            except BaseException as exc:  # reported below
                errors.append(exc)

    def keyboard() -> None:
        start.wait()
        menu = Keyboard(text="Pick", buttons=[Button(id="a", text="Apples")])
        for _ in range(10):
            adapter.send("conv-t", [menu])

    threads = [threading.Thread(target=copies, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=keyboard))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    record = adapter.conversation("conv-t")
    assert record is not None
    assert record.handed_over
    assert record.handover_params == {"queue": "billing"}
    assert sorted(c["message"] for c in record.copies) == sorted(
        f"{t}-{n}" for t in range(4) for n in range(10)
    )
    state = store.get_state("webex:webex:conversation:conv-t")
    assert state is not None
    assert state["keyboard"] == [["a", "Apples"]]
    adapter.close(0)  # the queued replies have no worker to deliver them here


def test_a_body_over_max_body_is_malformed_not_413() -> None:
    adapter = WebexConnectBot(
        echo_bot(), "http://127.0.0.1:9/events/X", TOKEN, inline=True, max_body=64
    )
    event = json.dumps(incoming_message_event("conv-big", "x" * 100)).encode()
    direct = adapter.handle(Request("POST", "/webex", body=event))
    assert direct.status == 400
    assert "larger than 64 bytes" in json.loads(direct.body)["error"]
    with LocalServer(adapter) as server:
        served = requests.post(server.url + "/webex", data=event, timeout=5)
        assert served.status_code == 400, "the server applies the adapter's own answer"
    adapter.close()


def test_the_fake_switches_the_webhook_off_after_five_consecutive_failures() -> None:
    class Down:
        def handle(self, request: Request) -> Response:
            return Response.error(500, "down")

    with FakeWebexConnect(TOKEN, time_factor=0.0002) as webex, LocalServer(Down()) as broken:
        webex.bot_url = broken.url + "/webex"
        delivery = webex.send_message("conv-x", "hello").wait(10)
        assert outcomes(delivery) == ["failure"] * 5
        gaps = [
            b.started_at - a.started_at
            for a, b in zip(delivery.attempts, delivery.attempts[1:], strict=False)
        ]
        assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, webex.retry_delays, strict=False))
        assert not webex.active
        assert webex.send_message("conv-x", "anyone?").wait().state == "inactive"

        adapter = WebexConnectBot(echo_bot(), webex.webhook_url, TOKEN, inline=True)
        with LocalServer(adapter) as healthy:
            webex.bot_url = healthy.url + "/webex"
            assert webex.verify()
            assert webex.active
            assert webex.send_message("conv-x", "back").wait().state == "delivered"
        adapter.close()


def test_a_reply_over_256_kb_is_refused_before_sending() -> None:
    bot = Bot()
    errors: list[BaseException] = []

    @bot.on_text
    def huge(turn: Turn) -> list[str]:
        return ["first part", "x" * (MAX_BODY_BYTES + 1)]

    @bot.on_error
    def report(turn: Turn, exc: BaseException) -> str:
        errors.append(exc)
        return "Sorry, that answer was too long."

    with running(bot) as (webex, adapter):
        with pytest.raises(BodyTooLarge, match="262144 bytes") as raised:
            adapter.send("conv-big", [TextReply(text="ok"), TextReply(text="y" * 300_000)])
        assert raised.value.size > raised.value.limit == MAX_BODY_BYTES
        assert not raised.value.retryable
        assert adapter.runtime.store.pending("outbox") == 0, "nothing of that call was queued"

        webex.send_message("conv-big", "tell me everything").wait()
        assert adapter.drain()
        assert len(errors) == 1
        assert isinstance(errors[0], BodyTooLarge)
        assert webex.texts("conv-big") == ["Sorry, that answer was too long."]
        assert webex.refused == [], "the oversized body never reached Webex Connect"


def test_the_service_key_goes_in_the_key_header() -> None:
    with running(echo_bot(), service_key="sk-live-1", fake={"service_key": "sk-live-1"}) as (
        webex,
        adapter,
    ):
        webex.send_message("conv-k", "hi").wait()
        assert adapter.drain()
        (event,) = webex.events
        assert event.headers["key"] == "sk-live-1"
        assert "sk-live-1" not in repr(adapter)
        assert webex.webhook_id not in repr(adapter)

    with running(echo_bot(), service_key="sk-wrong", fake={"service_key": "sk-live-1"}) as (
        webex,
        adapter,
    ):
        webex.send_message("conv-k", "hi").wait()
        assert adapter.drain()
        assert webex.events == []
        assert [status for status, _ in webex.refused] == [401]
        (dead,) = adapter.runtime.store.dead_letters()
        assert "401" in (dead.last_error or "")
        assert "sk-wrong" not in (dead.last_error or "")
        assert webex.webhook_id not in (dead.last_error or "")


def test_replies_are_retried_in_order_when_webex_connect_fails() -> None:
    bot = Bot()

    @bot.on_text
    def two(turn: Turn) -> list[str]:
        return ["one", "two"]

    with running(bot) as (webex, adapter):
        webex.fail_next(2, 503)
        webex.send_message("conv-o", "go").wait()
        webex.wait_for_events(2, timeout=10)
        assert adapter.drain()
        assert webex.texts("conv-o") == ["one", "two"]
        assert [status for status, _ in webex.refused] == [503, 503]


# ---------------------------------------------------------------------------------------------
# acknowledgement, keyboards, media


def test_acknowledgement_formats_and_verification() -> None:
    with running(echo_bot(), ack_format="json") as (webex, adapter):
        assert webex.verify()
        delivery = webex.send_message("conv-a", "hi").wait()
        assert json.loads(delivery.attempts[0].response_text) == {"token": TOKEN}
        assert adapter.drain()
        assert webex.texts("conv-a") == ["echo: hi"]
        unknown = webex.send({"Event": "Typing", "Conversationid": "conv-a"}).wait()
        assert unknown.state == "delivered"

    custom = WebexConnectBot(
        echo_bot(),
        "http://127.0.0.1:9/events/X",
        TOKEN,
        ack_format=lambda token: Response.json(200, {"status": "ok", "verificationToken": token}),
        inline=True,
    )
    got = custom.handle(Request("GET", "/webex"))
    assert json.loads(got.body)["verificationToken"] == TOKEN
    assert custom.handle(Request("PUT", "/webex")).status == 405
    assert custom.handle(Request("POST", "/webex", body=b"")).status == 200
    custom.close()


def test_keyboards_become_numbered_text_and_numbers_become_button_presses() -> None:
    bot = Bot()

    @bot.on_text
    def menu(turn: Turn) -> Keyboard:
        return Keyboard(
            text="Pick a fruit",
            buttons=[[Button(id="a", text="Apples")], [Button(id="b", text="Bananas")]],
        )

    @bot.on_button
    def picked(turn: Turn) -> str:
        assert isinstance(turn.message, ButtonPress)
        return f"picked {turn.message.button.id}"

    with running(bot) as (webex, adapter):
        for text in ("menu", "2", "menu", "apples", "menu", "7"):
            webex.send_message("conv-k", text).wait()
            assert adapter.drain()
        assert webex.texts("conv-k") == [
            "Pick a fruit\n1. Apples\n2. Bananas",
            "picked b",
            "Pick a fruit\n1. Apples\n2. Bananas",
            "picked a",
            "Pick a fruit\n1. Apples\n2. Bananas",
            "Pick a fruit\n1. Apples\n2. Bananas",  # "7" is no choice: plain text again
        ]


def test_a_channel_specific_rich_payload_replaces_the_numbered_text() -> None:
    bot = Bot()

    @bot.on_text
    def rich(turn: Turn) -> list[Any]:
        return [
            Keyboard(text="Pick", buttons=[Button(id="a", text="Apples")]),
            WebexMessage(text="", message_type="template", params={"templateid": "T-9"}),
        ]

    def as_buttons(keyboard: Keyboard) -> dict[str, Any]:
        buttons = [{"payload": b.id, "title": b.text} for b in keyboard.flat]
        return {"message": keyboard.text, "Messagetype": "buttons", "buttons": buttons}

    with running(bot, render_keyboard=as_buttons, message_type="TEXT") as (webex, adapter):
        webex.send_message("conv-rich", "menu").wait()
        assert adapter.drain()
        keyboard, template = webex.events_for("conv-rich")
        assert keyboard.message_type == "buttons"
        assert keyboard.params == {"buttons": [{"payload": "a", "title": "Apples"}]}
        assert template.message_type == "template"
        assert template.params == {"templateid": "T-9"}


def test_media_reaches_on_file_and_event_ids_can_be_overridden() -> None:
    bot = Bot()
    files: list[FileMessage] = []

    @bot.on_file
    def got_file(turn: Turn) -> None:
        assert isinstance(turn.message, FileMessage)
        files.append(turn.message)
        turn.handover(reason="a human should look at this")

    with running(bot, message_eventid="2001", handover_eventid="HANDOVER") as (webex, adapter):
        webex.send_message(
            "conv-f", "", message_type="image", media="https://cdn.example/u/photo%201.jpg"
        ).wait()
        assert adapter.drain()
        (file,) = files
        assert file.file.url == "https://cdn.example/u/photo%201.jpg"
        assert (file.file.name, file.file.content_type) == ("photo 1.jpg", "image/jpeg")
        assert [e.eventid for e in webex.events_for("conv-f")] == ["HANDOVER"]


# ---------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05 10:11:12.34", datetime(2024, 3, 5, 10, 11, 12, 340000, tzinfo=UTC)),
        ("2024-03-05 10:11:12.5", datetime(2024, 3, 5, 10, 11, 12, 500000, tzinfo=UTC)),
        ("2024-03-05 10:11:12.123456", datetime(2024, 3, 5, 10, 11, 12, 123456, tzinfo=UTC)),
        ("2024-03-05 10:11:12", datetime(2024, 3, 5, 10, 11, 12, tzinfo=UTC)),
        ("2024-03-05T10:11:12.1Z", datetime(2024, 3, 5, 10, 11, 12, 100000, tzinfo=UTC)),
    ],
)
def test_timestamps_parse_to_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_webex_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "bad", ["yesterday", "2024-02-30 10:00:00.00", "02/01/2024", [2024], {"t": 1}, True]
)
def test_an_unreadable_timestamp_keeps_the_event_without_a_time(bad: object) -> None:
    payload = {
        "Event": "Incoming message",
        "Conversationid": "c",
        "Message": "hi",
        "Timestamp": bad,
    }
    event = parse_webex_event(payload)
    assert isinstance(event, WebexIncomingMessage)
    assert (event.message, event.timestamp, event.raw["Timestamp"]) == ("hi", None, bad)
    # other forms of a time are read (an offset, a Z, more digits, RFC 2822)
    for text in ("2024-03-05 10:11:12.1234567", "2024-03-05T13:11:12+03:00",
                 "Tue, 05 Mar 2024 10:11:12 GMT"):  # fmt: skip
        event = parse_webex_event({**payload, "Timestamp": text})
        assert event.timestamp == datetime(2024, 3, 5, 10, 11, 12, 123456 if "." in text else 0,
                                           tzinfo=timezone.utc)  # fmt: skip


def test_reply_timestamps_are_gmt_with_milliseconds() -> None:
    moscow = timezone(timedelta(hours=3))
    when = datetime(2024, 3, 5, 13, 11, 12, 345678, tzinfo=moscow)
    assert format_webex_timestamp(when) == "2024-03-05 10:11:12.345"
    assert format_webex_timestamp(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02 03:04:05.000"


def test_wire_names_map_to_python_names() -> None:
    message = parse_webex_event(
        json.dumps(
            {
                "ConversationId": 12345,
                "conversationtype": "BOT",
                "Message": "Hi",
                "MessageType": "text",
                "Messageid": "m-1",
                "Media": "",
                "Channel": "WhatsApp",
                "Event": "incoming  message",
                "Timestamp": "2024-03-05 10:11:12.34",
                "Brand": "kept",
            }
        )
    )
    assert isinstance(message, WebexIncomingMessage)
    assert (message.conversation_id, message.message, message.message_id) == ("12345", "Hi", "m-1")
    assert (message.message_type, message.channel, message.media_url) == ("text", "WhatsApp", None)
    assert message.for_bot
    assert message.raw["Brand"] == "kept"

    postback = parse_webex_event(
        {"Conversationid": "c", "PostbackPayload": "P", "Channel": "FB", "Event": "FB POSTBACK"}
    )
    assert isinstance(postback, WebexPostback)
    assert postback.postback_payload == "P"

    read = parse_webex_event(
        {
            "Conversationid": "c",
            "Messageid": "o-1",
            "Event": "Message Delivery",
            "DeliveryStatus": "Read",
        }
    )
    assert isinstance(read, WebexDeliveryStatus)
    assert (read.delivery_status, read.failed, read.description) == ("Read", False, None)

    unknown = parse_webex_event({"Event": "Session Closed", "Conversationid": "c", "x": 1})
    assert isinstance(unknown, WebexUnknownEvent)
    assert (unknown.event, unknown.conversation_id, unknown.raw["x"]) == ("Session Closed", "c", 1)

    with pytest.raises(PayloadError) as raised:
        parse_webex_event({"Conversationid": "c"})
    assert raised.value.path == "Event"
    assert raised.value.missing


def test_the_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parent.parent / "examples" / "webex_connect_bot.py"
    spec = importlib.util.spec_from_file_location("webex_connect_bot_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert capsys.readouterr().out == "", "importing the example must have no side effects"
    module.main()
    out = capsys.readouterr().out
    assert "verifies the bot endpoint: True" in out
    assert "eventid 1002" in out
    assert "You chose Help (help)." in out


def test_the_access_token_and_the_secret_path_keep_others_out() -> None:
    reached: list[str] = []
    bot = Bot()
    bot.on_text(lambda turn: reached.append(turn.text or ""))
    adapter = WebexConnectBot(
        bot, "http://127.0.0.1:9/events/x", "verify-me", access_token="bot-access-7f",
        secret="s3cret-path", path="/webex", inline=True,
    )  # fmt: skip
    adapter.runtime.outbox.register(adapter.destination, lambda payload: None)
    event = json.dumps({"Event": "Incoming message", "Conversationid": "c1", "Message": "hi",
                        "Messageid": "m1"}).encode()  # fmt: skip
    url = adapter.webhook_path
    assert url == "/webex/s3cret-path"

    def post(path: str, headers: dict[str, str], query: str = "") -> int:
        return adapter.handle(Request("POST", path, headers, event, query)).status

    assert post("/webex/wrong", {"Authorization": "Bearer bot-access-7f"}) == 403
    assert post("/other/s3cret-path", {"Authorization": "Bearer bot-access-7f"}) == 404
    assert post(url, {}) == 401
    assert post(url, {"Authorization": "Bearer nope"}) == 403
    assert reached == []  # none of them reached the bot
    assert post(url, {"Authorization": "Bearer bot-access-7f"}) == 200
    assert post(url, {"X-Access-Token": "bot-access-7f"}) == 200  # a repeat: deduped
    assert post(url, {}, "access_token=bot-access-7f") == 200
    assert reached == ["hi"]
    # the verification request needs the secret path, not the access token
    assert adapter.handle(Request("GET", url)).body == b"verify-me"
    assert adapter.handle(Request("GET", "/webex/wrong")).status == 403
    adapter.close()


def test_a_framework_route_under_a_prefix_reaches_an_adapter_with_a_path() -> None:
    adapter = WebexConnectBot(
        Bot(), "http://127.0.0.1:9/events/x", "verify-me", path="/webex", secret="s3c", inline=True
    )
    # Flask/FastAPI mounted the adapter under /bot: their URL rule chose the request
    routed = Request("GET", "/bot/webex/s3c", routed=True)
    assert adapter.handle(routed).body == b"verify-me"
    assert adapter.handle(Request("GET", "/bot/webex/nope", routed=True)).status == 403
    assert adapter.handle(Request("GET", "/bot/webex/s3c")).status == 404  # not routed: exact
    adapter.close()
