"""The SDK against its peers, in ONE table of ratios measured in one run:

- ``parse_event`` on the seed's three payloads vs ``json.loads`` and vs pydantic v2
  ``model_validate_json`` of an equivalent hand-written model;
- ``Connector.handle`` (inline runner, memory store, no-op transport) with the echo bot vs
  ``json.loads`` of the same body, and with a no-op bot (one handler that does nothing) vs
  slack_bolt ``App.dispatch`` with a no-op listener (run before the response, as the
  connector's inline runner does); two info rows beside them: the echo bot keeping no history
  (``Bot(history=0)``: what the history costs), and the same durable echo turn written by hand
  with no framework (``benchmarks/turns.py``: the path and token checked, ``parse_event``, the
  dedupe mark and the turn, the history, completion and reply stored under a lock, the reply
  handed over; the floor of that row);
- one echo reply sent through the SDK's client (``Connector.deliver``: ``OmnichannelClient.call``,
  one attempt, the default pooled transport) to a local keep-alive
  :class:`~omnichannel.testing.RecordingChannelServer`, vs ``json.loads``; the same POST with
  the standard library's ``http.client`` on one kept-alive connection shows the floor. Both
  reply rows are the *sender's own cost*: the sink runs in another process and the row is the
  CPU time of the sending thread per reply (``time.thread_time``: user + system time of the
  thread, so the kernel's work for its socket calls counts, the sink's work and the wait for
  its answer do not). Wall time per reply would add the sink's CPU and the loopback round trip,
  which on a small machine are most of it and are not the SDK's to spend. The sink runs on a
  CPU of its own (the sender on the others), as a channel server on another machine would:
  sharing the sender's core, its work cools the sender's caches between two replies;
- import time (``-X importtime``) vs pydantic and slack_bolt;
- bytes per dedupe key of :class:`~omnichannel.runtime.stores.MemoryStore` at 1,000,000 keys;
- HTTP with wrk: ``omnichannel serve`` (SQLite) and the connector's WSGI app under gunicorn
  (SQLite) vs a bare WSGI app and a minimal Flask app on the same gunicorn: acknowledged
  requests per second and ack p99 at several concurrencies (the run with the best throughput of
  ``--rounds``, interleaved), and a plot of both (``docs/performance-http.png``).

The in-process candidates are interleaved (each round times every candidate once) and the best
of ``--repeat`` (≥ 7) rounds is kept, so a noisy neighbour slows all of them alike. Peers are
optional (``pip install -e '.[bench]'``): a missing one prints "not installed" in its row.

``python -m benchmarks peers [--repeat 7] [--seconds 5] [--rounds 2] [--concurrency 10,50,200]
[--no-http] [--plot docs/performance-http.png]``
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.bench_footprint import MAX_BYTES_PER_KEY, bytes_per_key
from benchmarks.payloads import PAYLOADS
from benchmarks.run import table
from benchmarks.timing import Candidate, bound, interleaved
from benchmarks.turns import bolt_candidate, floor_candidate, handle_candidate, webhook_template

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "performance-http.png"

# targets (issue 16)
PARSE_VS_JSON = 1.6
PARSE_VS_PYDANTIC = 1.0
HANDLE_VS_JSON = 5.0
HANDLE_VS_BOLT = 0.3
REPLY_VS_JSON = 20.0
IMPORT_MS = 40.0


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# the candidates -------------------------------------------------------------------------------
def pydantic_event_model() -> Any:
    """A pydantic v2 model of the seed's ``new_message`` event, written by hand (frozen, the
    message a union discriminated by ``kind``): what an SDK on pydantic would declare."""
    from typing import Annotated, Literal, Union

    from pydantic import BaseModel, ConfigDict, Field

    class Model(BaseModel):
        model_config = ConfigDict(frozen=True, extra="ignore")

    class VisitorFields(Model):
        name: str | None = None
        login: str | None = None
        phone: str | None = None
        email: str | None = None
        site: str | None = None

    class Visitor(Model):
        id: str | None = None
        fields: VisitorFields = VisitorFields()

    class FileInfo(Model):
        id: str | None = None
        state: str | None = None
        name: str | None = None
        content_type: str | None = None
        size: int | None = None
        url: str | None = None

    class Button(Model):
        id: str
        text: str

    class Pressed(Model):
        button: Button

    class TextMessage(Model):
        kind: Literal["visitor"]
        id: str | None = None
        text: str

    class FileMessage(Model):
        kind: Literal["file_visitor"]
        id: str | None = None
        data: FileInfo

    class ButtonPress(Model):
        kind: Literal["keyboard_response"]
        id: str | None = None
        data: Pressed

    class NewMessageEvent(Model):
        event: Literal["new_message"]
        chat_id: int | str
        visitor: Visitor = Visitor()
        message: Annotated[
            Union[TextMessage, FileMessage, ButtonPress], Field(discriminator="kind")
        ]

    return NewMessageEvent


def msgspec_event_type() -> Any:
    """The same event as msgspec Structs (a tagged union on ``kind``), for reference."""
    import msgspec

    # defstruct: real types, not the strings this module's annotations are (a local class's
    # string annotations cannot be resolved)
    def struct(name: str, fields: list[Any], **options: Any) -> Any:
        return msgspec.defstruct(name, fields, frozen=True, **options)

    maybe: Any = str | None
    visitor_fields = struct(
        "VisitorFields", [(f, maybe, None) for f in ("name", "login", "phone", "email", "site")]
    )
    visitor = struct("Visitor", [("id", maybe, None), ("fields", visitor_fields, visitor_fields())])
    file_info = struct(
        "FileInfo",
        [("id", maybe, None), ("state", maybe, None), ("name", maybe, None),
         ("content_type", maybe, None), ("size", int | None, None), ("url", maybe, None)],
    )  # fmt: skip
    button = struct("Button", [("id", str), ("text", str)])
    pressed = struct("Pressed", [("button", button)])
    tagged = {"tag_field": "kind"}
    text = struct("TextMessage", [("text", str), ("id", maybe, None)], tag="visitor", **tagged)
    file = struct("FileMessage", [("data", file_info), ("id", maybe, None)], tag="file_visitor",
                  **tagged)  # fmt: skip
    press = struct("ButtonPress", [("data", pressed), ("id", maybe, None)],
                   tag="keyboard_response", **tagged)  # fmt: skip
    event = struct(
        "NewMessageEvent",
        [("event", str), ("chat_id", int | str), ("message", text | file | press),
         ("visitor", visitor, visitor())],
    )  # fmt: skip
    return msgspec.json.Decoder(event).decode


_SINK = (
    "import sys\n"
    "from omnichannel.testing import RecordingChannelServer\n"
    "with RecordingChannelServer() as sink:\n"
    "    print(sink.channel_url, flush=True)\n"
    "    sys.stdin.read()\n"
)


def _pin_apart(pid: int) -> set[int] | None:
    """Put process ``pid`` on the last CPU and this process on the others (as a channel server
    on another machine would be: its work neither takes the sender's core nor cools its
    caches); returns this process's CPUs before, or ``None`` when there are not two CPUs."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    return set(cpus)


@contextmanager
def sink_process() -> Iterator[str]:
    """A :class:`~omnichannel.testing.RecordingChannelServer` in a process of its own (its CPU
    is not the sender's); yields its channel URL; stops when the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )
    own_cpus = _pin_apart(process.pid)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().strip()
        if not url:
            raise RuntimeError("the sink process did not start")
        yield url
    finally:
        if own_cpus is not None:
            os.sched_setaffinity(0, own_cpus)
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reply_candidates(channel_url: str) -> tuple[Candidate, Candidate, Callable[[], None]]:
    """One echo reply through ``Connector.deliver`` (``OmnichannelClient.call``, one attempt,
    the SDK's pooled keep-alive transport), and the same POST through ``http.client`` on one
    kept-alive connection; both timed in CPU time of the sending thread (the module docstring
    says why)."""
    from omnichannel import Connector

    connector = Connector(token="bench-token", channel_url=channel_url, inline=True)
    payload = {
        "method": "send_message",
        "body": {"chat_id": 1, "message": {"kind": "operator", "text": "Hello, I would like"}},
    }
    deliver = connector.deliver

    def sdk() -> object:
        deliver(payload)
        return None

    parts = urlsplit(channel_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    path = parts.path + "/send_message"
    headers = {"Content-Type": "application/json"}

    def floor() -> object:
        connection.request("POST", path, json.dumps(payload["body"]).encode(), headers)
        return json.loads(connection.getresponse().read())

    sdk()
    floor()

    def close() -> None:
        connection.close()
        connector.close()

    return Candidate(sdk, clock=time.thread_time), Candidate(floor, clock=time.thread_time), close


# import time ----------------------------------------------------------------------------------
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)")


def import_ms(statement: str) -> float:
    """Milliseconds of the imports ``statement`` makes (``-X importtime``: the cumulative time
    of each top-level import after the interpreter's own start-up)."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stderr  # fmt: skip
    total, started = 0, False
    for line in err.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is None:
            continue
        if match.group(2) == "site":  # start-up ends with site; what follows is ours
            started = True
        elif started:
            total += int(match.group(1))
    return total / 1000


def imports(statements: dict[str, str], repeat: int) -> dict[str, float]:
    """Best of ``repeat`` of each statement, interleaved."""
    best = dict.fromkeys(statements, float("inf"))
    for _ in range(repeat):
        for name, statement in statements.items():
            best[name] = min(best[name], import_ms(statement))
    return best


# HTTP -----------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.args!r}")
        parts = urlsplit(url)
        try:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=1)
            connection.request("GET", "/healthz")
            status = connection.getresponse().status
            connection.close()
            if status in (200, 404, 405):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start: {process.args!r}")


@contextmanager
def _server(command: list[str], env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


SERVE = "omnichannel serve"
CONNECTOR = "Connector, gunicorn"
BARE = "bare WSGI, gunicorn"
FLASK = "Flask, gunicorn"
REPLIES = (SERVE, CONNECTOR)  # the servers whose echo bot replies to the sink


def _gunicorn(app: str) -> list[str]:
    # the same server for the three WSGI apps: 2 processes (2 cores), 8 threads each, keep-alive
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return [gunicorn, "-w", "2", "-k", "gthread", "--threads", "8", "--keep-alive", "75",
            "-b", "127.0.0.1:{port}", "--log-level", "warning", app]  # fmt: skip


def http_rows(
    seconds: int, levels: list[int], plot: Path | None, rounds: int = 2
) -> tuple[list[tuple[str, ...]], list[str]]:
    """wrk against the four servers, interleaved, the best of ``rounds`` runs (by throughput,
    with that run's p99) per server and concurrency; table rows and notes."""
    from benchmarks.bench_serve import PATH, _wrk
    from omnichannel.testing import RecordingChannelServer

    notes: list[str] = []
    if shutil.which("wrk") is None:
        return [("HTTP (wrk)", "wrk not installed", "", "", "", "skipped")], notes
    have_gunicorn = Path(sys.executable).with_name("gunicorn").exists()
    have_flask = installed("flask")
    results: dict[str, dict[int, dict[str, float]]] = {}
    with ExitStack() as stack:
        sink = stack.enter_context(RecordingChannelServer())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omnichannel-peers-")))
        env = {"OMNICHANNEL_BENCH_CHANNEL_URL": sink.channel_url}
        servers: dict[str, str] = {}
        servers[SERVE] = stack.enter_context(
            _server(
                [sys.executable, "-m", "omnichannel", "serve", "--port", "{port}",
                 "--token", "bench-token", "--channel-url", sink.channel_url,
                 "--store", f"sqlite:///{tmp / 'serve.db'}", "--log-level", "WARNING",
                 "--max-pending", "1000000"],
                env,
            )
        )  # fmt: skip
        if have_gunicorn:
            store = {"OMNICHANNEL_BENCH_STORE": f"sqlite:///{tmp / 'gunicorn.db'}"}
            servers[CONNECTOR] = stack.enter_context(
                _server(_gunicorn("benchmarks.peer_apps:connector_app()"), {**env, **store})
            )
            servers[BARE] = stack.enter_context(
                _server(_gunicorn("benchmarks.peer_apps:bare"), env)
            )
            if have_flask:
                servers[FLASK] = stack.enter_context(
                    _server(_gunicorn("benchmarks.peer_apps:flask_app()"), env)
                )
        for name, url in servers.items():  # warm up: pools, SQLite, imports on first request
            _wrk(url + PATH, 1, 10)
            _drained(sink, name)
        # rounds x levels x servers, interleaved; each server's best round kept per level
        for _ in range(rounds):
            for level in levels:
                for name, url in servers.items():
                    found = _wrk(url + PATH, seconds, level)
                    rps = (found["requests"] - found["non2xx"]) / seconds
                    best = results.setdefault(name, {}).get(level)
                    if best is None or rps > best["rps"]:
                        results[name][level] = {"rps": rps, "p99": found["p99"]}
                    if found["non2xx"]:
                        notes.append(f"{name} at c={level}: {found['non2xx']:.0f} non-2xx answers")
                    _drained(sink, name)
    if not have_gunicorn:
        notes.append("gunicorn not installed: only omnichannel serve measured")
    elif not have_flask:
        notes.append("Flask not installed")
    rows: list[tuple[str, ...]] = []
    for level in levels:
        bare = results.get(BARE, {}).get(level)
        flask = results.get(FLASK, {}).get(level)
        for name in (SERVE, CONNECTOR):
            ours = results.get(name, {}).get(level)
            if ours is None:
                continue
            rows.append(_http_row(f"HTTP c={level}: req/s, {name}", ours, bare, flask, "rps"))
        for name in (SERVE, CONNECTOR):
            ours = results.get(name, {}).get(level)
            if ours is None:
                continue
            rows.append(_http_row(f"HTTP c={level}: ack p99 ms, {name}", ours, bare, flask, "p99"))
    if plot is not None:
        notes.append(_plot(results, levels, plot))
    return rows, notes


def _drained(sink: Any, name: str, quiet: float = 0.5, timeout: float = 120.0) -> None:
    """Wait until the echo replies stop arriving (the connector's outbox emptied)."""
    if name not in REPLIES:
        return
    end = time.monotonic() + timeout
    count, since = len(sink.calls), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = len(sink.calls)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def _http_row(
    label: str,
    ours: dict[str, float],
    bare: dict[str, float] | None,
    flask: dict[str, float] | None,
    key: str,
) -> tuple[str, ...]:
    unit = "{:.0f}" if key == "rps" else "{:.1f}"
    peers = " · ".join(
        f"{name} {unit.format(peer[key])}"
        for name, peer in (("bare", bare), ("Flask", flask))
        if peer is not None
    )
    ratios = " · ".join(
        f"{ours[key] / peer[key]:.2f}" for peer in (bare, flask) if peer is not None and peer[key]
    )
    return (label, unit.format(ours[key]), peers or "not installed", ratios, "", "info")


def _plot(results: dict[str, dict[int, dict[str, float]]], levels: list[int], path: Path) -> str:
    try:
        import matplotlib
    except ImportError:
        return "plot: matplotlib not installed"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, by_level in results.items():
        xs = [level for level in levels if level in by_level]
        left.plot(xs, [by_level[x]["rps"] for x in xs], marker="o", label=name)
        right.plot(xs, [by_level[x]["p99"] for x in xs], marker="o", label=name)
    left.set(title="acknowledged requests / s (log)", yscale="log")
    right.set(title="ack latency p99, ms (log)", yscale="log")
    for axis in (left, right):
        axis.set(xlabel="connections (wrk -t2)", xscale="log")
        axis.minorticks_off()
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.grid(alpha=0.3, which="both")
    left.legend(fontsize="small")
    figure.suptitle(f"omnichannel webhook under wrk ({os.cpu_count()} cores)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"


# the suite ------------------------------------------------------------------------------------
def _verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "MISS"


def _ratio_row(
    label: str, ours: float, peer: float | None, target: float | None, unit: str = "µs"
) -> tuple[str, ...]:
    if peer is None:
        return (label, f"{ours:.2f} {unit}", "not installed", "", _target(target), "")
    ratio = ours / peer
    verdict = "info" if target is None else _verdict(ratio, target)
    return (label, f"{ours:.2f} {unit}", f"{peer:.2f} {unit}", f"{ratio:.2f}", _target(target),
            verdict)  # fmt: skip


def _target(target: float | None) -> str:
    return "" if target is None else f"≤ {target:g}x"


def bench_peers(argv: list[str] | None = None) -> bool:
    """Every peer comparison of issue 16 in one table (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers")
    parser.add_argument("--repeat", type=int, default=7, help="rounds, best kept (default 7)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk seconds per run (5)")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per server, best kept")
    parser.add_argument("--concurrency", default="10,50,200", help="wrk connections (10,50,200)")
    parser.add_argument("--no-http", action="store_true", help="skip the wrk rows")
    parser.add_argument("--keys", type=int, default=1_000_000, help="dedupe keys for bytes/key")
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"PNG to write ({PLOT.name})")
    args = parser.parse_args(argv or [])
    repeat = max(7, args.repeat)

    from omnichannel import parse_event

    rows: list[tuple[str, ...]] = [("measure", "omnichannel", "peer", "ratio", "target", "verdict")]
    ok = True
    candidates: dict[str, Candidate] = {}
    from omnichannel import _fastparse

    # parse_event as installed (with msgspec when the `fast` extra is there), and with the
    # runtime dependencies alone (the same code, JSON decoded by the standard library)
    fast = _fastparse.fast_loads is not None
    with_fast = " with omnichannel[fast]" if fast else " without omnichannel[fast]"
    for name, body in PAYLOADS.items():
        candidates[f"json {name}"] = Candidate(bound(json.loads, body))

        def parse_std(body: bytes = body) -> object:  # the standard library's path
            return _fastparse.parse(body, None)

        candidates[f"parse std {name}"] = Candidate(parse_std)
        if fast:
            candidates[f"parse {name}"] = Candidate(bound(parse_event, body))
    model = pydantic_event_model() if installed("pydantic") else None
    if model is not None:
        for name, body in PAYLOADS.items():
            candidates[f"pydantic {name}"] = Candidate(bound(model.model_validate_json, body))
    if installed("msgspec"):
        decode = msgspec_event_type()
        for name, body in PAYLOADS.items():
            candidates[f"msgspec {name}"] = Candidate(bound(decode, body))
    if installed("orjson"):
        import orjson

        candidates["orjson text"] = Candidate(lambda: orjson.loads(PAYLOADS["text"]))
    webhook = webhook_template() % (7, 7)
    candidates["json webhook"] = Candidate(lambda: json.loads(webhook))
    handle, close_handle = handle_candidate()
    candidates["handle"] = handle
    handle_noop, close_noop = handle_candidate(noop=True)
    candidates["handle no-op"] = handle_noop
    handle_bare, close_bare = handle_candidate(history=0)
    candidates["handle no history"] = handle_bare
    candidates["floor"], close_floor = floor_candidate()
    if installed("slack_bolt"):
        candidates["bolt"] = bolt_candidate()
    with sink_process() as channel_url:
        sdk, floor, close_reply = reply_candidates(channel_url)
        candidates["reply"], candidates["reply floor"] = sdk, floor
        try:
            us = interleaved(candidates, repeat=repeat)
        finally:
            close_reply()
            close_handle()
            close_noop()
            close_bare()
            close_floor()

    if not fast:
        for name in PAYLOADS:
            us[f"parse {name}"] = us[f"parse std {name}"]
    for name in PAYLOADS:
        row = _ratio_row(f"parse_event({name}) vs json.loads, runtime dependencies alone",
                         us[f"parse std {name}"], us[f"json {name}"], PARSE_VS_JSON)  # fmt: skip
        ok &= row[-1] != "MISS"
        rows.append(row)
    if fast:
        for name in PAYLOADS:
            rows.append(_ratio_row(f"parse_event({name}){with_fast} vs json.loads",
                                   us[f"parse {name}"], us[f"json {name}"], None))  # fmt: skip
    for name in PAYLOADS:
        row = _ratio_row(f"parse_event({name}){with_fast} vs pydantic model_validate_json",
                         us[f"parse {name}"], us.get(f"pydantic {name}"), PARSE_VS_PYDANTIC)  # fmt: skip
        ok &= row[-1] != "MISS"
        rows.append(row)
    for name in PAYLOADS:
        rows.append(_ratio_row(f"parse_event({name}){with_fast} vs msgspec Struct decode",
                               us[f"parse {name}"], us.get(f"msgspec {name}"), None))  # fmt: skip
    if "orjson text" in us:  # what decoding with orjson (a "fast" extra) could save
        rows.append(_ratio_row("  orjson.loads(text) vs json.loads (JSON decoding alone)",
                               us["orjson text"], us["json text"], None))  # fmt: skip
    for label, ours, peer, target in (
        ("Connector.handle, echo bot vs json.loads(body)", "handle", us["json webhook"],
         HANDLE_VS_JSON),
        ("Connector.handle, no-op bot vs slack_bolt App.dispatch, no-op", "handle no-op",
         us.get("bolt"), HANDLE_VS_BOLT),
        ("  Connector.handle, echo bot vs slack_bolt App.dispatch, no-op", "handle",
         us.get("bolt"), None),
        ("  Connector.handle, echo bot keeping no history vs json.loads(body)",
         "handle no history", us["json webhook"], None),
        ("  the same durable echo turn by hand (floor) vs json.loads(body)", "floor",
         us["json webhook"], None),
    ):  # fmt: skip
        row = _ratio_row(label, us[ours], peer, target)
        ok &= row[-1] != "MISS"
        rows.append(row)
    row = _ratio_row("echo reply (Connector.deliver, sender CPU) vs json.loads(body)", us["reply"],
                     us["json webhook"], REPLY_VS_JSON)  # fmt: skip
    ok &= row[-1] != "MISS"
    rows.append(row)
    rows.append(_ratio_row("  the same POST by http.client (floor, CPU) vs json.loads(body)",
                           us["reply floor"], us["json webhook"], None))  # fmt: skip

    statements = {"omnichannel": "import omnichannel"}
    if installed("pydantic"):
        statements["pydantic"] = "import pydantic"
    if installed("slack_bolt"):
        statements["slack_bolt"] = "import slack_bolt"
    statements["Connector"] = "from omnichannel import Connector"
    if installed("slack_bolt"):
        statements["App"] = "from slack_bolt import App"
    ms = imports(statements, repeat)
    import_ok = ms["omnichannel"] <= IMPORT_MS
    ok &= import_ok
    for lib in ("pydantic", "slack_bolt"):
        row = _ratio_row(f"import omnichannel vs import {lib}", ms["omnichannel"], ms.get(lib),
                         None, "ms")  # fmt: skip
        rows.append((*row[:4], f"≤ {IMPORT_MS:g} ms", "ok" if import_ok else "MISS"))
    rows.append(_ratio_row("from omnichannel import Connector vs from slack_bolt import App",
                           ms["Connector"], ms.get("App"), None, "ms"))  # fmt: skip

    from benchmarks.bench_footprint import _Before
    from omnichannel.runtime.stores import MemoryStore

    per_key = bytes_per_key(MemoryStore, args.keys)
    before = bytes_per_key(_Before, args.keys)
    key_ok = per_key <= MAX_BYTES_PER_KEY
    ok &= key_ok
    rows.append((f"MemoryStore bytes per dedupe key at {args.keys:,} vs the layout before",
                 f"{per_key:.0f} B", f"{before:.0f} B", f"{per_key / before:.2f}",
                 f"≤ {MAX_BYTES_PER_KEY} B", "ok" if key_ok else "MISS"))  # fmt: skip

    notes: list[str] = []
    if not args.no_http:
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        http, notes = http_rows(args.seconds, levels, args.plot, max(1, args.rounds))
        rows += http

    print(
        f"omnichannel vs peers: one run, in-process rows best of {repeat} interleaved rounds; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print(table(rows, left=1))
    for note in notes:
        print(note)
    return ok


SUITES: dict[str, Callable[..., bool]] = {"peers": bench_peers}
