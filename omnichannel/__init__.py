"""omnichannel: connect a chat-bot or AI agent to channels that have no ready connector.

The core is framework-free: typed models of the Omnichannel universal-connector protocol
(compatible with Webim External Bot API 2.0) and the seed's conversions.
"""

from __future__ import annotations

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

__version__ = "0.1.0"

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
