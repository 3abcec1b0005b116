"""Page-messenger AI tasks (Selarti, seed 004): the API client, the AI's answer webhook, and a
bridge that lets an AI sales assistant talk to visitors on any channel of the SDK.

Visitor messages reach the AI with ``POST /wf/send_message_external``; the AI's answers come
back as a webhook (:class:`AIMessage`) and are delivered to the visitor on the channel they came
from. When the AI hands the dialog to a human (``operator``) or closes it (``close``), the bridge
stops forwarding and runs a handover hook.

The parts live in :mod:`~omnichannel.channels.pagemessenger.client` (the API client),
:mod:`~omnichannel.channels.pagemessenger.messages` (the webhook's model and parser) and
:mod:`~omnichannel.channels.pagemessenger.bridge` (the bridge and its webhook channel);
everything is importable from here and from :mod:`omnichannel.pagemessenger`.
"""

from __future__ import annotations

from omnichannel.channels.pagemessenger.bridge import (
    DEFAULT_HANDOVER_TEXT,
    HandoverHook,
    HandoverRequest,
    PageMessengerBridge,
    PageMessengerWebhook,
    default_ai_chat_id,
)
from omnichannel.channels.pagemessenger.client import (
    DEFAULT_BASE_URL,
    PageMessengerAuthError,
    PageMessengerClient,
    PageMessengerError,
)
from omnichannel.channels.pagemessenger.messages import AIMessage, AIMessageType, parse_ai_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_HANDOVER_TEXT",
    "AIMessage",
    "AIMessageType",
    "HandoverHook",
    "HandoverRequest",
    "PageMessengerAuthError",
    "PageMessengerBridge",
    "PageMessengerClient",
    "PageMessengerError",
    "PageMessengerWebhook",
    "default_ai_chat_id",
    "parse_ai_webhook",
]
