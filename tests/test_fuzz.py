"""The fuzz campaign of every inbound endpoint (``benchmarks/fuzz.py``, issue 13 build point 4),
and one regression test per finding it reproduces.

Every test asserts the answer the endpoint's docs page documents (its status table) and that
nothing was logged with a traceback (no record with ``exc_info``, no ERROR record).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import fuzz
from omnichannel import Connector, Request, Response
from omnichannel.testing import new_chat_event, text_event
from omnichannel.testing.webex import incoming_message_event, postback_event

# -------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every record of every level reaches caplog
    return caplog


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What must never be logged for a bad input: a record with a traceback, an ERROR."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        + (f" [{r.exc_info[0].__name__}: {r.exc_info[1]}]" if r.exc_info and r.exc_info[0] else "")
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR
    ]


def post(
    handler: Any,
    path: str,
    body: bytes,
    content_type: str | None = "application/json",
    **headers: str,
) -> Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    response: Response = handler.handle(Request("POST", path, headers, body))
    return response


def error_text(response: Response) -> str:
    data = json.loads(response.body)
    assert isinstance(data, dict) and isinstance(data.get("error"), str), response
    return str(data["error"])


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def worker_rig(store_kind: str, tmp_path: Path) -> Iterator[fuzz.Rig]:
    """Every endpoint on one runtime that runs each turn before answering (echo bots), with
    no-op transports that record what would be sent."""
    with fuzz.captured_logs():  # building it logs nothing of interest to these tests
        rig = fuzz.build_rig(store_kind, str(tmp_path), worker=True)
    yield rig
    rig.close()


@pytest.fixture
def admit_rig(store_kind: str, tmp_path: Path) -> Iterator[fuzz.Rig]:
    """Every endpoint on one runtime that only admits (no bot runs)."""
    with fuzz.captured_logs():
        rig = fuzz.build_rig(store_kind, str(tmp_path))
    yield rig
    rig.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[fuzz.Rig]:
    """Every endpoint on one runtime with a memory store that only admits (no bot runs)."""
    with fuzz.captured_logs():
        rig = fuzz.build_rig("memory", str(tmp_path))
    yield rig
    rig.close()


def assert_delivered(rig: fuzz.Rig, before: int) -> None:
    """The turn ran, its reply was committed and handed to the transport as UTF-8 JSON."""
    assert rig.failures == [], rig.failures
    assert sum(rig.delivered.values()) > before, "acknowledged, but no reply went out"
    assert rig.unsendable == [], rig.unsendable
    sent = json.dumps(list(rig.sent)[-1], ensure_ascii=False)
    assert "\ud83d" not in sent


def connector_path() -> str:
    return fuzz._RIGHT[fuzz.CONNECTOR]


# -------------------------------------------------------------------------------------------
# the campaign


def test_fuzz_campaign_in_process_finds_nothing() -> None:
    """≥ 10,000 generated and mutated requests over every endpoint, in-process (a share on a
    SQLite store, a sample with the bot running): nothing escapes, nothing logs a traceback,
    every answer is in its endpoint's table, nothing acknowledged is lost."""
    report = fuzz.run_campaign(cases=12_000, seed=13, examples=2, time_budget=55.0)
    totals = report.totals()
    assert totals["cases"] >= 10_000, f"only {totals['cases']} cases within the time budget"
    found = (totals["escaped"], totals["tracebacks"], totals["undocumented"], totals["lost"])
    assert found == (0, 0, 0, 0), report.render(examples=2)


def test_fuzz_campaign_over_http_finds_nothing() -> None:
    """The same over real HTTP: LocalServer and the WSGI shim under wsgiref."""
    report = fuzz.run_campaign(
        cases=3_000, seed=14, http=True, http_share=0.6, sqlite_share=0.0, examples=2
    )
    totals = report.totals()
    assert sum(v for k, v in report.transports.items() if "in-process" not in k) > 1_000
    found = (totals["escaped"], totals["tracebacks"], totals["undocumented"], totals["lost"])
    assert found == (0, 0, 0, 0), report.render(examples=2)


def test_fuzz_campaign_is_deterministic() -> None:
    generator = fuzz.Generator(5, dict.fromkeys(fuzz.ENDPOINTS, 1 << 20))
    again = fuzz.Generator(5, dict.fromkeys(fuzz.ENDPOINTS, 1 << 20))
    for index in range(300):
        endpoint = fuzz.ENDPOINTS[index % len(fuzz.ENDPOINTS)]
        a, b = generator.case(index, endpoint), again.case(index, endpoint)
        assert (a.method, a.path, a.query, a.content_type, a.body, a.headers) == (
            b.method,
            b.path,
            b.query,
            b.content_type,
            b.body,
            b.headers,
        )


# -------------------------------------------------------------------------------------------
# the findings listed in issue 13


@pytest.mark.parametrize("endpoint", [fuzz.CONNECTOR, fuzz.RULES, fuzz.WEBEX, fuzz.PAGEMESSENGER])
def test_lone_surrogate_in_the_visitors_text_is_answered(
    endpoint: str, worker_rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: a lone surrogate in the visitor's text was acknowledged 200 and the reply was
    lost (the outbox write failed). Documented: 200, processed like any other text (U+FFFD)."""
    text = "hello \ud83d"
    body: Any
    if endpoint == fuzz.CONNECTOR:
        body = text_event(text, chat_id=71, message_id="sur-1")
    elif endpoint == fuzz.RULES:
        body = fuzz._rules_body(text, 71)
    elif endpoint == fuzz.WEBEX:
        body = incoming_message_event("conv-71", text, message_id="sur-1", timestamp=fuzz.TIMESTAMP)
    else:
        body = fuzz._pm_body(message_id="sur-1", message_text=text)
    before = sum(worker_rig.delivered.values())
    response = post(worker_rig.handlers[endpoint], fuzz._RIGHT[endpoint], fuzz.encode(body))
    assert response.status == 200, response
    assert tracebacks(logs) == []
    assert_delivered(worker_rig, before)


def test_lone_surrogate_in_the_message_id(
    admit_rig: fuzz.Rig, worker_rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: a lone surrogate in ``message.id`` got 500 with a traceback (503 on SQLite:
    the dedupe key could not be stored). Documented: 200, processed like any other message."""
    body = fuzz.encode(text_event("hello", chat_id=72, message_id="id-\ud83d"))
    response = post(admit_rig.handlers[fuzz.CONNECTOR], connector_path(), body)
    assert response.status == 200, response
    before = sum(worker_rig.delivered.values())
    response = post(worker_rig.handlers[fuzz.CONNECTOR], connector_path(), body)
    assert response.status == 200, response
    assert tracebacks(logs) == []
    assert_delivered(worker_rig, before)


def test_lone_surrogate_in_a_webex_postback(
    admit_rig: fuzz.Rig, worker_rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: a lone surrogate in a Webex postback got 503 (the dedupe key of a postback is a
    hash of its body). Documented: 200 with the token, the postback reaches the bot."""
    body = fuzz.encode(postback_event("conv-73", "plan-\ud83d", timestamp=fuzz.TIMESTAMP))
    response = post(admit_rig.handlers[fuzz.WEBEX], fuzz.WEBEX_PATH, body)
    assert (response.status, response.body) == (200, fuzz.WEBEX_TOKEN.encode())
    before = sum(worker_rig.delivered.values())
    response = post(worker_rig.handlers[fuzz.WEBEX], fuzz.WEBEX_PATH, body)
    assert (response.status, response.body) == (200, fuzz.WEBEX_TOKEN.encode())
    assert tracebacks(logs) == []
    assert_delivered(worker_rig, before)


@pytest.mark.parametrize("kind", [{}, [], {"a": 1}, [1, "visitor"]])
def test_new_chat_with_a_kind_that_is_an_object_or_array(
    kind: Any, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: ``new_chat`` whose history held a ``kind`` that is an object or an array got
    500 with a TypeError traceback. Documented: such messages are skipped (200)."""
    connector = Connector(token=fuzz.TOKEN, channel_url="http://127.0.0.1:9/x")
    event = new_chat_event("Hi", chat_id=74)
    event["messages"].append({"id": "odd", "kind": kind, "text": "x"})
    response = post(connector, connector_path(), json.dumps(event).encode())
    assert (response.status, json.loads(response.body)) == (200, {"result": "ok"})
    assert tracebacks(logs) == []
    connector.close()


@pytest.mark.parametrize("content_type", ["application/json", None, "text/plain"])
@pytest.mark.parametrize("body", [b"null", b"[]", b"1", b'"x"'])
def test_omnidesk_rules_body_that_is_not_an_object(
    body: bytes, content_type: str | None, rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: an Omnidesk rule body of ``null``, ``[]``, ``1`` got 500 with a traceback, and
    ``"x"`` was called "not valid JSON". Documented: 400 naming the problem."""
    response = post(rig.handlers[fuzz.RULES], fuzz._RIGHT[fuzz.RULES], body, content_type)
    assert response.status == 400, response
    problem = error_text(response)
    assert "not valid JSON" not in problem or body == b"x"
    assert tracebacks(logs) == []


@pytest.mark.parametrize("transport", ["in-process", "LocalServer", "WSGI (wsgiref)"])
def test_webex_body_over_max_body_is_400_behind_every_shim(
    transport: str, rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: Webex behind the WSGI shim answered 413 where 400 is documented (413 is retried
    by Webex Connect and counts towards deactivation)."""
    adapter = rig.handlers[fuzz.WEBEX]
    body = fuzz.encode(incoming_message_event("conv-75", "x", timestamp=fuzz.TIMESTAMP))
    body += b" " * (adapter.max_body + 1 - len(body))
    case = fuzz.Case(0, fuzz.WEBEX, "too large", "", path=fuzz.WEBEX_PATH, body=body)
    response = _send(case, transport, {fuzz.WEBEX: adapter})
    assert response.status == 400, response
    assert "larger than" in error_text(response)
    assert tracebacks(logs) == []


@pytest.mark.parametrize(
    "path",
    [
        f"/connector/other/omnichannel_message/{fuzz.TOKEN}/bot_api_webhook",
        f"/api/connector/omnichannel/omnichannel_message/{fuzz.TOKEN}/bot_api_webhook",
        f"/connector/omnichannel/omnichannel_message/{fuzz.TOKEN}/bot_api_webhook/extra",
        f"/omnichannel_message/{fuzz.TOKEN}/bot_api_webhook",
    ],
)
@pytest.mark.parametrize("transport", ["in-process", "LocalServer", "WSGI (wsgiref)"])
def test_the_webhook_path_is_anchored(
    path: str, transport: str, rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """Issue 13: the connector accepted any path ending in its webhook's tail. Seed 000: a URL
    that is not the webhook is a 404."""
    body = fuzz.encode(text_event("hi", chat_id=76, message_id="anchored"))
    case = fuzz.Case(0, fuzz.CONNECTOR, "path", "", path=path, body=body)
    response = _send(case, transport, {fuzz.CONNECTOR: rig.handlers[fuzz.CONNECTOR]})
    assert response.status == 404, response
    assert tracebacks(logs) == []


def _send(case: fuzz.Case, transport: str, handlers: dict[str, Any]) -> Response:
    if transport == "in-process":
        return post(handlers[case.endpoint], case.path, case.body, case.content_type)
    servers = fuzz.HttpServers(handlers)
    try:
        return fuzz.http_request(servers.port(transport, case.endpoint), case)
    finally:
        servers.close()


# -------------------------------------------------------------------------------------------
# findings of the campaign (not in the list)


@pytest.mark.parametrize("endpoint", [fuzz.CONNECTOR, fuzz.WEBEX])
@pytest.mark.parametrize("where", ["text", "key"])
def test_utf8_encoded_surrogate_bytes_are_not_utf8(
    endpoint: str, where: str, rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """``ED A0 BD`` (a surrogate encoded as UTF-8) is not UTF-8, so the body is not JSON; but
    ``json.loads(bytes)`` decodes it (CPython decodes bytes with ``surrogatepass``) and the raw
    surrogate got past the decoding layer: 500 + UnicodeDecodeError in ``_body_text``
    (connector), 503 + traceback (Webex; after the cap: acknowledged and lost, an ERROR)."""
    if endpoint == fuzz.CONNECTOR:
        body = fuzz.encode(text_event("hi", chat_id=77, message_id="raw-1"))
        path, malformed = connector_path(), 500
    else:
        body = fuzz.encode(incoming_message_event("conv-77", "hi", timestamp=fuzz.TIMESTAMP))
        path, malformed = fuzz.WEBEX_PATH, 400
    needle = (
        b'"hi"'
        if where == "text"
        else b'"chat_id"'
        if endpoint == fuzz.CONNECTOR
        else (b'"Channel"')
    )
    bad = body.replace(needle, needle[:-1] + b"\xed\xa0\xbd" + b'"', 1)
    assert bad != body
    response = post(rig.handlers[endpoint], path, bad)
    assert response.status == malformed, response
    assert error_text(response) != "Internal server error."
    assert tracebacks(logs) == []


@pytest.mark.parametrize("digits", ["\u00b2", "\u2460", "\u00b9\u00b2", "9" * 5000])
def test_non_ascii_digits_and_huge_numbers_in_ids(
    digits: str, rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """``str.isdigit()`` is true for superscripts and circled digits, which ``int()`` refuses
    (``int("²")`` raises ValueError), and ``int()`` refuses more than 4300 digits: a case id,
    a user id or a form list index made of them got 500 with a traceback."""
    rules = fuzz._rules_body("hi", digits)
    response = post(rig.handlers[fuzz.RULES], fuzz._RIGHT[fuzz.RULES], fuzz.encode(rules))
    assert response.status == 400, response
    staff = fuzz._custom_body(user_id=digits)
    response = post(rig.handlers[fuzz.CUSTOM], fuzz._RIGHT[fuzz.CUSTOM], fuzz.encode(staff))
    assert response.status in (200, 400), response
    form = fuzz.form_encode([*fuzz.form_pairs(fuzz._pm_body()), (f"a[{digits[:10]}]", "x")])
    pm = rig.handlers[fuzz.PAGEMESSENGER]
    response = post(pm, fuzz._RIGHT[fuzz.PAGEMESSENGER], form, "application/x-www-form-urlencoded")
    assert response.status in (200, 400), response
    assert tracebacks(logs) == []


@pytest.mark.parametrize("endpoint", [fuzz.RULES, fuzz.WEBEX, fuzz.PAGEMESSENGER, fuzz.CUSTOM])
def test_deep_nesting_with_a_lone_surrogate(
    endpoint: str, rig: fuzz.Rig, logs: pytest.LogCaptureFixture
) -> None:
    """JSON nested 600 deep parses, but replacing its lone surrogates recursed too deep:
    500 + RecursionError in ``omnichannel.decoding._fix``."""
    seed = fuzz.SEEDS[endpoint][0]
    body = fuzz.clone(seed.body)
    top = body if endpoint != fuzz.CUSTOM else body["object"]
    top["extra"] = fuzz.deep(600, '"\\ud83d"', "{")
    response = post(rig.handlers[endpoint], fuzz._RIGHT[endpoint], fuzz.encode(body))
    assert response.status in (200, 400), response
    assert tracebacks(logs) == []


@pytest.mark.parametrize("method", ["TRACE", "FOO", "CONNECT"])
def test_local_server_answers_unknown_methods_with_the_channels_405(
    method: str, rig: fuzz.Rig
) -> None:
    """LocalServer has no ``do_TRACE`` / ``do_FOO``: the standard library answered 501 with an
    HTML page instead of the channel's documented 405 (JSON, ``Allow``)."""
    case = fuzz.Case(0, fuzz.CONNECTOR, "method", "", method=method, path=connector_path())
    response = _send(case, "LocalServer", {fuzz.CONNECTOR: rig.handlers[fuzz.CONNECTOR]})
    assert response.status == 405, response
    assert response.headers.get("Allow") == "POST"
    error_text(response)


def test_wsgi_shim_sends_a_401(rig: fuzz.Rig, logs: pytest.LogCaptureFixture) -> None:
    """The WSGI shim knows reason phrases for a few statuses only; for 401 (Webex with
    ``access_token=``: an event without the token) it passed ``"401"`` as the status line,
    which wsgiref refuses ("Status must be at least 4 characters"): 500."""
    body = fuzz.encode(incoming_message_event("conv-78", "hi", timestamp=fuzz.TIMESTAMP))
    case = fuzz.Case(
        0, fuzz.WEBEX_SECURED, "access token", "", path=fuzz._RIGHT[fuzz.WEBEX_SECURED], body=body
    )
    response = _send(case, "WSGI (wsgiref)", {fuzz.WEBEX_SECURED: rig.handlers[fuzz.WEBEX_SECURED]})
    assert response.status == 401, response
    error_text(response)
    assert tracebacks(logs) == []
