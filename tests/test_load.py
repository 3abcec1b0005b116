"""A bounded flood against a real ``omnichannel serve`` (SQLite) on 127.0.0.1: 200 keep-alive
connections posting as fast as they are answered. Every answer must be a documented one (200, or
503 with ``Retry-After`` when the pipeline sheds load), and every acknowledged message must be
answered exactly once; nothing refused may be answered. Throughput and latency figures are in
``benchmarks/`` (``python -m benchmarks serve``), never asserted here."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from omnichannel.testing import RecordingChannelServer, text_event
from tests.processes import BOT, WEBHOOK, bot_env, running

CONNECTIONS = 200
SECONDS = 4.0
MAX_REQUESTS = 30_000  # bounds the run whatever the machine


async def _client(
    port: int, index: int, deadline: float, answers: list[tuple[str, int, bool]], budget: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            text = f"c{index}-{sent}"
            body = json.dumps(
                text_event(text, chat_id=index, message_id=f"m-{text}"), ensure_ascii=False
            ).encode()
            head = (
                f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            writer.write(head + body)
            sent += 1
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length = 0
            retry_after = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "retry-after":
                    retry_after = bool(value.strip())
            await reader.readexactly(length)
            answers.append((text, status, retry_after))
    finally:
        writer.close()


async def _flood(port: int) -> list[tuple[str, int, bool]]:
    answers: list[tuple[str, int, bool]] = []
    deadline = time.monotonic() + SECONDS
    budget = [MAX_REQUESTS]
    await asyncio.gather(*(_client(port, i, deadline, answers, budget) for i in range(CONNECTIONS)))
    return answers


def test_a_flood_gets_only_documented_answers_and_each_acknowledged_message_once(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'load.db'}"
    with RecordingChannelServer() as channel:
        with running(
            store, channel.channel_url, *BOT, "--max-pending", "400", env=bot_env(0.0)
        ) as serve:
            answers = asyncio.run(_flood(serve.port))
            statuses = Counter(status for _, status, _ in answers)
            # documented: 200 stored; 503 + Retry-After when over max_pending or saturated
            assert set(statuses) <= {200, 503}, statuses
            assert all(retry for _, status, retry in answers if status == 503)
            accepted = [text for text, status, _ in answers if status == 200]
            refused = {text for text, status, _ in answers if status == 503}
            assert len(accepted) > 100, statuses  # the bot side did work under the flood
            channel.wait_for(len(accepted), timeout=120)
            assert serve.terminate() == 0
            log = serve.log()
        delivered = Counter(channel.texts())
        lost = [text for text in accepted if text not in delivered]
        duplicated = sorted(text for text, count in delivered.items() if count > 1)
        answered_refused = sorted(refused & set(delivered))
        assert (lost, duplicated, answered_refused) == ([], [], [])
        assert "Traceback" not in log
