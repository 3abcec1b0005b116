"""Helpers for users' own tests and notebooks: fake platforms, recording servers, builders,
and a fluent bot tester. Everything here runs real HTTP on 127.0.0.1."""

from __future__ import annotations

from omnichannel.testing.channel import Call, RecordingChannelServer
from omnichannel.testing.events import (
    button_event,
    file_event,
    new_chat_event,
    text_event,
)
from omnichannel.testing.server import LocalServer
from omnichannel.testing.tester import BotTester

__all__ = [
    "BotTester",
    "Call",
    "LocalServer",
    "RecordingChannelServer",
    "button_event",
    "file_event",
    "new_chat_event",
    "text_event",
]
