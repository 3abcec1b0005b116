"""Where the time of a ``Connector.handle`` turn goes: ``python -m benchmarks stages``.

The peers suite times the whole echo turn against ``json.loads`` of its body. This suite times
its parts on their own, in the same interleaved rounds, so the sum can be read against the
whole and against a target:

- ``parse_event`` of the body (the parser ``handle`` uses: the fast one when ``[fast]`` is
  installed);
- the runtime alone: a channel whose parse and bot do nothing (path, admission with its dedupe
  mark and stored turn, the claim, the turn's completion, the acknowledgement);
- the bot layer alone: the echo bot run on a parsed event, in memory (the :class:`Turn`, the
  dispatch, the reply rendered and collected, the two history lines and the write that would
  commit them), with no store call but the read of the chat's record;
- ``Connector.handle`` with a bot that does nothing and keeps no history, the echo bot keeping
  no history, and the echo bot (the peers suite's row);
- the same durable echo turn written by hand (the peers suite's floor).

The last two rows add the three parts up, and show what the whole turn costs beyond them (the
connector's route, token and deliveries, the history and reply written with the turn's
completion, the reply's delivery through the outbox). No targets: the figures say which part a
target on the whole leaves room for.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks.run import table
from benchmarks.timing import Candidate, interleaved
from benchmarks.turns import Bodies, floor_candidate, handle_candidate, webhook_template


def runtime_candidate() -> tuple[Candidate, Callable[[], None]]:
    """A channel whose parse and bot do nothing, on the inline runner and the memory store:
    what the runtime costs around them (each body a new delivery)."""
    from omnichannel.runtime.http import Request
    from omnichannel.runtime.pipeline import Delivery, WebhookChannel

    class Bare(WebhookChannel):
        kind = "bare"

        def __init__(self) -> None:
            self._attach(None, "stages", inline=True)

        def parse(self, request: Request) -> list[Delivery]:
            body = request.body.decode()
            return [Delivery(chat="1", key=body, payload={"body": body})]

        def process(self, payload: Mapping[str, Any]) -> None:
            return None

        def deliver(self, payload: Mapping[str, Any]) -> None:
            return None

    channel = Bare()
    bodies = Bodies()
    headers = {"Content-Type": "application/json"}
    handle, take = channel.handle, bodies.next

    def call() -> object:
        return handle(Request("POST", "/", headers, take()))

    def close() -> None:
        assert channel.runtime.store.pending("inbox") == 0
        channel.close()

    return Candidate(call, bodies.prepare), close


def bot_layer_candidate() -> tuple[Candidate, Callable[[], None]]:
    """The echo bot (history 20) on a parsed event, in memory: the Turn, the dispatch, the reply
    rendered into the turn's batch, the history lines and the write committing them (computed,
    not stored), the chat's record read as a turn reads it (it holds 20 lines)."""
    from omnichannel import Bot, Connector, parse_event
    from omnichannel.runtime.bot import Turn
    from omnichannel.runtime.conversation import TurnRecords, activate, conversation_key, deactivate

    connector = Connector(
        Bot(), token="bench-token", channel_url="http://127.0.0.1:9/channel", inline=True
    )
    event = parse_event(webhook_template() % (7, 7))
    message = event.messages[0]
    store, outbox, bot = connector.runtime.store, connector.runtime.outbox, connector.bot
    line = ["user", "Hello, I would like a pizza", 1_760_000_000.0]
    key = conversation_key(connector.destination, event.chat_id)
    store.set_state(key, {"history": [line] * 20, "keep": 20})
    ids = itertools.count()

    def call() -> object:
        records = TurnRecords(store)
        token = activate(records)
        batch, batch_token = outbox.begin_turn(f"stages-{next(ids)}")
        try:
            bot(Turn(event, message, connector))
        finally:
            outbox.end_turn(batch_token)
            deactivate(token)
        assert len(batch.items) == 1
        return records.writes()

    def close() -> None:
        connector.close()

    return Candidate(call), close


def bench_stages(argv: Sequence[str] = ()) -> bool:
    """Time the parts of the echo turn and the whole, in one interleaved run; print ratios."""
    import argparse

    from omnichannel import parse_event

    parser = argparse.ArgumentParser(prog="python -m benchmarks stages")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved rounds (7)")
    args = parser.parse_args(list(argv))

    body = webhook_template() % (7, 7)
    candidates: dict[str, Candidate] = {
        "json": Candidate(lambda: json.loads(body)),
        "parse": Candidate(lambda: parse_event(body)),
    }
    closers: list[Callable[[], None]] = []
    for name, (candidate, close) in (
        ("runtime", runtime_candidate()),
        ("bot layer", bot_layer_candidate()),
        ("handle nothing", handle_candidate(noop=True, history=0)),
        ("handle no history", handle_candidate(history=0)),
        ("handle", handle_candidate()),
        ("floor", floor_candidate()),
    ):
        candidates[name] = candidate
        closers.append(close)
    try:
        us = interleaved(candidates, repeat=args.repeat)
    finally:
        for close in closers:
            close()

    base = us["json"]
    labels = {
        "json": "json.loads(body)",
        "parse": "parse_event(body)",
        "runtime": "the runtime alone (a channel whose parse and bot do nothing)",
        "bot layer": "the bot layer alone (echo, history 20, in memory)",
        "handle nothing": "Connector.handle, a bot doing nothing, keeping no history",
        "handle no history": "Connector.handle, echo bot keeping no history",
        "handle": "Connector.handle, echo bot (the peers row)",
        "floor": "the same durable echo turn by hand (the floor)",
    }
    rows = [("part", "µs", "vs json.loads")]
    rows += [(label, f"{us[name]:.2f}", f"{us[name] / base:.2f}") for name, label in labels.items()]
    parts = us["parse"] + us["runtime"] + us["bot layer"]
    rows.append(("parse + runtime alone + bot layer alone", f"{parts:.2f}", f"{parts / base:.2f}"))
    glue = us["handle"] - parts
    rows.append(
        (
            "the echo turn minus those parts (the connector's own steps, the reply's delivery)",
            f"{glue:.2f}",
            f"{glue / base:.2f}",
        )
    )
    print(
        f"where a turn's time goes: one run, best of {args.repeat} interleaved rounds; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print(table(rows, left=1))
    return True


SUITES: dict[str, Callable[..., bool]] = {"stages": bench_stages}
