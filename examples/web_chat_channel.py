"""A web chat whose visitors talk to an agent on an Omnichannel platform: the *channel side*.

The page polls this app; a visitor's message goes to the platform through the SDK's
``PlatformClient`` (stored first, delivered in order, retried while the platform is down); the
agent's answers come back to ``/channel/send_message`` (``ChannelServer``) and are shown.

Against a real platform (the agent channel's "app.chatbots webhook: URL" and the token you set as
its "Channel webhook: Token"; set its "Channel webhook: URL" to ``https://<this host>/channel``)::

    P=https://<platform>/connector/omnichannel/omnichannel_message/<token>/bot_api_webhook
    OMNICHANNEL_PLATFORM_URL=$P \
    OMNICHANNEL_CHANNEL_TOKEN=<channel webhook token> \
        flask --app examples.web_chat_channel run --port 5000

Without a platform, against a local echo agent (``FakeAgentPlatform``)::

    python examples/web_chat_channel.py      # then open http://127.0.0.1:5000/

The transcript lives in this process's memory (it is a demo); the messages in flight live in the
store (``OMNICHANNEL_STORE``, SQLite by default) and survive a restart.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, jsonify, request

from omnichannel.channel_server import (
    ChannelServer,
    CloseChat,
    PlatformClient,
    RedirectChat,
    make_visitor,
)
from omnichannel.integrations.flask import make_blueprint
from omnichannel.models import FileLink, Keyboard, SendMessage, TextReply

PAGE = """<!doctype html><meta charset="utf-8"><title>Chat with us</title>
<style>body{font:16px sans-serif;max-width:34em;margin:2em auto}#log div{margin:.4em 0}
.visitor{text-align:right;color:#246}.system{color:#888;font-style:italic}
#log button{margin:.2em .3em 0 0}</style>
<div id="log"></div>
<form id="f"><input id="t" autocomplete="off" autofocus placeholder="Type a message">
<button>Send</button></form>
<script>
const chat = +(localStorage.chat ||= String(1 + Math.floor(Math.random() * 1e9)));
const log = document.getElementById("log");
let seen = 0, busy = false;
async function send(body) {
  await fetch("api/send", {method: "POST", headers: {"Content-Type": "application/json"},
                           body: JSON.stringify({chat, ...body})});
  poll();
}
function show(m) {
  const div = document.createElement("div");
  div.className = m.from;
  if (m.url) {
    const a = document.createElement("a");
    a.href = m.url; a.textContent = m.text || m.url; a.target = "_blank"; div.append(a);
  } else div.textContent = m.text || "";
  for (const row of m.buttons || []) {
    div.append(document.createElement("br"));
    for (const b of row) {
      const button = document.createElement("button");
      button.textContent = b.text; button.onclick = () => send({button: b}); div.append(button);
    }
  }
  log.append(div);
}
async function poll() {
  if (busy) return;
  busy = true;
  try {
    const answer = await (await fetch(`api/messages?chat=${chat}&after=${seen}`)).json();
    answer.messages.forEach(show); seen += answer.messages.length;
  } finally { busy = false; }
}
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  const t = document.getElementById("t");
  if (t.value.trim()) send({text: t.value});
  t.value = "";
};
setInterval(poll, 1000); poll();
</script>
"""


def create_app(
    platform_url: str | None = None, channel_token: str | None = None, store: str | None = None
) -> Flask:
    """The web chat app (``flask --app examples.web_chat_channel`` calls this factory)."""
    platform_url = platform_url or os.environ["OMNICHANNEL_PLATFORM_URL"]
    channel_token = channel_token or os.environ.get("OMNICHANNEL_CHANNEL_TOKEN", "change-me")
    store = store or os.environ.get("OMNICHANNEL_STORE", "sqlite:///web_chat.db")

    # the two halves of the channel side share one runtime: one store, one outbox, one inbox
    platform = PlatformClient(platform_url, store=store)
    channel = ChannelServer(token=channel_token, path="/channel", runtime=platform.runtime)
    transcripts: dict[int, list[dict[str, Any]]] = {}
    lock = threading.Lock()

    def add(chat: int, line: dict[str, Any]) -> None:
        with lock:
            transcripts.setdefault(int(chat), []).append(line)

    @channel.on_reply
    def show_reply(reply: SendMessage) -> None:
        message = reply.message
        if isinstance(message, TextReply):
            add(int(reply.chat_id), {"from": "agent", "text": message.text})
        elif isinstance(message, Keyboard):
            rows = [[{"id": b.id, "text": b.text} for b in row] for row in message.buttons]
            add(int(reply.chat_id), {"from": "agent", "buttons": rows})
        elif isinstance(message, FileLink):
            add(int(reply.chat_id), {"from": "agent", "url": message.url, "text": message.name})

    @channel.on_close
    def closed(close: CloseChat) -> None:
        add(int(close.chat_id), {"from": "system", "text": "The chat was closed."})

    @channel.on_redirect
    def redirected(redirect: RedirectChat) -> None:
        add(int(redirect.chat_id), {"from": "system", "text": "Passing you to an operator…"})

    app = Flask(__name__)
    app.register_blueprint(make_blueprint(channel, rule="/channel/<method>", name="channel"))

    @app.get("/")
    def page() -> str:
        return PAGE

    @app.post("/api/send")
    def send() -> Any:
        data = request.get_json(force=True)
        chat = int(data["chat"])
        visitor = make_visitor(f"web-{chat}", site=request.host)
        if "button" in data:
            button = data["button"]
            platform.queue_button(chat, str(button["id"]), str(button["text"]), visitor=visitor)
            add(chat, {"from": "visitor", "text": str(button["text"])})
        else:
            text = str(data["text"])
            platform.queue_text(chat, text, visitor=visitor)
            add(chat, {"from": "visitor", "text": text})
        return jsonify(ok=True)

    @app.get("/api/messages")
    def messages() -> Any:
        chat = int(request.args["chat"])
        after = int(request.args.get("after", 0))
        with lock:
            lines = list(transcripts.get(chat, [])[after:])
        return jsonify(messages=lines)

    return app


if __name__ == "__main__":
    from omnichannel.testing import FakeAgentPlatform

    port = int(os.environ.get("PORT", "5000"))
    fake = FakeAgentPlatform(
        channel_url=f"http://127.0.0.1:{port}/channel",
        channel_token="change-me",
        echo_prefix="You said: ",
    ).start()
    print(f"a local echo agent at {fake.url}; open http://127.0.0.1:{port}/")
    create_app(fake.webhook_url, "change-me", "memory://").run(port=port)
