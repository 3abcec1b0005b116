"""Webex Connect generic bots: the public import path (``from omnichannel.webex import …``).

The implementation lives in :mod:`omnichannel.channels.webex`; the test double is
:class:`omnichannel.testing.FakeWebexConnect`.
"""

from __future__ import annotations

from omnichannel.channels.webex import (
    EVENT_HANDOVER,
    EVENT_MESSAGE,
    FB_POSTBACK,
    INCOMING_MESSAGE,
    MAX_BODY_BYTES,
    MESSAGE_DELIVERY,
    BodyTooLarge,
    WebexConnectBot,
    WebexConnectClient,
    WebexConversation,
    WebexDeliveryStatus,
    WebexEvent,
    WebexIncomingMessage,
    WebexMessage,
    WebexPostback,
    WebexUnknownEvent,
    format_webex_timestamp,
    parse_webex_event,
    parse_webex_timestamp,
)

__all__ = [
    "EVENT_HANDOVER",
    "EVENT_MESSAGE",
    "FB_POSTBACK",
    "INCOMING_MESSAGE",
    "MAX_BODY_BYTES",
    "MESSAGE_DELIVERY",
    "BodyTooLarge",
    "WebexConnectBot",
    "WebexConnectClient",
    "WebexConversation",
    "WebexDeliveryStatus",
    "WebexEvent",
    "WebexIncomingMessage",
    "WebexMessage",
    "WebexPostback",
    "WebexUnknownEvent",
    "format_webex_timestamp",
    "parse_webex_event",
    "parse_webex_timestamp",
]
