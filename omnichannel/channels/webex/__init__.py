"""Webex Connect generic bots ("Third-party bot", seed 002): typed inbound events, the webhook that
answers inside Webex Connect's five seconds, and the client that posts the bot's replies back.

Webex Connect posts events (``Incoming message``, ``FB POSTBACK``, ``Message Delivery``) with
mixed-case field names to the bot's endpoint and expects the integration's verification token in
the response to every POST, within 5 s; it retries a failed delivery 4 times over an hour and
switches the webhook off after 5 consecutive failures. :class:`WebexConnectBot` therefore
stores each event in the runtime's durable inbox, acknowledges at once and runs the
:class:`~omnichannel.Bot` afterwards, in a worker; replies (``eventid`` 1001) and the handover
(``eventid`` 1002) go to the integration's generated webhook URL through the runtime's durable,
ordered, retrying outbox.

The parts live in :mod:`~omnichannel.channels.webex.events` (the inbound models and their
parser), :mod:`~omnichannel.channels.webex.client` (the outbound client) and
:mod:`~omnichannel.channels.webex.bot` (the webhook channel); everything is importable from
here and from :mod:`omnichannel.webex`.
"""

from __future__ import annotations

from omnichannel.channels.webex.bot import (
    AckFormat,
    CopiedMessageHandler,
    DeliveryStatusHandler,
    KeyboardRenderer,
    WebexConnectBot,
    WebexConversation,
)
from omnichannel.channels.webex.client import (
    EVENT_HANDOVER,
    EVENT_MESSAGE,
    MAX_BODY_BYTES,
    BodyTooLarge,
    WebexConnectClient,
    WebexMessage,
)
from omnichannel.channels.webex.events import (
    FB_POSTBACK,
    INCOMING_MESSAGE,
    MESSAGE_DELIVERY,
    WebexDeliveryStatus,
    WebexEvent,
    WebexIncomingMessage,
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
    "AckFormat",
    "BodyTooLarge",
    "CopiedMessageHandler",
    "DeliveryStatusHandler",
    "KeyboardRenderer",
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
