"""``omnichannel serve`` under ``wrk -c50`` with the SQLite store and an echo bot replying to a
local keep-alive sink: messages acknowledged per second against replies delivered per second
(saturated: wrk sends as fast as it is answered), how long the outbox takes to empty after the
load stops, and the acknowledgement latency (p50, p99) both saturated and below saturation (50
connections, each pausing a random 0.5 to 1.5 times ``THINK_MS`` between requests). Needs ``wrk`` on PATH (Debian:
``apt-get install wrk``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks.run import table
from omnichannel.testing import RecordingChannelServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
PATH = f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
THINK_MS = 200  # mean pause per connection: 50 connections send about 250 messages/s in all

# every request a new delivery (thread id + counter), 500 chats
_WRK_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("prefix", "t" .. threads .. "x" .. os.time())
end
local counter = 0
request = function()
  counter = counter + 1
  local body = '{"event":"new_message","chat_id":' .. (counter % 500) ..
    ',"visitor":{"id":"v-1","fields":{"name":"Ann"}},"message":{"id":"' .. prefix .. '-' ..
    counter .. '","kind":"visitor","text":"hello ' .. counter .. '"}}'
  return wrk.format("POST", "__PATH__", {["Content-Type"] = "application/json"}, body)
end
__DELAY__
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk(url: str, seconds: int, connections: int, think_ms: int = 0) -> dict[str, float]:
    # a random pause per request: with a fixed one, wrk keeps the connections in lockstep and
    # every one of them fires at the same instant (bursts of 50), which no platform does
    delay = (
        f"delay = function() return math.random({think_ms // 2}, {think_ms * 3 // 2}) end"
        if think_ms
        else ""
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.replace("__PATH__", PATH).replace("__DELAY__", delay))
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             url],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    found: dict[str, float] = {}
    total = re.search(r"(\d+) requests in ([\d.]+)s", out)
    assert total, out
    found["requests"] = float(total.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        found[f"p{pct}"] = _ms(m.group(1), m.group(2))
    return found


def bench_serve(seconds: int = 10, connections: int = 50) -> bool:
    """Acknowledged vs delivered per second, outbox drain time, ack latency, under wrk -c50."""
    if shutil.which("wrk") is None:
        print("serve: wrk is not installed (apt-get install wrk); skipped")
        return True
    with RecordingChannelServer() as sink, tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        store = f"sqlite:///{Path(tmp) / 'bench.db'}"
        process = subprocess.Popen(
            [sys.executable, "-m", "omnichannel", "serve", "--port", str(port), "--token", TOKEN,
             "--channel-url", sink.channel_url, "--store", store, "--log-level", "WARNING",
             "--max-pending", "1000000"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if requests.get(base + "/healthz", timeout=0.5).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.1)
            started = time.monotonic()
            result = _wrk(base + PATH, seconds, connections)
            load_time = time.monotonic() - started
            acked = result["requests"] - result["non2xx"]
            delivered_during = len(sink.calls)
            drain_started = time.monotonic()
            while len(sink.calls) < acked and time.monotonic() - drain_started < 120:
                time.sleep(0.05)
            drain = time.monotonic() - drain_started
            delivered = len(sink.calls)
            # latency below saturation: each connection waits think_ms between its requests
            paced = _wrk(base + PATH, seconds, connections, think_ms=THINK_MS)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    ack_rate = acked / load_time
    deliver_rate = delivered_during / load_time
    ok_rate = deliver_rate >= ack_rate * 0.95
    ok_drain = drain <= 5.0 and delivered >= acked
    ok_p99 = paced["p99"] <= 20.0
    paced_rate = paced["requests"] / seconds
    print(f"omnichannel serve, SQLite store, echo bot, wrk -t2 -c{connections} -d{seconds}s")
    print(
        table(
            [
                ("measure", "value", "target", "verdict"),
                ("acknowledged/s", f"{ack_rate:.0f}", "", ""),
                ("delivered/s (during load)", f"{deliver_rate:.0f}", "≥ acknowledged/s",
                 "ok" if ok_rate else "MISS"),
                ("delivered / acknowledged", f"{deliver_rate / ack_rate:.2f}", "≥ 0.95", ""),
                ("outbox empty after load (s)", f"{drain:.1f}", "≤ 5", "ok" if ok_drain else "MISS"),
                ("ack latency p50 (ms), saturated", f"{result['p50']:.1f}", "", ""),
                ("ack latency p99 (ms), saturated", f"{result['p99']:.1f}", "", ""),
                (f"ack latency p50 (ms), {paced_rate:.0f} req/s", f"{paced['p50']:.1f}", "", ""),
                (f"ack latency p99 (ms), {paced_rate:.0f} req/s", f"{paced['p99']:.1f}", "≤ 20",
                 "ok" if ok_p99 else "MISS"),
                ("non-2xx answers", f"{result['non2xx']:.0f}", "0", ""),
            ]
        )
    )  # fmt: skip
    return ok_rate and ok_drain and ok_p99


SUITES: dict[str, Callable[[], bool]] = {"serve": bench_serve}
