"""omnichannel: connect a chat-bot or AI agent to channels that have no ready connector.

The core is framework-free: typed models of the Omnichannel universal-connector protocol
(compatible with Webim External Bot API 2.0) and the seed's conversions.

``import omnichannel`` imports nothing else: every name below is loaded from its module the
first time it is used (PEP 562), so a process pays only for what it touches (``requests`` when
it first sends, ``sqlite3`` when it opens a SQLite store, a channel when it makes one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from omnichannel.channels.omnichannel import (
        NO_ACTIVE_CHANNEL,
        WEBHOOK_PATH,
        Connector,
        OmnichannelClient,
    )
    from omnichannel.codec import dumps, parse_send_message
    from omnichannel.errors import (
        ConfigurationError,
        DeliveryError,
        NotSupported,
        OmnichannelError,
        PayloadError,
        UnsupportedEvent,
    )
    from omnichannel.models import (
        Button,
        ButtonPress,
        Event,
        FileInfo,
        FileLink,
        FileMessage,
        InboundMessage,
        Keyboard,
        NewChatEvent,
        NewMessageEvent,
        OutboundMessage,
        SendMessage,
        TextMessage,
        TextReply,
        Visitor,
        VisitorFields,
    )
    from omnichannel.protocol import (
        CHANNEL_VARIABLES,
        agent_text,
        channel_chat_id,
        channel_variables,
        file_to_text,
        parse_event,
    )
    from omnichannel.runtime.bot import Bot, Turn
    from omnichannel.runtime.http import Headers, Request, Response
    from omnichannel.runtime.outbox import Outbox
    from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
    from omnichannel.runtime.sending import RetryPolicy
    from omnichannel.runtime.stores import MemoryStore, QueueItem, Store, open_store

# the module each public name lives in (keep in step with the imports above and ``__all__``)
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("NO_ACTIVE_CHANNEL", "WEBHOOK_PATH", "Connector", "OmnichannelClient"),
        "omnichannel.channels.omnichannel",
    ),
    **dict.fromkeys(("dumps", "parse_send_message"), "omnichannel.codec"),
    **dict.fromkeys(
        (
            "ConfigurationError",
            "DeliveryError",
            "NotSupported",
            "OmnichannelError",
            "PayloadError",
            "UnsupportedEvent",
        ),
        "omnichannel.errors",
    ),
    **dict.fromkeys(
        (
            "Button",
            "ButtonPress",
            "Event",
            "FileInfo",
            "FileLink",
            "FileMessage",
            "InboundMessage",
            "Keyboard",
            "NewChatEvent",
            "NewMessageEvent",
            "OutboundMessage",
            "SendMessage",
            "TextMessage",
            "TextReply",
            "Visitor",
            "VisitorFields",
        ),
        "omnichannel.models",
    ),
    **dict.fromkeys(
        (
            "CHANNEL_VARIABLES",
            "agent_text",
            "channel_chat_id",
            "channel_variables",
            "file_to_text",
            "parse_event",
        ),
        "omnichannel.protocol",
    ),
    **dict.fromkeys(("Bot", "Turn"), "omnichannel.runtime.bot"),
    **dict.fromkeys(("Headers", "Request", "Response"), "omnichannel.runtime.http"),
    "Outbox": "omnichannel.runtime.outbox",
    **dict.fromkeys(("Delivery", "Runtime", "WebhookChannel"), "omnichannel.runtime.pipeline"),
    "RetryPolicy": "omnichannel.runtime.sending",
    **dict.fromkeys(
        ("MemoryStore", "QueueItem", "Store", "open_store"), "omnichannel.runtime.stores"
    ),
}


def __getattr__(name: str) -> object:
    # PEP 562: called only for a name not yet in this module's namespace
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omnichannel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CHANNEL_VARIABLES",
    "NO_ACTIVE_CHANNEL",
    "WEBHOOK_PATH",
    "Bot",
    "Button",
    "ButtonPress",
    "ConfigurationError",
    "Connector",
    "Delivery",
    "DeliveryError",
    "Event",
    "FileInfo",
    "FileLink",
    "FileMessage",
    "Headers",
    "InboundMessage",
    "Keyboard",
    "MemoryStore",
    "NewChatEvent",
    "NewMessageEvent",
    "NotSupported",
    "OmnichannelClient",
    "OmnichannelError",
    "OutboundMessage",
    "Outbox",
    "PayloadError",
    "QueueItem",
    "Request",
    "Response",
    "RetryPolicy",
    "Runtime",
    "SendMessage",
    "Store",
    "TextMessage",
    "TextReply",
    "Turn",
    "UnsupportedEvent",
    "Visitor",
    "VisitorFields",
    "WebhookChannel",
    "__version__",
    "agent_text",
    "channel_chat_id",
    "channel_variables",
    "dumps",
    "file_to_text",
    "open_store",
    "parse_event",
    "parse_send_message",
]
