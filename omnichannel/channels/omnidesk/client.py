"""The Omnidesk REST client: typed calls, paging, rate limits, errors that never show the key.

Omnidesk lists come as ``{"0": {…}, "1": {…}, "total_count": n}``; :meth:`OmnideskClient.paginate`
turns them into Python items page by page. A 429 (or, on older accounts, a 403 "rate limit
exceeded") is waited out for ``retry_after`` seconds and retried.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from omnichannel.channels.omnidesk.models import (
    Case,
    CustomChannelInfo,
    KBArticle,
    Label,
    Message,
    OmnideskError,
    User,
    _to_int,
)
from omnichannel.errors import ConfigurationError, DeliveryError
from omnichannel.runtime.sending import (
    LazySession,
    RetryPolicy,
    default_session,
    request_with_retries,
)

if TYPE_CHECKING:
    import requests

    from omnichannel.runtime.sending import HTTPResponse, Session

__all__ = ["MAX_PAGE_SIZE", "OmnideskClient"]

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100
"""Omnidesk's largest ``limit`` for one page of a list."""

_MAX_PAGES = 500  # Omnidesk refuses page numbers above 500


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


def _is_rate_limited(response: HTTPResponse) -> bool | None:
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


class _Secret:
    """A secret string whose repr and str never show it (``.value`` does)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class _BasicAuth:
    """HTTP Basic auth whose repr never shows the key: a ``requests`` auth (a callable that
    signs the prepared request; ``requests`` is loaded by then) and, for the SDK's pooled
    transport, the ``Authorization`` header value (:attr:`authorization`)."""

    def __init__(self, email: str, api_key: str) -> None:
        self._key = _Secret(api_key)
        self.email = email

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        from requests.auth import HTTPBasicAuth

        prepared: requests.PreparedRequest = HTTPBasicAuth(self.email, self._key.value)(r)
        return prepared

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (``Basic …``)."""
        pair = f"{self.email}:{self._key.value}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

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
        session: by default the SDK's pooled keep-alive transport
            (:class:`~omnichannel.runtime.pool.PooledSession`), made on first use; it ignores
            proxy variables. Give a ``requests.Session`` for proxies, custom TLS or auth
            (``new_session(trust_env=True)`` of :mod:`omnichannel.runtime.sending` reads
            ``HTTP(S)_PROXY`` from the environment).
        retry: timeouts and retries of every call.
        page_size: items per page when listing (1 … 100).
        language_id: preferred language of knowledge-base texts (Omnidesk's language id).
        label_fields: the ``edit case`` field names that add and remove labels. Unverified
            against Omnidesk's documentation, hence configurable (see ``replace_labels``).
        replace_labels: edit labels by reading the case and sending its whole new ``labels``
            list instead of the add/remove fields (one extra GET per label change).
    """

    session: LazySession[Session] = LazySession(default_session)

    def __init__(
        self,
        base_url: str,
        email: str,
        api_key: str,
        session: Session | None = None,
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
        self.session = session  # None: the default session, made on first use
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
