"""``omnichannel demo``: the echo bot behind the real webhook, talking to a simulated channel
server on loopback. Shows the whole round trip: what the visitor sends, what the agent sees,
what the channel server receives, and the channel variables."""

from __future__ import annotations

import secrets
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, TextIO

import requests

from omnichannel.channels.omnichannel import Connector
from omnichannel.integrations.server import LocalServer
from omnichannel.protocol import CHANNEL_VARIABLES, channel_variables, parse_event
from omnichannel.runtime.bot import Bot
from omnichannel.runtime.pipeline import Runtime
from omnichannel.testing import events
from omnichannel.testing.channel import RecordingChannelServer

__all__ = ["run_demo"]

VISITOR = {
    "name": "Ann",
    "login": "ann.smith",
    "phone": "+7 900 123-45-67",
    "email": "ann@example.com",
    "site": "shop.example",
}


def _script(chat_id: int) -> list[tuple[str, dict[str, Any], bool]]:
    """(what the visitor does, the payload, whether the bot should answer)."""
    run = uuid.uuid4().hex[:8]  # fresh message ids: a reused store must not dedupe a new run

    def ids(n: int) -> dict[str, Any]:
        return {"chat_id": chat_id, "message_id": f"{run}-{n}", "fields": VISITOR}

    return [
        ("says “Hello! 👋 Do you deliver to Kazan?”",
         events.text_event("Hello! 👋 Do you deliver to Kazan?", **ids(1)), True),
        ("sends invoice.pdf (state: ready)",
         events.file_event("https://files.example/invoice.pdf", name="invoice.pdf",
                           file_id="f-1", **ids(2)), True),
        ("sends photo.jpg (state: uploading)",
         events.file_event("https://files.example/photo.jpg", name="photo.jpg", state="uploading",
                           content_type="image/jpeg", file_id="f-2", **ids(3)), False),
        ("presses the button [Yes, please]",
         events.button_event("Yes, please", button_id="yes", **ids(4)), True),
    ]  # fmt: skip


def run_demo(store: str | None = None, out: TextIO | None = None) -> int:
    """Run the demo; print to ``out`` (stdout); return 0 when every step behaved as expected."""
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="omnichannel-demo-") as tmp:
        store_url = store or f"sqlite:///{Path(tmp) / 'demo.db'}"
        return _run(store_url, out)


def _run(store_url: str, out: TextIO) -> int:
    channel_token = secrets.token_hex(16)
    token = secrets.token_hex(16)
    channel = RecordingChannelServer(token=channel_token).start()
    connector = Connector(
        Bot(),
        token=token,
        channel_url=channel.channel_url,
        channel_token=channel_token,
        runtime=Runtime(store=store_url, outbox_backoff=0.2),
    )
    server = LocalServer(connector).start()
    webhook = f"http://127.0.0.1:{server.port}{connector.webhook_path}"
    ok = True
    try:
        print("omnichannel demo: the echo bot behind the omnichannel webhook", file=out)
        print(f"  webhook         http://127.0.0.1:{server.port}/connector/omnichannel/"
              "omnichannel_message/{token}/bot_api_webhook", file=out)  # fmt: skip
        print(f"  channel server  {channel.channel_url}/send_message (Authorization: Token …)",
              file=out)  # fmt: skip
        print(f"  store           {store_url.split('://', 1)[0]}", file=out)
        print(file=out)
        chat_id = 4242
        script = _script(chat_id)
        first_event = parse_event(script[0][1])
        with requests.Session() as http:
            for what, payload, answers in script:
                before = len(channel.calls)
                response = http.post(webhook, data=events.dumps(payload), timeout=10,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
                print(f"  visitor ▸ {what}", file=out)
                print(f"            webhook answered {response.status_code} {response.text}",
                      file=out)  # fmt: skip
                ok &= response.status_code == 200
                if answers:
                    try:
                        calls = channel.wait_for(before + 1, timeout=10)
                    except TimeoutError:
                        print("      bot ▸ (no reply within 10 s)", file=out)
                        ok = False
                        continue
                    call = calls[before]
                    print(f"      bot ▸ {call.text}", file=out)
                    print(f"            channel server got POST /send_message "
                          f"{_compact(call.body)}", file=out)  # fmt: skip
                else:
                    connector.drain(timeout=5)
                    got = len(channel.calls) - before
                    ok &= got == 0
                    note = "not processed: the file is not ready" if not got else "UNEXPECTED reply"
                    print(f"      bot ▸ ({note})", file=out)
        print(file=out)
        print("channel variables (what the agent gets for this visitor)", file=out)
        variables = channel_variables(first_event)
        width = max(map(len, CHANNEL_VARIABLES))
        for key in CHANNEL_VARIABLES:
            value = variables[key]
            print(f"  {key.ljust(width)}  {value if value is not None else '—'}", file=out)
        print(file=out)
        print("demo finished: all steps as expected" if ok else "demo finished: SOME STEPS FAILED",
              file=out)  # fmt: skip
        return 0 if ok else 1
    finally:
        server.stop()
        connector.close(timeout=5)
        channel.stop()


def _compact(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
