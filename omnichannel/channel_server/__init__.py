"""The channel side of the Omnichannel universal connector (seed 000): your own app, web chat,
forum or messenger carrying its visitors' messages to an agent on a platform that speaks the
protocol (chatme.ai's universal connector, Webim External Bot API 2.0 bots, the SDK's own
:class:`~omnichannel.Connector`), and showing the agent's answers back.

- :class:`PlatformClient` posts visitor events (text, files with their states, button presses,
  Webim's ``new_chat``) to the platform's ``…/omnichannel_message/{token}/bot_api_webhook``:
  queued durably (``queue_*``) or sent at once (``send_*``, raising typed errors);
- :class:`ChannelServer` is the endpoint the platform calls back: ``/send_message`` (and
  Webim's ``/close_chat``, ``/redirect_chat``), stored before it answers, then handed to your
  handlers;
- :func:`make_visitor` maps your user to the protocol's visitor, so the platform's channel
  variables are filled.

Both are channels of a :class:`~omnichannel.Runtime` (share one for the store, the outbox and the
workers) and are served by the same shims as the agent side (Flask, Django, ASGI, WSGI, the
local server).
"""

from __future__ import annotations

from omnichannel.channel_server.client import (
    ChannelInactive,
    EventRejected,
    PlatformClient,
    PlatformHealth,
    PlatformNotFound,
    platform_webhook_url,
)
from omnichannel.channel_server.server import (
    METHODS,
    ChannelServer,
    CloseChat,
    RedirectChat,
    parse_close_chat,
    parse_redirect_chat,
)
from omnichannel.channel_server.wire import (
    VisitorLike,
    button_message,
    event_payload,
    file_message,
    make_visitor,
    message_payload,
    new_message_id,
    preview_variables,
    text_message,
    validate_event,
    visitor_payload,
)

__all__ = [
    "METHODS",
    "ChannelInactive",
    "ChannelServer",
    "CloseChat",
    "EventRejected",
    "PlatformClient",
    "PlatformHealth",
    "PlatformNotFound",
    "RedirectChat",
    "VisitorLike",
    "button_message",
    "event_payload",
    "file_message",
    "make_visitor",
    "message_payload",
    "new_message_id",
    "parse_close_chat",
    "parse_redirect_chat",
    "platform_webhook_url",
    "preview_variables",
    "text_message",
    "validate_event",
    "visitor_payload",
]
