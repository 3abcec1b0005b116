"""The Omnidesk API's results as typed objects, the API's error, and HTML → text.

Omnidesk answers with loosely typed JSON (ids as strings or numbers, ``"-"`` for an absent time,
maps by language id for knowledge-base texts); the ``from_api`` constructors read it leniently and
keep every field in ``raw``.
"""

from __future__ import annotations

import email.utils
import html
import re
from collections.abc import Mapping
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import attrs

from omnichannel.decoding import read_int
from omnichannel.errors import DeliveryError, PayloadError

__all__ = [
    "CASE_PRIORITIES",
    "CASE_STATUSES",
    "Attachment",
    "Case",
    "CustomChannelInfo",
    "KBArticle",
    "Label",
    "Message",
    "OmnideskError",
    "User",
    "html_to_text",
]

CASE_STATUSES = ("open", "waiting", "closed")
"""Case statuses Omnidesk documents."""

CASE_PRIORITIES = ("low", "normal", "high", "critical")
"""Case priorities Omnidesk documents."""


class OmnideskError(DeliveryError):
    """An Omnidesk API call failed for good.

    ``error`` is Omnidesk's error code from the answer's ``error`` field (``"case_not_found"``,
    …; ``None`` when the answer had none, e.g. a connection failure), ``description`` its
    human-readable text when present. ``status``, ``retryable``, ``retry_after`` and
    ``response_text`` are as in :class:`~omnichannel.DeliveryError`. The API key never appears in
    the message or the response text.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        description: str | None = None,
        status: int | None = None,
        response_text: str = "",
        attempts: int = 1,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            response_text=response_text,
            attempts=attempts,
            retryable=retryable,
            retry_after=retry_after,
        )
        self.error = error
        self.description = description


# =============================================================================================
# typed results


def _to_int(value: object) -> int | None:
    """An id as an ``int``: ints, and strings of digits; anything else is ``None``."""
    try:
        return read_int(value, "")
    except PayloadError:
        return None


def _to_str(value: object) -> str | None:
    """A string field of an answer: ``None`` for absent, empty, or Omnidesk's ``"-"``."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return None if text in ("", "-") else text


def _to_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _to_time(value: object) -> datetime | None:
    """Omnidesk's times (``"Thu, 26 Apr 2018 20:17:10 +0300"``) or ISO 8601; ``None`` otherwise."""
    text = _to_str(value)
    if text is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ids(value: object) -> tuple[int, ...]:
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(i for i in (_to_int(v) for v in value) if i is not None)


def _need_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = _to_int(obj.get(key))
    if value is None:
        raise OmnideskError(
            f"unexpected Omnidesk answer: {where}.{key} is missing or not an integer",
            error="unexpected_answer",
        )
    return value


_EMPTY: Mapping[str, Any] = {}


@attrs.frozen(kw_only=True)
class Attachment:
    """A file attached to a message (a staff reply's ``attachments``)."""

    url: str | None = None
    name: str | None = None
    size: int | None = None
    mime_type: str | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @classmethod
    def from_api(cls, value: object) -> Attachment:
        """An attachment from an answer or a webhook (a URL string, or an object)."""
        if isinstance(value, str):
            return cls(url=value)
        obj = value if isinstance(value, Mapping) else {}
        return cls(
            url=_to_str(obj.get("url")),
            name=_to_str(obj.get("file_name") or obj.get("name")),
            size=_to_int(obj.get("file_size") or obj.get("size")),
            mime_type=_to_str(obj.get("mime_type") or obj.get("content_type")),
            raw=dict(obj),
        )


def _attachments(value: object) -> tuple[Attachment, ...]:
    if isinstance(value, Mapping):
        value = [value[k] for k in sorted(value, key=lambda k: _to_int(k) or 0)]
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(Attachment.from_api(v) for v in value)


@attrs.frozen(kw_only=True)
class Case:
    """An Omnidesk case (``{"case": {...}}``). Unknown fields stay in ``raw``."""

    case_id: int
    case_number: str | None = None
    subject: str | None = None
    user_id: int | None = None
    staff_id: int | None = None
    group_id: int | None = None
    status: str | None = None
    priority: str | None = None
    channel: str | None = None
    labels: tuple[int, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    custom_fields: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False)
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @property
    def closed(self) -> bool:
        """True when the status is ``closed``."""
        return self.status == "closed"

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Case:
        """A case from the object inside ``{"case": …}``."""
        fields = obj.get("custom_fields")
        return cls(
            case_id=_need_int(obj, "case_id", "case"),
            case_number=_to_str(obj.get("case_number")),
            subject=_to_str(obj.get("subject")),
            user_id=_to_int(obj.get("user_id")),
            staff_id=_to_int(obj.get("staff_id")),
            group_id=_to_int(obj.get("group_id")),
            status=_to_str(obj.get("status")),
            priority=_to_str(obj.get("priority")),
            channel=_to_str(obj.get("channel")),
            labels=_ids(obj.get("labels")),
            created_at=_to_time(obj.get("created_at")),
            updated_at=_to_time(obj.get("updated_at")),
            closed_at=_to_time(obj.get("closed_at")),
            custom_fields=dict(fields) if isinstance(fields, Mapping) else {},
            raw=dict(obj),
        )


@attrs.frozen(kw_only=True)
class Message:
    """A message of a case (``{"message": {...}}``): from staff when ``staff_id`` is set."""

    message_id: int
    case_id: int | None = None
    user_id: int | None = None
    staff_id: int | None = None
    content: str = ""
    content_html: str | None = None
    note: bool = False
    sent_via_rule: bool = False
    created_at: datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @property
    def from_staff(self) -> bool:
        """True for a staff message (a ``staff_id`` other than 0)."""
        return bool(self.staff_id)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any], case_id: int | None = None) -> Message:
        """A message from the object inside ``{"message": …}``."""
        return cls(
            message_id=_need_int(obj, "message_id", "message"),
            case_id=_to_int(obj.get("case_id")) or case_id,
            user_id=_to_int(obj.get("user_id")),
            staff_id=_to_int(obj.get("staff_id")),
            content=_to_str(obj.get("content")) or "",
            content_html=_to_str(obj.get("content_html")),
            note=_to_bool(obj.get("note")),
            sent_via_rule=_to_bool(obj.get("sent_via_rule")),
            created_at=_to_time(obj.get("created_at")),
            attachments=_attachments(obj.get("attachments")),
            raw=dict(obj),
        )


@attrs.frozen(kw_only=True)
class Label:
    """A case label (``{"label": {label_id, label_title}}``)."""

    label_id: int
    title: str = ""
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Label:
        """A label from the object inside ``{"label": …}``."""
        return cls(
            label_id=_need_int(obj, "label_id", "label"),
            title=_to_str(obj.get("label_title") or obj.get("title")) or "",
            raw=dict(obj),
        )


@attrs.frozen(kw_only=True)
class CustomChannelInfo:
    """A custom channel as the API lists it; ``channel_api_key`` (``"cch1"``) is what
    :meth:`OmnideskClient.create_case` takes as ``channel``."""

    channel_id: int
    channel_api_key: str
    title: str = ""
    channel_type: str | None = None
    webhook_url: str | None = None
    active: bool = True
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @property
    def synchronous(self) -> bool:
        """True for a real-time (chat-like) channel, ``channel_type == "sync"``."""
        return self.channel_type == "sync"

    def __repr__(self) -> str:
        # the webhook URL carries the receiver's secret
        url = _origin(self.webhook_url) + "/…" if self.webhook_url else None
        return (
            f"CustomChannelInfo(channel_id={self.channel_id!r}, "
            f"channel_api_key={self.channel_api_key!r}, title={self.title!r}, "
            f"channel_type={self.channel_type!r}, webhook_url={url!r}, active={self.active!r})"
        )

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> CustomChannelInfo:
        """A channel from the object inside ``{"custom_channel": …}``."""
        key = _to_str(obj.get("channel_api_key"))
        if key is None:
            raise OmnideskError(
                "unexpected Omnidesk answer: custom_channel.channel_api_key is missing",
                error="unexpected_answer",
            )
        return cls(
            channel_id=_need_int(obj, "channel_id", "custom_channel"),
            channel_api_key=key,
            title=_to_str(obj.get("title")) or "",
            channel_type=_to_str(obj.get("channel_type")),
            webhook_url=_to_str(obj.get("webhook_url")),
            active=_to_bool(obj.get("active", True)),
            raw=dict(obj),
        )


@attrs.frozen(kw_only=True)
class User:
    """An Omnidesk user (the person writing in, not staff)."""

    user_id: int
    full_name: str | None = None
    email: str | None = None
    phone: str | None = None
    custom_id: str | None = None
    custom_channel: str | None = None
    created_at: datetime | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> User:
        """A user from the object inside ``{"user": …}``."""
        return cls(
            user_id=_need_int(obj, "user_id", "user"),
            full_name=_to_str(obj.get("user_full_name")),
            email=_to_str(obj.get("user_email")),
            phone=_to_str(obj.get("user_phone")),
            custom_id=_to_str(obj.get("user_custom_id")),
            custom_channel=_to_str(obj.get("user_custom_channel")),
            created_at=_to_time(obj.get("created_at")),
            raw=dict(obj),
        )


def _origin(url: str) -> str:
    """Scheme and host of a URL: its path and query may carry a receiver's secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def _localized(value: object, language_id: str | None) -> tuple[str, Mapping[str, str]]:
    """A text that may be a map by language id: the preferred language's text, and the map."""
    if isinstance(value, Mapping):
        texts = {str(k): str(v) for k, v in value.items() if v not in (None, "")}
        if language_id is not None and language_id in texts:
            return texts[language_id], texts
        return next(iter(texts.values()), ""), texts
    text = _to_str(value) or ""
    return text, {}


@attrs.frozen(kw_only=True)
class KBArticle:
    """A knowledge-base article. ``title`` and ``content`` are in the preferred language when
    Omnidesk sends them as maps by language id (all languages stay in ``titles`` /
    ``contents``); ``content`` may be HTML, :attr:`text` is it as plain text."""

    article_id: int
    section_id: int | None = None
    title: str = ""
    content: str = ""
    titles: Mapping[str, str] = attrs.field(default=_EMPTY, eq=False)
    contents: Mapping[str, str] = attrs.field(default=_EMPTY, eq=False, repr=False)
    active: bool = True
    access_type: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @property
    def text(self) -> str:
        """The content as plain text (tags removed, entities decoded)."""
        return html_to_text(self.content)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any], language_id: str | None = None) -> KBArticle:
        """An article from the object inside ``{"kb_article": …}``."""
        title, titles = _localized(obj.get("article_title", obj.get("title")), language_id)
        content, contents = _localized(obj.get("article_content", obj.get("content")), language_id)
        return cls(
            article_id=_need_int(obj, "article_id", "kb_article"),
            section_id=_to_int(obj.get("section_id")),
            title=title,
            content=content,
            titles=titles,
            contents=contents,
            active=_to_bool(obj.get("active", True)),
            access_type=_to_str(obj.get("access_type")),
            created_at=_to_time(obj.get("created_at")),
            updated_at=_to_time(obj.get("updated_at")),
            raw=dict(obj),
        )


class _TextExtractor(HTMLParser):
    _BREAKS = frozenset(("br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BREAKS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def html_to_text(value: str) -> str:
    """Plain text of an HTML fragment (Omnidesk's KB content, staff replies written in the
    editor). Text without tags is returned with entities decoded and nothing else changed."""
    if "<" not in value:
        return html.unescape(value)
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    text = "".join(parser.parts)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
