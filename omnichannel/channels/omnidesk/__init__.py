"""Omnidesk (seeds 001 and 003): the REST client, the bot behind Omnidesk rules (variant 1),
custom channels (seed 003) and the bridge that hands a bot's visitor to Omnidesk staff.

- :mod:`~omnichannel.channels.omnidesk.client` — :class:`OmnideskClient`, typed calls of the
  Omnidesk REST API (Basic auth, ``"0", "1", …, "total_count"`` lists turned into Python lists
  with paging, rate limits waited out); its results and errors are in
  :mod:`~omnichannel.channels.omnidesk.models`.
- :mod:`~omnichannel.channels.omnidesk.rules` — :class:`OmnideskChannel`, variant 1: an Omnidesk
  rule posts the omnichannel ``new_message`` JSON (``chat_id`` = case id); the bot answers in the
  case as staff; a handover edits the case.
- :mod:`~omnichannel.channels.omnidesk.custom_channel` — :class:`CustomChannel`, seed 003: your app
  is an Omnidesk channel. Messages of your users create and continue cases; staff replies arrive
  on the channel's webhook as :class:`StaffReply`.
- :mod:`~omnichannel.channels.omnidesk.bridge` — :class:`CustomChannelBridge`, variant 2: a bot
  talks to the visitor on any channel of the SDK and hands over to Omnidesk through a custom
  channel, with the transcript so far.

Both webhooks run on the shared pipeline (:class:`~omnichannel.runtime.pipeline.WebhookChannel`):
a delivery is stored in the durable inbox before Omnidesk gets its 200.
"""

from __future__ import annotations

from omnichannel.channels.omnidesk.bridge import (
    CustomChannelBridge,
    TranscriptLine,
    render_transcript,
)
from omnichannel.channels.omnidesk.client import MAX_PAGE_SIZE, OmnideskClient
from omnichannel.channels.omnidesk.custom_channel import (
    CUSTOM_CHANNEL_WEBHOOK_PATH,
    CustomChannel,
    CustomConversation,
    StaffReply,
    parse_staff_reply,
)
from omnichannel.channels.omnidesk.models import (
    CASE_PRIORITIES,
    CASE_STATUSES,
    Attachment,
    Case,
    CustomChannelInfo,
    KBArticle,
    Label,
    Message,
    OmnideskError,
    User,
    html_to_text,
)
from omnichannel.channels.omnidesk.rules import (
    RULE_WEBHOOK_PATH,
    CaseHandover,
    KnowledgeBaseAnswers,
    OmnideskChannel,
)

__all__ = [
    "CASE_PRIORITIES",
    "CASE_STATUSES",
    "CUSTOM_CHANNEL_WEBHOOK_PATH",
    "MAX_PAGE_SIZE",
    "RULE_WEBHOOK_PATH",
    "Attachment",
    "Case",
    "CaseHandover",
    "CustomChannel",
    "CustomChannelBridge",
    "CustomChannelInfo",
    "CustomConversation",
    "KBArticle",
    "KnowledgeBaseAnswers",
    "Label",
    "Message",
    "OmnideskChannel",
    "OmnideskClient",
    "OmnideskError",
    "StaffReply",
    "TranscriptLine",
    "User",
    "html_to_text",
    "parse_staff_reply",
    "render_transcript",
]
