"""Metrics and logs: the counters move as real messages flow (inline and in the background, over
real HTTP on 127.0.0.1), the exposition follows the Prometheus text format 0.0.4 (checked by a
strict parser below), scraping survives a dead store, JSON log lines carry the pipeline's
fields, no visitor-controlled id can forge a log line, and ``omnichannel serve --log-level
DEBUG`` never prints a secret."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from omnichannel import Bot, Connector, Delivery, Request, Response, Runtime, Turn, WebhookChannel
from omnichannel.integrations.server import LocalServer
from omnichannel.logs import configure_logging, escape_controls, redact_paths
from omnichannel.runtime.metrics import (
    CONTENT_TYPE,
    Histogram,
    Metrics,
    MetricsEndpoint,
    metrics_response,
)
from omnichannel.runtime.stores import MemoryStore, QueueItem, open_store
from omnichannel.testing import RecordingChannelServer, text_event
from tests.helpers import serve_handler, wait_until
from tests.processes import TOKEN as SERVE_TOKEN
from tests.processes import running

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token"
CHANNEL_TOKEN = "metrics-channel-token-0c9f"
DESTINATION = "omnichannel:omnichannel"


# a strict parser of the text exposition format 0.0.4 -----------------------------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL = re.compile(rf'({_LABEL_NAME})="((?:[^"\\\n]|\\[\\"n])*)"')
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_VALUE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match is not None, f"bad label at {text[position:]!r}"
        name, value = match.group(1), _unescape(match.group(2))
        assert name not in labels, f"label {name} twice"
        labels[name] = value
        position = match.end()
        if position < len(text):
            assert text[position] == ",", f"expected ',' in {text!r}"
            position += 1
    return labels


def _number(text: str) -> float:
    assert _VALUE.match(text), f"bad value {text!r}"
    return {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}.get(text) or float(text)


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """Every family: ``{"type", "help", "samples": [(name, labels, value)]}``; asserts the
    rules of the format on the way (HELP/TYPE once and before the samples, sample names of the
    family declared last, no duplicate series, cumulative histograms ending in +Inf = count)."""
    assert text.endswith("\n"), "the exposition ends with a line feed"
    families: dict[str, dict[str, Any]] = {}
    current: str | None = None
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text[:-1].split("\n"):
        assert line == line.strip() and line, f"blank or padded line {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert re.fullmatch(_NAME, name), name
                family = families.setdefault(name, {"type": None, "help": None, "samples": []})
                key = parts[1].lower()
                assert family[key] is None, f"{parts[1]} twice for {name}"
                assert not family["samples"], f"{parts[1]} after samples of {name}"
                value = parts[3] if len(parts) == 4 else ""
                if key == "type":
                    assert value in _TYPES, value
                else:
                    assert "\n" not in value
                family[key] = value
                current = name
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"bad sample line {line!r}"
        name, labels_text, value, _ = match.groups()
        labels = _labels(labels_text or "")
        assert current is not None, f"sample {name} before any TYPE"
        kind = families[current]["type"]
        allowed = {current}
        if kind == "histogram":
            allowed = {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
        assert name in allowed, f"sample {name} inside family {current}"
        series = (name, tuple(sorted(labels.items())))
        assert series not in seen, f"duplicate series {series}"
        seen.add(series)
        families[current]["samples"].append((name, labels, _number(value)))
    for name, family in families.items():
        assert family["type"] is not None, f"{name} has no TYPE"
        if family["type"] == "histogram":
            _check_histogram(name, family["samples"])
    return families


def _check_histogram(name: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
    groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        group = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sample.endswith("_bucket"):
            group["buckets"].append((_number(labels["le"]), value))
        else:
            group[sample.rsplit("_", 1)[1]] = value
    for rest, group in groups.items():
        bounds = [b for b, _ in group["buckets"]]
        counts = [c for _, c in group["buckets"]]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, f"{name}{rest}: le order"
        assert counts == sorted(counts), f"{name}{rest}: buckets are not cumulative"
        assert group["count"] == counts[-1], f"{name}{rest}: +Inf bucket != _count"
        assert group["sum"] is not None and group["sum"] >= 0


def value_of(families: Mapping[str, Any], name: str, channel: str = DESTINATION) -> float:
    family, suffix = name, ""
    for end in ("_count", "_sum"):
        if name.endswith(end) and name.removesuffix(end) in families:
            family, suffix = name.removesuffix(end), end
    for sample, labels, value in families[family]["samples"]:
        if sample == family + suffix and labels.get("channel", channel) == channel:
            return float(value)
    raise KeyError(name)


def scrape(url: str) -> dict[str, dict[str, Any]]:
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    return parse_exposition(answer.text)


# channels ----------------------------------------------------------------------------------------
def make_connector(
    channel: RecordingChannelServer, bot: Bot | None = None, **options: Any
) -> Connector:
    options.setdefault("runtime", Runtime(outbox_backoff=0.05, outbox_cap=0.2))
    return Connector(
        bot, token=TOKEN, channel_url=channel.channel_url, channel_token=CHANNEL_TOKEN, **options
    )


def post(url: str, payload: Any) -> requests.Response:
    return requests.post(url, json=payload, timeout=10)


@contextmanager
def served_with_metrics(handler: Any) -> Iterator[tuple[str, str]]:
    """The handler and its /metrics, each on a real local server: (webhook base, metrics URL)."""
    with serve_handler(handler) as base, LocalServer(MetricsEndpoint(handler)) as metrics:
        yield base, metrics.url + "/metrics"


class LabChannel(WebhookChannel):
    """A small real channel: posts ``{"messages": [{"chat", "id", "text"}]}``; the bot echoes,
    raises on ``"boom"``; replies are delivered to :attr:`sent`."""

    kind = "lab"

    def __init__(self, runtime: Runtime, name: str = "lab", *, refuse: bool = True) -> None:
        self.sent: list[str] = []
        self.refuse = refuse
        self._attach(runtime, name)

    def parse(self, request: Request) -> Sequence[Delivery] | Response:
        messages = json.loads(request.body)["messages"]
        return [
            Delivery(
                chat=str(m["chat"]),
                key=f"{self.destination}:{m['id']}",
                payload=m,
                message_id=str(m["id"]),
            )
            for m in messages
        ]

    def unavailable(self, retry_after: int) -> Response | None:
        return super().unavailable(retry_after) if self.refuse else None

    def process(self, payload: Mapping[str, Any]) -> None:
        if payload["text"] == "boom":
            raise RuntimeError("the handler broke")
        chat_key = self.chat_key(payload["chat"])
        self.runtime.outbox.put(self.destination, chat_key, {"text": payload["text"]})

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.sent.append(str(payload["text"]))


class DownStore(MemoryStore):
    """A memory store whose admissions fail while ``down`` is set (the injected fault)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def inbox_admit(self, item: QueueItem, dedupe_key: str | None, ttl: float) -> bool:
        if self.down:
            raise ConnectionError("store unavailable")
        return super().inbox_admit(item, dedupe_key, ttl)


# counters ----------------------------------------------------------------------------------------
def test_counters_follow_real_messages_inline() -> None:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = make_connector(channel, inline=True, runtime=None)
        with served_with_metrics(connector) as (base, metrics_url):
            empty = scrape(metrics_url)
            assert value_of(empty, "omnichannel_turns_accepted_total") == 0  # present from start
            url = base + connector.webhook_path
            for i in range(3):
                assert post(url, text_event(f"m{i}", chat_id=i, message_id=f"id-{i}")).ok
            assert post(url, text_event("m0", chat_id=0, message_id="id-0")).ok  # a repeat
            assert sorted(channel.texts()) == ["m0", "m1", "m2"]
            families = scrape(metrics_url)
        connector.close()
    snapshot = connector.runtime.metrics.snapshot()
    numbers = snapshot["channels"][DESTINATION]
    assert numbers["turns_accepted"] == 3
    assert numbers["turns_duplicate"] == 1
    assert numbers["turns_refused"] == 0
    assert numbers["turns_completed"] == 3
    assert numbers["turns_running"] == 0
    assert numbers["handler_seconds"]["count"] == 3
    assert numbers["replies_delivered"] == 3
    assert numbers["replies_failed"] == 0
    assert numbers["delivery_seconds"]["count"] == 3
    assert value_of(families, "omnichannel_turns_accepted_total") == 3
    assert value_of(families, "omnichannel_turns_duplicate_total") == 1
    assert value_of(families, "omnichannel_handler_seconds_count") == 3
    assert value_of(families, "omnichannel_replies_delivered_total") == 3
    assert value_of(families, "omnichannel_delivery_seconds_count") == 3
    assert value_of(families, "omnichannel_inbox_pending") == 0
    assert value_of(families, "omnichannel_outbox_pending") == 0
    assert value_of(families, "omnichannel_store_up") == 1


def test_counters_follow_real_messages_in_the_background() -> None:
    release = threading.Event()
    bot = Bot()

    @bot.on_text
    def slow(turn: Turn) -> str:
        release.wait(10)
        return "re: " + (turn.text or "")

    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = make_connector(channel, bot)
        metrics = connector.runtime.metrics
        stats = metrics.channel(DESTINATION)
        with served_with_metrics(connector) as (base, metrics_url):
            url = base + connector.webhook_path
            channel.fail_next(2, status=503)  # the first reply fails twice, then goes out
            assert post(url, text_event("a", chat_id=1)).ok
            assert post(url, text_event("b", chat_id=2)).ok
            assert wait_until(lambda: stats.running == 2)
            assert value_of(scrape(metrics_url), "omnichannel_turns_running") == 2
            release.set()
            channel.wait_for(2, timeout=20)
            assert wait_until(lambda: stats.delivered == 2 and stats.running == 0)
            families = scrape(metrics_url)
        connector.close()
    assert sorted(channel.texts()) == ["re: a", "re: b"]
    assert [status for status, _ in channel.refused] == [503, 503]
    numbers = metrics.snapshot()["channels"][DESTINATION]
    assert numbers["turns_accepted"] == numbers["turns_completed"] == 2
    assert numbers["handler_seconds"]["count"] == 2
    assert numbers["handler_seconds"]["sum"] > 0
    assert numbers["replies_failed"] == 2
    assert numbers["replies_dead"] == 0
    assert numbers["delivery_seconds"]["count"] == 4  # every attempt
    assert value_of(families, "omnichannel_replies_failed_total") == 2
    assert value_of(families, "omnichannel_delivery_seconds_count") == 4
    assert value_of(families, "omnichannel_turns_running") == 0


def test_refused_turns_are_counted() -> None:
    with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
        connector = make_connector(channel, runtime=Runtime(max_pending=0))
        with served_with_metrics(connector) as (base, metrics_url):
            answer = post(base + connector.webhook_path, text_event("over", chat_id=1))
            assert answer.status_code == 503
            assert "Retry-After" in answer.headers
            families = scrape(metrics_url)
        connector.close()
    assert value_of(families, "omnichannel_turns_refused_total") == 1
    assert value_of(families, "omnichannel_turns_accepted_total") == 0

    # a store that fails: the retryable answer (refused), or lost for a channel without one
    store = DownStore()
    runtime = Runtime(store=store, inline=True)
    refusing, accepting = LabChannel(runtime, "refusing"), LabChannel(runtime, "acks", refuse=False)
    store.down = True
    two = json.dumps(
        {"messages": [{"chat": 1, "id": 1, "text": "x"}, {"chat": 1, "id": 2, "text": "y"}]}
    )
    with serve_handler(refusing) as refusing_url, serve_handler(accepting) as accepting_url:
        assert requests.post(refusing_url, data=two, timeout=10).status_code == 503
        assert requests.post(accepting_url, data=two, timeout=10).status_code == 200
    channels = runtime.metrics.snapshot()["channels"]
    assert channels["lab:refusing"]["turns_refused"] == 2
    assert channels["lab:acks"]["turns_lost"] == 2
    runtime.close()


def test_failed_and_dead_turns_and_replies_are_counted(tmp_path: Path) -> None:
    runtime = Runtime(store=f"sqlite:///{tmp_path / 'dead.db'}", inline=True, max_turn_attempts=1)
    lab = LabChannel(runtime)
    with served_with_metrics(lab) as (base, metrics_url):
        body = {
            "messages": [{"chat": 1, "id": 1, "text": "boom"}, {"chat": 2, "id": 2, "text": "ok"}]
        }
        assert post(base, body).ok
        with RecordingChannelServer(token=CHANNEL_TOKEN) as channel:
            connector = make_connector(channel, runtime=runtime)
            channel.always(400)  # refused for good: dead-lettered at the first attempt
            with serve_handler(connector) as connector_base:
                assert post(connector_base + connector.webhook_path, text_event("x")).ok
        families = scrape(metrics_url)
    assert lab.sent == ["ok"]
    assert value_of(families, "omnichannel_turns_failed_total", "lab:lab") == 1
    assert value_of(families, "omnichannel_turns_dead_total", "lab:lab") == 1
    assert value_of(families, "omnichannel_handler_seconds_count", "lab:lab") == 2
    assert value_of(families, "omnichannel_replies_failed_total") == 1
    assert value_of(families, "omnichannel_replies_dead_total") == 1
    assert value_of(families, "omnichannel_replies_delivered_total") == 0
    assert value_of(families, "omnichannel_inbox_dead_letters") == 1
    assert value_of(families, "omnichannel_outbox_dead_letters") == 1
    runtime.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_counts_from_zero() -> None:
    runtime = Runtime(inline=True)
    lab = LabChannel(runtime)
    assert (
        lab.handle(
            Request("POST", "/", body=b'{"messages": [{"chat": 1, "id": 1, "text": "a"}]}')
        ).status
        == 200
    )
    assert runtime.metrics.channel("lab:lab").accepted == 1
    pid = os.fork()
    if pid == 0:  # the child (a gunicorn worker after --preload): its numbers are its own
        code = 1
        try:
            before = runtime.metrics.snapshot()["channels"]["lab:lab"]["turns_accepted"]
            lab.handle(
                Request("POST", "/", body=b'{"messages": [{"chat": 1, "id": 2, "text": "b"}]}')
            )
            after = runtime.metrics.channel("lab:lab")
            code = 0 if (before, after.accepted, after.delivered) == (0, 1, 1) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert runtime.metrics.channel("lab:lab").accepted == 1
    runtime.close()


# the exposition ----------------------------------------------------------------------------------
def test_the_endpoint_answers_get_and_head_only_and_never_raises() -> None:
    runtime = Runtime(inline=True)
    endpoint = MetricsEndpoint(runtime)
    with LocalServer(endpoint) as server:
        assert requests.head(server.url + "/metrics", timeout=5).status_code == 200
        assert requests.post(server.url + "/metrics", timeout=5).status_code == 405
        assert requests.get(server.url + "/other", timeout=5).status_code == 404
    assert metrics_response(object()).status == 404
    assert metrics_response(runtime).status == 200
    assert metrics_response(runtime.metrics).headers["Content-Type"] == CONTENT_TYPE
    runtime.close()


def test_a_dead_store_is_reported_not_raised(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'closed.db'}")
    store.close()
    metrics = Metrics(store)
    metrics.channel(DESTINATION).accepted += 1
    text = metrics.render()
    families = parse_exposition(text)
    assert value_of(families, "omnichannel_store_up") == 0
    assert value_of(families, "omnichannel_turns_accepted_total") == 1
    assert families["omnichannel_inbox_pending"]["samples"] == []
    assert "# omnichannel_inbox_pending omitted: the store did not answer (RuntimeError)" in text
    assert "Traceback" not in text
    snapshot = metrics.snapshot()
    assert snapshot["store_up"] is False
    assert snapshot["inbox_pending"] is None
    assert snapshot["outbox_dead_letters"] is None


def test_label_values_are_escaped() -> None:
    runtime = Runtime(inline=True)
    weird = LabChannel(runtime, 'we"ird\\name\nline')
    families = parse_exposition(runtime.metrics.render())
    assert weird.destination in {
        labels["channel"]
        for _, labels, _ in families["omnichannel_turns_accepted_total"]["samples"]
    }
    assert 'channel="lab:we\\"ird\\\\name\\nline"' in runtime.metrics.render()
    runtime.close()


def test_histogram_buckets_are_inclusive_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    counts, total = histogram.read()
    assert counts == [2, 4, 5]  # le=0.1, le=1.0, +Inf
    assert total == pytest.approx(8.65)
    assert histogram.count == 5


def test_every_metric_is_documented() -> None:
    runtime = Runtime()
    names = set(parse_exposition(runtime.metrics.render()))
    runtime.close()
    documented = set(re.findall(r"`(omnichannel_[a-z_]+)`", (ROOT / "docs/metrics.md").read_text()))
    assert names <= documented, names - documented


# logs --------------------------------------------------------------------------------------------
@contextmanager
def logging_to(level: str, fmt: str) -> Iterator[io.StringIO]:
    """``configure_logging`` into a buffer; the root logger's handlers restored afterwards."""
    root = logging.getLogger()
    handlers, old_level = list(root.handlers), root.level
    stream = io.StringIO()
    handler = configure_logging(level, fmt, stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for old in handlers:
            root.addHandler(old)
        root.setLevel(old_level)


FORGED = "x\n2099-01-01 00:00:00,000 CRITICAL omnichannel: forged\r\x1b[31m\u2028"
_TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def _flow(message_id: str) -> None:
    """Real messages through a lab channel (inline): accepted, repeated, failed and dead."""
    runtime = Runtime(inline=True, max_turn_attempts=1)
    lab = LabChannel(runtime, "logs")
    body = {"messages": [{"chat": "c\n1", "id": message_id, "text": "boom"}]}
    with serve_handler(lab) as base:
        assert post(base, body).ok
        assert post(base, body).ok  # a repeat
    runtime.close()


def test_json_lines_carry_the_pipeline_fields() -> None:
    with logging_to("INFO", "json") as stream:
        _flow(FORGED)
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # one JSON object per line
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
    accepted = next(r for r in records if "accepted as turn" in r["message"])
    assert accepted["level"] == "INFO"
    assert accepted["logger"] == "omnichannel.runtime.pipeline"
    assert accepted["channel"] == "lab:logs"
    assert accepted["chat"] == "c\n1"
    assert accepted["message_id"] == FORGED
    assert accepted["turn"]
    repeated = next(r for r in records if "repeated delivery" in r["message"])
    assert repeated["message_id"] == FORGED and "turn" not in repeated  # None is left out
    dead = next(r for r in records if "dead-lettered" in r["message"])
    assert (dead["level"], dead["turn"], dead["chat"]) == ("ERROR", accepted["turn"], "c\n1")
    assert (dead["exc_type"], dead["exc"]) == ("RuntimeError", "the handler broke")
    assert "traceback" not in dead  # only at DEBUG
    assert len(lines) == len(stream.getvalue().split("\n")) - 1  # no stray line breaks


def test_json_lines_have_a_traceback_at_debug() -> None:
    with logging_to("DEBUG", "json") as stream:
        _flow("m-1")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    dead = next(r for r in records if "dead-lettered" in r["message"])
    assert "Traceback (most recent call last)" in dead["traceback"]
    assert "RuntimeError: the handler broke" in dead["traceback"]


def test_a_newline_in_an_id_never_starts_a_log_line() -> None:
    for fmt in ("text", "json"):
        with logging_to("DEBUG", fmt) as stream:
            _flow(FORGED)
            logging.getLogger("omnichannel.test").info("visitor said %s", FORGED)
        text = stream.getvalue()
        assert "\r" not in text and "\x1b" not in text and "\u2028" not in text
        for line in text.split("\n")[:-1]:
            if fmt == "json":
                json.loads(line)
            else:
                assert _TEXT_RECORD.match(line) or line.startswith("  "), repr(line)
            assert not line.startswith("2099"), line
        assert "forged" in text  # it was logged, escaped
        if fmt == "text":
            assert escape_controls(FORGED) in text
            assert "accepted as turn" in text  # the messages are the text format's own


def test_text_format_is_unchanged_for_plain_messages() -> None:
    with logging_to("INFO", "text") as stream:
        logging.getLogger("omnichannel.test").warning("plain %s", "words")
    line = stream.getvalue()
    assert _TEXT_RECORD.match(line)
    assert line.endswith(" WARNING omnichannel.test: plain words\n")


def test_urllib3_lines_lose_paths_and_queries_at_every_level() -> None:
    secret, query = "p4th-s3cret", "q-s3cret"
    with (
        RecordingChannelServer(path=f"/channel/{secret}") as channel,
        logging_to("DEBUG", "text") as stream,
    ):
        requests.post(channel.channel_url + f"/send_message?key={query}", json={}, timeout=5)
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying (%r) after connection broken by '%r': %s",
            "Retry(total=1)",
            "X",
            f"/a/{secret}?k={query}",
        )
    text = stream.getvalue()
    assert "Starting new HTTP connection" in text  # urllib3's DEBUG lines are there...
    assert '"POST /*** HTTP/1.1" 400' in text  # ...with the path and query redacted
    assert secret not in text and query not in text
    assert redact_paths("GET http://u:pw@host:8/a/b?c -> /x") == "GET http://***@host:8/*** -> /***"


# the command line --------------------------------------------------------------------------------
SECRET_SEGMENT = "s3cret-path-segment-7a1"
SECRET_QUERY = "s3cret-query-value-9b2"


def _serve_and_collect_log(
    tmp_path: Path, fmt: str, channel: RecordingChannelServer, url: str
) -> str:
    args = ("--channel-token", CHANNEL_TOKEN, "--log-level", "DEBUG", "--log-format", fmt)
    with running(f"sqlite:///{tmp_path / f'{fmt}.db'}", url, *args) as process:
        assert process.post(text_event("hi", chat_id=5, message_id="a\nb")).ok
        assert process.post(text_event("hi", chat_id=5, message_id="a\nb")).ok  # a repeat
        assert wait_until(lambda: bool(channel.calls) or "dead-lettered" in process.log(), 20)
        assert process.terminate() == 0
        return process.log()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_serve_at_debug_never_logs_a_secret(tmp_path: Path, fmt: str) -> None:
    with RecordingChannelServer(token=CHANNEL_TOKEN, path=f"/channel/{SECRET_SEGMENT}") as channel:
        log = _serve_and_collect_log(tmp_path, fmt, channel, channel.channel_url)
    assert channel.texts(5) == ["hi"]
    # the HTTP layer's DEBUG lines are there too (the pooled transport's, host and port only)
    assert "accepted as turn" in log and "starting a new HTTP connection" in log, log
    for secret in (SERVE_TOKEN, SECRET_SEGMENT, CHANNEL_TOKEN):
        assert secret not in log, f"{secret} leaked:\n{log}"
    lines = log.splitlines()
    if fmt == "json":
        assert all(isinstance(json.loads(line), dict) for line in lines), log
    else:
        assert all(_TEXT_RECORD.match(line) or line.startswith("  ") for line in lines), log


def test_serve_at_debug_never_logs_a_secret_of_a_channel_url_with_a_query(tmp_path: Path) -> None:
    with RecordingChannelServer(token=CHANNEL_TOKEN, path=f"/channel/{SECRET_SEGMENT}") as channel:
        url = f"{channel.channel_url}?key={SECRET_QUERY}"
        log = _serve_and_collect_log(tmp_path, "text", channel, url)
    for secret in (SERVE_TOKEN, SECRET_SEGMENT, SECRET_QUERY, CHANNEL_TOKEN):
        assert secret not in log, f"{secret} leaked:\n{log}"
    assert channel.texts(5) == ["hi"]
