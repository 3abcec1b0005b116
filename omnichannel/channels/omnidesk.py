"""Omnidesk (seeds 001 and 003): the REST client, the bot behind Omnidesk rules (variant 1),
custom channels (seed 003 / variant 2) and the bridge that hands a bot's visitor to Omnidesk staff.

- :class:`OmnideskClient` — typed calls of the Omnidesk REST API (Basic auth, ``"0", "1", …,
  "total_count"`` lists turned into Python lists with paging, rate limits waited out).
- :class:`OmnideskChannel` — variant 1: an Omnidesk rule posts the omnichannel ``new_message`` JSON
  (``chat_id`` = case id); the bot answers in the case as staff; a handover edits the case.
- :class:`CustomChannel` — seed 003: your app is an Omnidesk channel. Messages of your users create
  and continue cases; staff replies arrive on the channel's webhook as :class:`StaffReply`.
- :class:`CustomChannelBridge` — variant 2: a bot talks to the visitor on any channel of the SDK
  and hands over to Omnidesk through a custom channel, with the transcript so far.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import hmac
import html
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import attrs
import requests

from omnichannel.codec import decode_json
from omnichannel.errors import (
    ConfigurationError,
    DeliveryError,
    NotSupported,
    PayloadError,
    UnsupportedEvent,
)
from omnichannel.models import (
    Button,
    ButtonPress,
    ChatId,
    FileLink,
    FileMessage,
    InboundMessage,
    Keyboard,
    NewMessageEvent,
    OutboundMessage,
    TextMessage,
    TextReply,
)
from omnichannel.protocol import agent_text, parse_event
from omnichannel.runtime.bot import Bot, Channel, Reply, Turn, to_outbound
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Runtime, RuntimeLifecycle
from omnichannel.runtime.sending import RetryPolicy, request_with_retries
from omnichannel.text import numbered_list, plain_text, split_text

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

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

MAX_PAGE_SIZE = 100
"""Omnidesk's largest ``limit`` for one page of a list."""

CASE_STATUSES = ("open", "waiting", "closed")
"""Case statuses Omnidesk documents."""

CASE_PRIORITIES = ("low", "normal", "high", "critical")
"""Case priorities Omnidesk documents."""

RULE_WEBHOOK_PATH = "/omnidesk/rules/{secret}"
"""A suggested path for the rule webhook of :class:`OmnideskChannel` (the secret is its last
segment; any path whose last segment, or ``?secret=`` query parameter, is the secret works)."""

CUSTOM_CHANNEL_WEBHOOK_PATH = "/omnidesk/custom-channel/{secret}"
"""A suggested path for the webhook of :class:`CustomChannel` (same secret rules)."""

_MAX_PAGES = 500  # Omnidesk refuses page numbers above 500


# =============================================================================================
# errors


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


def _error_fields(text: str) -> tuple[str | None, str | None]:
    """Omnidesk's ``error`` code and description from an answer body, when it is JSON."""
    try:
        answer = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    code = answer.get("error")
    desc = answer.get("description") or answer.get("desc") or answer.get("message")
    return (
        str(code) if code not in (None, "") else None,
        str(desc) if desc not in (None, "") else None,
    )


def _is_rate_limited(response: requests.Response) -> bool | None:
    """``is_retryable`` hook: 429, and the older accounts' 403 "rate limit exceeded", are retried.

    When Omnidesk puts ``retry_after`` in the JSON body rather than in a header, it is copied to
    the headers so the shared retry loop honours it.
    """
    status = response.status_code
    limited = status == 429
    if status == 403:
        try:
            limited = "rate limit" in response.text.lower()
        except Exception:  # pragma: no cover - undecodable body
            limited = False
    if not limited:
        return None
    if "retry_after" not in response.headers and "Retry-After" not in response.headers:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("retry_after"), (int, float, str)):
            response.headers["retry_after"] = str(body["retry_after"])
    return True


# =============================================================================================
# typed results


def _to_int(value: object) -> int | None:
    """An id as an ``int``: ints, and strings of digits; anything else is ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
            return int(text)
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


# =============================================================================================
# the REST client


class _Secret:
    """A secret string whose repr and str never show it (``.value`` does)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class _BasicAuth(requests.auth.AuthBase):
    """HTTP Basic auth whose repr never shows the key."""

    def __init__(self, email: str, api_key: str) -> None:
        self._inner = requests.auth.HTTPBasicAuth(email, api_key)
        self.email = email

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        prepared: requests.PreparedRequest = self._inner(r)
        return prepared

    def __repr__(self) -> str:
        return f"_BasicAuth(email={self.email!r}, api_key=***)"


def _list_items(answer: Any, item_key: str) -> tuple[list[Mapping[str, Any]], int | None]:
    """The items of an Omnidesk list answer (``{"0": {item_key: …}, …, "total_count": n}``)."""
    total: int | None = None
    if isinstance(answer, list):
        values: list[Any] = answer
    elif isinstance(answer, Mapping):
        total = _to_int(answer.get("total_count"))
        numbered = sorted((int(k), v) for k, v in answer.items() if str(k).isdigit())
        values = [v for _, v in numbered]
        if not numbered and isinstance(answer.get(item_key + "s"), list):
            values = answer[item_key + "s"]
    else:
        values = []
    items: list[Mapping[str, Any]] = []
    for value in values:
        if isinstance(value, Mapping):
            inner = value.get(item_key)
            items.append(inner if isinstance(inner, Mapping) else value)
    return items, total


class OmnideskClient:
    """Typed calls of the Omnidesk REST API.

    Every call goes through :func:`~omnichannel.runtime.sending.request_with_retries`: a timeout,
    retries of 5xx and connection errors with capped backoff, and Omnidesk's rate limit (429, or
    403 "rate limit exceeded" on older accounts) waited out for ``retry_after`` seconds. A call
    that fails for good raises :class:`OmnideskError` carrying Omnidesk's ``error`` code. The API
    key is sent with HTTP Basic auth and never appears in logs, errors or reprs.

    Args:
        base_url: the account's address, ``https://acme.omnidesk.ru`` (see :meth:`for_subdomain`).
        email: the staff e-mail the API key belongs to.
        api_key: the API key (Settings → API).
        session: a ``requests.Session`` (the test seam; one is created otherwise).
        retry: timeouts and retries of every call.
        page_size: items per page when listing (1 … 100).
        language_id: preferred language of knowledge-base texts (Omnidesk's language id).
        label_fields: the ``edit case`` field names that add and remove labels. Unverified
            against Omnidesk's documentation, hence configurable (see ``replace_labels``).
        replace_labels: edit labels by reading the case and sending its whole new ``labels``
            list instead of the add/remove fields (one extra GET per label change).
    """

    def __init__(
        self,
        base_url: str,
        email: str,
        api_key: str,
        session: requests.Session | None = None,
        *,
        retry: RetryPolicy | None = None,
        page_size: int = MAX_PAGE_SIZE,
        language_id: str | None = None,
        label_fields: tuple[str, str] = ("add_labels", "delete_labels"),
        replace_labels: bool = False,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                "base_url must be an http(s) URL such as https://acme.omnidesk.ru "
                "(use OmnideskClient.for_subdomain('acme', …) for the short form)"
            )
        if not email:
            raise ConfigurationError("email (the staff e-mail of the API key) must not be empty")
        if not api_key:
            raise ConfigurationError("api_key must not be empty")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        base = base_url.rstrip("/")
        if base.endswith("/api"):
            base = base[: -len("/api")]
        self.base_url = base
        self.email = email
        self._api_key = _Secret(api_key)
        self._auth = _BasicAuth(email, api_key)
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy(attempts=5, max_retry_after=65.0)
        self.page_size = page_size
        self.language_id = language_id
        self.label_fields = label_fields
        self.replace_labels = replace_labels

    @classmethod
    def for_subdomain(
        cls, subdomain: str, email: str, api_key: str, **options: Any
    ) -> OmnideskClient:
        """A client for ``https://{subdomain}.omnidesk.ru`` (give ``"acme"`` or the full host)."""
        name = subdomain.strip().removeprefix("https://").removeprefix("http://").strip("/")
        if not name:
            raise ConfigurationError("subdomain must not be empty")
        host = name if "." in name else f"{name}.omnidesk.ru"
        return cls(f"https://{host}", email, api_key, **options)

    def __repr__(self) -> str:
        return f"OmnideskClient({self.base_url!r}, email={self.email!r})"

    # the core -------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        attempts: int | None = None,
    ) -> Any:
        """Call ``/api/{path}``; return the decoded JSON answer.

        ``attempts=1`` makes one attempt (the outbox schedules its own retries).

        Raises:
            OmnideskError: a non-2xx answer after retries, or a 2xx answer carrying ``error``.
        """
        url = f"{self.base_url}/api/{path.lstrip('/')}"
        where = f"Omnidesk {method} /api/{path.lstrip('/')}"
        try:
            response = request_with_retries(
                self.session,
                method,
                url,
                policy=self.retry,
                json=json,
                params=params,
                headers={"Accept": "application/json"},
                auth=self._auth,
                attempts=attempts,
                secrets=(self._api_key.value,),
                is_retryable=_is_rate_limited,
            )
        except DeliveryError as exc:
            code, desc = _error_fields(exc.response_text)
            detail = f"{exc.status}" if exc.status is not None else str(exc)
            if code:
                detail += f" {code}"
            if desc:
                detail += f": {desc[:200]}"
            raise OmnideskError(
                f"{where} failed: {detail}",
                error=code,
                description=desc,
                status=exc.status,
                response_text=exc.response_text,
                attempts=exc.attempts,
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            ) from exc
        if not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError:
            raise OmnideskError(
                f"{where}: the answer is not JSON",
                error="unexpected_answer",
                status=response.status_code,
                response_text=_scrub(response.text[:500], self._api_key.value),
            ) from None
        if isinstance(answer, dict) and answer.get("error"):
            text = _scrub(response.text[:500], self._api_key.value)
            code, desc = _error_fields(text)
            raise OmnideskError(
                f"{where} refused: {code}" + (f": {desc[:200]}" if desc else ""),
                error=code,
                description=desc,
                status=response.status_code,
                response_text=text,
            )
        return answer

    def _object(self, answer: Any, key: str, where: str) -> Mapping[str, Any]:
        inner = answer.get(key) if isinstance(answer, Mapping) else None
        if not isinstance(inner, Mapping):
            raise OmnideskError(
                f"unexpected Omnidesk answer to {where}: no {key!r} object",
                error="unexpected_answer",
            )
        return inner

    def paginate(
        self,
        path: str,
        item_key: str,
        *,
        params: Mapping[str, Any] | None = None,
        max_items: int | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Yield the items of a list endpoint page by page (``limit`` ≤ ``page_size`` ≤ 100).

        Stops at ``total_count``, at a short or empty page, at ``max_items``, or at page 500.
        """
        seen = 0
        limit = self.page_size if max_items is None else max(1, min(self.page_size, max_items))
        for page in range(1, _MAX_PAGES + 1):
            query = {**(params or {}), "page": page, "limit": limit}
            items, total = _list_items(self.request("GET", path, params=query), item_key)
            for item in items:
                yield item
                seen += 1
                if max_items is not None and seen >= max_items:
                    return
            if len(items) < limit or (total is not None and seen >= total):
                return
        log.warning("omnidesk: %s: stopped at page %d", path, _MAX_PAGES)

    # cases ----------------------------------------------------------------------------------
    def create_case(
        self,
        *,
        content: str | None = None,
        content_html: str | None = None,
        subject: str | None = None,
        user_email: str | None = None,
        user_phone: str | None = None,
        user_custom_id: str | None = None,
        user_full_name: str | None = None,
        channel: str | None = None,
        labels: Iterable[int] = (),
        group_id: int | None = None,
        custom_fields: Mapping[str, Any] | None = None,
        attachment_urls: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
        attempts: int | None = None,
    ) -> Case:
        """Create a case. A custom-channel case needs ``user_custom_id`` and ``channel``
        (``"cch1"``); the answer's ``user_id`` is the user's Omnidesk id, to keep.

        Raises:
            ValueError: no user identity, no content, or ``user_custom_id`` without ``channel``.
            OmnideskError: Omnidesk refused.
        """
        if not (user_email or user_phone or user_custom_id):
            raise ValueError("create_case needs user_email, user_phone or user_custom_id")
        if user_custom_id and not channel:
            raise ValueError("a case with user_custom_id needs the custom channel ('cch1')")
        if not (content or content_html):
            raise ValueError("create_case needs content or content_html")
        case: dict[str, Any] = {}
        for key, value in (
            ("user_email", user_email),
            ("user_phone", user_phone),
            ("user_custom_id", user_custom_id),
            ("user_full_name", user_full_name),
            ("channel", channel),
            ("subject", subject),
            ("content", content),
            ("content_html", content_html),
            ("group_id", group_id),
        ):
            if value is not None:
                case[key] = value
        if labels := list(labels):
            case["labels"] = labels
        if custom_fields:
            case["custom_fields"] = dict(custom_fields)
        if urls := list(attachment_urls):
            case["attachment_urls"] = urls
        case.update(extra or {})
        answer = self.request("POST", "cases.json", json={"case": case}, attempts=attempts)
        return Case.from_api(self._object(answer, "case", "create case"))

    def get_case(self, case_id: int, *, attempts: int | None = None) -> Case:
        """Read one case."""
        answer = self.request("GET", f"cases/{int(case_id)}.json", attempts=attempts)
        return Case.from_api(self._object(answer, "case", "get case"))

    def edit_case(
        self,
        case_id: int,
        *,
        status: str | None = None,
        group_id: int | None = None,
        staff_id: int | None = None,
        priority: str | None = None,
        add_labels: Iterable[int] = (),
        remove_labels: Iterable[int] = (),
        custom_fields: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        attempts: int | None = None,
    ) -> Case:
        """Change a case: status (``open``/``waiting``/``closed``), group, assignee, priority,
        labels added and removed (see ``label_fields`` / ``replace_labels``), custom fields."""
        changes: dict[str, Any] = {}
        for key, value in (
            ("status", status),
            ("group_id", group_id),
            ("staff_id", staff_id),
            ("priority", priority),
        ):
            if value is not None:
                changes[key] = value
        add, remove = [int(i) for i in add_labels], [int(i) for i in remove_labels]
        if add or remove:
            if self.replace_labels:
                current = list(self.get_case(case_id, attempts=attempts).labels)
                merged = [i for i in current if i not in remove]
                merged += [i for i in add if i not in merged]
                changes["labels"] = merged
            else:
                add_field, remove_field = self.label_fields
                if add:
                    changes[add_field] = add
                if remove:
                    changes[remove_field] = remove
        if custom_fields:
            changes["custom_fields"] = dict(custom_fields)
        changes.update(extra or {})
        if not changes:
            raise ValueError("edit_case: nothing to change")
        answer = self.request(
            "PUT", f"cases/{int(case_id)}.json", json={"case": changes}, attempts=attempts
        )
        return Case.from_api(self._object(answer, "case", "edit case"))

    # messages -------------------------------------------------------------------------------
    def add_message(
        self,
        case_id: int,
        content: str,
        *,
        staff_id: int | None = None,
        user_id: int | None = None,
        content_html: str | None = None,
        attachment_urls: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
        attempts: int | None = None,
    ) -> Message:
        """Add a message to a case: as staff (``staff_id``; without it Omnidesk decides whose
        name it carries) or as the user (``user_id``).

        Raises:
            ValueError: both ``staff_id`` and ``user_id``, or no content.
        """
        if staff_id is not None and user_id is not None:
            raise ValueError(
                "give staff_id (a staff message) or user_id (a user message), not both"
            )
        if not (content or content_html):
            raise ValueError("add_message needs content or content_html")
        message: dict[str, Any] = {}
        if content:
            message["content"] = content
        if content_html:
            message["content_html"] = content_html
        if staff_id is not None:
            message["staff_id"] = staff_id
        if user_id is not None:
            message["user_id"] = user_id
        if urls := list(attachment_urls):
            message["attachment_urls"] = urls
        message.update(extra or {})
        answer = self.request(
            "POST",
            f"cases/{int(case_id)}/messages.json",
            json={"message": message},
            attempts=attempts,
        )
        return Message.from_api(self._object(answer, "message", "add message"), int(case_id))

    def add_staff_message(
        self, case_id: int, content: str, staff_id: int | None = None, **options: Any
    ) -> Message:
        """Add a message from staff (the bot in variant 1)."""
        return self.add_message(case_id, content, staff_id=staff_id, **options)

    def add_user_message(self, case_id: int, user_id: int, content: str, **options: Any) -> Message:
        """Add a message as the user (a custom channel's user writing again)."""
        return self.add_message(case_id, content, user_id=user_id, **options)

    def list_messages(self, case_id: int, *, max_items: int | None = None) -> list[Message]:
        """The messages of a case, oldest first."""
        return [
            Message.from_api(item, int(case_id))
            for item in self.paginate(
                f"cases/{int(case_id)}/messages.json", "message", max_items=max_items
            )
        ]

    # labels, channels, users ----------------------------------------------------------------
    def list_labels(self, *, max_items: int | None = None) -> list[Label]:
        """Every case label of the account."""
        return [
            Label.from_api(i) for i in self.paginate("labels.json", "label", max_items=max_items)
        ]

    def list_custom_channels(self) -> list[CustomChannelInfo]:
        """The account's custom channels."""
        return [
            CustomChannelInfo.from_api(i)
            for i in self.paginate("custom_channels.json", "custom_channel")
        ]

    def find_users(
        self,
        *,
        user_custom_id: str | None = None,
        user_custom_channel: str | None = None,
        user_email: str | None = None,
        user_phone: str | None = None,
        max_items: int | None = None,
    ) -> list[User]:
        """Users matching the given identity (a custom id is looked up within its channel)."""
        params = {
            k: v
            for k, v in (
                ("user_custom_id", user_custom_id),
                ("user_custom_channel", user_custom_channel),
                ("user_email", user_email),
                ("user_phone", user_phone),
            )
            if v is not None
        }
        return [
            User.from_api(i)
            for i in self.paginate("users.json", "user", params=params, max_items=max_items)
        ]

    # knowledge base -------------------------------------------------------------------------
    def search_kb_articles(
        self,
        search: str,
        *,
        section_id: int | None = None,
        language_id: str | None = None,
        max_items: int | None = 20,
    ) -> list[KBArticle]:
        """Knowledge-base articles matching ``search`` (at least 3 characters), best first.

        Raises:
            ValueError: ``search`` shorter than 3 characters (Omnidesk refuses it).
        """
        search = search.strip()
        if len(search) < 3:
            raise ValueError("a knowledge-base search needs at least 3 characters")
        language = language_id or self.language_id
        params: dict[str, Any] = {"search": search}
        if section_id is not None:
            params["section_id"] = section_id
        if language is not None:
            params["language_id"] = language
        return [
            KBArticle.from_api(i, language)
            for i in self.paginate(
                "kb_article.json", "kb_article", params=params, max_items=max_items
            )
        ]

    def get_kb_article(self, article_id: int, *, language_id: str | None = None) -> KBArticle:
        """Read one knowledge-base article."""
        language = language_id or self.language_id
        params = {"language_id": language} if language is not None else None
        answer = self.request("GET", f"kb_article/{int(article_id)}.json", params=params)
        return KBArticle.from_api(self._object(answer, "kb_article", "get article"), language)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


# =============================================================================================
# shared webhook helpers


def _url_secret_ok(request: Request, secret: bytes) -> bool:
    """The URL's last path segment or its ``secret`` query parameter equals ``secret``."""
    last = request.path.rstrip("/").rsplit("/", 1)[-1].encode()
    ok = hmac.compare_digest(last, secret)
    query = request.query_params.get("secret")
    if query is not None:
        ok = hmac.compare_digest(query.encode(), secret) or ok
    return ok


_FORM_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _form_to_nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style form keys to nested objects: ``object[attachments][0][url]=…`` becomes
    ``{"object": {"attachments": [{"url": …}]}}`` (objects with only numeric keys are lists)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _FORM_KEY.match(key)
        parts = [key] if match is None else [match[1], *re.findall(r"\[([^\[\]]*)\]", match[2])]
        node = root
        for part in parts[:-1]:
            name = part if part else str(len(node))
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        last = parts[-1] if parts[-1] else str(len(node))
        node[last] = value
    return _numbered_to_lists(root)  # type: ignore[no-any-return]


def _numbered_to_lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _numbered_to_lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _decode_body(body: bytes | str, content_type: str | None) -> Any:
    """JSON or form-encoded, by content type (sniffed when absent or unusual)."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("", "body is not valid UTF-8") from None
    else:
        text = body
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return decode_json(text)
    if media == "multipart/form-data":
        raise PayloadError(
            "", "multipart/form-data bodies are not supported; expected form-encoded or JSON"
        )
    if media == "application/x-www-form-urlencoded":
        return _form_to_nested(parse_qsl(text, keep_blank_values=True))
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return decode_json(text)
    return _form_to_nested(parse_qsl(text, keep_blank_values=True))


# =============================================================================================
# staff replies (custom-channel webhook)


@attrs.frozen(kw_only=True)
class StaffReply:
    """A message Omnidesk posts to a custom channel's webhook (``type=message_new``): a staff
    reply, a note (``note``) or a message sent by a rule (``sent_via_rule``).

    ``custom_user_id`` is the user's id in your system (``user_custom_id`` of the case);
    ``user_id`` the user's Omnidesk id. ``created_at`` is ``None`` when absent or unreadable
    (the text stays in ``raw``).
    """

    message_id: int
    case_id: int
    staff_id: int | None = None
    user_id: int | None = None
    custom_user_id: str | None = None
    content: str = ""
    note: bool = False
    sent_via_rule: bool = False
    created_at: datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    content_html: str | None = None
    type: str = "message_new"
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @property
    def text(self) -> str:
        """The reply as plain text (HTML from the editor turned into text)."""
        return html_to_text(self.content or self.content_html or "")


def _wire_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    parsed = _to_int(value)
    if parsed is None:
        raise PayloadError(f"object.{key}", f"expected an integer, got {value!r:.40}")
    return parsed


def _wire_id(obj: Mapping[str, Any], key: str) -> int:
    value = _wire_int(obj, key)
    if value is None:
        raise PayloadError(f"object.{key}", "required field is missing", missing=True)
    return value


def _wire_bool(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise PayloadError(f"object.{key}", f"expected 0 or 1, got {value!r:.40}")


def _wire_text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise PayloadError(f"object.{key}", f"expected a string, got {type(value).__name__}")


def parse_staff_reply(
    body: bytes | str | Mapping[str, Any], content_type: str | None = None
) -> StaffReply:
    """Parse a custom-channel webhook body into a :class:`StaffReply`.

    Omnidesk posts ``type=message_new`` with ``object[message_id]=…`` form fields; JSON with the
    same structure (``{"type": …, "object": {…}}``) is accepted too, as is an already decoded
    mapping. ``content_type`` is the request's ``Content-Type``; without it the body is sniffed.

    Raises:
        PayloadError: the body is not form/JSON, ``object`` or a required id is missing, or a
            field has the wrong type; the message and ``.path`` name the field
            (``object.case_id``).
        UnsupportedEvent: a ``type`` other than ``message_new``.
    """
    data = body if isinstance(body, Mapping) else _decode_body(body, content_type)
    if not isinstance(data, Mapping):
        raise PayloadError("", "expected an object with 'type' and 'object'")
    kind = data.get("type", "message_new")
    if not isinstance(kind, str):
        raise PayloadError("type", f"expected a string, got {type(kind).__name__}")
    if kind != "message_new":
        raise UnsupportedEvent("type", kind, data)
    obj = data.get("object")
    if obj is None or obj == "":
        raise PayloadError("object", "required field is missing", missing=True)
    if not isinstance(obj, Mapping):
        raise PayloadError("object", f"expected an object, got {type(obj).__name__}")
    attachments = obj.get("attachments")
    if attachments not in (None, "") and not isinstance(attachments, (list, Mapping)):
        raise PayloadError("object.attachments", "expected a list of attachments")
    created_at = _wire_text(obj, "created_at")
    return StaffReply(
        message_id=_wire_id(obj, "message_id"),
        case_id=_wire_id(obj, "case_id"),
        staff_id=_wire_int(obj, "staff_id"),
        user_id=_wire_int(obj, "user_id"),
        custom_user_id=_wire_text(obj, "custom_user_id") or None,
        content=_wire_text(obj, "content") or "",
        content_html=_wire_text(obj, "content_html") or None,
        note=_wire_bool(obj, "note"),
        sent_via_rule=_wire_bool(obj, "sent_via_rule"),
        created_at=_to_time(created_at),
        attachments=_attachments(attachments),
        type=kind,
        raw=dict(data),
    )


# =============================================================================================
# variant 1: the bot behind Omnidesk rules


def _id_tuple(value: int | str | Iterable[int | str] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    items: Iterable[int | str] = [value] if isinstance(value, (int, str)) else value
    out = []
    for item in items:
        parsed = _to_int(item)
        if parsed is None:
            raise ConfigurationError(f"label ids must be integers, got {item!r}")
        out.append(parsed)
    return tuple(out)


def _opt_int(value: int | str | None) -> int | None:
    if value is None:
        return None
    parsed = _to_int(value)
    if parsed is None:
        raise ConfigurationError(f"expected an integer id, got {value!r}")
    return parsed


@attrs.frozen(kw_only=True)
class CaseHandover:
    """What :meth:`OmnideskChannel.handover` does to the case: labels removed (the bot label by
    default) and added, group / assignee / status / priority set, and an optional ``text`` sent
    to the visitor first. Any field can be overridden per call:
    ``turn.handover(group_id=7, text="…")``."""

    remove_labels: tuple[int, ...] = attrs.field(default=(), converter=_id_tuple)
    add_labels: tuple[int, ...] = attrs.field(default=(), converter=_id_tuple)
    group_id: int | None = attrs.field(default=None, converter=_opt_int)
    staff_id: int | None = attrs.field(default=None, converter=_opt_int)
    status: str | None = None
    priority: str | None = None
    text: str | None = None

    def override(self, params: Mapping[str, Any]) -> CaseHandover:
        """These settings with the keys of ``params`` replaced.

        Raises:
            TypeError: a key that is not a field.
        """
        unknown = set(params) - {a.name for a in attrs.fields(CaseHandover)}
        if unknown:
            raise TypeError(f"unknown handover parameter(s): {', '.join(sorted(unknown))}")
        return attrs.evolve(self, **params)

    def changes(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`OmnideskClient.edit_case` (empty: nothing to do)."""
        out: dict[str, Any] = {}
        if self.remove_labels:
            out["remove_labels"] = list(self.remove_labels)
        if self.add_labels:
            out["add_labels"] = list(self.add_labels)
        for key in ("group_id", "staff_id", "status", "priority"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@attrs.frozen(kw_only=True)
class KnowledgeBaseAnswers:
    """Answer from the Omnidesk knowledge base when the bot had no answer of its own.

    After the bot handled a text and sent nothing (and did not hand over), the text is
    searched in the knowledge base and the best article is sent: ``template`` formatted with
    ``title`` and ``text`` (the article as plain text, cut to ``max_chars``). ``no_answer`` is
    sent when nothing is found (``None``: send nothing).
    """

    min_query_length: int = 3
    max_chars: int = 1500
    template: str = "{title}\n\n{text}"
    no_answer: str | None = None
    section_id: int | None = None
    language_id: str | None = None


_PLACEHOLDER = re.compile(r"^\[[a-z_]+\]$")
_DIGIT_CHOICE = re.compile(r"^\s*(\d{1,3})\s*[.)]?\s*$")
_WS = re.compile(r"\s+")


def _normal(text: str) -> str:
    # exact words and case: "ok" from the user is not the bot's "Ok"
    return _WS.sub(" ", html_to_text(text)).strip()


def _clean_rule_payload(payload: Any) -> Any:
    """Rule placeholders Omnidesk left unfilled (``"[user_phone]"``) become absent fields."""
    if not isinstance(payload, dict):
        return payload
    visitor = payload.get("visitor")
    if isinstance(visitor, dict):
        visitor = dict(visitor)
        if isinstance(visitor.get("id"), str) and _PLACEHOLDER.match(visitor["id"]):
            visitor.pop("id")
        fields = visitor.get("fields")
        if isinstance(fields, dict):
            visitor["fields"] = {
                k: v
                for k, v in fields.items()
                if not (isinstance(v, str) and (v == "" or _PLACEHOLDER.match(v)))
            }
        payload = {**payload, "visitor": visitor}
    return payload


class OmnideskChannel(RuntimeLifecycle):
    """Variant 1 of seed 001: Omnidesk is the channel, the bot answers inside the case.

    An Omnidesk rule (on new cases with ``[case_description]``, on updated cases with
    ``[last_message]``; only cases carrying the bot label) posts the omnichannel ``new_message``
    JSON with ``chat_id`` = ``[case_id]`` to ``handle``. The bot's replies are added to the case
    as staff through the runtime's outbox (stored first, delivered in order per case, rate
    limits waited out). Keyboards become numbered text; a typed number (or the exact label)
    comes back as a button press. ``turn.handover()`` edits the case (:class:`CaseHandover`).

    Repeated deliveries are dropped: by ``message.id`` when the rule body carries one, else by
    case id + the text's hash for ``repeat_window`` seconds (rules send no message id; this also
    folds the "new case" and "updated case" rules firing for the same first message). Rule
    deliveries of the bot's own recent messages are ignored (``ignore_own_messages``), in case a
    rule fires on the bot's replies; and for ``handover_grace`` seconds after a handover the case
    is left alone (a rule that fired before the label was removed).

    Args:
        bot: the :class:`~omnichannel.Bot` (an echo bot by default).
        client: the :class:`OmnideskClient`.
        secret: the secret in the webhook URL (its last path segment, or ``?secret=``),
            compared in constant time; a wrong one gets 403.
        staff_id: the staff member the bot writes as (``None``: Omnidesk's default for the key).
        bot_label: the label id marking cases for the bot; removed on handover by default.
        handover: what a handover changes (default: remove ``bot_label``).
        knowledge_base: answer from the knowledge base when the bot has no answer.
        max_message_length: longer texts are split into several messages (``None``: never).
        keyboard_footer: a line under numbered keyboards ("Reply with a number").
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`.
        name: tells several Omnidesk channels sharing one store apart.
    """

    def __init__(
        self,
        bot: Bot | None = None,
        *,
        client: OmnideskClient,
        secret: str,
        staff_id: int | None = None,
        bot_label: int | None = None,
        handover: CaseHandover | None = None,
        knowledge_base: KnowledgeBaseAnswers | bool | None = None,
        max_message_length: int | None = None,
        strip_markdown: bool = True,
        keyboard_footer: str | None = None,
        repeat_window: float = 30.0,
        ignore_own_messages: bool = True,
        handover_grace: float = 60.0,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        max_body: int = 1 << 20,
        name: str = "omnidesk",
        **runtime_options: Any,
    ) -> None:
        if not secret:
            raise ConfigurationError("secret must be a non-empty string")
        self.bot = bot if bot is not None else Bot()
        self.client = client
        self.staff_id = staff_id
        self.bot_label = bot_label
        if handover is None:
            handover = CaseHandover(remove_labels=(bot_label,) if bot_label is not None else ())
        self.handover_settings = handover
        if knowledge_base is True:
            knowledge_base = KnowledgeBaseAnswers()
        self.knowledge_base = knowledge_base or None
        self.max_message_length = max_message_length
        self.strip_markdown = strip_markdown
        self.keyboard_footer = keyboard_footer
        self.repeat_window = repeat_window
        self.ignore_own_messages = ignore_own_messages
        self.handover_grace = handover_grace
        self.runtime = runtime or Runtime(store=store, inline=inline, **runtime_options)
        self.max_body = max_body
        self.name = name
        self.destination = f"omnidesk:{name}"
        self._secret = secret.encode()
        self.runtime.outbox.register(self.destination, self._deliver)

    def __repr__(self) -> str:
        return f"OmnideskChannel(name={self.name!r}, client={self.client!r})"

    @property
    def webhook_path(self) -> str:
        """A path to give the rule (``/omnidesk/rules/{secret}``); it contains the secret."""
        return RULE_WEBHOOK_PATH.format(secret=self._secret.decode())

    # inbound --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one rule delivery: 403 for a wrong secret, 400 naming the field for a bad
        body, 200 ``{"result": "ok"}`` once accepted (the bot runs after, in the background
        unless the runtime is inline)."""
        if request.method != "POST":
            return Response(
                405,
                b'{"error":"Method not allowed; use POST."}',
                {"Allow": "POST", "Content-Type": "application/json"},
            )
        if not _url_secret_ok(request, self._secret):
            return Response.error(403, "Forbidden: wrong or missing webhook secret.")
        if len(request.body) > self.max_body:
            return Response.error(413, f"Request body is larger than {self.max_body} bytes.")
        try:
            return self._accept(request)
        except Exception:
            log.exception("omnidesk: internal error while accepting a rule delivery")
            return Response.error(500, "Internal server error.")

    def _accept(self, request: Request) -> Response:
        try:
            payload = _clean_rule_payload(_decode_body(request.body, request.content_type))
            event = parse_event(payload)
        except PayloadError as exc:
            log.info("omnidesk: rejected rule delivery: %s", exc)
            return Response.error(400, str(exc))
        except UnsupportedEvent as exc:
            log.info("omnidesk: ignored rule delivery: %s", exc)
            return Response.json(200, {"result": "ok"})
        case_id = _to_int(event.chat_id)
        if case_id is None:
            return Response.error(
                400, f"chat_id: expected the case id (an integer), got {event.chat_id!r:.40}"
            )
        for message in event.messages:
            if isinstance(message, FileMessage) and not message.ready:
                continue
            # one turn per message, keyed by the case id as an int (form bodies carry strings)
            single = NewMessageEvent(
                chat_id=case_id, visitor=event.visitor, message=message, raw=event.raw
            )
            key, ttl = self._delivery_key(case_id, message)
            if not self.runtime.store.mark_seen(key, ttl):
                log.info("omnidesk: case %s: repeated rule delivery ignored", case_id)
                continue
            self.runtime.run(
                f"{self.destination}:{case_id}", functools.partial(self._process, single), key
            )
        return Response.json(200, {"result": "ok"})

    def _delivery_key(self, case_id: ChatId, message: InboundMessage) -> tuple[str, float]:
        if message.id is not None:
            return f"{self.destination}:{case_id}:id:{message.id}", self.runtime.dedupe_ttl
        digest = hashlib.sha256(_normal(agent_text(message) or "").encode()).hexdigest()[:32]
        return f"{self.destination}:{case_id}:text:{digest}", self.repeat_window

    def _state_key(self, case_id: ChatId) -> str:
        return f"{self.destination}:case:{case_id}"

    def case_state(self, case_id: ChatId) -> dict[str, Any]:
        """What the channel remembers about a case (last keyboard, recent texts, handover)."""
        return self.runtime.store.get_state(self._state_key(case_id)) or {}

    def _process(self, event: NewMessageEvent) -> None:
        case_id = event.chat_id
        key = self._state_key(case_id)
        state = self.runtime.store.get_state(key) or {}
        message = event.message
        text = message.text if isinstance(message, TextMessage) else None
        handed_over_at = state.get("handed_over_at")
        if (
            isinstance(handed_over_at, (int, float))
            and time.time() - handed_over_at < self.handover_grace
        ):
            log.info("omnidesk: case %s was just handed over; delivery ignored", case_id)
            return
        if self.ignore_own_messages and text is not None and _normal(text) in state.get("sent", []):
            log.info("omnidesk: case %s: the bot's own message came back; ignored", case_id)
            return
        keyboard = state.pop("keyboard", None)
        if keyboard is not None or "handed_over_at" in state:
            state.pop("handed_over_at", None)
            self.runtime.store.set_state(key, state)
        if text is not None and keyboard:
            pressed = _match_button(text, keyboard)
            if pressed is not None:
                message = ButtonPress(id=message.id, button=pressed)
                event = NewMessageEvent(
                    chat_id=case_id, visitor=event.visitor, message=message, raw=event.raw
                )
        turn = Turn(event, message, self)
        self.bot(turn)
        if (
            self.knowledge_base is not None
            and isinstance(message, TextMessage)
            and not turn.replies
            and not turn.handed_over
        ):
            answer = self.knowledge_base_answer(message.text)
            if answer is not None:
                turn.reply(answer)

    def knowledge_base_answer(self, query: str) -> str | None:
        """The knowledge base's answer to ``query`` as the text to send, or ``no_answer``."""
        kb = self.knowledge_base or KnowledgeBaseAnswers()
        query = query.strip()
        if len(query) < max(3, kb.min_query_length):
            return kb.no_answer
        try:
            found = self.client.search_kb_articles(
                query, section_id=kb.section_id, language_id=kb.language_id, max_items=1
            )
            if not found:
                return kb.no_answer
            article = found[0]
            if not article.content:
                article = self.client.get_kb_article(article.article_id, language_id=kb.language_id)
        except OmnideskError as exc:
            log.warning("omnidesk: knowledge-base search failed: %s", exc)
            return kb.no_answer
        text = article.text
        if len(text) > kb.max_chars:
            text = text[: kb.max_chars].rsplit(" ", 1)[0].rstrip() + "…"
        return kb.template.format(title=article.title, text=text).strip()

    # outbound -------------------------------------------------------------------------------
    def render(self, message: Reply) -> list[str]:
        """The texts one reply becomes in a case (keyboards numbered, files as links)."""
        texts: list[str] = []
        for item in to_outbound(message):
            if isinstance(item, TextReply):
                text = plain_text(item.text) if self.strip_markdown else item.text
            elif isinstance(item, Keyboard):
                text = numbered_list(item.text, [b.text for b in item.flat])
                if self.keyboard_footer:
                    text += "\n" + self.keyboard_footer
            else:
                text = f"{item.name}: {item.url}" if item.name else item.url
            if self.max_message_length and len(text) > self.max_message_length:
                texts.extend(split_text(text, self.max_message_length))
            elif text:
                texts.append(text)
        return texts

    def send(self, chat_id: ChatId, messages: Sequence[OutboundMessage]) -> None:
        """Queue replies for case ``chat_id`` (added as staff messages, in order)."""
        key = self._state_key(chat_id)
        state = self.runtime.store.get_state(key) or {}
        sent: list[str] = list(state.get("sent", []))
        for message in messages:
            if isinstance(message, Keyboard):
                state["keyboard"] = [[b.id, b.text] for b in message.flat]
            for text in self.render(message):
                sent.append(_normal(text))
                self.runtime.outbox.put(
                    self.destination,
                    f"{self.destination}:{chat_id}",
                    {"op": "add_message", "case_id": chat_id, "content": text},
                )
        state["sent"] = sent[-20:]
        self.runtime.store.set_state(key, state)

    def reply(self, case_id: ChatId, *messages: Reply) -> None:
        """Write to a case outside a turn (the bot writing first)."""
        self.send(case_id, to_outbound(messages))

    def handover(self, turn: Turn, **params: Any) -> None:
        """Hand the case to operators: send ``text`` (if any), then edit the case as configured.

        Raises:
            NotSupported: nothing to change (configure ``bot_label`` or ``handover``).
            TypeError: an unknown parameter.
        """
        settings = self.handover_settings.override(params)
        changes = settings.changes()
        if not changes:
            raise NotSupported(
                "an Omnidesk handover needs something to change: give OmnideskChannel(bot_label=…) "
                "or handover=CaseHandover(group_id=…, …), or pass them to turn.handover()"
            )
        if settings.text:
            turn.reply(settings.text)
        self.runtime.outbox.put(
            self.destination,
            f"{self.destination}:{turn.chat_id}",
            {"op": "edit_case", "case_id": turn.chat_id, "changes": changes},
        )
        key = self._state_key(turn.chat_id)
        state = self.runtime.store.get_state(key) or {}
        state.pop("keyboard", None)
        state["handed_over_at"] = time.time()
        self.runtime.store.set_state(key, state)
        log.info("omnidesk: case %s handed over (%s)", turn.chat_id, ", ".join(sorted(changes)))

    def _deliver(self, payload: Mapping[str, Any]) -> None:
        op = payload.get("op")
        case_id = int(payload["case_id"])
        if op == "add_message":
            self.client.add_message(
                case_id, str(payload["content"]), staff_id=self.staff_id, attempts=1
            )
        elif op == "edit_case":
            self.client.edit_case(case_id, **dict(payload["changes"]), attempts=1)
        else:
            raise DeliveryError(f"unknown Omnidesk outbox operation {op!r}")


def _match_button(text: str, keyboard: Sequence[Sequence[str]]) -> Button | None:
    """The button a typed answer picks: its number in the list, or its exact label."""
    buttons = [Button(id=str(b[0]), text=str(b[1])) for b in keyboard if len(b) == 2]
    match = _DIGIT_CHOICE.match(text)
    if match:
        index = int(match[1])
        return buttons[index - 1] if 1 <= index <= len(buttons) else None
    wanted = text.strip().casefold()
    for button in buttons:
        if button.text.strip().casefold() == wanted:
            return button
    return None


# =============================================================================================
# seed 003: custom channels


@attrs.frozen(kw_only=True)
class CustomConversation:
    """What a :class:`CustomChannel` remembers about one of your users: their Omnidesk
    ``user_id`` and the current ``case_id`` (``None`` until the first case was created)."""

    user_custom_id: str
    user_id: int | None = None
    case_id: int | None = None


ReplyHandler = Callable[[StaffReply], None]


class CustomChannel:
    """Your app as an Omnidesk custom channel (seed 003; variant 2 of seed 001).

    :meth:`send` queues a message of one of your users: the first one creates a case (with
    ``user_custom_id`` and ``channel``), and the returned ``user_id`` and case id are kept in the
    store; later messages are added to that case as the user. Delivery goes through the runtime's
    outbox: durable, in order per user, rate limits waited out.

    Omnidesk posts staff replies, notes and rule messages to the channel's Webhook URL; point it
    at :meth:`handle` with the secret in the URL (``https://app.example/omnidesk/custom-channel/
    {secret}``). Each reply is parsed (:func:`parse_staff_reply`), deduplicated by message id,
    and handed to the ``on_reply`` handlers; notes only with ``include_notes=True``.

    Args:
        client: the :class:`OmnideskClient`.
        channel: the custom channel's key (``"cch1"``, see ``list_custom_channels()``).
        secret: the secret in the webhook URL (constant-time check; wrong → 403).
        on_reply: a handler for staff replies (more with the :meth:`on_reply` decorator).
        include_notes: hand notes to the handlers too.
        include_rule_messages: hand messages sent by Omnidesk rules to the handlers.
        subject: the subject of new cases (default: the start of the first message).
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`.
        name: tells several custom channels sharing one store apart.
    """

    def __init__(
        self,
        client: OmnideskClient,
        channel: str,
        *,
        secret: str,
        on_reply: ReplyHandler | None = None,
        include_notes: bool = False,
        include_rule_messages: bool = True,
        subject: str | None = None,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        max_body: int = 1 << 20,
        name: str = "omnidesk-custom",
        **runtime_options: Any,
    ) -> None:
        if not secret:
            raise ConfigurationError("secret must be a non-empty string")
        if not channel:
            raise ConfigurationError("channel (the custom channel's key, e.g. 'cch1') is required")
        self.client = client
        self.channel = channel
        self.include_notes = include_notes
        self.include_rule_messages = include_rule_messages
        self.subject = subject
        self.runtime = runtime or Runtime(store=store, inline=inline, **runtime_options)
        self.max_body = max_body
        self.name = name
        self.destination = f"omnidesk-custom:{name}"
        self._secret = secret.encode()
        self._handlers: list[ReplyHandler] = []
        if on_reply is not None:
            self._handlers.append(on_reply)
        self.runtime.outbox.register(self.destination, self._deliver)

    def __repr__(self) -> str:
        return f"CustomChannel(channel={self.channel!r}, client={self.client!r})"

    @property
    def webhook_path(self) -> str:
        """A path for the channel's Webhook URL (``/omnidesk/custom-channel/{secret}``)."""
        return CUSTOM_CHANNEL_WEBHOOK_PATH.format(secret=self._secret.decode())

    def on_reply(self, handler: F) -> F:
        """Register ``handler(reply: StaffReply)`` for staff replies (usable as a decorator)."""
        self._handlers.append(handler)
        return handler

    # your users' messages -------------------------------------------------------------------
    def _user_key(self, user_custom_id: str) -> str:
        return f"{self.destination}:user:{user_custom_id}"

    def _case_key(self, case_id: int) -> str:
        return f"{self.destination}:case:{case_id}"

    def conversation(self, user_custom_id: str) -> CustomConversation | None:
        """The remembered ``user_id`` and case of a user, or ``None`` before their first case."""
        state = self.runtime.store.get_state(self._user_key(str(user_custom_id)))
        if not state:
            return None
        return CustomConversation(
            user_custom_id=str(user_custom_id),
            user_id=_to_int(state.get("user_id")),
            case_id=_to_int(state.get("case_id")),
        )

    def user_for_case(self, case_id: int) -> str | None:
        """The ``user_custom_id`` whose case ``case_id`` is (as far as this channel knows)."""
        state = self.runtime.store.get_state(self._case_key(int(case_id)))
        value = state.get("user_custom_id") if state else None
        return str(value) if value is not None else None

    def forget(self, user_custom_id: str) -> None:
        """Forget a user's case: their next message creates a new one."""
        self.runtime.store.set_state(self._user_key(str(user_custom_id)), None)

    def send(
        self,
        user_custom_id: str,
        text: str,
        *,
        user_full_name: str | None = None,
        user_email: str | None = None,
        user_phone: str | None = None,
        subject: str | None = None,
        attachment_urls: Iterable[str] = (),
        labels: Iterable[int] = (),
        group_id: int | None = None,
        new_case: bool = False,
    ) -> None:
        """Queue a message of your user ``user_custom_id`` for Omnidesk.

        The user's first message (or any with ``new_case=True``) creates a case; the name,
        e-mail, phone (which link the user to other channels), subject, labels and group apply
        to that creation. Later messages are added to the case as the user.

        Raises:
            ValueError: an empty ``user_custom_id`` or ``text``.
        """
        if not user_custom_id:
            raise ValueError("user_custom_id must not be empty")
        if not text or not text.strip():
            raise ValueError("text must not be empty")
        payload: dict[str, Any] = {
            "op": "send",
            "user_custom_id": str(user_custom_id),
            "text": text,
            "new_case": new_case,
            "create": {
                k: v
                for k, v in (
                    ("user_full_name", user_full_name),
                    ("user_email", user_email),
                    ("user_phone", user_phone),
                    ("subject", subject),
                    ("group_id", group_id),
                )
                if v is not None
            },
        }
        if urls := list(attachment_urls):
            payload["attachment_urls"] = urls
        if label_ids := [int(i) for i in labels]:
            payload["create"]["labels"] = label_ids
        self.runtime.outbox.put(
            self.destination, f"{self.destination}:user:{user_custom_id}", payload
        )

    def _subject_for(self, text: str) -> str:
        if self.subject:
            return self.subject
        first = html_to_text(text).strip().split("\n", 1)[0]
        return first[:77] + "…" if len(first) > 80 else (first or "Message")

    def _deliver(self, payload: Mapping[str, Any]) -> None:
        user = str(payload["user_custom_id"])
        text = str(payload["text"])
        urls = list(payload.get("attachment_urls", ()))
        known = self.conversation(user)
        if known is not None and known.case_id is not None and not payload.get("new_case"):
            try:
                self.client.add_message(
                    known.case_id,
                    text,
                    user_id=known.user_id,
                    attachment_urls=urls,
                    attempts=1,
                )
                return
            except OmnideskError as exc:
                if exc.error != "case_not_found" and exc.status != 404:
                    raise
                log.info("omnidesk: case %s of %s is gone; creating a new one", known.case_id, user)
        create = dict(payload.get("create", {}))
        subject = create.pop("subject", None) or self._subject_for(text)
        case = self.client.create_case(
            user_custom_id=user,
            channel=self.channel,
            content=text,
            subject=subject,
            attachment_urls=urls,
            attempts=1,
            **create,
        )
        self.runtime.store.set_state(
            self._user_key(user), {"user_id": case.user_id, "case_id": case.case_id}
        )
        self.runtime.store.set_state(self._case_key(case.case_id), {"user_custom_id": user})

    # staff replies --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one webhook delivery from Omnidesk.

        403 for a wrong secret (nothing is parsed or called), 400 naming the field for a
        malformed body, 200 ``{"result": "ok"}`` once accepted, for skipped notes and for
        repeated deliveries. Handlers run after the answer unless the runtime is inline.
        """
        if request.method != "POST":
            return Response(
                405,
                b'{"error":"Method not allowed; use POST."}',
                {"Allow": "POST", "Content-Type": "application/json"},
            )
        if not _url_secret_ok(request, self._secret):
            return Response.error(403, "Forbidden: wrong or missing webhook secret.")
        if len(request.body) > self.max_body:
            return Response.error(413, f"Request body is larger than {self.max_body} bytes.")
        try:
            reply = parse_staff_reply(request.body, request.headers.get("Content-Type"))
        except PayloadError as exc:
            log.info("omnidesk: rejected custom-channel webhook: %s", exc)
            return Response.error(400, f"Malformed staff reply: {exc}")
        except UnsupportedEvent as exc:
            log.info("omnidesk: ignored custom-channel webhook: %s", exc)
            return Response.json(200, {"result": "ok"})
        try:
            return self._accept(reply)
        except Exception:
            log.exception("omnidesk: internal error while accepting a staff reply")
            return Response.error(500, "Internal server error.")

    def _accept(self, reply: StaffReply) -> Response:
        if reply.note and not self.include_notes:
            log.info("omnidesk: case %s: note %s skipped", reply.case_id, reply.message_id)
            return Response.json(200, {"result": "ok", "skipped": "note"})
        if reply.sent_via_rule and not self.include_rule_messages:
            return Response.json(200, {"result": "ok", "skipped": "rule"})
        key = f"{self.destination}:message:{reply.message_id}"
        if not self.runtime.accept(key):
            log.info("omnidesk: staff reply %s delivered again; ignored", reply.message_id)
            return Response.json(200, {"result": "ok"})
        reply = self._complete(reply)
        self.runtime.run(
            f"{self.destination}:case:{reply.case_id}",
            functools.partial(self._dispatch, reply),
            key,
        )
        return Response.json(200, {"result": "ok"})

    def _complete(self, reply: StaffReply) -> StaffReply:
        """Fill ``custom_user_id`` from the store and learn the user's ids from the reply."""
        custom = reply.custom_user_id or self.user_for_case(reply.case_id)
        if custom is not None and reply.user_id is not None and self.conversation(custom) is None:
            # a case started by staff: the user's next message continues it
            self.runtime.store.set_state(
                self._user_key(custom), {"user_id": reply.user_id, "case_id": reply.case_id}
            )
            self.runtime.store.set_state(self._case_key(reply.case_id), {"user_custom_id": custom})
        return (
            reply if custom == reply.custom_user_id else attrs.evolve(reply, custom_user_id=custom)
        )

    def _dispatch(self, reply: StaffReply) -> None:
        if not self._handlers:
            log.warning("omnidesk: staff reply %s has no handler", reply.message_id)
        for handler in self._handlers:
            try:
                handler(reply)
            except Exception:
                log.exception(
                    "omnidesk: reply handler %s raised", getattr(handler, "__qualname__", handler)
                )

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start background delivery (resuming messages stored by an earlier run)."""
        self.runtime.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until queued messages and reply handlers are done."""
        return self.runtime.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish queued work, then stop."""
        return self.runtime.close(timeout)


# =============================================================================================
# variant 2: the bridge


@attrs.frozen(kw_only=True)
class TranscriptLine:
    """One line of a conversation before a handover: who (``"visitor"`` or ``"bot"``), the text,
    and when (Unix seconds)."""

    sender: str
    text: str
    at: float


def render_transcript(
    lines: Sequence[TranscriptLine],
    *,
    heading: str | None = "Conversation with the bot before the handover:",
    visitor_label: str = "Visitor",
    bot_label: str = "Bot",
) -> str:
    """The transcript as the text of the case's first message::

    Conversation with the bot before the handover:

    [2024-05-01 12:00:01 UTC] Visitor: Hello
    [2024-05-01 12:00:02 UTC] Bot: Hi! How can I help?
    """
    out = [heading, ""] if heading else []
    for line in lines:
        when = datetime.fromtimestamp(line.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        who = visitor_label if line.sender == "visitor" else bot_label
        out.append(f"[{when}] {who}: {line.text}")
    return "\n".join(out).strip()


def _reply_text(message: OutboundMessage) -> str:
    if isinstance(message, TextReply):
        return message.text
    if isinstance(message, Keyboard):
        return numbered_list(message.text, [b.text for b in message.flat])
    return f"{message.name}: {message.url}" if message.name else message.url


class _BridgedBot(Bot):
    """The user's bot with the bridge around it (see :meth:`CustomChannelBridge.wrap`)."""

    def __init__(self, inner: Bot, bridge: CustomChannelBridge) -> None:
        super().__init__()
        self.inner = inner
        self.bridge = bridge

    def on_text(self, handler: F) -> F:
        """Register on the wrapped bot."""
        return self.inner.on_text(handler)

    def on_file(self, handler: F) -> F:
        """Register on the wrapped bot."""
        return self.inner.on_file(handler)

    def on_button(self, handler: F) -> F:
        """Register on the wrapped bot."""
        return self.inner.on_button(handler)

    def on_message(self, handler: F) -> F:
        """Register on the wrapped bot."""
        return self.inner.on_message(handler)

    def on_error(self, handler: F) -> F:
        """Register on the wrapped bot."""
        return self.inner.on_error(handler)

    @property
    def is_echo(self) -> bool:
        """As the wrapped bot."""
        return self.inner.is_echo

    def handlers_for(self, message: InboundMessage) -> list[Callable[[Turn], Any]]:
        """As the wrapped bot."""
        return self.inner.handlers_for(message)

    def __call__(self, turn: Turn) -> None:
        """Forward to the case while handed over; else record and run the wrapped bot."""
        self.bridge._run(self.inner, turn)


class CustomChannelBridge:
    """Variant 2 of seed 001: the bot talks to the visitor on any channel of the SDK and hands
    the visitor to Omnidesk staff through a :class:`CustomChannel`.

    Wire it up with :meth:`wrap` and :meth:`handover`::

        bridge = CustomChannelBridge(desk)
        connector = Connector(bridge.wrap(bot), token=…, channel_url=…,
                              handover=bridge.handover)

    How the transcript is recorded: the wrapped bot stores every visitor text before the bot runs
    and every reply after it (and those sent before ``turn.handover()`` at the handover) in the
    custom channel's store, per chat, keeping the last ``max_transcript_lines``. On
    ``turn.handover()`` a new case is created through the custom channel with the rendered
    transcript (:func:`render_transcript`) as its first message, from the visitor (Omnidesk shows
    who wrote what inside it), and the stored transcript is cleared.

    While the case is open, the visitor's messages are added to the case as the user instead of
    reaching the bot, and staff replies (notes skipped) go back to the visitor's channel with
    ``channel.send(chat_id, [TextReply(…)])`` (attachments as :class:`~omnichannel.FileLink`).
    Before forwarding a visitor message the case status is read; once it is ``closed`` (see
    ``closed_statuses``) the handover ends and the bot answers again.

    Args:
        desk: the :class:`CustomChannel` cases are opened through.
        channels: the visitor-side channels (by their ``name``); the channel of a handed-over
            turn is remembered too, but after a restart staff replies need it registered here
            or with :meth:`connect`.
        user_custom_id: ``fn(turn) -> str``, the visitor's id in Omnidesk (default
            ``"{channel name}:{visitor id or chat id}"``).
        subject: the new case's subject (a string, or ``fn(turn) -> str``).
        handover_text: sent to the visitor when the handover starts ("An operator will answer
            here soon").
        labels, group_id: applied to the new case.
        check_case_status: read the case before forwarding a visitor message, to notice that
            it was closed.
        closed_statuses: statuses that end the handover.
        max_transcript_lines: lines kept per chat.
    """

    def __init__(
        self,
        desk: CustomChannel,
        *,
        channels: Iterable[Channel] = (),
        user_custom_id: Callable[[Turn], str] | None = None,
        subject: str | Callable[[Turn], str] = "Conversation handed over by the bot",
        handover_text: str | None = None,
        labels: Iterable[int] = (),
        group_id: int | None = None,
        check_case_status: bool = True,
        closed_statuses: Iterable[str] = ("closed",),
        max_transcript_lines: int = 50,
        name: str = "bridge",
    ) -> None:
        self.desk = desk
        self.user_custom_id = user_custom_id or _default_user_custom_id
        self.subject = subject
        self.handover_text = handover_text
        self.labels = tuple(int(i) for i in labels)
        self.group_id = group_id
        self.check_case_status = check_case_status
        self.closed_statuses = frozenset(closed_statuses)
        self.max_transcript_lines = max_transcript_lines
        self.name = name
        self._prefix = f"{desk.destination}:{name}"
        self._channels: dict[str, Channel] = {}
        self._recorded: weakref.WeakKeyDictionary[Turn, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.connect(*channels)
        desk.on_reply(self._on_staff_reply)

    def __repr__(self) -> str:
        return f"CustomChannelBridge(desk={self.desk!r}, channels={sorted(self._channels)!r})"

    @property
    def store(self) -> Any:
        """The store the bridge keeps transcripts and handovers in (the custom channel's)."""
        return self.desk.runtime.store

    def connect(self, *channels: Channel) -> None:
        """Register visitor-side channels staff replies may have to reach."""
        for channel in channels:
            self._channels[channel.name] = channel

    def wrap(self, bot: Bot) -> Bot:
        """``bot`` with the bridge around it: give this to the visitor-side channel."""
        return _BridgedBot(bot, self)

    # keys -----------------------------------------------------------------------------------
    def _chat_key(self, channel: str, chat_id: ChatId) -> str:
        return f"{self._prefix}:chat:{channel}:{chat_id}"

    def _transcript_key(self, channel: str, chat_id: ChatId) -> str:
        return f"{self._prefix}:transcript:{channel}:{chat_id}"

    def _user_key(self, user_custom_id: str) -> str:
        return f"{self._prefix}:user:{user_custom_id}"

    # transcript -----------------------------------------------------------------------------
    def transcript(self, channel: str, chat_id: ChatId) -> list[TranscriptLine]:
        """The recorded lines of a chat since its last handover."""
        state = self.store.get_state(self._transcript_key(channel, chat_id)) or {}
        return [
            TranscriptLine(sender=str(s), text=str(t), at=float(a))
            for s, t, a in state.get("lines", [])
        ]

    def _record(self, channel: str, chat_id: ChatId, lines: Iterable[tuple[str, str]]) -> None:
        new = [[sender, text, time.time()] for sender, text in lines if text]
        if not new:
            return
        key = self._transcript_key(channel, chat_id)
        with self._lock:
            state = self.store.get_state(key) or {}
            kept = (list(state.get("lines", [])) + new)[-self.max_transcript_lines :]
            self.store.set_state(key, {"lines": kept})

    def _record_replies(self, turn: Turn) -> None:
        done = self._recorded.get(turn, 0)
        fresh = turn.replies[done:]
        self._recorded[turn] = len(turn.replies)
        self._record(turn.channel.name, turn.chat_id, (("bot", _reply_text(m)) for m in fresh))

    # handover state -------------------------------------------------------------------------
    def active_handover(self, channel: str, chat_id: ChatId) -> str | None:
        """The ``user_custom_id`` of the chat's open handover, or ``None``."""
        state = self.store.get_state(self._chat_key(channel, chat_id))
        if state and state.get("active"):
            return str(state["user_custom_id"])
        return None

    def end_handover(self, channel: str, chat_id: ChatId) -> None:
        """End a chat's handover: the bot answers the visitor again."""
        key = self._chat_key(channel, chat_id)
        state = self.store.get_state(key)
        if state:
            self.store.set_state(key, {**state, "active": False})
            log.info("omnidesk bridge: %s chat %s is back with the bot", channel, chat_id)

    def _case_closed(self, user_custom_id: str) -> bool:
        conversation = self.desk.conversation(user_custom_id)
        if conversation is None or conversation.case_id is None:
            return False  # the case is still being created
        try:
            case = self.desk.client.get_case(conversation.case_id)
        except OmnideskError as exc:
            if exc.error == "case_not_found" or exc.status == 404:
                return True
            log.warning("omnidesk bridge: could not read case %s: %s", conversation.case_id, exc)
            return False
        return case.status in self.closed_statuses

    # the bot side ---------------------------------------------------------------------------
    def _run(self, bot: Bot, turn: Turn) -> None:
        channel = turn.channel.name
        user = self.active_handover(channel, turn.chat_id)
        if user is not None:
            if self.check_case_status and self._case_closed(user):
                self.end_handover(channel, turn.chat_id)
            else:
                self._forward(user, turn)
                return
        self._record(channel, turn.chat_id, [("visitor", turn.text or "")])
        try:
            bot(turn)
        finally:
            self._record_replies(turn)
            self._recorded.pop(turn, None)

    def _forward(self, user_custom_id: str, turn: Turn) -> None:
        message = turn.message
        if isinstance(message, FileMessage):
            if not message.ready or not message.file.url:
                return
            text = message.file.name or message.file.url
            self.desk.send(user_custom_id, text, attachment_urls=[message.file.url])
        elif turn.text:
            self.desk.send(user_custom_id, turn.text)

    def handover(self, turn: Turn, params: Mapping[str, Any]) -> None:
        """Open an Omnidesk case with the transcript (the ``handover=`` callable of a
        :class:`~omnichannel.Connector`). Parameters: ``text`` (sent to the visitor first),
        ``subject``, ``user_custom_id``, ``labels``, ``group_id``."""
        params = dict(params)
        text = params.pop("text", self.handover_text)
        subject = params.pop("subject", None)
        if subject is None:
            subject = self.subject(turn) if callable(self.subject) else self.subject
        user = str(params.pop("user_custom_id", None) or self.user_custom_id(turn))
        labels = params.pop("labels", self.labels)
        group_id = params.pop("group_id", self.group_id)
        if params:
            raise TypeError(f"unknown handover parameter(s): {', '.join(sorted(params))}")
        if text:
            turn.reply(text)
        channel = turn.channel.name
        self.connect(turn.channel)
        self._record_replies(turn)
        lines = self.transcript(channel, turn.chat_id)
        content = render_transcript(lines) if lines else (turn.text or "(no messages)")
        fields = turn.event.visitor.fields
        self.store.set_state(
            self._chat_key(channel, turn.chat_id),
            {"user_custom_id": user, "active": True, "since": time.time()},
        )
        self.store.set_state(self._user_key(user), {"channel": channel, "chat_id": turn.chat_id})
        self.desk.send(
            user,
            content,
            user_full_name=fields.name,
            user_email=fields.email,
            user_phone=fields.phone,
            subject=subject,
            labels=labels,
            group_id=group_id,
            new_case=True,
        )
        self.store.set_state(self._transcript_key(channel, turn.chat_id), None)
        log.info("omnidesk bridge: %s chat %s handed over as %s", channel, turn.chat_id, user)

    # the staff side -------------------------------------------------------------------------
    def _on_staff_reply(self, reply: StaffReply) -> None:
        user = reply.custom_user_id or self.desk.user_for_case(reply.case_id)
        target = self.store.get_state(self._user_key(user)) if user else None
        if not target:
            log.info("omnidesk bridge: reply to case %s is for no bridged chat", reply.case_id)
            return
        channel = self._channels.get(str(target["channel"]))
        if channel is None:
            log.error(
                "omnidesk bridge: staff reply %s is for channel %r, which is not connected "
                "(call bridge.connect(channel) at start-up)",
                reply.message_id,
                target["channel"],
            )
            return
        messages: list[OutboundMessage] = []
        if reply.text:
            messages.append(TextReply(text=reply.text))
        messages.extend(
            FileLink(url=a.url, name=a.name, media_type=a.mime_type)
            for a in reply.attachments
            if a.url
        )
        if messages:
            channel.send(target["chat_id"], messages)


def _default_user_custom_id(turn: Turn) -> str:
    visitor = turn.event.visitor.id
    return f"{turn.channel.name}:{visitor if visitor else turn.chat_id}"
