"""Omnidesk for bots and apps: the public import path of :mod:`omnichannel.channels.omnidesk`.

``from omnichannel.omnidesk import OmnideskClient, OmnideskChannel, CustomChannel`` — the REST
client, the bot behind Omnidesk rules (variant 1), custom channels (seed 003) and the bridge that
hands a bot's visitor to Omnidesk staff (variant 2).
"""

from __future__ import annotations

from omnichannel.channels.omnidesk import (
    CASE_PRIORITIES,
    CASE_STATUSES,
    CUSTOM_CHANNEL_WEBHOOK_PATH,
    MAX_PAGE_SIZE,
    RULE_WEBHOOK_PATH,
    Attachment,
    Case,
    CaseHandover,
    CustomChannel,
    CustomChannelBridge,
    CustomChannelInfo,
    CustomConversation,
    KBArticle,
    KnowledgeBaseAnswers,
    Label,
    Message,
    OmnideskChannel,
    OmnideskClient,
    OmnideskError,
    StaffReply,
    TranscriptLine,
    User,
    html_to_text,
    parse_staff_reply,
    render_transcript,
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
