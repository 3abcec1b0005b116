"""Throughput of ``omnichannel serve`` with the SQLite store against the memory store, under a
local load generator (threads posting distinct deliveries over keep-alive-less HTTP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks.run import table
from omnichannel.testing import RecordingChannelServer, text_event

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _throughput(store: str, channel_url: str, seconds: float = 5.0, clients: int = 8) -> float:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "omnichannel", "serve", "--port", str(port), "--token", TOKEN,
         "--channel-url", channel_url, "--store", store, "--log-level", "WARNING"],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/healthz", timeout=0.5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        done = [0] * clients
        stop = time.monotonic() + seconds

        def client(n: int) -> None:
            i = 0
            with requests.Session() as http:
                while time.monotonic() < stop:
                    body = json.dumps(
                        text_event("hi", chat_id=n * 1000 + i % 50, message_id=f"{n}-{i}")
                    )
                    if http.post(url, data=body, timeout=10).status_code == 200:
                        done[n] += 1
                    i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / (time.monotonic() - started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def bench_serve() -> bool:
    """Acknowledged deliveries per second: ``serve --store sqlite`` vs ``--store memory``."""
    target = 0.7
    with RecordingChannelServer() as channel, tempfile.TemporaryDirectory() as tmp:
        memory = _throughput("memory://", channel.channel_url)
        sqlite = _throughput(f"sqlite:///{Path(tmp) / 'bench.db'}", channel.channel_url)
    ratio = sqlite / memory
    verdict = "ok" if ratio >= target else "MISS"
    print("omnichannel serve throughput (echo bot, 8 client threads, 5 s each, one run)")
    print(
        table(
            [
                ("memory req/s", "sqlite req/s", "ratio", f"target ≥ {target}"),
                (f"{memory:.0f}", f"{sqlite:.0f}", f"{ratio:.2f}", verdict),
            ]
        )
    )
    return ratio >= target


SUITES: dict[str, Callable[[], bool]] = {"serve": bench_serve}
