"""A fake Omnidesk on 127.0.0.1 for tests and examples (PROTOCOLS.md §2).

:class:`FakeOmnidesk` serves the REST API the SDK uses (cases, messages, labels, custom channels,
users, knowledge base) with Basic auth, ``"0", "1", …, "total_count"`` lists, and a per-window rate
limit answering 429 (or the older 403) with ``retry_after``. It records every call, plays the
Omnidesk side of rules (:meth:`FakeOmnidesk.fire_rule`) and of custom channels
(:meth:`FakeOmnidesk.staff_reply` posts a staff reply to the channel's Webhook URL,
form-encoded like Omnidesk).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hmac
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import requests

from omnichannel.channels.omnidesk import CASE_STATUSES, OmnideskClient
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.sending import RetryPolicy
from omnichannel.testing.fake import FakePlatform

__all__ = [
    "RULE_BODY_NEW_CASE",
    "RULE_BODY_UPDATED_CASE",
    "FakeCall",
    "FakeOmnidesk",
]

RULE_BODY_NEW_CASE = """{
"event": "new_message",
"message": {"kind": "visitor", "text": "[case_description]"},
"visitor": {"id": "[user_id]",
            "fields": {"email": "[user_email]", "id": "[user_id]",
                       "name": "[user_full_name]", "phone": "[user_phone]"}},
"chat_id": [case_id]
}"""
"""The request body of the "new case" rule of seed 001 (Omnidesk placeholders in brackets)."""

RULE_BODY_UPDATED_CASE = RULE_BODY_NEW_CASE.replace("[case_description]", "[last_message]")
"""The request body of the "updated case" rule of seed 001."""

_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")


@attrs.frozen(kw_only=True)
class FakeCall:
    """One API call the fake answered: what came in and the status that went out."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    at: float


def _now_text() -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc))


class FakeOmnidesk(FakePlatform[FakeCall]):
    """A local Omnidesk account. It records every API call it answers (:class:`FakeCall`, with
    the status it answered, failures included).

    Args:
        email: the staff e-mail of the Basic-auth credentials the API accepts.
        api_key: the API key of those credentials.
        staff_id: whose name API staff messages carry when they give no ``staff_id``.
        label_fields: the edit-case fields adding and removing labels (``labels`` always
            replaces the whole list).
        retry_after: seconds announced in ``retry_after`` when :meth:`rate_limit_next` gives none.

    Use as a context manager; ``url`` is the account's base URL and :meth:`client` a ready
    :class:`~omnichannel.omnidesk.OmnideskClient` with short retries.
    """

    def __init__(
        self,
        email: str = "bot@example.com",
        api_key: str = "fake-omnidesk-api-key",
        *,
        staff_id: int = 1,
        label_fields: tuple[str, str] = ("add_labels", "delete_labels"),
        retry_after: float = 1.0,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.email = email
        self.api_key = api_key
        self.staff_id = staff_id
        self.label_fields = label_fields
        self.retry_after = retry_after
        self.rate_limited = 0
        self.cases: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.edits: list[tuple[int, dict[str, Any]]] = []
        self.labels: dict[int, str] = {}
        self.custom_channels: dict[str, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.kb_articles: dict[int, dict[str, Any]] = {}
        self.webhooks_sent: list[tuple[str, int]] = []
        self._ids = {"case": 100, "message": 5000, "label": 10, "user": 2000, "kb": 300, "cch": 0}
        self._per_window: int | None = None
        self._window = 60.0
        self._window_start = 0.0
        self._window_used = 0

    # set-up ---------------------------------------------------------------------------------
    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def client(self, **options: Any) -> OmnideskClient:
        """An :class:`OmnideskClient` for this account with short retries (tests, examples)."""
        options.setdefault(
            "retry", RetryPolicy(attempts=6, backoff=0.01, cap=0.2, timeout=(2.0, 5.0))
        )
        return OmnideskClient(self.url, self.email, self.api_key, **options)

    def add_label(self, title: str) -> int:
        """Create a label; return its id."""
        with self._cond:
            label_id = self._next("label")
            self.labels[label_id] = title
            return label_id

    def add_custom_channel(
        self,
        title: str = "My app",
        *,
        webhook_url: str | None = None,
        channel_type: str = "async",
        active: bool = True,
    ) -> str:
        """Create a custom channel; return its key (``"cch1"``)."""
        with self._cond:
            number = self._next("cch")
            key = f"cch{number}"
            self.custom_channels[key] = {
                "channel_id": number,
                "channel_api_key": key,
                "title": title,
                "channel_type": channel_type,
                "icon": "default",
                "webhook_url": webhook_url or "",
                "active": active,
            }
            return key

    def set_webhook_url(self, channel: str, url: str) -> None:
        """Point a custom channel's Webhook URL somewhere."""
        with self._cond:
            self.custom_channels[channel]["webhook_url"] = url

    def add_kb_article(
        self,
        title: str | Mapping[str, str],
        content: str | Mapping[str, str],
        *,
        section_id: int = 1,
        active: bool = True,
    ) -> int:
        """Create a knowledge-base article (texts may be maps by language id); return its id."""
        with self._cond:
            article_id = self._next("kb")
            self.kb_articles[article_id] = {
                "article_id": article_id,
                "section_id": section_id,
                "article_title": dict(title) if isinstance(title, Mapping) else title,
                "article_content": dict(content) if isinstance(content, Mapping) else content,
                "access_type": "public",
                "active": active,
                "created_at": _now_text(),
                "updated_at": _now_text(),
            }
            return article_id

    def open_case(
        self,
        content: str,
        *,
        subject: str | None = None,
        user_email: str | None = "ann@example.com",
        user_full_name: str | None = "Ann",
        user_phone: str | None = None,
        channel: str = "email",
        labels: Iterable[int] = (),
        group_id: int = 0,
    ) -> int:
        """A user writes in (as through e-mail or a chat widget); return the new case id."""
        with self._cond:
            user = self._find_or_create_user(
                {
                    "user_email": user_email,
                    "user_full_name": user_full_name,
                    "user_phone": user_phone,
                }
            )
            case = self._create_case(
                user,
                {
                    "subject": subject or content[:40],
                    "content": content,
                    "channel": channel,
                    "labels": list(labels),
                    "group_id": group_id,
                },
            )
            return int(case["case_id"])

    def user_message(self, case_id: int, content: str) -> int:
        """The case's user writes again; return the message id."""
        with self._cond:
            case = self.cases[case_id]
            message = self._add_message(case, {"content": content, "user_id": case["user_id"]})
            return int(message["message_id"])

    def close_case(self, case_id: int) -> None:
        """Staff closes a case."""
        with self._cond:
            self.cases[case_id]["status"] = "closed"
            self.cases[case_id]["closed_at"] = _now_text()

    # rate limits and failures ---------------------------------------------------------------
    def rate_limit(self, per_window: int | None, window: float = 60.0) -> None:
        """Allow ``per_window`` request units per ``window`` seconds (POST/PUT cost two, as at
        Omnidesk); over it the API answers 429 with ``retry_after`` = the rest of the window.
        ``None`` lifts the limit."""
        with self._cond:
            self._per_window = per_window
            self._window = window
            self._window_start = time.monotonic()
            self._window_used = 0

    def rate_limit_next(
        self,
        count: int,
        *,
        status: int = 429,
        retry_after: float | None = None,
        retry_after_in: str = "header",
    ) -> None:
        """Refuse the next ``count`` calls as over the limit: 429, or ``status=403`` with
        "rate limit exceeded" as on older accounts. ``retry_after_in="body"`` announces the
        wait in the JSON body instead of the ``retry_after`` header."""
        if retry_after_in not in ("header", "body"):
            raise ValueError("retry_after_in must be 'header' or 'body'")
        wait = self.retry_after if retry_after is None else retry_after
        in_body = retry_after_in == "body"
        self._script(count, lambda: self._limit_response(status, wait, in_body=in_body))

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        body: Any = None,
        error: str = "service_unavailable",
    ) -> None:
        """Answer the next ``count`` calls with ``status`` and ``{"error": error}`` (or
        ``body``)."""
        body = {"error": error} if body is None else body
        super().fail_next(count, status, retry_after=retry_after, body=body)

    def _limited(self, method: str) -> Response | None:
        if self._per_window is None:
            return None
        now = time.monotonic()
        if now - self._window_start >= self._window:
            self._window_start = now
            self._window_used = 0
        cost = 2 if method in ("POST", "PUT") else 1
        if self._window_used + cost > self._per_window:
            rest = max(0.01, self._window - (now - self._window_start))
            return self._limit_response(429, rest)
        self._window_used += cost
        return None

    def _limit_response(self, status: int, wait: float, *, in_body: bool = False) -> Response:
        self.rate_limited += 1
        text = f"{math.ceil(wait * 1000) / 1000:g}"
        body: dict[str, Any] = (
            {"error": "rate limit exceeded"}
            if status == 403
            else {"error": "too_many_requests", "description": "API rate limit exceeded"}
        )
        if in_body:
            body["retry_after"] = float(text)
        response = Response.json(status, body)
        if not in_body:
            response.headers["retry_after"] = text
        response.headers["api_calls_left"] = "0"
        if self._per_window is not None:
            response.headers["rate_limit_per_minute"] = str(self._per_window)
        return response

    # the API --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one API call (and record it)."""
        body: Any = None
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body = request.body.decode("utf-8", "replace")
        with self._cond:
            response = self._answer(request, body)
            self.record(
                FakeCall(
                    method=request.method,
                    path=request.path,
                    query=request.query_params,
                    body=body,
                    status=response.status,
                    at=time.time(),
                )
            )
        return response

    def _authorized(self, request: Request) -> tuple[bool, str]:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False, ""
        try:
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, ""
        expected = f"{self.email}:{self.api_key}".encode()
        return hmac.compare_digest(f"{user}:{key}".encode(), expected), key

    def _answer(self, request: Request, body: Any) -> Response:
        if not request.path.startswith("/api/"):
            return Response.error(404, "not_found")
        ok, key = self._authorized(request)
        if not ok:
            # like many real APIs, the fake echoes what it got: the SDK must scrub it
            return Response.json(
                401,
                {"error": "wrong_credentials", "description": f"no staff with API key {key}"},
            )
        scripted = self.scripted_failure(body) or self._limited(request.method)
        if scripted is not None:
            return scripted
        if request.body and not isinstance(body, (dict, list)):
            return Response.json(400, {"error": "invalid_json"})
        path = request.path[len("/api/") :]
        query = request.query_params
        method = request.method
        if path == "cases.json" and method == "POST":
            return self._api_create_case(body)
        if path == "cases.json" and method == "GET":
            return self._page(query, "case", list(self.cases.values()))
        if m := re.fullmatch(r"cases/(\d+)\.json", path):
            case = self.cases.get(int(m[1]))
            if case is None:
                return Response.json(404, {"error": "case_not_found"})
            if method == "GET":
                return Response.json(200, {"case": case})
            if method == "PUT":
                return self._api_edit_case(case, body)
        if m := re.fullmatch(r"cases/(\d+)/messages\.json", path):
            case = self.cases.get(int(m[1]))
            if case is None:
                return Response.json(404, {"error": "case_not_found"})
            if method == "GET":
                return self._page(query, "message", self.messages[case["case_id"]])
            if method == "POST":
                return self._api_add_message(case, body)
        if path == "labels.json" and method == "GET":
            items = [{"label_id": i, "label_title": t} for i, t in sorted(self.labels.items())]
            return self._page(query, "label", items)
        if path == "custom_channels.json" and method == "GET":
            return self._page(query, "custom_channel", list(self.custom_channels.values()))
        if path == "users.json" and method == "GET":
            return self._page(query, "user", self._matching_users(query))
        if path == "kb_article.json" and method == "GET":
            search = query.get("search")
            if search is not None and len(search.strip()) < 3:
                return Response.json(400, {"error": "search_too_short"})
            return self._page(query, "kb_article", self._matching_articles(search))
        if m := re.fullmatch(r"kb_article/(\d+)\.json", path):
            article = self.kb_articles.get(int(m[1]))
            if article is None:
                return Response.json(404, {"error": "article_not_found"})
            return Response.json(200, {"kb_article": article})
        return Response.json(404, {"error": "unknown_method"})

    def _page(self, query: Mapping[str, str], key: str, items: list[dict[str, Any]]) -> Response:
        try:
            page = int(query.get("page", "1"))
            limit = int(query.get("limit", "100"))
        except ValueError:
            return Response.json(400, {"error": "wrong_page_or_limit"})
        if page < 1 or not 1 <= limit <= 100:
            return Response.json(400, {"error": "wrong_page_or_limit"})
        chunk = items[(page - 1) * limit : page * limit]
        answer: dict[str, Any] = {str(i): {key: item} for i, item in enumerate(chunk)}
        answer["total_count"] = len(items)
        return Response.json(200, answer)

    # users ----------------------------------------------------------------------------------
    def _matching_users(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        out = []
        for user in self.users.values():
            if all(
                str(user.get(k) or "") == query[k]
                for k in ("user_custom_id", "user_custom_channel", "user_email", "user_phone")
                if k in query
            ):
                out.append(user)
        return out

    def _find_or_create_user(self, data: Mapping[str, Any]) -> dict[str, Any]:
        custom_id, channel = data.get("user_custom_id"), data.get("user_custom_channel")
        for user in self.users.values():
            if custom_id is not None:
                same = (
                    user["user_custom_id"] == custom_id and user["user_custom_channel"] == channel
                )
            else:
                same = any(
                    data.get(k) and user[k] == data.get(k) for k in ("user_email", "user_phone")
                )
            if same:
                return user
        user_id = self._next("user")
        user = {
            "user_id": user_id,
            "user_full_name": data.get("user_full_name") or "",
            "user_email": data.get("user_email") or "",
            "user_phone": data.get("user_phone") or "",
            "user_custom_id": custom_id or "",
            "user_custom_channel": channel or "",
            "created_at": _now_text(),
        }
        self.users[user_id] = user
        return user

    # cases ----------------------------------------------------------------------------------
    def _api_create_case(self, body: Any) -> Response:
        data = body.get("case") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return Response.json(400, {"error": "case_object_missing"})
        if not (data.get("user_email") or data.get("user_phone") or data.get("user_custom_id")):
            return Response.json(400, {"error": "user_identity_missing"})
        if data.get("user_custom_id"):
            channel = data.get("channel")
            if channel not in self.custom_channels:
                return Response.json(400, {"error": "channel_not_found"})
        if not (data.get("content") or data.get("content_html")):
            return Response.json(400, {"error": "content_missing"})
        user = self._find_or_create_user(
            {
                "user_custom_id": data.get("user_custom_id"),
                "user_custom_channel": data.get("channel") if data.get("user_custom_id") else None,
                "user_email": data.get("user_email"),
                "user_phone": data.get("user_phone"),
                "user_full_name": data.get("user_full_name"),
            }
        )
        case = self._create_case(user, data)
        return Response.json(201, {"case": case})

    def _create_case(self, user: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
        case_id = self._next("case")
        case = {
            "case_id": case_id,
            "case_number": f"000-{case_id}",
            "subject": data.get("subject") or "",
            "user_id": user["user_id"],
            "staff_id": 0,
            "group_id": int(data.get("group_id") or 0),
            "status": "open",
            "priority": "normal",
            "channel": data.get("channel") or "email",
            "deleted": False,
            "spam": False,
            "created_at": _now_text(),
            "updated_at": _now_text(),
            "closed_at": "-",
            "labels": [int(i) for i in data.get("labels") or []],
            "custom_fields": dict(data.get("custom_fields") or {}),
        }
        self.cases[case_id] = case
        self.messages[case_id] = []
        self._add_message(
            case,
            {
                "content": data.get("content") or "",
                "content_html": data.get("content_html") or "",
                "user_id": user["user_id"],
                "attachment_urls": data.get("attachment_urls") or [],
            },
        )
        return case

    def _api_edit_case(self, case: dict[str, Any], body: Any) -> Response:
        data = body.get("case") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not data:
            return Response.json(400, {"error": "case_object_missing"})
        if "status" in data and data["status"] not in CASE_STATUSES:
            return Response.json(400, {"error": "wrong_status"})
        add_field, delete_field = self.label_fields
        for label in [*data.get(add_field, []), *data.get(delete_field, [])]:
            if int(label) not in self.labels:
                return Response.json(400, {"error": "label_not_found"})
        if "labels" in data:
            case["labels"] = [int(i) for i in data["labels"]]
        for label in data.get(add_field, []):
            if int(label) not in case["labels"]:
                case["labels"].append(int(label))
        case["labels"] = [
            i for i in case["labels"] if i not in map(int, data.get(delete_field, []))
        ]
        for key in ("status", "group_id", "staff_id", "priority"):
            if key in data:
                case[key] = data[key]
        if isinstance(data.get("custom_fields"), dict):
            case["custom_fields"].update(data["custom_fields"])
        case["updated_at"] = _now_text()
        self.edits.append((case["case_id"], dict(data)))
        return Response.json(200, {"case": case})

    # messages -------------------------------------------------------------------------------
    def _api_add_message(self, case: dict[str, Any], body: Any) -> Response:
        data = body.get("message") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return Response.json(400, {"error": "message_object_missing"})
        if not (data.get("content") or data.get("content_html")):
            return Response.json(400, {"error": "content_missing"})
        if data.get("user_id") is not None:
            if int(data["user_id"]) != case["user_id"]:
                return Response.json(400, {"error": "user_not_found"})
        elif data.get("staff_id") is None:
            data = {**data, "staff_id": self.staff_id}
        return Response.json(201, {"message": self._add_message(case, data)})

    def _add_message(self, case: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
        from_user = data.get("user_id") is not None
        message = {
            "message_id": self._next("message"),
            "user_id": int(data["user_id"]) if from_user else 0,
            "staff_id": 0 if from_user else int(data.get("staff_id") or self.staff_id),
            "content": data.get("content") or "",
            "content_html": data.get("content_html") or "",
            "attachments": [{"url": u} for u in data.get("attachment_urls") or []],
            "note": bool(data.get("note", False)),
            "sent_via_rule": bool(data.get("sent_via_rule", False)),
            "created_at": _now_text(),
        }
        self.messages[case["case_id"]].append(message)
        if from_user and case["status"] == "closed":
            case["status"] = "open"
        case["updated_at"] = _now_text()
        self._cond.notify_all()
        return message

    def _matching_articles(self, search: str | None) -> list[dict[str, Any]]:
        out = []
        for article in self.kb_articles.values():
            if not article["active"]:
                continue
            texts: list[str] = []
            for key in ("article_title", "article_content"):
                value = article[key]
                texts.extend(value.values() if isinstance(value, dict) else [value])
            if search is None or any(search.strip().lower() in t.lower() for t in texts):
                out.append(article)
        return out

    # the Omnidesk side of rules and custom channels -----------------------------------------
    def fire_rule(
        self,
        url: str,
        case_id: int,
        *,
        new_case: bool = False,
        template: str | None = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> requests.Response:
        """Play an Omnidesk rule: post seed 001's body (or ``template``) for the case to ``url``,
        placeholders filled (``[last_message]`` = the case's last user message,
        ``[case_description]`` its first message). Returns the receiver's answer."""
        with self._cond:
            case = self.cases[case_id]
            user = self.users[case["user_id"]]
            from_user = [m for m in self.messages[case_id] if m["user_id"]]
            values: dict[str, Any] = {
                "case_id": case_id,
                "user_id": user["user_id"],
                "user_email": user["user_email"],
                "user_full_name": user["user_full_name"],
                "user_phone": user["user_phone"],
                "case_description": self.messages[case_id][0]["content"],
                "last_message": from_user[-1]["content"] if from_user else "",
                "case_number": case["case_number"],
                "subject": case["subject"],
            }
        body = template or (RULE_BODY_NEW_CASE if new_case else RULE_BODY_UPDATED_CASE)

        def fill(match: re.Match[str]) -> str:
            name = match[1]
            if name not in values:
                return match[0]
            value = values[name]
            if isinstance(value, int):
                return str(value)
            return json.dumps(str(value), ensure_ascii=False)[1:-1]  # inside the quotes

        filled = _PLACEHOLDER.sub(fill, body)
        return requests.post(
            url,
            data=filled.encode("utf-8"),
            headers={"Content-Type": content_type},
            timeout=timeout,
        )

    def staff_reply(
        self,
        case_id: int,
        content: str,
        *,
        staff_id: int | None = None,
        note: bool = False,
        sent_via_rule: bool = False,
        attachments: Iterable[Mapping[str, Any]] = (),
        encoding: str = "form",
        url: str | None = None,
        timeout: float = 10.0,
    ) -> requests.Response:
        """Staff answers in a case: the message is stored and posted to the case's custom
        channel Webhook URL (or ``url``) — ``encoding="form"`` as Omnidesk does
        (``object[content]=…``), or ``"json"``. Returns the receiver's answer."""
        with self._cond:
            case = self.cases[case_id]
            user = self.users[case["user_id"]]
            message = self._add_message(
                case,
                {
                    "content": content,
                    "staff_id": staff_id or self.staff_id,
                    "note": note,
                    "sent_via_rule": sent_via_rule,
                },
            )
            files = [dict(a) for a in attachments]
            message["attachments"] = files
            target = url or self.custom_channels.get(case["channel"], {}).get("webhook_url")
        if not target:
            raise ValueError(f"case {case_id} is not in a custom channel with a Webhook URL")
        obj: dict[str, Any] = {
            "message_id": message["message_id"],
            "case_id": case_id,
            "staff_id": message["staff_id"],
            "user_id": user["user_id"],
            "custom_user_id": user["user_custom_id"],
            "content": content,
            "note": int(note),
            "sent_via_rule": int(sent_via_rule),
            "created_at": message["created_at"],
        }
        if files:
            obj["attachments"] = files
        if encoding == "json":
            response = requests.post(
                target, json={"type": "message_new", "object": obj}, timeout=timeout
            )
        elif encoding == "form":
            pairs = [("type", "message_new")]
            for key, value in obj.items():
                if key == "attachments":
                    for i, item in enumerate(value):
                        pairs.extend(
                            (f"object[attachments][{i}][{k}]", str(v)) for k, v in item.items()
                        )
                else:
                    pairs.append((f"object[{key}]", str(value)))
            response = requests.post(target, data=pairs, timeout=timeout)
        else:
            raise ValueError("encoding must be 'form' or 'json'")
        with self._cond:
            self.webhooks_sent.append((encoding, response.status_code))
        return response

    # assertions -----------------------------------------------------------------------------
    def case(self, case_id: int) -> dict[str, Any]:
        """A copy of the case as stored."""
        with self._cond:
            return json.loads(json.dumps(self.cases[case_id]))  # type: ignore[no-any-return]

    def case_messages(self, case_id: int) -> list[dict[str, Any]]:
        """Copies of the case's messages, oldest first."""
        with self._cond:
            return [dict(m) for m in self.messages[case_id]]

    def staff_texts(self, case_id: int) -> list[str]:
        """The contents of the case's staff messages (not notes), in order."""
        return [
            m["content"] for m in self.case_messages(case_id) if m["staff_id"] and not m["note"]
        ]

    def user_texts(self, case_id: int) -> list[str]:
        """The contents of the case's user messages, in order."""
        return [m["content"] for m in self.case_messages(case_id) if m["user_id"]]

    def calls_to(self, method: str, pattern: str) -> list[FakeCall]:
        """Recorded calls with ``method`` whose path matches the regex ``pattern``."""
        with self._cond:
            return [c for c in self.calls if c.method == method and re.search(pattern, c.path)]

    def wait_for_staff_messages(self, case_id: int, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until the case has ``count`` staff messages; return their texts."""
        what = f"{count} staff messages in case {case_id}"
        self.wait_for(lambda: len(self.staff_texts(case_id)) >= count, timeout, what=what)
        return self.staff_texts(case_id)
