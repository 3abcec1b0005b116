"""Connector benchmarks: the cost of ``Connector.handle`` against ``json.loads`` of the same body,
and the time to acknowledge while the bot is slow."""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
from collections.abc import Callable

import requests

from benchmarks.run import per_call_us, table
from omnichannel import Bot, Connector, Request, Runtime, Turn
from omnichannel.testing import text_event


def _bodies(n: int) -> list[bytes]:
    # distinct message ids: every call is a new delivery (a repeat would skip the bot)
    return [
        json.dumps(
            text_event("Hello, I would like a pizza", message_id=f"b-{i}", chat_id=i % 50)
        ).encode()
        for i in range(n)
    ]


def bench_handle_inline() -> bool:
    """``Connector.handle`` (inline runner, echo bot, no-op outbound) vs ``json.loads``."""
    target = 5.0
    connector = Connector(
        Bot(), token="bench-token", channel_url="http://127.0.0.1:9/channel", inline=True
    )
    connector.runtime.outbox.register(
        connector.destination, lambda payload: None
    )  # no-op transport
    bodies = _bodies(400_000)
    headers = {"Content-Type": "application/json"}
    path = connector.webhook_path
    counter = iter(range(len(bodies)))

    def handle() -> object:
        return connector.handle(Request("POST", path, headers, bodies[next(counter)]))

    cycle = itertools.cycle(bodies[:1000])

    def loads() -> object:
        return json.loads(next(cycle))

    base = per_call_us(loads, repeat=5)
    ours = per_call_us(handle, repeat=5)
    assert connector.runtime.store.pending("outbox") == 0
    ratio = ours / base
    verdict = "ok" if ratio <= target else "MISS"
    print("Connector.handle (inline, echo bot, no-op transport) vs json.loads (best of 5)")
    print(
        table(
            [
                ("json.loads µs", "handle µs", "ratio", f"target ≤ {target}"),
                (f"{base:.2f}", f"{ours:.2f}", f"{ratio:.2f}", verdict),
            ]
        )
    )
    connector.close()
    return ratio <= target


def bench_ack_latency() -> bool:
    """Time to acknowledge over real HTTP while every bot turn takes 10 s (background runner)."""
    from tests.helpers import serve_handler

    target_ms = 20.0
    release = threading.Event()
    bot = Bot()

    @bot.on_text
    def slow(turn: Turn) -> str:
        release.wait(10)  # "sleeps 10 s", but lets the benchmark end promptly
        return "done"

    connector = Connector(
        bot,
        token="bench-token",
        channel_url="http://127.0.0.1:9/channel",
        runtime=Runtime(workers=8),
    )
    connector.runtime.outbox.register(connector.destination, lambda payload: None)
    latencies: list[float] = []
    bodies = _bodies(1000)
    with serve_handler(connector) as url, requests.Session() as http:
        webhook = url + connector.webhook_path
        for i, body in enumerate(bodies):
            started = time.perf_counter()
            response = http.post(webhook, data=body, headers={"Content-Type": "application/json"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (i, response.text)
    release.set()
    connector.close(timeout=15)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    verdict = "ok" if p99 <= target_ms else "MISS"
    print("time to acknowledge, 1000 HTTP requests, bot takes 10 s per turn, background runner")
    print(
        table(
            [
                ("p50 ms", "p99 ms", "max ms", f"target p99 ≤ {target_ms:.0f} ms"),
                (f"{p50:.2f}", f"{p99:.2f}", f"{latencies[-1]:.2f}", verdict),
            ]
        )
    )
    return p99 <= target_ms


SUITES: dict[str, Callable[[], bool]] = {"handle": bench_handle_inline, "ack": bench_ack_latency}
