"""The AI-agent example (``examples/ai_agent.py``) against ``FakeChatModel``: served by a real
``omnichannel serve`` process, in-process behind Webex Connect's 5 s deadline with a model slower
than that, and the fake model itself. Real HTTP everywhere; nothing of the core is mocked."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from omnichannel import Runtime
from omnichannel.runtime import aio
from omnichannel.runtime.bot import DEFAULT_ERROR_REPLY
from omnichannel.testing import BotTester, FakeChatModel, LocalServer, RecordingChannelServer
from omnichannel.testing import text_event as omnichannel_text
from omnichannel.testing.webex import FakeWebexConnect
from omnichannel.webex import WebexConnectBot
from tests.processes import ROOT, running

API_KEY = "sk-test-key"
MODEL = "fake-mini"
EXAMPLE = ROOT / "examples" / "ai_agent.py"
WEBEX_TOKEN = "verify-ai-agent"


def example_env(model: FakeChatModel, **extra: str) -> dict[str, str]:
    """What points the example at the fake model."""
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MODEL": MODEL,
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


@pytest.fixture
def load_example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """``load(model, **env)``: a fresh copy of the example module configured for ``model``
    (its config is read at import); its HTTP client is closed afterwards."""
    loaded: list[ModuleType] = []

    def load(model: FakeChatModel, **extra: str) -> ModuleType:
        for name, value in example_env(model, **extra).items():
            monkeypatch.setenv(name, value)
        spec = importlib.util.spec_from_file_location(f"ai_agent_{len(loaded)}", EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        aio.run_coroutine(module.client.aclose())


# ---------------------------------------------------------------------------------------------
# the example served by `omnichannel serve`


def test_served_example_passes_the_growing_history_and_answers_each_question(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'omnichannel.db'}"
    with FakeChatModel(api_key=API_KEY) as model, RecordingChannelServer() as channel:
        env = example_env(model, AI_MAX_QUESTIONS="3")
        with running(
            store, channel.channel_url, "--bot", "examples.ai_agent:bot", env=env
        ) as serve:

            def ask(text: str) -> str:
                before = len(channel.texts(7))
                assert serve.post(omnichannel_text(text, chat_id=7)).status_code == 200
                channel.wait_for(lambda: len(channel.texts(7)) > before, timeout=20, what=text)
                return channel.texts(7)[-1]

            questions = ["Hi", "What are your opening hours?", "And on Sunday?"]
            answers = [ask(q) for q in questions]
            assert answers == [
                "(2 messages) echo: Hi",
                "(4 messages) echo: What are your opening hours?",
                "(6 messages) echo: And on Sunday?",
            ]
            first, second, third = model.requests
            assert first.roles == ["system", "user"]
            assert second.roles == ["system", "user", "assistant", "user"]
            assert third.roles == ["system", "user", "assistant", "user", "assistant", "user"]
            system = third.contents[0]
            assert system.startswith("You are the support assistant")
            assert third.contents[1:] == [
                questions[0],
                answers[0],
                questions[1],
                answers[1],
                questions[2],
            ]
            assert {r.model for r in model.requests} == {MODEL}
            assert {r.headers["Authorization"] for r in model.requests} == {f"Bearer {API_KEY}"}

            # turn.state counts the questions: the fourth is refused without asking the model
            refused = ask("One more?")
            assert "send /reset" in refused
            assert len(model.requests) == 3
            # the /reset middleware forgets the conversation: state and history
            reset = ask("/reset")
            assert reset.startswith("Done: I've forgotten")
            assert ask("Hello again") == "(3 messages) echo: Hello again"
            fourth = model.requests[-1]
            assert fourth.roles == ["system", "assistant", "user"]
            assert fourth.contents[0] == system
            assert fourth.contents[1].startswith("Done: I've forgotten")
            assert serve.terminate(40) == 0, serve.log()
            assert "Traceback" not in serve.log()
        # each answer reached the visitor once, in order
        assert channel.texts(7) == [*answers, refused, reset, "(3 messages) echo: Hello again"]


# ---------------------------------------------------------------------------------------------
# a slow model behind Webex Connect's 5 s deadline


def test_slow_model_behind_webex_is_acknowledged_at_once_and_answered_once(
    load_example: Callable[..., ModuleType],
) -> None:
    with FakeChatModel(api_key=API_KEY, delay=8.0) as model:
        example = load_example(model)
        # retries 1000x sooner than Webex Connect's: a retry would show within the test
        with FakeWebexConnect(WEBEX_TOKEN, time_factor=0.001, timeout=5.0) as webex:
            adapter = WebexConnectBot(
                example.bot,
                webex.webhook_url,
                WEBEX_TOKEN,
                runtime=Runtime(outbox_backoff=0.05, outbox_cap=0.2),
            )
            try:
                with LocalServer(adapter) as server:
                    webex.bot_url = server.url + "/webex"
                    sent = time.monotonic()
                    deliveries = [
                        webex.send_message(f"conv-{i}", f"question {i}", message_id=f"m-{i}")
                        for i in range(3)
                    ]
                    for delivery in deliveries:
                        delivery.wait(5)
                    assert [d.state for d in deliveries] == ["delivered"] * 3
                    assert all(len(d.attempts) == 1 for d in deliveries), "nothing is retried"
                    assert max(d.attempts[0].elapsed for d in deliveries) < 2.0
                    assert time.monotonic() - sent < 2.0

                    model.wait_for_requests(3, timeout=5)  # the model is thinking …
                    assert not webex.events  # … and nothing was answered yet

                    webex.wait_for_events(3, timeout=30)
                    answered_after = time.monotonic() - sent
                    assert 7.5 <= answered_after < 20
                    assert adapter.drain(10)
                    for i in range(3):
                        assert webex.texts(f"conv-{i}") == [f"(2 messages) echo: question {i}"]
                    assert len(webex.deliveries) == 3
                    assert all(len(d.attempts) == 1 for d in deliveries)
                    assert webex.peak_consecutive_failures == 0
                    assert len(model.requests) == 3
            finally:
                adapter.close(5)


# ---------------------------------------------------------------------------------------------
# in-process, as docs/ai-agents.md shows


def test_example_with_bot_tester_and_a_failing_model(
    load_example: Callable[..., ModuleType],
) -> None:
    with FakeChatModel(api_key=API_KEY) as model:
        example = load_example(model)
        with BotTester(example.bot) as tester:
            tester.send("Hi").expect_reply("(2 messages) echo: Hi")
            model.fail_next(1, status=500)
            tester.send("Still there?").expect_reply(DEFAULT_ERROR_REPLY)
            tester.send("And now?").expect_reply("(6 messages) echo: And now?")
        assert model.requests[-1].roles == [
            "system", "user", "assistant", "user", "assistant", "user"
        ]  # fmt: skip
        assert [status for status, _ in model.refused] == [500]


def test_a_wrong_key_gets_the_error_reply(load_example: Callable[..., ModuleType]) -> None:
    with FakeChatModel(api_key="another-key") as model:
        example = load_example(model)
        with BotTester(example.bot) as tester:
            tester.send("Hi").expect_reply(DEFAULT_ERROR_REPLY)
        assert model.requests == []
        assert [status for status, _ in model.refused] == [401]


def test_example_without_a_key_sends_no_authorization(
    load_example: Callable[..., ModuleType],
) -> None:
    with FakeChatModel() as model:  # a local server (Ollama, vLLM) takes no key
        example = load_example(model, OPENAI_API_KEY="")
        with BotTester(example.bot) as tester:
            tester.send("Hi").expect_reply("(2 messages) echo: Hi")
        assert "authorization" not in {k.lower() for k in model.requests[0].headers}


def first_python_block(markdown: str, after: str) -> str:
    return markdown.split(after, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_and_docs_example_answers_with_the_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readme = first_python_block((ROOT / "README.md").read_text(), "## An AI agent")
    page = first_python_block((ROOT / "docs" / "ai-agents.md").read_text(), "# AI agents")
    assert readme == page
    assert len(readme.splitlines()) <= 20
    with FakeChatModel(api_key=API_KEY) as model:
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        namespace: dict[str, Any] = {}
        exec(readme.replace("https://api.openai.com/v1", model.base_url), namespace)
        client = namespace["client"]
        try:
            with BotTester(namespace["bot"]) as tester:
                tester.send("Hi").expect_reply("(2 messages) echo: Hi")
                tester.send("Bye").expect_reply("(4 messages) echo: Bye")
        finally:
            aio.run_coroutine(client.aclose())
        assert model.requests[-1].roles == ["system", "user", "assistant", "user"]
        assert model.requests[-1].model == "gpt-4o-mini"


# ---------------------------------------------------------------------------------------------
# the fake model itself


def test_fake_chat_model_answers_like_the_chat_completions_api() -> None:
    with FakeChatModel(api_key=API_KEY) as model, requests.Session() as http:
        http.trust_env = False
        url = model.base_url + "/chat/completions"
        auth = {"Authorization": f"Bearer {API_KEY}"}
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ]
        got = http.post(url, json={"model": "m", "messages": messages}, headers=auth, timeout=5)
        assert got.status_code == 200
        body = got.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == "m"
        assert body["id"].startswith("chatcmpl-")
        assert body["choices"] == [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "(4 messages) echo: How are you?"},
                "finish_reason": "stop",
            }
        ]
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        (request,) = model.requests
        assert request.roles == ["system", "user", "assistant", "user"]
        assert request.last_user == "How are you?"
        assert request.messages == messages

        def status(payload: object, headers: dict[str, str] = auth, path: str = url) -> int:
            return http.post(path, json=payload, headers=headers, timeout=5).status_code

        ok = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        assert status(ok, headers={}) == 401
        assert status(ok, headers={"Authorization": "Bearer wrong"}) == 401
        assert status([1, 2]) == 400
        assert status({"messages": ok["messages"]}) == 400
        assert status({"model": "m", "messages": []}) == 400
        assert status({"model": "m", "messages": [{"role": "robot", "content": "x"}]}) == 400
        assert status({"model": "m", "messages": [{"role": "user"}]}) == 400
        assert status({**ok, "stream": True}) == 400
        assert status(ok, path=model.url + "/v1/completions") == 404
        not_json = http.post(url, data=b"{", headers=auth, timeout=5)
        assert not_json.status_code == 400
        assert "error" in not_json.json() and "message" in not_json.json()["error"]
        assert len(model.requests) == 1  # none of the refused ones is recorded

        model.reply = lambda msgs: msgs[0]["content"].upper()
        model.fail_next(1, status=429, retry_after=1)
        limited = http.post(url, json=ok, headers=auth, timeout=5)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        assert limited.json()["error"]["type"] == "rate_limit_error"
        again = http.post(url, json=ok, headers=auth, timeout=5)
        assert again.json()["choices"][0]["message"]["content"] == "X"


def test_fake_chat_model_delay_and_no_key() -> None:
    with FakeChatModel(delay=0.3) as model, requests.Session() as http:
        http.trust_env = False
        started = time.monotonic()
        got = http.post(
            model.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "slow?"}]},
            timeout=5,
        )
        assert got.status_code == 200  # no key configured: no Authorization needed
        assert time.monotonic() - started >= 0.3
        assert model.wait_for_requests(1)[0].last_user == "slow?"
