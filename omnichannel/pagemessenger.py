"""Page-messenger AI tasks (Selarti): the public import path of the client, the AI webhook's
model and parser, and the bridge that connects the AI to the SDK's channels.

Example::

    from omnichannel.pagemessenger import PageMessengerBridge, PageMessengerClient
"""

from __future__ import annotations

from omnichannel.channels.pagemessenger import (
    DEFAULT_BASE_URL,
    DEFAULT_HANDOVER_TEXT,
    AIMessage,
    AIMessageType,
    HandoverRequest,
    PageMessengerAuthError,
    PageMessengerBridge,
    PageMessengerClient,
    PageMessengerError,
    default_ai_chat_id,
    parse_ai_webhook,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_HANDOVER_TEXT",
    "AIMessage",
    "AIMessageType",
    "HandoverRequest",
    "PageMessengerAuthError",
    "PageMessengerBridge",
    "PageMessengerClient",
    "PageMessengerError",
    "default_ai_chat_id",
    "parse_ai_webhook",
]
