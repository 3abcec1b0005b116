"""An AI agent: every text goes to an OpenAI-compatible chat-completions API with the
conversation's history; ``/reset`` starts the conversation over.

Configure with ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (any compatible server: OpenAI, Azure,
vLLM, Ollama's ``/v1``…) and ``OPENAI_MODEL``, then:
    pip install "omnichannel[ai]"
    omnichannel serve --token T --channel-url http://127.0.0.1:9000/channel \
        --bot examples.ai_agent:bot --workers 32
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from omnichannel import Bot, Turn

BASE_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
API_KEY = os.environ.get("OPENAI_API_KEY", "")  # local servers (Ollama, vLLM) need none
MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
MAX_QUESTIONS = int(os.environ.get("AI_MAX_QUESTIONS", "50"))  # per conversation
SYSTEM_PROMPT = (
    "You are the support assistant of Example Inc. Answer briefly and politely; "
    "when you don't know, say so and suggest writing to support@example.com."
)

# one client for the whole process: async handlers all run on the runtime's one event loop
client = httpx.AsyncClient(
    base_url=BASE_URL,
    headers={"Authorization": f"Bearer {API_KEY}"} if API_KEY else {},
    timeout=60,
)

bot = Bot(history=20)  # turn.history keeps the last 20 messages of each conversation


@bot.use
def commands(turn: Turn, next: Callable[[], None]) -> None:
    """``/reset`` forgets the conversation (state and history); anything else goes on."""
    if (turn.text or "").strip().lower() == "/reset":
        bot.forget(turn.channel, turn.chat_id)
        turn.reply("Done: I've forgotten our conversation. How can I help?")
        return
    next()


@bot.on_text
async def answer(turn: Turn) -> str:
    """Ask the model, with the conversation so far (this message included)."""
    turn.state["questions"] = turn.state.get("questions", 0) + 1
    if turn.state["questions"] > MAX_QUESTIONS:
        return "That's all the questions I can take in one conversation; send /reset to go on."
    response = await client.post(
        "/chat/completions",
        json={"model": MODEL, "messages": turn.history.to_messages(system=SYSTEM_PROMPT)},
    )
    response.raise_for_status()  # a failure sends the bot's error_reply
    content: str = response.json()["choices"][0]["message"]["content"]
    return content
