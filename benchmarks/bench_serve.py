"""``omnichannel serve`` (SQLite store, echo bot replying to a local keep-alive sink) under
``wrk -t2 -c200`` against the bare webhook on the same server (the SDK's
:class:`~omnichannel.integrations.server.LocalServer` serving ``benchmarks.peer_apps.BareHandler``:
read the body, ``json.loads`` it, answer), interleaved, the best of ``--rounds`` runs each:

- requests/s of ``serve`` against the bare server (the target: at least 0.5 times), split into
  acknowledged (200) and shed (503 + ``Retry-After``: over ``max_pending``, or a webhook that
  would wait too long for a thread);
- every other status (the target: none), counted by the wrk script;
- ack latency p50 / p99 (the target: p99 ≤ 50 ms);
- replies delivered during the load, and how long the outbox takes to empty after it;
- below saturation: the ack p99 with 50 connections each pausing about ``THINK_MS``.

``python -m benchmarks serve [--seconds 20] [--connections 200] [--rounds 2]``. Needs ``wrk``
(Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from benchmarks.run import table
from omnichannel.testing import RecordingChannelServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
PATH = f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
THINK_MS = 200  # mean pause per connection: 50 connections send about 250 messages/s in all
P99_MS = 50.0
RATIO = 0.5

# every request a new delivery (thread id + counter), 500 chats; statuses counted per thread
_WRK_SCRIPT = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("prefix", "t" .. #threads .. "x" .. os.time() .. "r" .. math.random(1, 1000000))
end
local counter = 0
statuses = {}
request = function()
  counter = counter + 1
  local body = '{"event":"new_message","chat_id":' .. (counter % 500) ..
    ',"visitor":{"id":"v-1","fields":{"name":"Ann"}},"message":{"id":"' .. prefix .. '-' ..
    counter .. '","kind":"visitor","text":"hello ' .. counter .. '"}}'
  return wrk.format("POST", "__PATH__", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  local key = tostring(status)
  if status == 503 and headers["Retry-After"] == nil then key = "503-no-retry-after" end
  statuses[key] = (statuses[key] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for key, n in pairs(counts) do total[key] = (total[key] or 0) + n end
  end
  for key, n in pairs(total) do io.write("status " .. key .. " " .. n .. "\\n") end
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
    """One wrk run: requests, requests/s, p50/p99 (ms), and ``status <code>`` counts."""
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
    found["rps"] = float(total.group(1)) / float(total.group(2))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    found["socket_errors"] = float(sum(int(g) for g in errors.groups())) if errors else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        found[f"p{pct}"] = _ms(m.group(1), m.group(2))
    for code, count in re.findall(r"^status (\S+) (\d+)$", out, re.M):
        found[f"status {code}"] = float(count)
    return found


def _wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if requests.get(base + "/healthz", timeout=0.5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.args!r} did not start")


@contextmanager
def _process(command: list[str]) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in command],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _others(result: dict[str, float]) -> float:
    """Answers other than 200 and 503 with Retry-After, plus socket errors."""
    documented = result.get("status 200", 0.0) + result.get("status 503", 0.0)
    return result["requests"] - documented + result["socket_errors"]


def bench_serve(argv: list[str] | None = None) -> bool:
    """``serve`` vs the bare webhook on the same server under wrk -c200 (see the docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve")
    parser.add_argument("--seconds", type=int, default=20, help="wrk seconds per run (20)")
    parser.add_argument("--connections", type=int, default=200, help="wrk connections (200)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per server, best kept (2)")
    args = parser.parse_args(argv or [])
    if shutil.which("wrk") is None:
        print("serve: wrk is not installed (apt-get install wrk); skipped")
        return True
    seconds, connections = args.seconds, args.connections
    bare_runs: list[dict[str, float]] = []
    serve_runs: list[tuple[dict[str, float], int, int, float]] = []
    with RecordingChannelServer() as sink, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(max(1, args.rounds)):
            with _process([sys.executable, "-m", "benchmarks.peer_apps", "{port}"]) as base:
                bare_runs.append(_wrk(base + PATH, seconds, connections))
            store = f"sqlite:///{Path(tmp) / f'bench-{round_}.db'}"
            command = [sys.executable, "-m", "omnichannel", "serve", "--port", "{port}",
                       "--token", TOKEN, "--channel-url", sink.channel_url, "--store", store,
                       "--log-level", "WARNING"]  # fmt: skip
            with _process(command) as base:
                before = len(sink.calls)
                result = _wrk(base + PATH, seconds, connections)
                delivered_during = len(sink.calls) - before
                acks = int(result.get("status 200", 0))
                drain_started = time.monotonic()
                while len(sink.calls) - before < acks and time.monotonic() - drain_started < 120:
                    time.sleep(0.05)
                drain = time.monotonic() - drain_started
                delivered = len(sink.calls) - before
                serve_runs.append((result, delivered_during, delivered, drain))
        with _process(command) as base:
            paced = _wrk(base + PATH, seconds, 50, think_ms=THINK_MS)
    bare = max(bare_runs, key=lambda run: run["rps"])
    served, delivered_during, delivered, drain = max(serve_runs, key=lambda run: run[0]["rps"])
    acked = served.get("status 200", 0.0)
    ratio = served["rps"] / bare["rps"]
    others = _others(served)
    ok_ratio, ok_p99, ok_others = ratio >= RATIO, served["p99"] <= P99_MS, others == 0
    ok_drain = delivered >= acked and drain <= 10
    print(
        f"omnichannel serve (SQLite, echo bot) vs the bare webhook on the same server, "
        f"wrk -t2 -c{connections} -d{seconds}s, best of {max(1, args.rounds)} interleaved runs; "
        f"{os.cpu_count()} cores"
    )
    print(
        table(
            [
                ("measure", "serve", "bare", "ratio", "target", "verdict"),
                ("requests/s", f"{served['rps']:.0f}", f"{bare['rps']:.0f}", f"{ratio:.2f}",
                 f"≥ {RATIO}", "ok" if ok_ratio else "MISS"),
                ("  acknowledged (200)/s", f"{acked / seconds:.0f}", "", "", "", ""),
                ("  shed (503 + Retry-After)/s", f"{served.get('status 503', 0) / seconds:.0f}",
                 "", "", "", ""),
                ("other answers and socket errors", f"{others:.0f}",
                 f"{_others(bare):.0f}", "", "0", "ok" if ok_others else "MISS"),
                ("ack latency p50 (ms)", f"{served['p50']:.1f}", f"{bare['p50']:.1f}", "", "", ""),
                ("ack latency p99 (ms)", f"{served['p99']:.1f}", f"{bare['p99']:.1f}", "",
                 f"≤ {P99_MS:g}", "ok" if ok_p99 else "MISS"),
                ("replies delivered during the load /s", f"{delivered_during / seconds:.0f}", "",
                 "", "", ""),
                ("outbox empty after the load (s)", f"{drain:.1f}", "", "", "≤ 10",
                 "ok" if ok_drain else "MISS"),
                (f"ack p99 (ms), 50 connections at ~{paced['rps']:.0f} req/s",
                 f"{paced['p99']:.1f}", "", "", "", ""),
            ]
        )
    )  # fmt: skip
    for index, ((run, *_), base_run) in enumerate(zip(serve_runs, bare_runs, strict=True), 1):
        print(
            f"run {index}: serve {run['rps']:.0f} req/s, p99 {run['p99']:.1f} ms, "
            f"{run.get('status 200', 0) / seconds:.0f} acknowledged/s, "
            f"{run.get('status 503', 0) / seconds:.0f} shed/s, {_others(run):.0f} other; "
            f"bare {base_run['rps']:.0f} req/s, p99 {base_run['p99']:.1f} ms"
        )
    return ok_ratio and ok_p99 and ok_others and ok_drain


SUITES: dict[str, Callable[[], bool]] = {"serve": bench_serve}
