"""The AI task's webhook, typed: :class:`AIMessage` (a message in a dialog and the dialog's state
flags) and :func:`parse_ai_webhook`, which reads JSON or a form and every wire form of a boolean."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from omnichannel.decoding import decode_object, read_bool, read_id, read_text, show
from omnichannel.errors import PayloadError

__all__ = ["AIMessage", "AIMessageType", "parse_ai_webhook"]

log = logging.getLogger(__name__)


class AIMessageType(str, enum.Enum):
    """Who wrote a message of the AI webhook (``message_type``)."""

    BOT = "bot"
    """The AI."""
    OPERATOR = "operator"
    """A human manager (for example answering from the platform's panel)."""
    USER = "user"
    """The visitor (the "All messages" webhook reports their messages too)."""
    UNKNOWN = "unknown"
    """A value the SDK does not know; the wire value is in ``AIMessage.message_type_raw``."""


# the seed describes the values in Russian ("бот/оператор/пользователь"); the wire form is not
# documented, so both spellings are understood
_MESSAGE_TYPES = {
    "bot": AIMessageType.BOT,
    "ai": AIMessageType.BOT,
    "бот": AIMessageType.BOT,
    "operator": AIMessageType.OPERATOR,
    "manager": AIMessageType.OPERATOR,
    "оператор": AIMessageType.OPERATOR,
    "user": AIMessageType.USER,
    "client": AIMessageType.USER,
    "пользователь": AIMessageType.USER,
}


_BOOLEAN_FIELDS = ("close", "get_contact", "interest", "is_bot", "operator", "success")
_ID_FIELDS = (
    "channel_id",
    "company_id",
    "external_chat_id",
    "manager_id",
    "message_id",
    "task_id",
    "thread_id",
)
_TEXT_FIELDS = ("message_text", "panel_url", "share_url", "title", "wh_type")
_KNOWN_FIELDS = frozenset(
    (*_BOOLEAN_FIELDS, *_ID_FIELDS, *_TEXT_FIELDS, "contacts", "message_type")
)

_EMPTY: Mapping[str, Any] = {}


def _boolean(payload: Mapping[str, Any], field: str) -> bool:
    # the wire form of the flags is unconfirmed: a value that is no boolean does not reject
    # the webhook (the AI's answer would be lost); it counts as "not set" and stays in ``raw``
    try:
        return read_bool(payload.get(field), field)
    except PayloadError as exc:
        log.log(
            logging.WARNING if field in ("operator", "close") else logging.INFO,
            "pagemessenger: %s; taken as false",
            exc,
        )
        return False


def _identifier(payload: Mapping[str, Any], field: str) -> str | None:
    return read_id(payload.get(field), field)


def _text(payload: Mapping[str, Any], field: str) -> str | None:
    return read_text(payload.get(field), field)


def _contacts(payload: Mapping[str, Any]) -> str | Mapping[str, Any] | list[Any] | None:
    value = payload.get("contacts")
    if value is None or isinstance(value, (str, Mapping, list)):
        return value
    if type(value) in (int, float):
        return str(value)  # a phone number sent as a number
    raise PayloadError("contacts", f"expected a string or an object, got {show(value)}")


@attrs.frozen(kw_only=True)
class AIMessage:
    """One webhook of the AI task: a message in a dialog and the dialog's state flags.

    Booleans arrive as ``true/false``, ``"true"/"false"``, ``"yes"/"no"``, ``1/0``,
    ``"1"/"0"`` (also ``"да"/"нет"``); an empty string, ``null`` or an absent field is
    ``False`` (the flags say that something *happened*). Ids are strings (numbers are converted:
    Bubble ids overflow JavaScript numbers). ``message_type`` is an :class:`AIMessageType`
    (``None`` when absent; ``UNKNOWN`` for a value the SDK does not know, kept in
    ``message_type_raw``). ``raw`` is the decoded payload as received, unknown fields included.

    Attributes:
        external_chat_id: the ``chat_id`` your side sent with ``send_message_external``.
        message_text: the text of the message.
        operator: the dialog was handed to a human operator.
        close: the dialog is closed.
        get_contact: the visitor gave a contact (phone, e-mail, …).
        interest: the visitor showed interest.
        is_bot: the platform thinks the visitor is a bot.
        success: the dialog counts as a success.
        contacts: the contact data (a string, or the structure as sent).
        panel_url: a link to the dialog in the platform's panel (needs a login; can answer).
        share_url: a read-only link to the dialog.
        title: the visitor's full name.
        wh_type: the webhook's type.
    """

    external_chat_id: str
    message_id: str | None = None
    message_text: str | None = None
    message_type: AIMessageType | None = None
    message_type_raw: str | None = None
    operator: bool = False
    close: bool = False
    get_contact: bool = False
    interest: bool = False
    is_bot: bool = False
    success: bool = False
    task_id: str | None = None
    thread_id: str | None = None
    channel_id: str | None = None
    company_id: str | None = None
    manager_id: str | None = None
    contacts: str | Mapping[str, Any] | list[Any] | None = None
    panel_url: str | None = None
    share_url: str | None = None
    title: str | None = None
    wh_type: str | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)

    @property
    def handover_reason(self) -> str | None:
        """``"operator"`` or ``"close"`` when the AI stopped answering, else ``None``."""
        if self.operator:
            return "operator"
        if self.close:
            return "close"
        return None

    @property
    def extra(self) -> dict[str, Any]:
        """The payload's fields the SDK does not know, as received."""
        return {k: v for k, v in self.raw.items() if k not in _KNOWN_FIELDS}

    @classmethod
    def from_mapping(cls, payload: Mapping[str, Any]) -> AIMessage:
        """Type a decoded webhook payload (see :func:`parse_ai_webhook`).

        Raises:
            PayloadError: a field has a value that cannot be typed, or ``external_chat_id``
                is missing; the message and ``.path`` name the field.
        """
        chat_id = _identifier(payload, "external_chat_id")
        if chat_id is None:
            raise PayloadError("external_chat_id", "required field is missing", missing=True)
        raw_type = _text(payload, "message_type")
        message_type = None
        if raw_type is not None and raw_type.strip():
            message_type = _MESSAGE_TYPES.get(raw_type.strip().lower(), AIMessageType.UNKNOWN)
        return cls(
            external_chat_id=chat_id,
            message_id=_identifier(payload, "message_id"),
            message_text=_text(payload, "message_text"),
            message_type=message_type,
            message_type_raw=raw_type,
            operator=_boolean(payload, "operator"),
            close=_boolean(payload, "close"),
            get_contact=_boolean(payload, "get_contact"),
            interest=_boolean(payload, "interest"),
            is_bot=_boolean(payload, "is_bot"),
            success=_boolean(payload, "success"),
            task_id=_identifier(payload, "task_id"),
            thread_id=_identifier(payload, "thread_id"),
            channel_id=_identifier(payload, "channel_id"),
            company_id=_identifier(payload, "company_id"),
            manager_id=_identifier(payload, "manager_id"),
            contacts=_contacts(payload),
            panel_url=_text(payload, "panel_url"),
            share_url=_text(payload, "share_url"),
            title=_text(payload, "title"),
            wh_type=_text(payload, "wh_type"),
            raw=payload,
        )


def parse_ai_webhook(
    body: bytes | str | Mapping[str, Any], content_type: str | None = None
) -> AIMessage:
    """Parse the AI task's webhook into an :class:`AIMessage`.

    ``body`` is the raw bytes, a ``str``, or an already decoded mapping. ``content_type`` picks
    the decoding: JSON (``application/json``) or a form (``application/x-www-form-urlencoded``;
    the last of repeated keys wins). Without one (or with another type) a body starting with
    ``{`` is read as JSON, anything else as a form.

    Raises:
        PayloadError: the body can't be decoded, is not an object, a field has a value that
            can't be typed, or ``external_chat_id`` is missing; ``.path`` names the field.
    """
    if isinstance(body, Mapping):
        return AIMessage.from_mapping(body)
    return AIMessage.from_mapping(decode_object(body, content_type, forms=True))
