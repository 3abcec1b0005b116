"""The turn candidates of ``python -m benchmarks peers``: ``Connector.handle`` as shipped, the
same work written by hand with no framework (the floor), and slack_bolt's no-op dispatch."""

from __future__ import annotations

import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.payloads import VISITOR
from benchmarks.timing import Candidate


def webhook_template() -> bytes:
    """The seed's text payload with ``%d`` for the chat id and the message id."""
    body = {
        "event": "new_message",
        "chat_id": 99_999_991,
        "visitor": VISITOR,
        "message": {"id": "b-99999992", "kind": "visitor", "text": "Hello, I would like a pizza"},
    }
    text = json.dumps(body).replace("99999991", "%d").replace("99999992", "%d")
    return text.encode()


class Bodies:
    """Webhook bodies, every one a new delivery (a repeat would skip the bot), made before the
    sample that uses them."""

    def __init__(self) -> None:
        self.template = webhook_template()
        self.made = 0
        self.items: list[bytes] = []
        self.at = 0

    def prepare(self, number: int) -> None:
        start = self.made
        self.items = [self.template % (i % 50, i) for i in range(start, start + number)]
        self.made += number
        self.at = 0

    def next(self) -> bytes:
        body = self.items[self.at]
        self.at += 1
        return body


def handle_candidate(
    *, noop: bool = False, history: int = 20
) -> tuple[Candidate, Callable[[], None]]:
    """``Connector.handle``: inline runner, memory store, no-op transport; the echo bot, or
    (``noop``) a bot whose one handler does nothing (no reply: what slack_bolt's no-op
    listener does); ``history``: the lines of history the bot keeps (the default's 20, or 0:
    none recorded)."""
    from omnichannel import Bot, Connector, Request

    bot = Bot(history=history)
    if noop:
        bot.on_message(lambda turn: None)
    connector = Connector(
        bot, token="bench-token", channel_url="http://127.0.0.1:9/channel", inline=True
    )
    connector.runtime.outbox.register(connector.destination, lambda payload: None)
    bodies = Bodies()
    path, headers = connector.webhook_path, {"Content-Type": "application/json"}
    handle, take = connector.handle, bodies.next

    def call() -> object:
        return handle(Request("POST", path, headers, take()))

    def close() -> None:
        assert connector.runtime.store.pending("outbox") == 0
        connector.close()

    return Candidate(call, bodies.prepare), close


def bolt_candidate() -> Candidate:
    """slack_bolt ``App.dispatch`` of a message event to a no-op listener, run before the
    response (``process_before_response``), no signature check, no Slack API call."""
    from slack_bolt import App, BoltRequest
    from slack_bolt.authorization import AuthorizeResult

    def authorize(enterprise_id: Any, team_id: Any, user_id: Any, **_: Any) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id,
            bot_token="xoxb-bench",  # a placeholder, never sent
            bot_user_id="UBOT",
            bot_id="BBOT",
        )

    app = App(
        signing_secret="bench",  # a placeholder, never checked
        authorize=authorize,
        request_verification_enabled=False,
        ssl_check_enabled=False,
        url_verification_enabled=False,
        token_verification_enabled=False,
        process_before_response=True,
    )
    called = itertools.count()

    def noop(event: dict[str, Any]) -> None:
        next(called)

    app.event("message")(noop)  # not a decorator: typed the same with or without slack_bolt

    body = json.dumps(
        {
            "token": "bench",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": "Ev1",
            "event_time": 1_760_000_000,
            "event": {
                "type": "message",
                "channel": "D1",
                "channel_type": "im",
                "user": "U1",
                "text": "Hello, I would like a pizza",
                "ts": "1760000000.000100",
            },
        }
    )
    headers: dict[str, str | Sequence[str]] = {"content-type": ["application/json"]}
    response = app.dispatch(BoltRequest(body=body, headers=headers, mode="http"))
    assert response.status == 200, response.body
    assert next(called) == 1

    def call() -> object:
        return app.dispatch(BoltRequest(body=body, headers=headers, mode="http"))

    return Candidate(call)


def floor_candidate() -> tuple[Candidate, Callable[[], None]]:
    """The durable echo turn of :func:`handle_candidate` written by hand, straight through: the
    path and token checked, the body parsed by ``parse_event``, the dedupe key and the turn
    stored under a lock, the echo rendered as the wire message, the history (20 lines) and the
    turn's completion and its reply written under the lock in one step, the reply handed to a
    no-op transport and removed. No hooks, no metrics, no logging, no retries, no Turn or Bot:
    what the same work costs without the framework around it, the floor of that row."""
    from omnichannel import Request, TextReply, parse_event
    from omnichannel.codec import unstructure_message
    from omnichannel.protocol import agent_text
    from omnichannel.runtime.http import Headers, Response

    token = b"bench-token"
    path = f"/omnichannel/webhook/{token.decode()}"
    route = re.compile(r"/omnichannel/webhook/([^/]+)")
    ok, headers = b'{"result":"ok"}', Headers({"Content-Type": "application/json"})
    lock = threading.Lock()
    seen: set[str] = set()
    inbox: dict[str, float] = {}
    records: dict[str, dict[str, Any]] = {}
    outbox: dict[str, dict[str, Any]] = {}
    sent: list[dict[str, Any]] = []
    counter = itertools.count()

    def handle(request: Request) -> Response:
        match = route.fullmatch(request.path)
        if match is None:
            return Response(404, b"", headers.copy())
        if not hmac.compare_digest(match.group(1).encode(), token):
            return Response(400, b"", headers.copy())
        event = parse_event(request.body)
        chat = str(event.chat_id)
        message = event.messages[0]
        key = f"omnichannel:omnichannel:{chat}:{message.id}"
        with lock:  # admission: the dedupe mark and the turn, one step
            if key in seen:
                return Response(200, ok, headers.copy())
            seen.add(key)
            turn = f"{chat}.{next(counter)}"
            inbox[turn] = time.time()
        text = agent_text(message) or ""
        reply = {
            "method": "send_message",
            "body": {
                "chat_id": event.chat_id,
                "message": unstructure_message(TextReply(text=text)),
            },
        }
        now = time.time()
        lines = [["user", text, now], ["bot", text, now]]
        record = f"omnichannel:conversation:omnichannel:{chat}"
        with lock:  # completion: history, the reply in the outbox, the turn removed, one step
            old = records.get(record)
            history = (old["history"] if old else []) + lines
            records[record] = {"history": history[-20:], "keep": 20}
            del inbox[turn]
            outbox[turn] = reply
        sent.append(reply)  # delivered (a no-op transport), then removed from the outbox
        with lock:
            del outbox[turn]
        sent.clear()
        return Response(200, ok, headers.copy())

    bodies = Bodies()
    request_headers = {"Content-Type": "application/json"}
    take = bodies.next

    def call() -> object:
        return handle(Request("POST", path, request_headers, take()))

    def close() -> None:
        assert not inbox
        assert not outbox

    return Candidate(call, bodies.prepare), close
