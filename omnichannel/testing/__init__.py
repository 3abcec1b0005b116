"""Helpers for users' own tests and notebooks: fake platforms (each a :class:`FakePlatform`:
recorded calls, scripted failures, waiting), a fake chat-completions model
(:class:`FakeChatModel`), event builders, and a fluent bot tester. Everything here runs real
HTTP on 127.0.0.1."""

from __future__ import annotations

from omnichannel.testing.channel import Call, RecordingChannelServer
from omnichannel.testing.events import (
    button_event,
    file_event,
    new_chat_event,
    text_event,
)
from omnichannel.testing.fake import FakePlatform
from omnichannel.testing.llm import ChatRequest, FakeChatModel
from omnichannel.testing.server import LocalServer
from omnichannel.testing.tester import BotTester

_LAZY = {
    "FakeOmnidesk": "omnichannel.testing.omnidesk",
    "FakeWebexConnect": "omnichannel.testing.webex",
    "FakePageMessenger": "omnichannel.testing.pagemessenger",
    "FakeAgentPlatform": "omnichannel.testing.agent_platform",
}


def __getattr__(name: str) -> object:
    # the fake platforms load on first use: a user testing one adapter pays for no other
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omnichannel.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "BotTester",
    "Call",
    "ChatRequest",
    "FakeAgentPlatform",
    "FakeChatModel",
    "FakeOmnidesk",
    "FakePageMessenger",
    "FakePlatform",
    "FakeWebexConnect",
    "LocalServer",
    "RecordingChannelServer",
    "button_event",
    "file_event",
    "new_chat_event",
    "text_event",
]
