"""Bot benchmarks: what async handlers, middleware and conversation history cost per turn, and the
event-loop design (one shared loop vs one loop per worker thread) side by side.

``python -m benchmarks bots``. Ratios only: this machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.run import per_call_us, table
from omnichannel import Bot, Connector, Request, Turn
from omnichannel.runtime import aio
from omnichannel.testing import text_event


def _connector(bot: Bot) -> Callable[[], object]:
    connector = Connector(bot, token="bench-token", channel_url="http://127.0.0.1:9/c", inline=True)
    connector.runtime.outbox.register(connector.destination, lambda payload: None)
    bodies = [
        json.dumps(text_event("Hello there", message_id=f"m-{i}", chat_id=i % 50)).encode()
        for i in range(300_000)
    ]
    counter = iter(range(len(bodies)))
    path, headers = connector.webhook_path, {"Content-Type": "application/json"}
    return lambda: connector.handle(Request("POST", path, headers, bodies[next(counter)]))


def _bots() -> dict[str, Bot]:
    plain = Bot(history=0)
    plain.on_text(lambda turn: turn.text)

    history = Bot()
    history.on_text(lambda turn: turn.text)

    state = Bot()

    @state.on_text
    def count(turn: Turn) -> str | None:
        turn.state["n"] = turn.state.get("n", 0) + 1
        return turn.text

    asynchronous = Bot(history=0)

    @asynchronous.on_text
    async def echo(turn: Turn) -> str | None:
        return turn.text

    wrapped = Bot(history=0)

    @wrapped.use
    async def middleware(turn: Turn, next: Callable[[], Any]) -> None:
        await next()

    wrapped.on_text(echo)
    return {
        "sync handler, history off": plain,
        "sync handler, history on (default)": history,
        "sync handler + turn.state": state,
        "async handler": asynchronous,
        "async middleware + async handler": wrapped,
    }


def bench_turn_cost() -> bool:
    """Connector.handle (inline, memory store) per bot shape, against the plain sync bot."""
    results = {name: per_call_us(_connector(bot), repeat=5) for name, bot in _bots().items()}
    base = results["sync handler, history off"]
    rows = [("bot", "µs per message", "x sync, no history")]
    rows += [(name, f"{us:.1f}", f"{us / base:.2f}") for name, us in results.items()]
    print("Per-turn cost of bot features (Connector.handle inline, memory store, best of 5)")
    print(table(rows))
    return True


async def _nothing() -> int:
    return 1


def bench_loop_design() -> bool:
    """Running a coroutine from a worker thread: the shared loop vs a loop per thread, and 64
    concurrent 0.2 s awaits on 64 worker threads with each design."""
    local = threading.local()

    def per_thread() -> int:
        loop = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(_nothing())

    shared_us = per_call_us(lambda: aio.run_coroutine(_nothing()), repeat=5)
    own_us = per_call_us(per_thread, repeat=5)

    async def slow() -> None:
        await asyncio.sleep(0.2)

    def wall(run: Callable[[], object]) -> float:
        with ThreadPoolExecutor(64) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: run(), range(64)))
            return time.perf_counter() - start

    shared_wall = wall(lambda: aio.run_coroutine(slow()))
    own_wall = wall(lambda: asyncio.run(slow()))
    print("Event-loop design: one shared loop (chosen) vs a loop per worker thread")
    print(
        table(
            [
                ("design", "µs per trivial coroutine", "64 x 0.2 s awaits, wall s"),
                ("shared loop", f"{shared_us:.1f}", f"{shared_wall:.2f}"),
                ("loop per thread", f"{own_us:.1f}", f"{own_wall:.2f}"),
                ("ratio shared / per thread", f"{shared_us / own_us:.2f}", ""),
            ]
        )
    )
    print(
        "The shared loop costs a thread hop per call, but an async client made once "
        "(AsyncOpenAI, httpx.AsyncClient) works in every turn; with a loop per thread it fails "
        "on the second thread ('attached to a different loop')."
    )
    return True


SUITES = {"bots": lambda: bench_turn_cost() & bench_loop_design()}
